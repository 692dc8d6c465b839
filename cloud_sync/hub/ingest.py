"""Event batches from the stores' outboxes: validated whole, stored once, in one transaction.

A batch is all or nothing: one invalid event refuses the batch (400 `bad_events`, listing
each bad event by index so the edge can dead-letter exactly those and resend the rest) and
nothing of it is stored. Events are deduplicated on `event_id`, so a batch sent again after
a lost answer has its effect once. The edge's queue report is never a reason to refuse a
batch: what of it is unusable is left out (a store whose clock stepped back reports negative
ages), and an `occurred_at` in the future is stored as the edge said it (`received_ts` is
the hub's own). `coupon.redeemed` events feed the chain-wide redemption ledger, which is
where offline double spends across stores are detected (docs/sync.md).

The hub believes its own records over a store's claims: a redemption changes what other
stores see (the feed) and what counts as a double spend (the conflicts) only when the
coupon the store sent verifies against a key the hub trusts for that coupon, and its use
limit always comes from the hub (what it issued, the campaign, a chain-signed token).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, select, update

from cloud_sync.hub.changelog import append_changes
from cloud_sync.hub.db import HubDB, ListQuery, insert_new
from cloud_sync.hub.schema import (
    campaigns,
    chain_keys,
    conflicts,
    events,
    issued_coupons,
    redemptions,
    retired_stores,
    revoked_keys,
    stores,
    suspect_redemptions,
)
from cloud_sync.hub.settings import HubSettings
from cloud_sync.hub.shoppers import TYPES as SHOPPER_TYPES
from cloud_sync.hub.shoppers import apply_shopper_changes
from store_contract.campaigns import MAX_USES, RECEIPT_COUPON_PREFIX
from store_contract.errors import BadRequest, EdgeError
from store_contract.events import (
    EVENT_TYPES,
    BadEvent,
    CouponRedeemed,
    CouponRedemptionReversed,
    TransactionCompleted,
)
from store_contract.jws import (
    COUPON_TYP,
    SigningKey,
    TokenRejected,
    public_key_from_jwk,
    store_of_kid,
    verify_compact,
)
from store_contract.protocol import ID_RE, parse_ts

EVENT_ID_RE = re.compile(r"^[A-Za-z0-9-]{8,64}\Z")
# Plain campaign codes (SAVE10) are shared by everybody: many uses are the point.
SHARED_CODE_PREFIX = "code:"
_COUNT_MAX = 2**31 - 1  # an Integer column on PostgreSQL
_AGE_MAX_S = 100 * 366 * 86400.0  # older than a century is no clock, it is noise


class BatchTooLarge(EdgeError):
    code = "batch_too_large"
    status = 413
    default_message = "The batch is too large; send fewer events at a time."


@dataclass(frozen=True)
class Event:
    """One validated event, with the typed columns copied out of its data."""

    event_id: str
    type: str
    occurred_at: str
    occurred_ts: float
    device_id: str | None
    data: dict[str, Any]
    customer_id: str | None
    total_minor: int | None
    discount_minor: int | None
    currency: str | None
    coupon_id: str | None


_Bad = BadEvent  # one event's first problem, as `field: reason`


def _ts(value: Any, name: str) -> float:
    try:
        return parse_ts(value).timestamp()
    except ValueError:
        raise _Bad(f"{name}: not an RFC 3339 time with a zone, e.g. 2026-11-22T14:03:05.120Z"
                   ) from None


def parse_event(obj: Any, store_id: str) -> Event:
    """Validate one event of `store_id`'s batch; raises _Bad with the first problem."""
    if not isinstance(obj, dict):
        raise _Bad("not a JSON object")
    event_id = obj.get("event_id")
    if not isinstance(event_id, str) or not EVENT_ID_RE.match(event_id):
        raise _Bad("event_id: missing or not 8-64 of letters, digits and '-'")
    type_ = obj.get("type")
    if not isinstance(type_, str) or type_ not in EVENT_TYPES:
        raise _Bad(f"type: {type_!r} is not an event type")
    occurred_ts = _ts(obj.get("occurred_at"), "occurred_at")
    if obj.get("store_id") != store_id:
        raise _Bad(f"store_id: {obj.get('store_id')!r} is not this batch's store {store_id}")
    device_id = obj.get("device_id")
    if device_id is not None and (not isinstance(device_id, str) or not ID_RE.match(device_id)):
        raise _Bad("device_id: not a device id")
    data = obj.get("data")
    if not isinstance(data, dict):
        raise _Bad("data: not a JSON object")
    # The type's own checks (store_contract.events); keys it does not name are accepted,
    # and the data is stored as the edge sent it. What the hub files comes from the checked
    # fields, without building the event (a connector builds it with `from_data`).
    kind = EVENT_TYPES[type_]
    checked = kind.check(data)
    total = checked.get("total_minor") if kind is TransactionCompleted else None
    discount = checked.get("discount_minor") if kind in _PRICED else None
    currency = checked.get("currency") if kind in _PRICED else None
    coupon = checked.get("coupon") if kind in _OF_A_COUPON else None
    return Event(event_id, type_, obj["occurred_at"], occurred_ts, device_id, data,
                 kind.customer_in(data, checked), total, discount, currency, coupon)


