"""The checkout: link the shopper to the sale, hold coupons for it, redeem them once.

A sale is known by the lane (`device_id`) and the POS's own transaction id (`txn`). Each
step is one SQLite write transaction through the store's single writer, so two lanes that
apply the same coupon at the same instant are decided one after the other: exactly one
gets the reservation. Every step is idempotent per sale, not just per request id, because
the reply cache does not survive a restart:

- applying a coupon the sale already holds returns the same reservation (refreshed);
- completing a completed sale returns the stored result of the first completion;
- voiding a voided sale returns the stored result of the first void.

`txn.complete` turns the sale's reservations into redemptions, re-pricing them on the final
basket, and writes the sale, its redemptions and their outbox events in one transaction:
after a crash either all of it is there or none of it is.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from edge.audit import VOID, Actor, record
from edge.basket import Pricing
from edge.codes import classify_code
from edge.coupons import CouponBook, CouponRefused
from edge.customers import (
    USABLE_IN_WALLET,
    Customer,
    customer_from_row,
    customer_of,
    find_by_hash,
    get_customer,
    upsert_customers,
)
from edge.hublink import HubLink
from edge.outbox import queue_event
from edge.receipts import Receipts
from edge.settings import Settings
from edge.spool import Spool
from edge.store import Store
from edge.tokens import TrustedKeys
from store_contract.basket import Basket
from store_contract.campaigns import Coupon
from store_contract.customers import (
    CustomerRecord,
    IdentifierError,
    Lookup,
    normalise_phone,
    parse_customer,
)
from store_contract.errors import BadRequest, EdgeError, Forbidden
from store_contract.events import (
    CouponRedeemed,
    CouponRedemptionReversed,
    CustomerIdentified,
    TransactionCompleted,
    TransactionVoided,
)
from store_contract.jws import COUPON_TYP, MEMBER_TYP, TokenRejected
from store_contract.protocol import format_ts, uuid7
from store_contract.wording import clock_time, moment

log = logging.getLogger(__name__)
# (kind, value, seconds left) -> the hub's customer record or None: the online look-up,
# which returns within the seconds it is given.
OnlineLookupFn = Callable[[str, str, float], dict[str, Any] | None]
TXN_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,64}\Z")
MEMBER_CODE_MAX_LIFE_S = 300


class CustomerUnknown(EdgeError):
    code = "customer_unknown"
    status = 404
    default_message = "No customer with this code, card or phone number is known here."


class TxnUnknown(EdgeError):
    code = "txn_unknown"
    status = 404
    default_message = "This store has no record of that sale."


@dataclass(frozen=True)
class Tender:
    kind: str
    amount_minor: int


@dataclass(frozen=True)
class Sale:
    """One row of `transactions`, as the checkout reads it."""

    device_id: str
    txn: str
    state: str
    customer_id: str | None
    identifier_kind: str | None
    identifier: str | None
    result: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Sale:
        return cls(row["device_id"], row["txn"], row["state"], row["customer_id"],
                   row["identifier_kind"], row["identifier"],
                   json.loads(row["result"]) if row["result"] else None)

    def holds_customer(self, customer_id: str) -> bool:
        """Is the shopper of this sale `customer_id`? A member code not yet in the cache
        still proves who the shopper is."""
        return self.customer_id == customer_id or (
            self.identifier_kind == "member" and self.identifier == customer_id)


def _now() -> float:
    return time.time()


def _lapsed(reservation: sqlite3.Row, now: float) -> bool:
    """A hold past its time: another lane may have taken the coupon since."""
    return bool(reservation["state"] == "expired" or reservation["expires_at"] <= now)


class Checkout:
    """The POS methods' domain: identify, apply, remove, complete, void."""

    def __init__(self, settings: Settings, store: Store, keys: TrustedKeys, book: CouponBook,
                 lookup: Lookup, hub: HubLink, receipts: Receipts, spool: Spool,
                 online_lookup: OnlineLookupFn | None = None) -> None:
        self.settings = settings
        self.online_lookup = online_lookup
        self.receipts = receipts
        self.spool = spool
        self.store = store
        self.keys = keys
        self.book = book
        self.lookup = lookup
        self.hub = hub
        self.clock = _now

    # ------------------------------------------------------------ helpers

    def _sale(self, conn: sqlite3.Connection, device: str, txn: str) -> Sale | None:
        row = conn.execute("SELECT * FROM transactions WHERE device_id = ? AND txn = ?",
                           (device, txn)).fetchone()
        return Sale.from_row(row) if row else None

    def _open_sale(self, conn: sqlite3.Connection, device: str, txn: str) -> Sale:
        """The sale, created on first use; only an open sale takes coupons."""
        sale = self._sale(conn, device, txn)
        if sale is None:
            conn.execute("INSERT INTO transactions (device_id, txn, state, opened_at) "
                         "VALUES (?, ?, 'open', ?)", (device, txn, self._ts()))
            sale = Sale(device, txn, "open", None, None, None, None)
        elif sale.state != "open":
            raise BadRequest(f"Sale {txn} is already {sale.state}; start a new sale.",
                             detail={"reason": "txn_closed", "state": sale.state})
        return sale

    def _ts(self, at: float | None = None) -> str:
        return format_ts(datetime.fromtimestamp(self.clock() if at is None else at, UTC))

    def _held(self, conn: sqlite3.Connection, device: str, txn: str) -> list[sqlite3.Row]:
        """The sale's coupons in the order they were applied, lapsed holds included."""
        return conn.execute(
            "SELECT rowid, * FROM reservations WHERE device_id = ? AND txn = ? AND "
            "state IN ('held', 'expired') ORDER BY rowid", (device, txn)).fetchall()

    # ------------------------------------------------------------ identify

    def identify(self, device: str, txn: str, code: str | None, phone: str | None
                 ) -> dict[str, Any]:
        """Link the shopper to the sale; their profile, wallet and offers."""
        started = time.monotonic()
        kind, value, customer, fetched, member = self._recognise(code, phone, started)
        with self.store.transaction() as db:
            conn = db.conn
            sale = self._sale(conn, device, txn)
            if sale is not None and sale.state == "voided":
                # A completed sale may still get its shopper (after_sale); a voided one not.
                raise BadRequest(f"Sale {txn} was voided; start a new sale.",
                                 detail={"reason": "txn_closed", "state": "voided"})
            if member is not None:
                self._use_member_code(conn, *member, device, txn)
            if fetched is not None:
                # Found at the hub: cached as if it had come through the feed.
                upsert_customers(db, [fetched], self.book.wallet_entry)
            if sale is None:
                conn.execute("INSERT INTO transactions (device_id, txn, state, opened_at) "
                             "VALUES (?, ?, 'open', ?)", (device, txn, self._ts()))
            customer_id = customer.id if customer else None
            # The same shopper scanned again (or the lane repeating itself after a restart)
            # is one identification, not two.
            if sale is None or (sale.customer_id, sale.identifier_kind, sale.identifier) != (
                    customer_id, kind, value):
                # Kept even when nobody matches, so the hub can link the sale later.
                conn.execute(
                    "UPDATE transactions SET customer_id = ?, identifier_kind = ?, "
                    "identifier = ? WHERE device_id = ? AND txn = ?",
                    (customer_id, kind, value, device, txn))
                queue_event(conn, CustomerIdentified(
                    txn=txn, customer_id=customer_id, method=kind,
                    identifier=None if customer else value,
                    after_sale=bool(sale and sale.state == "completed")), device_id=device)
        if customer is None:
            raise CustomerUnknown(detail={"method": kind})
        now = self.clock()
        return {"customer": customer.summary(), "wallet": self.wallet(customer.id, now),
                "offers": self.offers(customer, now)}

    def recognise(self, code: str | None, phone: str | None, *, device: str, visit: str
                  ) -> tuple[Customer, str]:
        """The shopper of a scanned code or typed phone number outside a sale (the kiosk):
        read exactly as `identify` reads them, a member code used once (for this
        `device` and `visit`: scanned again there it is the same identification), a
        customer found at the hub cached. (The customer, how: "member", "card" or
        "phone"); CustomerUnknown (its `reason`: "forged", "expired", "used", ...) or
        BadRequest when there is none."""
        _kind, _value, customer, fetched, member = self._recognise(code, phone,
                                                                   time.monotonic())
        if member is not None or fetched is not None:
            with self.store.transaction() as db:
                if member is not None:
                    self._use_member_code(db.conn, *member, device, visit)
                if fetched is not None:
                    upsert_customers(db, [fetched], self.book.wallet_entry)
        if customer is None:
            raise CustomerUnknown(detail={"method": _kind})
        return customer, _kind

    def _recognise(self, code: str | None, phone: str | None, started: float
                   ) -> tuple[str, str, Customer | None, CustomerRecord | None,
                              tuple[str, float] | None]:
        """(method, identifier kept on the sale, customer or None, the record when the hub
        found the customer, a member code's (jti, exp)) for a scanned code or a typed phone
        number."""
        if phone is not None:
            try:
                e164 = normalise_phone(phone, self.settings.country)
            except IdentifierError:
                raise BadRequest(f"That is not a valid phone number for "
                                 f"{self.settings.country}; type it with its +country code.",
                                 detail={"field": "phone"}) from None
            return self._by_identifier("phone", e164, started)
        assert code is not None
        # The one reading of a scanned code, shared with the staff checkout page.
        scanned = classify_code(code, self.settings.country)
        if scanned.kind in ("member", "coupon"):
            sub, jti, exp = self._member_code(code)
            return ("member", sub, *self._local_or_hub(
                get_customer(self.store, sub), "member", code.strip(), sub, started),
                (jti, exp))
        if scanned.kind not in ("phone", "card"):
            raise BadRequest("That is neither a member code, a loyalty-card number nor a "
                             "phone number.", detail={"field": "code"})
        return self._by_identifier(scanned.kind, scanned.value, started)

    def _by_identifier(self, kind: str, value: str, started: float
                       ) -> tuple[str, str, Customer | None, CustomerRecord | None, None]:
        """A phone number (E.164) or card number: found by its look-up hash, here or at the
        hub; the hash is what the sale keeps."""
        digest = self.lookup.hash(kind, value)
        return (kind, digest, *self._local_or_hub(
            find_by_hash(self.store, kind, digest), kind, value, digest, started), None)

    def _local_or_hub(self, local: Customer | None, kind: str, value: str, key: str,
                      started: float) -> tuple[Customer | None, CustomerRecord | None]:
        """The local customer, else (with a hub that is up) the hub's within the bound.

        The bound `hub_lookup_timeout_ms` counts from the start of `identify`, so the local
        hashing is inside it. `key` is what the answer must match: the look-up hash we
        computed, or the member code's subject, so a record for someone else is never
        linked to the sale.
        """
        if local is not None or self.online_lookup is None:
            return local, None
        left = self.settings.hub_lookup_timeout_ms / 1000.0 - (time.monotonic() - started)
        answer = self.online_lookup(kind, value, max(0.0, left))
        if answer is None:
            return None, None
        try:
            rec = parse_customer(answer, self.lookup)
        except ValueError as exc:
            log.info("online look-up answer not usable: %s", exc.__class__.__name__)
            return None, None
        if (kind == "member" and rec.id != key) or (
                kind != "member" and (kind, key) not in rec.lookups):
            log.info("online look-up answer is for another identifier: ignored")
            return None, None
        return customer_of(rec), rec

    def _use_member_code(self, conn: sqlite3.Connection, jti: str, exp: float, device: str,
                         txn: str) -> None:
        """A member code (`jti`, `exp` of a verified one) identifies one sale: scanned again
        for that sale it is the same identification; for any other sale (a photo of the
        shopper's screen) it is refused until it expires. Its `jti` is remembered until
        then."""
        now = self.clock()
        conn.execute("DELETE FROM member_codes_used WHERE exp < ?",
                     (now - self.settings.clock_skew_s,))
        first = conn.execute("SELECT device_id, txn FROM member_codes_used WHERE jti = ?",
                             (jti,)).fetchone()
        if first is None:
            conn.execute("INSERT INTO member_codes_used (jti, exp, device_id, txn, used_at) "
                         "VALUES (?, ?, ?, ?, ?)", (jti, exp, device, txn, self._ts(now)))
        elif (first[0], first[1]) != (device, txn):
            raise CustomerUnknown("This member code was already used for another sale: ask "
                                  "the shopper to refresh the app and scan the new code.",
                                  detail={"method": "member", "reason": "used"})

    def _member_code(self, token: str) -> tuple[str, str, float]:
        """(sub, jti, exp) of a genuine, current member code; CustomerUnknown otherwise."""
        try:
            claims = self.keys.verify(token, MEMBER_TYP)
        except TokenRejected as exc:
            if exc.typ == COUPON_TYP:
                raise BadRequest("This is a coupon, not a member code: scan it as a coupon.",
                                 detail={"field": "code", "reason": "coupon"}) from None
            raise CustomerUnknown("This member code is not genuine.",
                                  detail={"reason": "forged"}) from None
        sub, iat, exp = claims.get("sub"), claims.get("iat"), claims.get("exp")
        jti = claims.get("jti")
        if not isinstance(sub, str) or not sub or not isinstance(jti, str) or not \
                0 < len(jti) <= 128 or not all(
                isinstance(t, int | float) and not isinstance(t, bool) for t in (iat, exp)):
            raise CustomerUnknown("This member code is not readable: ask the shopper to "
                                  "refresh the app.", detail={"reason": "claims"})
        assert isinstance(iat, int | float) and isinstance(exp, int | float)
        skew = self.settings.clock_skew_s
        now = self.clock()
        if exp - iat > MEMBER_CODE_MAX_LIFE_S or iat > now + skew:
            raise CustomerUnknown("This member code is not valid: ask the shopper to refresh "
                                  "the app.", detail={"reason": "lifetime"})
        if now - skew >= exp:
            raise CustomerUnknown("This member code has expired: ask the shopper to refresh "
                                  "the app and scan again.", detail={"reason": "expired"})
        assert isinstance(jti, str)
        return sub, jti, float(exp)

    def wallet(self, customer_id: str, now: float) -> list[dict[str, Any]]:
        """Coupons clipped to the customer that can still be used."""
        at = datetime.fromtimestamp(now, UTC)
        out = []
        for r in self.store.query(
                # The campaign's description as it is now (a coupon that came in the feed
                # before its campaign was written down with a plainer one).
                "SELECT w.coupon_id, w.campaign_id, COALESCE((SELECT c.description FROM "
                "campaigns c WHERE c.id = w.campaign_id), w.description) AS description, "
                f"w.expires_at, w.until, w.token FROM wallet w WHERE {USABLE_IN_WALLET} "
                "ORDER BY w.clipped_at, w.coupon_id", (customer_id, now)):
            expires = datetime.fromtimestamp(r["expires_at"], UTC) if r["expires_at"] else None
            until = date.fromisoformat(r["until"]) if r["until"] else None
            # A coupon's last local day (`until`) and a withdrawal, beside the SQL's checks.
            if self.book.expired(expires, at, until) \
                    or self.book.revoked(r["coupon_id"], r["campaign_id"]):
                continue
            out.append({"coupon": r["coupon_id"], "campaign": r["campaign_id"],
                        "description": r["description"], "code": r["token"],
                        "expires": format_ts(expires) if expires else None,
                        **({"until": r["until"]} if r["until"] else {})})
        return out

    def offers(self, customer: Customer, now: float) -> list[dict[str, Any]]:
        """Campaigns shown to this shopper: current, for their tier."""
        at = datetime.fromtimestamp(now, UTC)
        rows = self.store.query(
            "SELECT id, name, description, code, tiers, ends_at, terms FROM campaigns "
            "WHERE offer = 1 AND (starts_at IS NULL OR starts_at <= ?) ORDER BY id", (now,))
        # An offer ends when its code would: at `ends_at`, or the end of its `until` here.
        return [{"campaign": r["id"], "name": r["name"], "description": r["description"],
                 **({"code": r["code"]} if r["code"] else {})}
                for r in rows if (not r["tiers"] or customer.tier in json.loads(r["tiers"]))
                and not self.book.campaign_ended(r, at)
                and not self.book.revoked(None, r["id"])]

    # ------------------------------------------------------------ coupons

    def apply(self, device: str, txn: str, code: str, basket: Basket) -> dict[str, Any]:
        """Check a scanned coupon against the basket and hold one use of it for this sale."""
        now = self.clock()
        coupon = self.book.read(code)
        self.book.check_revoked(coupon)
        self.book.check_dates(coupon, datetime.fromtimestamp(now, UTC))
        if not coupon.offline_ok and not self.hub.online():
            raise CouponRefused("coupon_not_applicable",
                                "This coupon can only be redeemed while the store is connected "
                                "to head office, and the connection is down. Please try again "
                                "later.", reason="offline")
        with self.store.transaction() as db:
            conn = db.conn
            sale = self._open_sale(conn, device, txn)
            self._check_customer(coupon, sale)
            held = self._held(conn, device, txn)
            mine = next((r for r in held if r["coupon_id"] == coupon.id), None)
            others = [(r, self.book.read(r["code"])) for r in held if r is not mine]
            if (mine is None or _lapsed(mine, now)) and not coupon.plain:
                self._check_uses(conn, coupon, device, txn, now)
            self._check_stacking(coupon, [c for _, c in others])
            # Priced in the order the coupons were applied, as txn.complete prices them.
            pricing = Pricing.start(basket)
            for row, other in others:
                if mine is None or row["rowid"] < mine["rowid"]:
                    pricing.take(other.rule)
            self.book.check_basket(coupon, basket, pricing)
            discount = pricing.take(coupon.rule)
            expires = now + self.settings.reservation_ttl_s
            if mine is not None:
                reservation = mine["id"]
                conn.execute("UPDATE reservations SET state = 'held', discount_minor = ?, "
                             "expires_at = ? WHERE id = ?", (discount, expires, reservation))
            else:
                reservation = uuid7()
                conn.execute(
                    "INSERT INTO reservations (id, coupon_id, campaign_id, device_id, txn, "
                    "code, discount_minor, currency, state, created_at, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'held', ?, ?)",
                    (reservation, coupon.id, coupon.campaign, device, txn, code.strip(),
                     discount, basket.currency, now, expires))
        return {"coupon": coupon.id, "campaign": coupon.campaign, "discount_minor": discount,
                "currency": basket.currency, "description": coupon.description,
                "reservation": reservation, "held_until": self._ts(expires),
                "stackable": coupon.stackable}

    def _check_customer(self, coupon: Coupon, sale: Sale) -> None:
        if coupon.customer is None or sale.holds_customer(coupon.customer):
            return
        if sale.customer_id is None and sale.identifier_kind is None:
            raise CouponRefused("coupon_wrong_customer", "This coupon is personal: scan the "
                                "shopper's member code first.", reason="not_identified")
        raise CouponRefused("coupon_wrong_customer", "This coupon belongs to another customer "
                            "and cannot be used by this shopper.", reason="other_customer")

    def _check_stacking(self, coupon: Coupon, others: list[Coupon]) -> None:
        if not others:
            return
        blocker = next((o for o in others if not o.stackable), None)
        if not coupon.stackable or blocker is not None:
            which = blocker or others[0]
            raise CouponRefused(
                "coupon_not_stackable",
                f"This coupon cannot be combined with \u201c{which.description}\u201d already "
                "on this sale. Remove that one first to use this one.",
                other=which.id)

    def _check_uses(self, conn: sqlite3.Connection, coupon: Coupon, device: str, txn: str,
                    now: float) -> None:
        """Refuse when the coupon's uses are all redeemed or held by other open sales."""
        used = conn.execute(
            "SELECT COUNT(*) FROM redemptions WHERE coupon_id = ? AND reversed_at IS NULL",
            (coupon.id,)).fetchone()[0]
        if used < coupon.max_uses:
            holders = conn.execute(
                "SELECT device_id, expires_at FROM reservations WHERE coupon_id = ? AND "
                "state = 'held' AND expires_at > ? AND NOT (device_id = ? AND txn = ?)",
                (coupon.id, now, device, txn)).fetchall()
            if used + len(holders) < coupon.max_uses:
                return
            first = min(holders, key=lambda h: h["expires_at"])
            until = clock_time(datetime.fromtimestamp(first["expires_at"], UTC),
                               self.settings.zone, self.settings.locale)
            raise CouponRefused(
                "coupon_reserved",
                f"This coupon is being used on {first['device_id']} right now. If that sale "
                f"was abandoned, it is free again after {until}.",
                lane=first["device_id"], held_until=self._ts(first["expires_at"]))
        last = conn.execute(
            "SELECT r.store_id, r.redeemed_at, s.name FROM redemptions r "
            "LEFT JOIN stores s ON s.id = r.store_id WHERE r.coupon_id = ? AND "
            "r.reversed_at IS NULL ORDER BY r.redeemed_at DESC LIMIT 1",
            (coupon.id,)).fetchone()
        own = last["store_id"] == self.settings.store_id
        where = last["name"] or (self.settings.store_name if own else last["store_id"])
        when = moment(datetime.fromisoformat(last["redeemed_at"]), self.settings.zone,
                      self.settings.locale)
        if coupon.max_uses == 1:
            message = f"Coupon already used at {where} on {when}."
        else:
            message = (f"Coupon already used {coupon.max_uses} times, as often as it allows "
                       f"(last at {where} on {when}).")
        raise CouponRefused("coupon_used", message, store=last["store_id"],
                            redeemed_at=last["redeemed_at"], uses=used, max=coupon.max_uses)

    def remove(self, device: str, txn: str, reservation: str) -> dict[str, Any]:
        """Release a coupon held for an open sale (the cashier took it off)."""
        with self.store.transaction() as db:
            conn = db.conn
            if self._sale(conn, device, txn) is None:
                raise TxnUnknown(detail={"txn": txn})
            row = conn.execute("SELECT state FROM reservations WHERE id = ? AND device_id = ? "
                               "AND txn = ?", (reservation, device, txn)).fetchone()
            if row is None:
                raise BadRequest("This sale holds no such coupon.",
                                 detail={"reason": "reservation_unknown"})
            if row["state"] == "redeemed":
                raise BadRequest("This coupon was redeemed when the sale completed; void the "
                                 "sale to give it back.", detail={"reason": "redeemed"})
            conn.execute("UPDATE reservations SET state = 'released' WHERE id = ? AND "
                         "state IN ('held', 'expired')", (reservation,))
        return {"reservation": reservation, "state": "released"}

    # ------------------------------------------------------------ complete / void

    def complete(self, device: str, txn: str, basket: Basket, tenders: list[Tender],
                 total_minor: int) -> dict[str, Any]:
        """Commit the sale: its coupons become redemptions, exactly once."""
        now = self.clock()
        with self.store.transaction() as db:
            conn = db.conn
            sale = self._sale(conn, device, txn)
            if sale is not None and sale.state == "completed" and sale.result is not None:
                return sale.result
            if sale is not None and sale.state == "voided":
                raise BadRequest(f"Sale {txn} was voided and cannot be completed.",
                                 detail={"reason": "txn_closed", "state": "voided"})
            if sale is None:
                conn.execute("INSERT INTO transactions (device_id, txn, state, opened_at) "
                             "VALUES (?, ?, 'open', ?)", (device, txn, self._ts(now)))
                sale = Sale(device, txn, "open", None, None, None, None)
            redemptions, released = self._redeem(conn, sale, basket, now)
            discount = sum(r["discount_minor"] for r in redemptions)
            job = uuid7()
            result = {"txn": txn, "redemptions": redemptions, "released": released,
                      "discount_minor": discount, "currency": basket.currency,
                      "total_minor": total_minor, "receipt": {"job": job}}
            completed_at = self._ts(now)
            row = conn.execute("SELECT * FROM customers WHERE id = ?",
                               (sale.customer_id,)).fetchone() if sale.customer_id else None
            customer = customer_from_row(row) if row else None
            receipt = self.receipts.build(
                conn, job=job, device=device, txn=txn, customer=customer, basket=basket,
                tenders=[t.__dict__ for t in tenders], total_minor=total_minor,
                redemptions=redemptions, now=now)
            self.spool.create(conn, job, device, txn, receipt, sale.customer_id)
            conn.execute(
                "UPDATE transactions SET state = 'completed', completed_at = ?, total_minor = ?, "
                "currency = ?, basket = ?, tenders = ?, receipt_job = ?, result = ? "
                "WHERE device_id = ? AND txn = ?",
                (completed_at, total_minor, basket.currency, json.dumps(basket.to_dict()),
                 json.dumps([t.__dict__ for t in tenders]), job, json.dumps(result), device, txn))
            queue_event(conn, TransactionCompleted(
                txn=txn, customer_id=sale.customer_id,
                identifier={"method": sale.identifier_kind, "value": sale.identifier}
                if sale.customer_id is None and sale.identifier else None,
                basket_total_minor=basket.total_minor, discount_minor=discount,
                total_minor=total_minor, currency=basket.currency,
                lines=[{"sku": ln.sku, "qty": ln.qty, "unit_minor": ln.unit_minor}
                       for ln in basket.lines],
                tenders=[t.__dict__ for t in tenders],
                redemptions=[r["redemption"] for r in redemptions],
                completed_at=completed_at), device_id=device, occurred_at=completed_at)
        # Committed: the receipt goes to the printer now (and again later until it printed).
        self.spool.send_now(job)
        return result

    def _redeem(self, conn: sqlite3.Connection, sale: Sale, basket: Basket, now: float
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Re-price the sale's coupons on the final basket and redeem those still valid."""
        pricing = Pricing.start(basket)
        accepted: list[Coupon] = []
        redemptions: list[dict[str, Any]] = []
        released: list[dict[str, Any]] = []
        for row in self._held(conn, sale.device_id, sale.txn):
            try:
                coupon = self.book.read(row["code"])
                # Dates and the online-only flag were judged when the coupon was applied;
                # a revocation since then (a stolen coupon) still stops it.
                self.book.check_revoked(coupon)
                self._check_customer(coupon, sale)
                if _lapsed(row, now) and not coupon.plain:
                    # The hold lapsed: another lane may have taken the coupon meanwhile.
                    self._check_uses(conn, coupon, sale.device_id, sale.txn, now)
                self._check_stacking(coupon, accepted)
                self.book.check_basket(coupon, basket, pricing)
            except CouponRefused as exc:
                conn.execute("UPDATE reservations SET state = 'released' WHERE id = ?",
                             (row["id"],))
                released.append({"reservation": row["id"], "coupon": row["coupon_id"],
                                 "code": exc.code, "message": exc.message})
                continue
            accepted.append(coupon)
            discount = pricing.take(coupon.rule)
            redemption = uuid7()
            redeemed_at = self._ts(now)
            conn.execute(
                "INSERT INTO redemptions (id, coupon_id, campaign_id, store_id, device_id, txn, "
                "customer_id, discount_minor, currency, redeemed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (redemption, coupon.id, coupon.campaign, self.settings.store_id,
                 sale.device_id, sale.txn, sale.customer_id, discount, basket.currency,
                 redeemed_at))
            conn.execute("UPDATE reservations SET state = 'redeemed', discount_minor = ? "
                         "WHERE id = ?", (discount, row["id"]))
            entry = {"redemption": redemption, "reservation": row["id"], "coupon": coupon.id,
                     "campaign": coupon.campaign, "description": coupon.description,
                     "discount_minor": discount, "currency": basket.currency}
            redemptions.append(entry)
            # The scanned coupon itself (`token`) lets the hub check that this store saw it;
            # `max_uses` is what the store believed (the hub judges from its own records).
            queue_event(conn, CouponRedeemed(
                redemption=redemption, reservation=row["id"], coupon=coupon.id,
                campaign=coupon.campaign, description=coupon.description,
                discount_minor=discount, currency=basket.currency,
                max_uses=coupon.max_uses, token=row["code"], txn=sale.txn,
                customer_id=sale.customer_id, store_id=self.settings.store_id,
                redeemed_at=redeemed_at), device_id=sale.device_id, occurred_at=redeemed_at)
        return redemptions, released

    def void(self, device: str, txn: str, actor: Actor | None = None) -> dict[str, Any]:
        """Cancel a sale: release its holds, or reverse its redemptions (a return).

        `actor`: who asks (None: the lane's own POS). A completed sale is voided only for
        an actor that may take it back (a manager, or a cashier with a manager's approval),
        decided inside the write transaction, so a sale completed a moment before is not
        voided by a cashier who saw it open. Every void goes into the audit trail."""
        actor = actor or Actor(device)
        now = self.clock()
        with self.store.transaction() as db:
            conn = db.conn
            sale = self._sale(conn, device, txn)
            if sale is None:
                raise TxnUnknown(f"This store has no record of sale {txn} on {device}.",
                                 detail={"txn": txn})
            if sale.state == "voided" and sale.result is not None:
                return sale.result
            if sale.state == "completed" and not actor.may_take_back:
                raise Forbidden(f"Sale {txn} is completed: undoing it needs a manager. Ask a "
                                "manager to approve on this screen.",
                                detail={"reason": "manager_required", "txn": txn})
            released = [r["id"] for r in conn.execute(
                "SELECT id FROM reservations WHERE device_id = ? AND txn = ? AND "
                "state IN ('held', 'expired')", (device, txn))]
            conn.execute("UPDATE reservations SET state = 'released' WHERE device_id = ? AND "
                         "txn = ? AND state IN ('held', 'expired')", (device, txn))
            voided_at = self._ts(now)
            reversed_ = []
            if sale.state == "completed":
                for r in conn.execute(
                        "SELECT id, coupon_id, campaign_id, discount_minor, currency "
                        "FROM redemptions WHERE device_id = ? AND txn = ? AND "
                        "reversed_at IS NULL ORDER BY id", (device, txn)).fetchall():
                    conn.execute("UPDATE redemptions SET reversed_at = ? WHERE id = ?",
                                 (voided_at, r["id"]))
                    reversed_.append(r["id"])
                    queue_event(conn, CouponRedemptionReversed(
                        redemption=r["id"], coupon=r["coupon_id"],
                        campaign=r["campaign_id"], txn=txn,
                        discount_minor=r["discount_minor"], currency=r["currency"],
                        store_id=self.settings.store_id, reversed_at=voided_at),
                        device_id=device, occurred_at=voided_at)
                queue_event(conn, TransactionVoided(
                    txn=txn, voided_at=voided_at, redemptions_reversed=reversed_,
                    **actor.fields()),
                    device_id=device, occurred_at=voided_at)
            result = {"txn": txn, "state": "voided", "was": sale.state,
                      "released": released, "reversed": reversed_}
            # A completed sale's void is told to the hub as transaction.voided (above).
            record(conn, VOID, actor, lane=device, txn=txn, at=voided_at,
                   detail={"was": sale.state, "reversed": len(reversed_)},
                   event=sale.state != "completed")
            conn.execute("UPDATE transactions SET state = 'voided', voided_at = ?, result = ? "
                         "WHERE device_id = ? AND txn = ?",
                         (voided_at, json.dumps(result), device, txn))
        return result

    def sweep(self) -> int:
        """Mark lapsed holds expired (a scheduled job); how many lapsed."""
        now = self.clock()
        with self.store.transaction() as db:
            cur = db.conn.execute("UPDATE reservations SET state = 'expired' WHERE "
                                  "state = 'held' AND expires_at <= ?", (now,))
            return cur.rowcount
