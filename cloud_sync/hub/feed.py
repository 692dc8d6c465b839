"""The change feed the stores pull, and the master data behind it.

Every change has a `seq`; a store asks for what came after the last `seq` it applied (its
cursor). Campaigns, revocations, keys and erasures go to every store; rows with a
`store_id` are for that store only (its look-up key bundle), rows with a `region` for the
stores of that region only (customers, hashed with the region's key, and `forget`s: see
`cloud_sync.hub.lookups`). A newer change of the same customer (in the same region),
campaign or key set replaces the older one in the feed, so the feed stays small and old
personal data does not linger in it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from cloud_sync.hub.changelog import append_changes, dumps
from cloud_sync.hub.db import HubDB, upsert
from cloud_sync.hub.lookups import (
    check_home_region,
    ensure_store_bundle,
    index_customers,
    set_home_regions,
)
from cloud_sync.hub.schema import (
    campaigns,
    chain_keys,
    changes,
    customer_index,
    customer_regions,
    customers,
    events,
    issued_coupons,
    redemptions,
    retired_stores,
    revocations,
    revoked_keys,
    stores,
)
from store_contract.campaigns import COUPON_ID_RE, parse_campaign
from store_contract.customers import CUSTOMER_ID_RE, parse_customer
from store_contract.errors import BadRequest
from store_contract.jws import SigningKey

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000


def parse_cursor(cursor: str | None, limit: str | None) -> tuple[int, int]:
    """The seq to read after and how many changes to read; BadRequest for bad values."""
    after = 0
    if cursor:
        if not cursor.isdigit() or len(cursor) > 18:
            raise BadRequest("cursor must be the cursor of an earlier answer.",
                             code="bad_cursor", detail={"cursor": cursor[:40]})
        after = int(cursor)
    size = DEFAULT_LIMIT
    if limit is not None and limit != "":
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}.",
                             code="bad_limit")
        size = int(limit)
    return after, size


def read_changes(db: HubDB, store_id: str, cursor: str | None = None,
                 limit: str | None = None) -> dict[str, Any]:
    """`{"cursor", "changes", "more"}`: the changes for `store_id` after `cursor`.

    A store reading from the start gets its look-up key bundle first, even when the
    bundle's own change comes later in the feed: the customers before it are hashed with
    that key, and the store could not use them without it.
    """
    after, size = parse_cursor(cursor, limit)
    ensure_store_bundle(db, store_id)
    with db.read() as conn:
        region = conn.execute(select(stores.c.region).where(stores.c.id == store_id)).scalar()
        rows = conn.execute(
            select(changes.c.seq, changes.c.kind, changes.c.payload)
            .where(changes.c.seq > after)
            .where((changes.c.store_id.is_(None) & changes.c.region.is_(None))
                   | (changes.c.store_id == store_id) | (changes.c.region == region))
            .order_by(changes.c.seq).limit(size + 1)).all()
        head = conn.execute(
            select(changes.c.seq, changes.c.kind, changes.c.payload)
            .where(changes.c.kind == "lookup_key").where(changes.c.ref == store_id)
            .where(changes.c.store_id == store_id)
            .order_by(changes.c.seq.desc()).limit(1)).first() if after == 0 else None
    more = len(rows) > size
    rows = list(rows[:size])
    new_cursor = str(rows[-1].seq) if rows else (cursor or "")
    if head is not None and rows and head.seq > rows[-1].seq:
        rows.insert(0, head)  # a copy ahead of its turn; the cursor is the page's own
    out = [{"seq": int(row.seq), "kind": row.kind, **json.loads(row.payload)} for row in rows]
    return {"cursor": new_cursor, "changes": out, "more": more}


def _lines(lines: Iterable[str]) -> Iterable[tuple[int, Any, str | None]]:
    """(line number, parsed JSON or None, problem or None) for the non-blank lines."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), None
        except ValueError as exc:
            yield number, None, f"not JSON: {exc}"


def _import(db: HubDB, lines: Iterable[str], kind: str, table: Any,
            record_id: Callable[[Any], str]) -> dict[str, Any]:
    """Validate each line with `record_id` (ValueError = skip it with its reason), keep the
    last record of each id, and write them with one `kind` change each for every store."""
    latest, problems = _validated(lines, record_id)
    now = time.time()
    with db.write() as conn:
        upsert(conn, table, ["id"], [{"id": rid, "record": dumps(obj), "updated_ts": now}
                                    for rid, obj in latest.items()])
        append_changes(conn, [(kind, rid, {kind: obj}, None) for rid, obj in latest.items()],
                       now)
    return {"imported": len(latest), "skipped": len(problems), "problems": problems}