_PRICED = (CouponRedeemed, TransactionCompleted)
_OF_A_COUPON = (CouponRedeemed, CouponRedemptionReversed)


def validate_batch(settings: HubSettings, store_id: str, body: Any) -> tuple[str, list[Event],
                                                                             dict[str, Any]]:
    """The batch id, its events and the edge's queue report; raises 400/413 otherwise."""
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object with batch_id and events.",
                         code="bad_batch")
    batch_id = body.get("batch_id")
    if not isinstance(batch_id, str) or not 0 < len(batch_id) <= 64:
        raise BadRequest("batch_id must be text of 1-64 characters.", code="bad_batch")
    raw = body.get("events")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("events must be a non-empty list.", code="bad_batch")
    if len(raw) > settings.max_batch_events:
        raise BatchTooLarge(f"A batch holds at most {settings.max_batch_events} events; this "
                            f"one has {len(raw)}.",
                            detail={"max_events": settings.max_batch_events})
    report = _edge_report(body.get("edge"))
    parsed: list[Event] = []
    rejected: list[dict[str, Any]] = []
    for index, obj in enumerate(raw):
        try:
            parsed.append(parse_event(obj, store_id))
        except _Bad as exc:
            eid = obj.get("event_id") if isinstance(obj, dict) else None
            rejected.append({"index": index, "event_id": eid if isinstance(eid, str) else None,
                             "error": str(exc)})
    if rejected:
        raise BadRequest(f"{len(rejected)} of {len(raw)} events are not valid; nothing of "
                         "this batch was stored.", code="bad_events",
                         detail={"rejected": rejected})
    return batch_id, parsed, report


def _edge_report(edge: Any) -> dict[str, Any]:
    """The edge's queue figures (our extension), as far as they are usable.

    They only describe the batch, so they never cost it its events: a figure that is not a
    number in range is left out (the stored one stays), and a negative age (the edge's clock
    stepped back since it queued the oldest event) counts as 0.
    """
    if not isinstance(edge, dict):
        return {}
    out: dict[str, Any] = {}
    for key in ("queue_depth", "dead_letters"):
        value = edge.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _COUNT_MAX:
            out[key] = value
    age = edge.get("oldest_age_s")
    if age is None:
        out["oldest_age_s"] = None  # nothing waiting
    elif isinstance(age, int | float) and not isinstance(age, bool) and math.isfinite(age) \
            and age <= _AGE_MAX_S:
        out["oldest_age_s"] = max(0.0, float(age))
    return out


