"""Customers in the feed without their numbers: look-up keys, the region rule, and the
online look-up (docs/sync.md "Customers in the feed", docs/hub.md "Online look-up").

- The hub keeps each customer's raw identifiers (it is the CRM) and, once per identifier,
  its scrypt stretch (`customer_index.stretched`, chain-wide salt and cost in `hub_secrets`).
  A record sent to a region carries `HMAC(region key, stretch)` of each identifier, never
  the identifier: `edge.customers.KeyBundle.keyed`, the same function the edge hashes with.
- A customer's record goes to the stores of their home region and of every region where
  they were seen in the last HUB_CUSTOMER_SEEN_DAYS days (`customer_regions`). When that
  window passes, `expire_regions` sends the region a `forget`.
- A store may ask for one customer it does not hold (`POST .../lookup`): found through the
  hub's own index (`customer_index.digest`, HMAC with a key only the hub has), rate-limited
  per store in the database, and audited (`lookup_audit`).
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import Iterable
from typing import Any

import phonenumbers
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from cloud_sync.hub.db import HubDB, ListQuery, insert_new
from cloud_sync.hub.schema import (
    chain_keys,
    changes,
    customer_index,
    customer_regions,
    customers,
    hub_secrets,
    lookup_audit,
    region_keys,
    revoked_keys,
    stores,
)
from cloud_sync.hub.settings import HubSettings
from store_contract.customers import (
    CONSENTS,
    LOOKUP_KINDS,
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    IdentifierError,
    KeyBundle,
    normalise_card,
    normalise_email,
    stretch,
    text_values,
)
from store_contract.errors import BadRequest, EdgeError, NotFound
from store_contract.jws import (
    MAX_TOKEN_CHARS,
    MEMBER_TYP,
    SigningKey,
    TokenRejected,
    public_key_from_jwk,
    store_of_kid,
    verify_compact,
)
from store_contract.protocol import ID_RE

SIGHTING_EVENTS = ("customer.identified", "transaction.completed")
# A sighting moves `last_seen_ts` at most once a day: the window is counted in days, and
# ingest then writes nothing for a regular shopper's every sale.
_SEEN_GRANULARITY_S = 86400.0
_WINDOW_S = 60.0  # the rate limit's rolling window
_COUNTED = ("found", "not_found", "bad")  # what the limit counts: every answered look-up
MEMBER_MAX_LIFE_S = 300
CLOCK_SKEW_S = 120
_VALUE_MAX = 320


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _insert(conn: Connection) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert


# ---------------------------------------------------------------- secrets and keys


def _secret(conn: Connection, name: str, make: Any) -> Any:
    """A value made once and shared by every hub process (the first writer wins)."""
    row = conn.execute(select(hub_secrets.c.value).where(hub_secrets.c.name == name)).scalar()
    if row is None:
        conn.execute(_insert(conn)(hub_secrets).values(
            name=name, value=_dumps(make()), created_ts=time.time()).on_conflict_do_nothing())
        row = conn.execute(select(hub_secrets.c.value)
                           .where(hub_secrets.c.name == name)).scalar_one()
    return json.loads(row)


def chain_stretch(conn: Connection) -> dict[str, Any]:
    """The chain's scrypt salt and cost: the same for every region and every rotation."""
    params: dict[str, Any] = _secret(conn, "lookup-stretch", lambda: {
        "salt": secrets.token_urlsafe(16), "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P})
    return params


def _index_key(conn: Connection) -> bytes:
    return base64.urlsafe_b64decode(_secret(conn, "index-key",
                                            lambda: secrets.token_urlsafe(32)) + "==")


def index_digest(key: bytes, kind: str, normalised: str) -> str:
    """Where the hub finds a customer by an identifier (its own key: never sent out)."""
    return hmac.new(key, f"{kind}:{normalised}".encode(), hashlib.sha256).hexdigest()


def region_bundle(conn: Connection, region: str) -> KeyBundle:
    """The region's look-up key bundle, made on first need."""
    row = conn.execute(select(region_keys.c.kid, region_keys.c.key)
                       .where(region_keys.c.region == region)).first()
    if row is None:
        conn.execute(_insert(conn)(region_keys).values(
            region=region, kid=f"lk-{secrets.token_hex(8)}",
            key=base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode(),
            created_ts=time.time()).on_conflict_do_nothing())
        row = conn.execute(select(region_keys.c.kid, region_keys.c.key)
                           .where(region_keys.c.region == region)).one()
    params = chain_stretch(conn)
    return KeyBundle.from_json({"kid": row.kid, "key": row.key, **params})


def store_bundle_changes(conn: Connection, store_ids: Iterable[str], now: float) -> None:
    """Send each store its region's bundle (a change for that store only)."""
    from cloud_sync.hub.changelog import append_changes

    ids = sorted(set(store_ids))
    if not ids:
        return
    rows = conn.execute(select(stores.c.id, stores.c.region).where(stores.c.id.in_(ids))).all()
    items = [("lookup_key", row.id, {"lookup_key": region_bundle(conn, row.region).to_json()},
              row.id) for row in rows]
    append_changes(conn, items, now)


# (database, store) whose bundle this process knows to be in the feed
_bundled: set[tuple[str, str]] = set()


def ensure_store_bundle(db: HubDB, store_id: str) -> None:
    """A store registered before look-up keys existed gets its bundle on its next read."""
    if (db.url, store_id) in _bundled:
        return
    with db.read() as conn:
        have = conn.execute(select(changes.c.seq).where(changes.c.kind == "lookup_key")
                            .where(changes.c.ref == store_id).limit(1)).first()
    if have is None:
        with db.write() as conn:
            if conn.execute(select(changes.c.seq).where(changes.c.kind == "lookup_key")
                            .where(changes.c.ref == store_id).limit(1)).first() is None:
                store_bundle_changes(conn, [store_id], time.time())
    _bundled.add((db.url, store_id))


def rotate_region_key(db: HubDB, region: str) -> dict[str, Any]:
    """A new look-up key for a region: its stores get the new bundle (they drop their
    look-ups and read the feed again) and every customer of the region is sent again
    hashed with it."""
    if not ID_RE.match(region):
        raise BadRequest(f"{region!r} is not a region id", code="bad_region")
    now = time.time()
    with db.write() as conn:
        conn.execute(delete(region_keys).where(region_keys.c.region == region))
        bundle = region_bundle(conn, region)
        store_ids: list[str] = list(conn.execute(
            select(stores.c.id).where(stores.c.region == region)).scalars())
        store_bundle_changes(conn, store_ids, now)
        cids: list[str] = list(conn.execute(select(customer_regions.c.customer_id)
                                 .where(customer_regions.c.region == region)).scalars())
        append_customer_changes(conn, [(cid, region) for cid in cids], now)
    return {"region": region, "kid": bundle.kid, "stores": len(store_ids),
            "customers": len(cids)}


# ---------------------------------------------------------------- import


def index_customers(conn: Connection, identifiers: dict[str, list[tuple[str, str]]]) -> int:
    """Keep each customer's identifiers in the index, stretching only new ones; how many
    were stretched. A number that moved to another customer follows the newer record."""
    key = _index_key(conn)
    params = chain_stretch(conn)
    wanted = {cid: {index_digest(key, kind, value): (kind, value) for kind, value in ids}
              for cid, ids in identifiers.items()}
    all_digests = sorted({d for ds in wanted.values() for d in ds})
    known: dict[str, str] = {}
    for start in range(0, len(all_digests), 500):
        known.update({r.digest: r.stretched for r in conn.execute(
            select(customer_index.c.digest, customer_index.c.stretched)
            .where(customer_index.c.digest.in_(all_digests[start:start + 500])))})
    cids = sorted(wanted)
    for start in range(0, len(cids), 500):
        conn.execute(delete(customer_index)
                     .where(customer_index.c.customer_id.in_(cids[start:start + 500])))
    if all_digests:
        for start in range(0, len(all_digests), 500):
            conn.execute(delete(customer_index)
                         .where(customer_index.c.digest.in_(all_digests[start:start + 500])))
    rows = []
    stretched = 0
    for cid, digests in wanted.items():
        for digest, (kind, value) in digests.items():
            if digest not in known:
                known[digest] = stretch(kind, value, params["salt"], params["n"], params["r"],
                                        params["p"]).hex()
                stretched += 1
            rows.append({"digest": digest, "kind": kind, "customer_id": cid,
                         "stretched": known[digest]})
    # The last record naming a number wins it (one row per digest).
    unique = {r["digest"]: r for r in rows}
    if unique:
        conn.execute(customer_index.insert(), list(unique.values()))
    return stretched


def set_home_regions(conn: Connection, homes: dict[str, str | None], now: float) -> None:
    """Record each imported customer's home region and send their record to the regions
    it now goes to. A former home region keeps them as if seen today (they expire there
    with the seen window)."""
    cids = sorted(homes)
    current: dict[str, list[Any]] = {}
    for start in range(0, len(cids), 500):
        for row in conn.execute(select(customer_regions)
                                .where(customer_regions.c.customer_id
                                       .in_(cids[start:start + 500]))):
            current.setdefault(row.customer_id, []).append(row)
    for cid, home in homes.items():
        for row in current.get(cid, []):
            if row.reason == "home" and row.region != home:
                conn.execute(update(customer_regions)
                             .where(customer_regions.c.customer_id == cid)
                             .where(customer_regions.c.region == row.region)
                             .values(reason="seen", last_seen_ts=now))
        if home is not None:
            stmt = _insert(conn)(customer_regions).values(
                customer_id=cid, region=home, last_seen_ts=now, reason="home")
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["customer_id", "region"],
                set_={"reason": "home", "last_seen_ts": now}))
    pairs: list[tuple[str, str]] = []
    for start in range(0, len(cids), 500):
        pairs += [(r.customer_id, r.region) for r in conn.execute(
            select(customer_regions.c.customer_id, customer_regions.c.region)
            .where(customer_regions.c.customer_id.in_(cids[start:start + 500])))]
    append_customer_changes(conn, pairs, now)


