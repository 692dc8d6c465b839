"""Coupons: what a scanned code is, whether it may be used now, and what it is worth.

A scanned coupon is either a signed `coupon+jwt` from the shopper's app (docs/checkout.md §8)
or a short plain campaign code (`SAVE10`) that a campaign synced from the hub allows.
Everything here is decided from local data, so it works with the store's internet down.

A coupon is good from its `nbf` moment and strictly before its `exp` moment (RFC 7519),
both with `clock_skew_s` of allowance for phones and hubs whose clocks are a little off. A
coupon meant to last "until 30 Nov" everywhere carries that date as its `until` claim: it
ends at midnight after that date in each store's own zone, judged on the store's clock, and
its `exp` (`until_exp`) is late enough for the last zone on earth to reach that midnight.
The terms themselves are read by `store_contract.campaigns`, the same code the hub runs.

Every refusal is a `CouponRefused` with one of the codes of docs/checkout.md §10 and a sentence
the cashier can read to the shopper.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from edge.basket import Pricing
from edge.settings import Settings
from edge.store import Store
from edge.tokens import TrustedKeys
from store_contract.basket import Basket
from store_contract.campaigns import (
    COUPON_ID_RE,
    PLAIN_CODE_RE,
    RECEIPT_COUPON_PREFIX,
    Campaign,
    Coupon,
    coupon_from_terms,
    end_of_local_date,
    numeric_date,
    parse_until,
)
from store_contract.errors import EdgeError
from store_contract.jws import COUPON_TYP, MEMBER_TYP, TokenRejected, looks_like_jws
from store_contract.wording import day, money

# The campaign terms a receipt offer carries, copied as they are.
OFFER_TERMS = ("disc", "min_minor", "skus", "cats", "stack", "off")
SIGNED_CACHE = 10_000
SIGNED_TTL_S = 60.0


class CouponRefused(EdgeError):
    """A coupon that cannot be used; `code` is one of the §4 rejection codes."""

    status = 409

    def __init__(self, code: str, message: str, **detail: Any) -> None:
        super().__init__(message, code=code, detail={k: v for k, v in detail.items()
                                                      if v is not None})


FORGED_MESSAGES = {
    "typ": "This is not a coupon code.",
    "unknown_key": "This coupon was not issued by us: it is signed with a key this store "
                   "does not trust.",
    # What a cashier can say: a store's receipt coupon that is not one of our receipt offers.
    "key_scope": "This coupon is not genuine: a store can only print coupons for our "
                 "current receipt offers, and this is not one. Do not accept it.",
}
FORGED_DEFAULT = "This coupon is not genuine: do not accept it."


class OutOfScope(ValueError):
    """A store key signed something only the chain may sign."""


def receipt_offer_terms(store: str, jti: str, claims: dict[str, Any],
                        campaign: dict[str, Any] | None) -> dict[str, Any]:
    """The terms of a coupon signed with a store's key: a receipt offer of that store.

    Everything of value comes from the campaign (its row: `offer`, `terms` JSON): discount,
    minimum, products, stacking, dates, one use. The token may only narrow it: whom it is
    for and a shorter validity. OutOfScope when it is no receipt offer of that store;
    ValueError when its times are not readable. The hub judges redemptions with this too.
    """
    if campaign is None or not campaign["offer"]:
        raise OutOfScope("not a receipt offer campaign")
    if not jti.startswith(f"{RECEIPT_COUPON_PREFIX}{store}:"):
        raise OutOfScope("coupon id outside the store's namespace")
    terms: dict[str, Any] = json.loads(campaign["terms"])
    # An honest store copies the campaign's terms into its coupon; other terms are a forgery.
    for name in OFFER_TERMS:
        if name in claims and claims[name] != terms.get(name):
            raise OutOfScope(f"{name} differs from the campaign's")
    if claims.get("max", 1) != 1:
        raise OutOfScope("a receipt offer is good for one use")
    terms["max"] = 1
    if claims.get("sub") is not None:
        terms["sub"] = claims["sub"]
    if claims.get("exp") is None:
        raise ValueError("a store's coupon must say when it expires (exp)")
    for name, tighter in (("nbf", max), ("exp", min)):
        if claims.get(name) is not None:
            numeric_date(claims[name], name)  # ValueError when it is not a time
            ours = terms.get(name)
            terms[name] = claims[name] if ours is None else tighter(ours, claims[name])
    until = claims.get("until")
    if until is not None:
        ours = terms.get("until")
        terms["until"] = until if ours is None or not isinstance(until, str) \
            else min(ours, until)
    return terms


class CouponBook:
    """Reads scanned codes into coupons and judges the rules that need no ledger."""

    def __init__(self, settings: Settings, store: Store, keys: TrustedKeys) -> None:
        self.settings = settings
        self.store = store
        self.keys = keys
        self.zone = settings.zone
        self.skew = timedelta(seconds=settings.clock_skew_s)
        # Signed coupons already read, by token: a sale reads its coupon at apply and again
        # at complete, and the signature check is the dearest step of both. An entry lasts
        # until the keys change or a minute passes (a campaign's description may change).
        self._signed: OrderedDict[str, tuple[int, float, Coupon]] = OrderedDict()
        self._signed_lock = threading.Lock()

    # ------------------------------------------------------------ reading a code

    def read(self, code: Any) -> Coupon:
        """The coupon a scanned text stands for; CouponRefused if forged or unknown."""
        if not isinstance(code, str) or not code.strip():
            raise CouponRefused("coupon_forged", FORGED_DEFAULT, reason="empty")
        code = code.strip()
        if looks_like_jws(code):
            return self._read_signed(code)
        if PLAIN_CODE_RE.match(code):
            return self._read_plain(code)
        raise CouponRefused("coupon_forged", "This is not a coupon code we can read.",
                            reason="malformed")

    def _read_signed(self, token: str) -> Coupon:
        now = time.monotonic()
        with self._signed_lock:
            hit = self._signed.get(token)
        if hit is not None and hit[0] == self.keys.generation and now - hit[1] < SIGNED_TTL_S:
            return hit[2]
        coupon = self._verify_signed(token)
        with self._signed_lock:
            self._signed[token] = (self.keys.generation, now, coupon)
            if len(self._signed) > SIGNED_CACHE:
                self._signed.popitem(last=False)
        return coupon

    def _verify_signed(self, token: str) -> Coupon:
        try:
            signed = self.keys.signer(token, COUPON_TYP)
        except TokenRejected as exc:
            message = FORGED_MESSAGES.get(exc.reason, FORGED_DEFAULT)
            if exc.typ == MEMBER_TYP:
                message = "This is the shopper's member code, not a coupon: scan it to " \
                          "identify the shopper."
            raise CouponRefused("coupon_forged", message, reason=exc.reason) from None
        claims = signed.claims
        jti, cmp_ = claims.get("jti"), claims.get("cmp")
        try:
            if not isinstance(jti, str) or not COUPON_ID_RE.match(jti):
                raise ValueError("jti must be a coupon id")
            if not isinstance(cmp_, str) or not COUPON_ID_RE.match(cmp_):
                raise ValueError("cmp must be a campaign id")
            campaign = self._campaign(cmp_)
            terms = claims if signed.store is None else \
                receipt_offer_terms(signed.store, jti, claims, campaign)
            return coupon_from_terms(terms, coupon_id=jti, campaign=cmp_, plain=False,
                                     description=campaign["description"] if campaign else None,
                                     locale=self.settings.locale)
        except OutOfScope:
            raise CouponRefused("coupon_forged", FORGED_MESSAGES["key_scope"],
                                reason="key_scope") from None
        except ValueError as exc:
            raise CouponRefused("coupon_unknown", "This coupon's terms are not readable here: "
                                "ask the shopper to refresh the app.", reason="claims",
                                problem=str(exc)) from None

    def _campaign(self, campaign_id: str) -> dict[str, Any] | None:
        return self.store.query_one("SELECT * FROM campaigns WHERE id = ?", (campaign_id,))

    def _read_plain(self, code: str) -> Coupon:
        row = self.store.query_one("SELECT * FROM campaigns WHERE code = ?", (code.upper(),))
        if row is None:
            raise CouponRefused("coupon_unknown", f"{code.upper()} is not a coupon code of any "
                                "current campaign.", reason="no_campaign")
        try:
            return coupon_from_terms(json.loads(row["terms"]), coupon_id=f"code:{row['id']}",
                                     campaign=row["id"], plain=True,
                                     description=row["description"] or row["name"],
                                     locale=self.settings.locale)
        except ValueError as exc:
            raise CouponRefused("coupon_unknown", "This campaign's terms are not readable "
                                "here.", reason="campaign_terms", problem=str(exc)) from None

    # ------------------------------------------------------------ rules without the ledger

    def _revocation(self, coupon_id: str | None, campaign_id: str) -> dict[str, Any] | None:
        return self.store.query_one(
            "SELECT scope, reason FROM revocations WHERE (scope = 'coupon' AND id = ?) "
            "OR (scope = 'campaign' AND id = ?) LIMIT 1", (coupon_id, campaign_id))

    def revoked(self, coupon_id: str | None, campaign_id: str) -> bool:
        """Is the coupon (None: any coupon of the campaign) or its campaign withdrawn?"""
        return self._revocation(coupon_id, campaign_id) is not None

    def check_revoked(self, coupon: Coupon) -> None:
        row = self._revocation(coupon.id, coupon.campaign)
        if row is not None:
            what = "campaign has been withdrawn" if row["scope"] == "campaign" else \
                "coupon has been cancelled"
            raise CouponRefused("coupon_revoked", f"This {what} and can no longer be used.",
                                reason=row["reason"])

    def check_dates(self, coupon: Coupon, now: datetime) -> None:
        loc = self.settings.locale
        if coupon.not_before is not None and now + self.skew < coupon.not_before:
            raise CouponRefused(
                "coupon_not_yet_valid",
                f"This coupon can be used from {day(coupon.not_before, self.zone, loc)}.",
                valid_from=coupon.not_before.isoformat())
        if self.expired(coupon.expires, now, coupon.until):
            ended = self.ends(coupon.expires, coupon.until)
            assert ended is not None  # expired() is False without exp and until
            # The last day it could be used here: a coupon that ended at midnight ended
            # on the day before.
            last = day(ended - timedelta(microseconds=1), self.zone, loc)
            raise CouponRefused("coupon_expired", f"This coupon expired on {last}.",
                                expired=ended.isoformat(),
                                until=coupon.until.isoformat() if coupon.until else None)

    def ends(self, expires: datetime | None, until: date | None) -> datetime | None:
        """The instant from which a coupon (or campaign) is no longer valid at this store:
        its `exp`, or the end of its `until` date in this store's zone if that is earlier."""
        ends = [e for e in (expires, end_of_local_date(until, self.zone) if until else None)
                if e is not None]
        return min(ends) if ends else None

    def expired(self, expires: datetime | None, now: datetime,
                until: date | None = None) -> bool:
        """Is it too late? `exp` is a hard limit (RFC 7519) with the clock-skew allowance,
        because it is another clock's instant; `until` ends at this store's own midnight,
        read on this store's own clock, so it gets none."""
        if expires is not None and now - self.skew >= expires:
            return True
        return until is not None and now >= end_of_local_date(until, self.zone)

    def campaign_ended(self, row: dict[str, Any] | Any, now: datetime) -> bool:
        """Has a campaign row (with `ends_at` and `terms`) ended at this store? Its `ends_at`
        is an instant and a hard limit like `exp`; its `until` a local date like a coupon's."""
        ends_at = datetime.fromtimestamp(row["ends_at"], UTC) if row["ends_at"] else None
        try:
            until = parse_until(json.loads(row["terms"]).get("until"))
        except ValueError:
            return True  # unreadable terms: the code is refused anyway, so do not offer it
        return self.expired(ends_at, now, until)

    def wallet_entry(self, customer_id: str, token: str) -> dict[str, Any] | None:
        """A wallet row for a coupon clipped to `customer_id`, or None if it cannot be one."""
        try:
            coupon = self._read_signed(token.strip())
        except CouponRefused:
            return None
        if coupon.customer not in (None, customer_id):
            return None
        return {"coupon": coupon.id, "campaign": coupon.campaign,
                "description": coupon.description, "max_uses": coupon.max_uses,
                "expires_at": coupon.expires.timestamp() if coupon.expires else None,
                "until": coupon.until.isoformat() if coupon.until else None}

    def check_basket(self, coupon: Coupon, basket: Basket, pricing: Pricing) -> None:
        loc = self.settings.locale
        disc = coupon.discount
        if disc.kind == "amount" and disc.currency != basket.currency:
            raise CouponRefused("coupon_not_applicable",
                                f"This coupon is in {disc.currency}; this store sells in "
                                f"{basket.currency}.", reason="currency")
        total = basket.total_minor
        if coupon.min_minor is not None and total < coupon.min_minor:
            short = coupon.min_minor - total
            raise CouponRefused(
                "coupon_min_spend",
                f"Spend {money(short, basket.currency, loc)} more to use this coupon "
                f"(minimum {money(coupon.min_minor, basket.currency, loc)}).",
                min_minor=coupon.min_minor, short_minor=short)
        if pricing.eligible_minor(coupon.rule) <= 0:
            eligible = [i for i, line in enumerate(basket.lines) if coupon.rule.eligible(line)]
            if not eligible:
                reason, message = ("no_eligible_lines",
                                   "None of the items in this basket is part of this offer.")
            elif all(basket.lines[i].total_minor == 0 for i in eligible):
                reason, message = ("nothing_to_discount", "The items in this offer cost "
                                   "nothing in this basket, so there is nothing to take off.")
            else:
                reason, message = ("nothing_left", "Other coupons already take the full price "
                                   "of the items in this offer.")
            raise CouponRefused("coupon_not_applicable", message, reason=reason)