def ingest(db: HubDB, settings: HubSettings, store_id: str, body: Any,
           hub_key: SigningKey | None = None) -> dict[str, Any]:
    """Store one batch of `store_id`'s events (see the module doc); the 200 answer.
    `hub_key`: the hub's signing key, to believe redemptions of coupons it signed."""
    batch_id, parsed, report = validate_batch(settings, store_id, body)
    now = time.time()
    # Within the batch the first copy of an id counts; later copies are duplicates.
    unique: dict[str, Event] = {}
    repeats: list[str] = []
    for ev in parsed:
        if ev.event_id in unique:
            repeats.append(ev.event_id)
        else:
            unique[ev.event_id] = ev
    # Sorted: concurrent batches on PostgreSQL then take row locks in one order.
    rows = [{"event_id": ev.event_id, "store_id": store_id, "type": ev.type,
             "occurred_at": ev.occurred_at, "occurred_ts": ev.occurred_ts,
             "device_id": ev.device_id, "customer_id": ev.customer_id,
             "total_minor": ev.total_minor, "discount_minor": ev.discount_minor,
             "currency": ev.currency, "coupon_id": ev.coupon_id,
             "data": json.dumps(ev.data, separators=(",", ":"), ensure_ascii=False),
             "batch_id": batch_id, "received_ts": now}
            for ev in sorted(unique.values(), key=lambda e: e.event_id)]
    with db.write() as conn:
        inserted = insert_new(conn, events, rows, "event_id")
        missed = [eid for eid in unique if eid not in inserted]
        owners: dict[str, str] = {}
        if missed:
            owners = dict(conn.execute(select(events.c.event_id, events.c.store_id)
                                       .where(events.c.event_id.in_(missed))).all())
        accepted = [eid for eid in unique if eid in inserted]
        duplicates = [eid for eid in missed if owners.get(eid) == store_id] + repeats
        rejected = [{"event_id": eid, "error": "event_id_taken"}
                    for eid in missed if owners.get(eid) != store_id]
        values: dict[str, Any] = {"last_contact_ts": now, "last_batch_ts": now}
        if report:
            values.update(report, reported_ts=now)
        # Its name (other stores' cashiers say "already used at Harbour Street") and region
        # (where the customers it sees go) come back with the update: no extra round trip.
        row = conn.execute(update(stores).where(stores.c.id == store_id).values(**values)
                           .returning(stores.c.name, stores.c.region)).first()
        name, region = (str(row[0]), row[1]) if row is not None else (store_id, None)
        new = [unique[eid] for eid in accepted]
        _apply_redemptions(conn, store_id, name, new, now, hub_key)
        if any(ev.type in SHOPPER_TYPES for ev in new):
            apply_shopper_changes(conn, _Keyring(conn, hub_key), store_id, region, new, now)
        # After the redemptions: a first sighting appends to the feed, which on PostgreSQL
        # holds the feed's lock until commit.
        _record_sightings(conn, region, new, now)
    return {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}


def _record_sightings(conn: Connection, region: str | None, new: list[Event], now: float) -> None:
    """Customers a store of `region` identified or sold to: their record now goes there."""
    from cloud_sync.hub.lookups import SIGHTING_EVENTS, record_sightings

    if region is not None:
        record_sightings(conn, region, [ev.customer_id for ev in new
                                        if ev.type in SIGHTING_EVENTS and ev.customer_id], now)


class _Keyring:
    """The keys the hub trusts, by kid, read once per batch: chain keys (its own, the app's)
    and each store's current key (not revoked, store not retired) with the store it binds
    to."""

    def __init__(self, conn: Connection, hub_key: SigningKey | None) -> None:
        self.conn = conn
        self.hub_key = hub_key
        self._found: dict[str, tuple[Ed25519PublicKey, str | None] | None] = {}
        self._offers: dict[str, bool] = {}

    def get(self, kid: str) -> tuple[Ed25519PublicKey, str | None] | None:
        """(public key, store it binds to or None for a chain key), or None: not trusted."""
        if kid not in self._found:
            self._found[kid] = self._look_up(kid)
        return self._found[kid]

    def is_offer(self, campaign_id: str) -> bool:
        """Did the hub mark this campaign as a receipt offer (what a store key may sign)?"""
        if campaign_id not in self._offers:
            record = self.conn.execute(select(campaigns.c.record)
                                       .where(campaigns.c.id == campaign_id)).scalar()
            self._offers[campaign_id] = record is not None and \
                json.loads(record).get("offer") is True
        return self._offers[campaign_id]

    def public(self, kid: str) -> Ed25519PublicKey | None:
        found = self.get(kid)
        return found[0] if found else None

    def _look_up(self, kid: str) -> tuple[Ed25519PublicKey, str | None] | None:
        if self.hub_key is not None and kid == self.hub_key.kid:
            return self.hub_key.private.public_key(), None
        store_id = store_of_kid(kid)
        revoked = self.conn.execute(select(revoked_keys.c.kid)
                                    .where(revoked_keys.c.kid == kid)).first()
        if store_id is None:
            chain = self.conn.execute(select(chain_keys.c.jwk)
                                      .where(chain_keys.c.kid == kid)).scalar()
            return None if chain is None or revoked is not None else \
                (public_key_from_jwk(json.loads(chain)), None)
        text = self.conn.execute(
            select(stores.c.public_jwk).where(stores.c.id == store_id)
            .where(stores.c.id.not_in(select(retired_stores.c.store_id)))).scalar()
        if not text or revoked is not None:
            return None
        jwk = json.loads(text)
        return (public_key_from_jwk(jwk), store_id) if jwk.get("kid") == kid else None