def check_home_region(obj: dict[str, Any]) -> str | None:
    """The optional `region` of an imported customer; ValueError when it is not a region."""
    region = obj.get("region")
    if region is not None and (not isinstance(region, str) or not ID_RE.match(region)):
        raise ValueError("region must be a region id (1-32 of a-z, 0-9 and '-')")
    return region


# ---------------------------------------------------------------- records


def _profile(obj: dict[str, Any]) -> dict[str, Any]:
    """What a store keeps of a customer, from the record as imported (validated then)."""
    consent = obj.get("consent") or {}
    return {"id": obj["id"], "display_name": str(obj["display_name"]).strip(),
            "tier": obj.get("tier", "member"), "points": obj.get("points", 0),
            "consent": {k: bool(consent.get(k, False)) for k in CONSENTS},
            "segments": sorted(set(obj.get("segments") or [])),
            "wallet": text_values(obj, "coupon", "wallet")}


def customer_records(conn: Connection, customer_ids: Iterable[str], bundle: KeyBundle
                     ) -> dict[str, dict[str, Any]]:
    """Feed records of these customers, their identifiers hashed with `bundle`."""
    ids = sorted(set(customer_ids))
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        stretched: dict[str, list[tuple[str, str]]] = {}
        for row in conn.execute(select(customer_index.c.customer_id, customer_index.c.kind,
                                       customer_index.c.stretched)
                                .where(customer_index.c.customer_id.in_(part))
                                .order_by(customer_index.c.kind, customer_index.c.digest)):
            stretched.setdefault(row.customer_id, []).append((row.kind, row.stretched))
        for row in conn.execute(select(customers.c.id, customers.c.record)
                                .where(customers.c.id.in_(part))):
            out[row.id] = {**_profile(json.loads(row.record)),
                           "lookups": [{"kind": kind, "hash": bundle.keyed(bytes.fromhex(s))}
                                       for kind, s in stretched.get(row.id, [])],
                           "key": bundle.kid}
    return out