def _validated(lines: Iterable[str], record_id: Callable[[Any], str]
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The last valid record of each id, and the lines skipped with their reasons."""
    latest: dict[str, Any] = {}
    problems: list[dict[str, Any]] = []
    for number, obj, problem in _lines(lines):
        if problem is None:
            try:
                latest[record_id(obj)] = obj
                continue
            except ValueError as exc:
                problem = str(exc)
        problems.append({"line": number, "reason": problem})
    return latest, problems


def import_customers(db: HubDB, lines: Iterable[str], country: str = "DE") -> dict[str, Any]:
    """Import customers (one JSON record per line) and send them to the stores of their
    regions (home region, and where they were seen lately), hashed per region.

    A bad line is skipped and reported with its number and reason; `country` reads phone
    numbers written without +country code, as the edge does. Each new identifier costs one
    scrypt stretch here (about 14 ms), once.
    """
    parsed: dict[str, tuple[list[tuple[str, str]], str | None]] = {}

    def record_id(obj: Any) -> str:
        rec = parse_customer(obj, None, country)
        parsed[rec.id] = (rec.identifiers, check_home_region(obj))
        return rec.id

    latest, problems = _validated(lines, record_id)
    now = time.time()
    with db.write() as conn:
        upsert(conn, customers, ["id"], [{"id": rid, "record": dumps(obj), "updated_ts": now}
                                        for rid, obj in latest.items()])
        index_customers(conn, {rid: parsed[rid][0] for rid in latest})
        set_home_regions(conn, {rid: parsed[rid][1] for rid in latest}, now)
    return {"imported": len(latest), "skipped": len(problems), "problems": problems}


def import_campaigns(db: HubDB, lines: Iterable[str], locale: str = "en_IE") -> dict[str, Any]:
    """Import campaigns (one JSON record per line) and send them to every store."""
    return _import(db, lines, "campaign", campaigns, lambda obj: parse_campaign(obj, locale).id)


def erase_customer(db: HubDB, customer_id: str) -> dict[str, Any]:
    """Forget a customer at the hub and tell every store to do the same.

    The feed's earlier `customer` changes (of every region) hold the person's data, so they
    go, with the index of their identifiers and the regions they were sent to; events and
    redemptions stay for the figures but no longer say whose they were. The erasure itself
    goes to every store.
    """
    if not isinstance(customer_id, str) or not CUSTOMER_ID_RE.match(customer_id):
        raise BadRequest(f"{customer_id!r} is not a customer id", code="bad_customer_id")
    with db.write() as conn:
        gone = conn.execute(delete(customers).where(customers.c.id == customer_id)).rowcount
        # The erasure goes into the feed before the person's changes leave it, so it takes a
        # seq no store has read past (see append_changes).
        append_changes(conn, [("erasure", customer_id, {"customer_id": customer_id}, None)])
        conn.execute(delete(changes).where(changes.c.kind.in_(("customer", "forget")))
                     .where(changes.c.ref == customer_id))
        conn.execute(delete(customer_index).where(customer_index.c.customer_id == customer_id))
        conn.execute(delete(customer_regions)
                     .where(customer_regions.c.customer_id == customer_id))
        rows = conn.execute(select(events.c.event_id, events.c.data)
                            .where(events.c.customer_id == customer_id)).all()
        if rows:
            conn.execute(update(events).where(events.c.event_id == bindparam("eid")).values(
                customer_id=None, data=bindparam("scrubbed")),
                [{"eid": row.event_id, "scrubbed": dumps(_scrub(json.loads(row.data)))}
                 for row in rows])
        conn.execute(update(redemptions).where(redemptions.c.customer_id == customer_id)
                     .values(customer_id=None))
        conn.execute(update(issued_coupons).where(issued_coupons.c.customer_id == customer_id)
                     .values(customer_id=None))
    return {"customer": customer_id, "erased": True, "had_record": bool(gone),
            "events_anonymised": len(rows)}


def _scrub(data: dict[str, Any]) -> dict[str, Any]:
    """An event's data without who it was about (the id and any raw identifier)."""
    return {k: (None if k == "customer_id" else v) for k, v in data.items()
            if k not in ("identifier", "token", "proof")}


def revoke(db: HubDB, scope: str, id_: str, reason: str | None = None) -> dict[str, Any]:
    """Revoke a coupon or a whole campaign at every store."""
    if scope not in ("coupon", "campaign"):
        raise BadRequest("scope must be coupon or campaign", code="bad_scope")
    if not isinstance(id_, str) or not COUPON_ID_RE.match(id_):
        raise BadRequest(f"{id_!r} is not a {scope} id", code=f"bad_{scope}_id")
    reason = (reason or "")[:200]
    now = time.time()
    with db.write() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(revocations).values(scope=scope, id=id_, reason=reason,
                                                  revoked_ts=now)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["scope", "id"], set_={"reason": reason}))
        append_changes(conn, [("revocation", f"{scope}:{id_}",
                               {"scope": scope, "id": id_, "reason": reason}, None)], now)
    return {"scope": scope, "id": id_, "reason": reason, "revoked": True}


def jwk_set(conn: Connection, hub_key: SigningKey) -> dict[str, Any]:
    """The keys stores trust: the hub's and the chain's app keys (chain keys), and each
    store's published public key marked with the store it belongs to (`"store"`: such a key
    signs only that store's receipt offers). Revoked keys and retired stores' keys are left
    out."""
    keys = [hub_key.public_jwk()]
    revoked: set[str] = set(conn.execute(select(revoked_keys.c.kid)).scalars())
    keys += [json.loads(str(text)) for kid, text in conn.execute(
        select(chain_keys.c.kid, chain_keys.c.jwk).order_by(chain_keys.c.kid)).all()
        if kid not in revoked]
    retired = select(retired_stores.c.store_id)
    for store_id, text in conn.execute(
            select(stores.c.id, stores.c.public_jwk).where(stores.c.public_jwk.isnot(None))
            .where(stores.c.id.not_in(retired)).order_by(stores.c.id)).all():
        jwk = json.loads(str(text))
        if jwk.get("kid") not in revoked:
            keys.append({**jwk, "store": store_id})
    return {"keys": keys}


def publish_keys(db: HubDB, hub_key: SigningKey) -> bool:
    """Append a `keys` change when the key set differs from the last one sent; changed?"""
    with db.write() as conn:
        jwks = jwk_set(conn, hub_key)
        last = conn.execute(select(changes.c.payload).where(changes.c.kind == "keys")
                            .order_by(changes.c.seq.desc()).limit(1)).scalar()
        if last is not None and json.loads(last) == {"jwks": jwks}:
            return False
        append_changes(conn, [("keys", "jwks", {"jwks": jwks}, None)])
    return True