def _believe(keyring: _Keyring, issued: dict[str, tuple[int, str | None]], ev: Event
             ) -> tuple[int, str | None]:
    """(uses the coupon allows, None) when the hub believes this redemption, else
    (1, why not). Believed means: the coupon the store sent (`data.token`) verifies against
    a key the hub trusts for that coupon and names this coupon and campaign. The number of
    uses comes from the hub's own records (what it issued, the campaign, or the claims of a
    chain-signed token), never from what the store wrote beside it."""
    token = ev.data.get("token")
    if not isinstance(token, str) or not token:
        return 1, "no_token"
    record = issued.get(str(ev.coupon_id))
    if record is not None and record[1] is not None and \
            hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), record[1]):
        return record[0], None  # exactly the token the hub signed: no need to check it again
    try:
        claims, kid = verify_compact(token, COUPON_TYP, keyring.public)
    except TokenRejected as exc:
        return 1, exc.reason
    if claims.get("jti") != ev.coupon_id or claims.get("cmp") != ev.data.get("campaign"):
        return 1, "token_mismatch"
    signer = keyring.get(kid)
    assert signer is not None
    store_id = signer[1]
    if store_id is not None:
        # A store key signs only its own receipt offers, each good for one use.
        if not keyring.is_offer(ev.data["campaign"]) or \
                not str(ev.coupon_id).startswith(f"{RECEIPT_COUPON_PREFIX}{store_id}:"):
            return 1, "key_scope"
        return 1, None
    if record is not None:
        return record[0], None
    claimed = claims.get("max", 1)
    if isinstance(claimed, bool) or not isinstance(claimed, int) or not 0 < claimed <= MAX_USES:
        return 1, "claims"
    return claimed, None


def _apply_redemptions(conn: Connection, store_id: str, store_name: str, new: list[Event],
                       now: float, hub_key: SigningKey | None) -> None:
    """The new events' effect on the redemption ledger, the feed and the conflicts.

    Every redemption is kept (the store's own figures); one the hub does not believe (see
    `_believe`) is also listed in `suspect_redemptions` and has no effect on other stores:
    it is not sent to them as a use and does not count towards a conflict.
    """
    redeemed = [ev for ev in new if ev.type == "coupon.redeemed"]
    reversed_ = [ev for ev in new if ev.type == "coupon.redemption_reversed"]
    if not redeemed and not reversed_:
        return
    keyring = _Keyring(conn, hub_key)
    # The `max` of the coupons the hub issued, for the whole batch at once.
    wanted = sorted({ev.coupon_id for ev in redeemed if ev.coupon_id})
    issued: dict[str, tuple[int, str | None]] = {
        row.id: (int(row.max_uses), row.token_sha256) for row in _ISSUED(conn, wanted)
    } if wanted else {}
    feed: list[dict[str, Any]] = []
    ledger = []
    suspect: dict[str, dict[str, Any]] = {}
    for ev in redeemed:
        d = ev.data
        assert ev.coupon_id is not None
        shared = ev.coupon_id.startswith(SHARED_CODE_PREFIX)
        max_uses, doubt = (1, None) if shared else _believe(keyring, issued, ev)
        ledger.append({"id": d["redemption"], "event_id": ev.event_id, "store_id": store_id,
                       "coupon_id": ev.coupon_id, "campaign_id": d["campaign"],
                       "customer_id": ev.customer_id, "max_uses": max_uses,
                       "discount_minor": ev.discount_minor, "currency": ev.currency,
                       "redeemed_at": ev.occurred_at, "redeemed_ts": ev.occurred_ts})
        if doubt is not None:
            suspect[d["redemption"]] = {
                "id": d["redemption"], "event_id": ev.event_id, "store_id": store_id,
                "coupon_id": ev.coupon_id, "campaign_id": d["campaign"], "reason": doubt,
                "redeemed_at": ev.occurred_at, "received_ts": now}
    if ledger:
        got = insert_new(conn, redemptions, ledger, "id")
        insert_new(conn, suspect_redemptions, [r for rid, r in suspect.items() if rid in got],
                   "id")
        # Plain campaign codes are shared by everybody: other stores need not hear of them.
        feed += [{"redemption": {"id": r["id"], "coupon": r["coupon_id"],
                                 "campaign": r["campaign_id"], "store_id": store_id,
                                 "store_name": store_name, "redeemed_at": r["redeemed_at"]}}
                 for r in ledger if r["id"] in got and r["id"] not in suspect
                 and not r["coupon_id"].startswith(SHARED_CODE_PREFIX)]
    for ev in reversed_:
        row = conn.execute(
            update(redemptions)
            .where(redemptions.c.id == ev.data["redemption"])
            .where(redemptions.c.store_id == store_id)
            .where(redemptions.c.reversed_at.is_(None))
            .values(reversed_at=ev.occurred_at)
            .returning(redemptions.c.id, redemptions.c.coupon_id, redemptions.c.campaign_id,
                       redemptions.c.redeemed_at)).first()
        if row is not None and not row[1].startswith(SHARED_CODE_PREFIX) and conn.execute(
                select(suspect_redemptions.c.id)
                .where(suspect_redemptions.c.id == row[0])).first() is None:
            feed.append({"redemption": {"id": ev.data["redemption"], "coupon": row[1],
                                        "campaign": row[2], "store_id": store_id,
                                        "store_name": store_name, "redeemed_at": row[3],
                                        "reversed_at": ev.occurred_at}})
    touched = sorted({ev.coupon_id for ev in redeemed + reversed_
                      if ev.coupon_id and not ev.coupon_id.startswith(SHARED_CODE_PREFIX)})
    check_conflicts(conn, touched, now)
    # Last: appending to the feed serialises writers on PostgreSQL until commit.
    append_changes(conn, [("redemption", c["redemption"]["id"], c, None) for c in feed], now)