def append_customer_changes(conn: Connection, pairs: Iterable[tuple[str, str]],
                            now: float) -> None:
    """A `customer` change for each (customer, region), hashed with that region's key."""
    from cloud_sync.hub.changelog import append_changes

    by_region: dict[str, list[str]] = {}
    for cid, region in pairs:
        by_region.setdefault(region, []).append(cid)
    for region, cids in sorted(by_region.items()):
        records = customer_records(conn, cids, region_bundle(conn, region))
        append_changes(conn, [("customer", cid, {"customer": rec}, None)
                              for cid, rec in sorted(records.items())], now, region=region)


# ---------------------------------------------------------------- sightings


# The statements of every batch that identifies customers, made once (see ListQuery): the
# customers among the ids, with their row for the region if any; and "seen again".
_SIGHTED = ListQuery(lambda in_list: select(
    customers.c.id, customer_regions.c.last_seen_ts, customer_regions.c.reason)
    .select_from(customers.outerjoin(
        customer_regions, (customer_regions.c.customer_id == customers.c.id)
        & (customer_regions.c.region == bindparam("in_region"))))
    .where(in_list(customers.c.id)))
_SEEN_AGAIN = ListQuery(lambda in_list: update(customer_regions)
                        .where(customer_regions.c.region == bindparam("in_region"))
                        .where(customer_regions.c.reason == "seen")
                        .where(in_list(customer_regions.c.customer_id))
                        .values(last_seen_ts=bindparam("seen_ts")))


