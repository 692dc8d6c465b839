"""What a store's kiosk tells the hub about a shopper's own account: a coupon clipped to
their wallet (`offer.clipped`) and a change of their consent (`consent.changed`).

The hub is the CRM: it writes the change into the customer's record and sends the record
again to every region that holds it, so the app, the tills and the other stores see the same
wallet and the same consent (docs/sync.md §1.1, "A shopper's own changes").

Least trust (one store box may be in the wrong hands): a store is believed only

- about shoppers the hub sent to its region (it could not have identified anyone else);
- with a coupon its own key signed for that shopper, of a campaign the hub made a receipt
  offer (what a store key may sign), not yet expired;
- for a consent "yes" only with the app's member code the shopper identified with (signed
  by a chain key, naming them, current at the time of the change). A "no" needs no proof.

Anything else is filed like every event (the store's own figures) and changes nothing; the
hub logs the store, the event id and the reason, never the shopper.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, select, update

from cloud_sync.hub.lookups import CLOCK_SKEW_S, append_customer_changes
from cloud_sync.hub.schema import customer_regions, customers
from store_contract.campaigns import RECEIPT_COUPON_PREFIX
from store_contract.customers import CONSENTS, text_values
from store_contract.events import ConsentChanged, OfferClipped
from store_contract.jws import COUPON_TYP, MEMBER_TYP, TokenRejected, verify_compact

log = logging.getLogger(__name__)

# How long after its member code expired a shopper may still be changing their consent at a
# kiosk (the code is checked once, when they identify; a visit can last this long).
PROOF_GRACE_S = 1800.0
# How late a store may send a "yes" with its proof (a store offline that long still counts);
# past it, a member code the store once saw proves nothing.
PROOF_SENT_WITHIN_S = 7 * 86400.0
# The most coupons a wallet holds; the oldest go first (expired ones always go).
WALLET_MAX = 50
TYPES = (OfferClipped.TYPE, ConsentChanged.TYPE)


class Keys(Protocol):
    """The keys the hub trusts (`cloud_sync.hub.ingest._Keyring`)."""

    def get(self, kid: str) -> tuple[Ed25519PublicKey, str | None] | None: ...

    def public(self, kid: str) -> Ed25519PublicKey | None: ...

    def is_offer(self, campaign_id: str) -> bool: ...


class Event(Protocol):
    """One validated event (`cloud_sync.hub.ingest.Event`): what is read of it here."""

    @property
    def event_id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def occurred_ts(self) -> float: ...

    @property
    def customer_id(self) -> str | None: ...

    @property
    def data(self) -> dict[str, Any]: ...


def apply_shopper_changes(conn: Connection, keys: Keys, store_id: str, region: str | None,
                          new: Iterable[Event], now: float) -> dict[str, str]:
    """Apply a batch's new `offer.clipped` and `consent.changed` events to the customers'
    records, in the order they happened, and send the changed records to their regions.
    The events that changed nothing (or not all they asked), with the reason."""
    mine = sorted((ev for ev in new if ev.type in TYPES),
                  key=lambda ev: (ev.occurred_ts, ev.event_id))
    if not mine:
        return {}
    ids = sorted({ev.customer_id for ev in mine if ev.customer_id})
    held: set[str] = set()
    if region is not None and ids:
        held = set(conn.execute(select(customer_regions.c.customer_id)
                                .where(customer_regions.c.region == region)
                                .where(customer_regions.c.customer_id.in_(ids))).scalars())
    # Locked on PostgreSQL: two stores' batches for one shopper apply one after the other.
    stored = {row.id: row.record for row in conn.execute(
        select(customers.c.id, customers.c.record).where(customers.c.id.in_(sorted(held)))
        .order_by(customers.c.id).with_for_update())} if held else {}
    records = {cid: json.loads(text) for cid, text in stored.items()}
    refused: dict[str, str] = {}
    for ev in mine:
        record = records.get(ev.customer_id or "")
        if record is None:
            why: str | None = "not_held"
        elif ev.type == OfferClipped.TYPE:
            why = _clip(keys, store_id, ev, record, now)
        else:
            why = _consent(keys, store_id, ev, record, now)
        if why is not None:
            refused[ev.event_id] = why
            log.warning("store %s: %s %s not applied in full: %s", store_id, ev.type,
                        ev.event_id, why)
    changed = sorted(cid for cid, rec in records.items() if rec != json.loads(stored[cid]))
    if changed:
        for cid in changed:
            conn.execute(update(customers).where(customers.c.id == cid).values(
                record=json.dumps(records[cid], separators=(",", ":"), ensure_ascii=False),
                updated_ts=now))
        pairs = [(row.customer_id, row.region) for row in conn.execute(
            select(customer_regions.c.customer_id, customer_regions.c.region)
            .where(customer_regions.c.customer_id.in_(changed)))]
        append_customer_changes(conn, pairs, now)
    return refused


def _clip(keys: Keys, store_id: str, ev: Event, record: dict[str, Any],
          now: float) -> str | None:
    """Put the clipped coupon in the record's wallet; None, or why not."""
    token = ev.data.get("token")
    if not isinstance(token, str) or not token:
        return "no_token"
    try:
        claims, kid = verify_compact(token, COUPON_TYP, keys.public)
    except TokenRejected as exc:
        return f"token_{exc.reason}"
    signer = keys.get(kid)
    if signer is None or signer[1] != store_id:
        return "key_scope"  # a kiosk clips its own store's offers, signed with its own key
    coupon, campaign = ev.data["coupon"], ev.data["campaign"]
    if claims.get("jti") != coupon or claims.get("cmp") != campaign or \
            claims.get("sub") != ev.customer_id:
        return "token_mismatch"
    if not coupon.startswith(f"{RECEIPT_COUPON_PREFIX}{store_id}:") or \
            not keys.is_offer(campaign):
        return "key_scope"
    expires = _expiry(claims)
    if expires is None or expires <= now:
        return "expired"
    wallet = [t for t in text_values(record, "coupon", "wallet") if t.strip() != token]
    # Expired coupons leave the wallet as it is written anyway; the newest stay.
    kept = [t for t in wallet if (_peek_expiry(t) or now + 1) > now]
    record.pop("coupon", None)
    record["wallet"] = (kept + [token])[-WALLET_MAX:]
    return None