# The statements each batch runs, made once (see ListQuery).
_ISSUED = ListQuery(lambda in_list: select(
    issued_coupons.c.id, issued_coupons.c.max_uses, issued_coupons.c.token_sha256)
    .where(in_list(issued_coupons.c.id)))
# Uses that count: not reversed, and believed (not in suspect_redemptions).
_LIVE_USES = ListQuery(lambda in_list: select(
    redemptions.c.coupon_id, redemptions.c.id, redemptions.c.store_id,
    redemptions.c.campaign_id, redemptions.c.max_uses)
    .where(in_list(redemptions.c.coupon_id))
    .where(redemptions.c.reversed_at.is_(None))
    .where(~select(suspect_redemptions.c.id)
           .where(suspect_redemptions.c.id == redemptions.c.id).exists())
    .order_by(redemptions.c.redeemed_ts, redemptions.c.id))
_CONFLICTS = ListQuery(lambda in_list: select(conflicts).where(in_list(conflicts.c.coupon_id)))


def check_conflicts(conn: Connection, coupon_ids: list[str], now: float) -> None:
    """Record (or resolve) coupons used more often than their `max` across the chain."""
    if not coupon_ids:
        return
    if conn.dialect.name == "postgresql":
        # Two stores' batches for one coupon may commit at once: whoever counts second
        # waits here and then sees the other's redemption (READ COMMITTED re-reads).
        # Locks taken in one (sorted) order, so two batches never wait on each other.
        conn.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtext(c) AS k "
            "FROM unnest(%(ids)s::text[]) AS c ORDER BY 1) AS locks", {"ids": coupon_ids})
    live: dict[str, list[Any]] = defaultdict(list)
    for row in _LIVE_USES(conn, coupon_ids):
        live[row.coupon_id].append(row)
    known = {row.coupon_id: row for row in _CONFLICTS(conn, coupon_ids)}
    for cid in coupon_ids:
        rows = live.get(cid, [])
        old = known.get(cid)
        max_uses = max((r.max_uses for r in rows), default=old.max_uses if old else 1)
        uses = len(rows)
        if uses > max_uses:
            values = {"campaign_id": rows[0].campaign_id, "max_uses": max_uses, "uses": uses,
                      "stores": json.dumps(sorted({r.store_id for r in rows})),
                      "redemptions": json.dumps([r.id for r in rows]),
                      "updated_ts": now, "resolved_ts": None}
            if old is None:
                conn.execute(conflicts.insert().values(coupon_id=cid, detected_ts=now,
                                                       **values))
            else:
                conn.execute(update(conflicts).where(conflicts.c.coupon_id == cid)
                             .values(**values))
        elif old is not None and (old.resolved_ts is None or old.uses != uses):
            conn.execute(update(conflicts).where(conflicts.c.coupon_id == cid).values(
                uses=uses, redemptions=json.dumps([r.id for r in rows]), updated_ts=now,
                resolved_ts=old.resolved_ts or now))