def record_sightings(conn: Connection, region: str, customer_ids: Iterable[str],
                     now: float) -> list[str]:
    """Customers seen by a store of `region`: their record goes to the region from now on
    (a change on first sighting); the customers new to the region."""
    ids = sorted({c for c in customer_ids if c})
    if not ids:
        return []
    cr = customer_regions
    rows = _SIGHTED(conn, ids, in_region=region).all()
    fresh = [r.id for r in rows if r.reason is None]
    stale = [r.id for r in rows if r.reason == "seen"
             and r.last_seen_ts < now - _SEEN_GRANULARITY_S]
    if stale:
        _SEEN_AGAIN(conn, stale, in_region=region, seen_ts=now)
    new: list[str] = []
    if fresh:
        # Two batches of one region may see the same new customer at once (PostgreSQL):
        # only the one that inserts the row sends the record.
        new = sorted(insert_new(conn, cr, [
            {"customer_id": cid, "region": region, "last_seen_ts": now, "reason": "seen"}
            for cid in fresh], "customer_id"))
        append_customer_changes(conn, [(cid, region) for cid in new], now)
    return new


def store_region(conn: Connection, store_id: str) -> str | None:
    region = conn.execute(select(stores.c.region).where(stores.c.id == store_id)).scalar()
    return None if region is None else str(region)


def expire_regions(db: HubDB, days: int, now: float | None = None) -> dict[str, Any]:
    """Regions where a customer was not seen for `days`: their stores are told to forget
    the customer (profile, look-ups and wallet; sales stay)."""
    from cloud_sync.hub.changelog import append_changes

    now = time.time() if now is None else now
    cr = customer_regions
    with db.write() as conn:
        rows = conn.execute(select(cr.c.customer_id, cr.c.region).where(cr.c.reason == "seen")
                            .where(cr.c.last_seen_ts < now - days * 86400.0)).all()
        by_region: dict[str, list[str]] = {}
        for row in rows:
            by_region.setdefault(row.region, []).append(row.customer_id)
        for region, cids in sorted(by_region.items()):
            for start in range(0, len(cids), 500):
                part = cids[start:start + 500]
                conn.execute(delete(cr).where(cr.c.region == region)
                             .where(cr.c.customer_id.in_(part)))
            append_changes(conn, [("forget", cid, {"customer_id": cid}, None)
                                  for cid in sorted(cids)], now, region=region)
    return {"expired": len(rows), "regions": {r: len(c) for r, c in sorted(by_region.items())}}


# ---------------------------------------------------------------- online look-up


class TooManyLookups(EdgeError):
    code = "too_many_lookups"
    status = 429
    default_message = "This store asked for too many customers in the last minute."

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"At most so many look-ups a minute per store; try again in "
                         f"{retry_after} s.", detail={"retry_after_s": retry_after})
        self.retry_after = retry_after