def _consent(keys: Keys, store_id: str, ev: Event, record: dict[str, Any],
             now: float) -> str | None:
    """Apply a consent change to the record: every "no", and a "yes" with its proof; None,
    "stale" (a later change is already applied), or why its "yes"es were not taken. When it
    happened is the store's word, but never later than now: a store that dates a change in
    the future cannot make every later change look older."""
    at = min(ev.occurred_ts, now)
    if at < float(record.get("consent_changed_ts") or 0.0):
        return "stale"
    before = {k: bool((record.get("consent") or {}).get(k, False)) for k in CONSENTS}
    # Only the flags the shopper moved (`changed`, when the store says): the others are the
    # store's copy, which may be older than a change made in the app meanwhile.
    moved = ev.data.get("changed")
    wanted = {k: bool(v) for k, v in ev.data["consent"].items() if k in CONSENTS and (
        not isinstance(moved, list) or k in moved)}
    grants = [k for k, v in wanted.items() if v and not before[k]]
    why = None
    if grants and not _proven(keys, ev, now):
        wanted = {k: v for k, v in wanted.items() if k not in grants}
        why = "yes_without_member_code"
    record["consent"] = {**before, **wanted}
    record["consent_changed_ts"] = at
    record["consent_changed_by"] = store_id
    return why


def _proven(keys: Keys, ev: Event, now: float) -> bool:
    """Does the change carry the app's member code of this shopper, current when it was made
    (within the grace of a kiosk visit), sent within PROOF_SENT_WITHIN_S of its expiry? Only
    a chain key vouches for who a shopper is."""
    proof = ev.data.get("proof")
    if not isinstance(proof, str):
        return False

    def chain_key(kid: str) -> Ed25519PublicKey | None:
        found = keys.get(kid)
        return found[0] if found is not None and found[1] is None else None

    try:
        claims, _kid = verify_compact(proof, MEMBER_TYP, chain_key)
    except TokenRejected:
        return False
    iat, expires = claims.get("iat"), _expiry(claims)
    if claims.get("sub") != ev.customer_id or expires is None or \
            not isinstance(iat, int | float) or isinstance(iat, bool):
        return False
    return iat - CLOCK_SKEW_S <= ev.occurred_ts <= expires + PROOF_GRACE_S and \
        now <= expires + PROOF_SENT_WITHIN_S


def _expiry(claims: dict[str, Any]) -> float | None:
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _peek_expiry(token: str) -> float | None:
    """A wallet coupon's `exp`, read without checking its signature: only to drop coupons
    that have expired (the stores check each one they are sent)."""
    try:
        claims = jwt.decode(token.strip(), options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return _expiry(claims) if isinstance(claims, dict) else None