# ---------------------------------------------------------------- campaigns


def upsert_campaigns(db: Any, campaigns: list[Campaign]) -> None:
    """Write campaigns inside a store transaction (a later version replaces an earlier)."""
    now = datetime.now(UTC).isoformat()
    db.conn.executemany(
        "INSERT INTO campaigns (id, name, description, code, terms, offer, tiers, starts_at, "
        "ends_at, updated_at, segments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE "
        "SET name = excluded.name, description = excluded.description, code = excluded.code, "
        "terms = excluded.terms, offer = excluded.offer, tiers = excluded.tiers, "
        "segments = excluded.segments, "
        "starts_at = excluded.starts_at, ends_at = excluded.ends_at, "
        "updated_at = excluded.updated_at",
        [(c.id, c.name, c.description, c.code, json.dumps(c.terms), int(c.offer),
          json.dumps(c.tiers) if c.tiers is not None else None, c.starts_at, c.ends_at, now,
          json.dumps(c.segments) if c.segments is not None else None)
         for c in campaigns])


def revoke(db: Any, scope: str, ident: str, reason: str | None) -> None:
    """Withdraw a coupon or a whole campaign (inside a store transaction)."""
    db.conn.execute("INSERT OR REPLACE INTO revocations (id, scope, reason, revoked_at) "
                    "VALUES (?, ?, ?, ?)", (ident, scope, reason, datetime.now(UTC).isoformat()))