def _parse_request(body: Any) -> tuple[str, str]:
    """(kind, normalised value or member token); BadRequest for anything else."""
    if not isinstance(body, dict):
        raise BadRequest('The body must be {"kind", "value"} or {"kind": "member", "token"}.',
                         code="bad_lookup")
    kind = body.get("kind")
    if kind == "member":
        token = body.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
            raise BadRequest("A member look-up needs the member code as token.",
                             code="bad_lookup")
        return kind, token
    value = body.get("value")
    if kind not in LOOKUP_KINDS or not isinstance(value, str) or not 0 < len(value) <= _VALUE_MAX:
        raise BadRequest("kind must be phone, card, email or member, with a value.",
                         code="bad_lookup")
    try:
        if kind == "phone":
            # The store sends E.164: a national number would be read in the wrong country.
            number = phonenumbers.parse(value, None)
            if not phonenumbers.is_valid_number(number):
                raise IdentifierError("not a valid number")
            value = str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
        elif kind == "card":
            value = normalise_card(value)
        else:
            value = normalise_email(value)
    except (IdentifierError, phonenumbers.NumberParseException):
        raise BadRequest(f"That is not a {kind} the hub can look up (phone numbers in E.164).",
                         code="bad_lookup") from None
    return kind, value


def member_subject(db: HubDB, hub_key: SigningKey, token: str, now: float) -> str | None:
    """The customer a member code names, if a chain key signed it (the hub's own, or an app
    key given with `edge-hub keys add`, not revoked) and it is current.

    Never a store's key: a store key does not vouch for who a shopper is.
    """

    def chain_key(kid: str) -> Ed25519PublicKey | None:
        if kid == hub_key.kid:
            return hub_key.private.public_key()
        if store_of_kid(kid) is not None:
            return None
        with db.read() as conn:
            if conn.execute(select(revoked_keys.c.kid)
                            .where(revoked_keys.c.kid == kid)).first() is not None:
                return None
            text = conn.execute(select(chain_keys.c.jwk)
                                .where(chain_keys.c.kid == kid)).scalar()
        return None if text is None else public_key_from_jwk(json.loads(text))

    try:
        claims, _kid = verify_compact(token, MEMBER_TYP, chain_key)
    except (TokenRejected, ValueError):
        return None
    sub, iat, exp = claims.get("sub"), claims.get("iat"), claims.get("exp")
    if not isinstance(sub, str) or not sub or not all(
            isinstance(t, int | float) and not isinstance(t, bool) for t in (iat, exp)):
        return None
    assert isinstance(iat, int | float) and isinstance(exp, int | float)
    if exp - iat > MEMBER_MAX_LIFE_S or iat > now + CLOCK_SKEW_S or now - CLOCK_SKEW_S >= exp:
        return None
    return sub


class ThrottleLog:
    """Audit rows for throttled look-ups, one per store and kind per second.

    A rogue store firing thousands of look-ups a minute must not cost the hub a durable
    write each: the refusals are counted here and written within a second (and at exit).
    """

    def __init__(self, db: HubDB, every_s: float = 1.0) -> None:
        self.db = db
        self.every_s = every_s
        self._pending: dict[tuple[str, str], list[float]] = {}  # -> [first ts, count]
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        atexit.register(self.flush)

    def note(self, store_id: str, kind: str, now: float) -> None:
        with self._lock:
            entry = self._pending.setdefault((store_id, kind), [now, 0])
            entry[1] += 1
            if self._timer is None:
                self._timer = threading.Timer(self.every_s, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending, self._timer = self._pending, {}, None
        if pending:
            with self.db.write() as conn:
                conn.execute(lookup_audit.insert(), [
                    {"ts": ts, "store_id": store, "kind": kind, "outcome": "throttled",
                     "customer_id": None, "count": int(n)}
                    for (store, kind), (ts, n) in sorted(pending.items())])


def _window(conn: Connection, store_id: str, now: float) -> tuple[int, float | None]:
    """Look-ups the limit counts in the last minute, and the oldest one's time."""
    row = conn.execute(
        select(func.count(), func.min(lookup_audit.c.ts))
        .where(lookup_audit.c.store_id == store_id)
        .where(lookup_audit.c.outcome.in_(_COUNTED))
        .where(lookup_audit.c.ts > now - _WINDOW_S)).one()
    return int(row[0]), row[1]


def online_lookup(db: HubDB, settings: HubSettings, hub_key: SigningKey, store_id: str,
                  body: Any, throttle_log: ThrottleLog | None = None,
                  now: float | None = None) -> dict[str, Any]:
    """`{"customer": record}` for the caller's region; raises 400/404/429 (audited)."""
    now = time.time() if now is None else now
    problem: BadRequest | None = None
    kind, value = "bad", ""
    try:
        kind, value = _parse_request(body)
    except BadRequest as exc:
        problem = exc
    audit_kind = kind if kind in (*LOOKUP_KINDS, "member") else "bad"
    limit = settings.lookup_per_minute
    # Past the limit already: refused without taking the write lock (the flood's path).
    with db.read() as conn:
        count, oldest = _window(conn, store_id, now)
    if count >= limit:
        return _throttled(db, throttle_log, store_id, audit_kind, now, oldest)
    sub = member_subject(db, hub_key, value, now) if kind == "member" else None
    if kind == "member" and sub is None and problem is None:
        problem = BadRequest("That member code was not signed by the chain or has expired.",
                             code="bad_member_code")
    outcome, record, customer_id = "bad", None, None
    with db.write() as conn:
        if conn.dialect.name == "postgresql":
            # Hub processes count one store's look-ups one at a time.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%(k)s))",
                                 {"k": f"lookup:{store_id}"})
        count, oldest = _window(conn, store_id, now)
        if count >= limit:
            outcome = "throttled"
        elif problem is None:
            if kind == "member":
                if sub is not None and conn.execute(
                        select(customers.c.id).where(customers.c.id == sub)).first():
                    customer_id = sub
            else:
                digest = index_digest(_index_key(conn), kind, value)
                customer_id = conn.execute(select(customer_index.c.customer_id)
                                           .where(customer_index.c.digest == digest)).scalar()
            outcome = "found" if customer_id else "not_found"
            if customer_id:
                region = store_region(conn, store_id)
                assert region is not None  # an authenticated store has a region
                record_sightings(conn, region, [customer_id], now)
                record = customer_records(conn, [customer_id],
                                          region_bundle(conn, region)).get(customer_id)
        if outcome != "throttled":
            conn.execute(lookup_audit.insert().values(
                ts=now, store_id=store_id, kind=audit_kind, outcome=outcome,
                customer_id=customer_id, count=1))
    if outcome == "throttled":
        return _throttled(db, throttle_log, store_id, audit_kind, now, oldest)
    if problem is not None:
        raise problem
    if record is None:
        raise NotFound("No customer of this chain has that identifier.",
                       code="customer_unknown")
    return {"customer": record}


def _throttled(db: HubDB, throttle_log: ThrottleLog | None, store_id: str, kind: str,
               now: float, oldest: float | None) -> dict[str, Any]:
    if throttle_log is not None:
        throttle_log.note(store_id, kind, now)
    else:
        with db.write() as conn:
            conn.execute(lookup_audit.insert().values(
                ts=now, store_id=store_id, kind=kind, outcome="throttled", count=1))
    raise TooManyLookups(max(1, math.ceil((oldest or now) + _WINDOW_S - now)))


def audit_report(db: HubDB, store_id: str | None = None, since_minutes: int | None = None,
                 now: float | None = None) -> dict[str, Any]:
    """Online look-ups per store and outcome (optionally one store, the last N minutes)."""
    now = time.time() if now is None else now
    query = (select(lookup_audit.c.store_id, lookup_audit.c.outcome,
                    func.sum(lookup_audit.c.count))
             .group_by(lookup_audit.c.store_id, lookup_audit.c.outcome))
    if store_id is not None:
        query = query.where(lookup_audit.c.store_id == store_id)
    if since_minutes is not None:
        query = query.where(lookup_audit.c.ts >= now - since_minutes * 60.0)
    out: dict[str, dict[str, int]] = {}
    with db.read() as conn:
        for row in conn.execute(query):
            out.setdefault(str(row[0]), {})[str(row[1])] = int(row[2])
    return {"stores": {s: {"total": sum(c.values()), **dict(sorted(c.items()))}
                       for s, c in sorted(out.items())},
            "since_minutes": since_minutes}
