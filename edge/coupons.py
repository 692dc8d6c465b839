"""Coupons: what a scanned code is, whether it may be used now, and what it is worth.

A scanned coupon is either a signed `coupon+jwt` from the shopper's app (ARCHITECTURE §5)
or a short plain campaign code (`SAVE10`) that a campaign synced from the hub allows.
Everything here is decided from local data, so it works with the store's internet down.

A coupon is good from its `nbf` moment and strictly before its `exp` moment (RFC 7519),
both with `clock_skew_s` of allowance for phones and hubs whose clocks are a little off. A
coupon meant to last "until 30 Nov" everywhere carries that date as its `until` claim: it
ends at midnight after that date in each store's own zone, judged on the store's clock, and
its `exp` (`until_exp`) is late enough for the last zone on earth to reach that midnight.

Every refusal is a `CouponRefused` with one of the codes of ARCHITECTURE §4 and a sentence
the cashier can read to the shopper.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from typing import Any
from zoneinfo import ZoneInfo

from edge.basket import Basket, Discount, Pricing, Rule, parse_discount
from edge.settings import Settings
from edge.store import Store
from edge.tokens import TrustedKeys
from store_contract.errors import EdgeError
from store_contract.jws import COUPON_TYP, MEMBER_TYP, TokenRejected, looks_like_jws
from store_contract.wording import day, money

PLAIN_CODE_RE = re.compile(r"^[A-Za-z0-9-]{3,32}\Z")
UNTIL_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
# The last zone on earth where a calendar date ends (UTC-12; POSIX-style names flip the sign).
LAST_ZONE = ZoneInfo("Etc/GMT+12")
COUPON_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
MAX_USES = 1_000_000
# Coupon ids of receipt offers signed by a store key: `rc:{store}:{unique part}`.
RECEIPT_COUPON_PREFIX = "rc:"
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


@dataclass(frozen=True)
class Coupon:
    """A coupon's terms, from its signed claims or from a campaign's plain code."""

    id: str
    campaign: str
    customer: str | None
    not_before: datetime | None
    expires: datetime | None
    max_uses: int
    rule: Rule
    min_minor: int | None
    stackable: bool
    offline_ok: bool
    plain: bool
    description: str
    until: date | None = None  # the last local date it may be used, in each store's zone

    @property
    def discount(self) -> Discount:
        return self.rule.discount


def _numeric_date(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a NumericDate")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{name} is out of range") from None


def parse_until(value: Any, name: str = "until") -> date | None:
    """A local end date `YYYY-MM-DD` (exactly that form); ValueError otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or not UNTIL_RE.match(value):
        raise ValueError(f"{name} must be a local date such as 2026-11-30")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} is not a real date (YYYY-MM-DD)") from None


def until_exp(until: date) -> int:
    """The `exp` of a coupon valid until the end of `until`: that date's end in UTC-12, the
    last place on earth where it ends, so every store's own midnight comes first."""
    return int(end_of_local_date(until, LAST_ZONE).timestamp())


def end_of_local_date(until: date, zone: ZoneInfo) -> datetime:
    """The first instant after the calendar date `until` in `zone` (UTC)."""
    return datetime.combine(until + timedelta(days=1), day_time(0), tzinfo=zone).astimezone(UTC)


def _id_set(value: Any, name: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of ids")
    return frozenset(value)


def _flag(value: Any, name: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value


def describe(rule: Rule, locale: str) -> str:
    """A short description when the campaign gives none: "10% off", "€5.00 off"."""
    disc = rule.discount
    if disc.kind == "percent":
        value = f"{disc.percent.normalize():f}%"
    else:
        assert disc.currency is not None  # parse_discount requires it for amounts
        value = money(disc.amount_minor, disc.currency, locale)
    scope = " selected items" if rule.skus or rule.cats else ""
    return f"{value} off{scope}"


def coupon_from_terms(terms: dict[str, Any], *, coupon_id: str, campaign: str, plain: bool,
                      description: str | None, locale: str) -> Coupon:
    """Build a Coupon from claims (or a campaign's terms); ValueError names a bad field."""
    rule = Rule(parse_discount(terms.get("disc")), _id_set(terms.get("skus"), "skus"),
                _id_set(terms.get("cats"), "cats"))
    max_uses = terms.get("max", 1)
    if isinstance(max_uses, bool) or not isinstance(max_uses, int) or not \
            0 < max_uses <= MAX_USES:
        raise ValueError("max must be a whole number of uses, 1 or more")
    min_minor = terms.get("min_minor")
    if min_minor is not None and (isinstance(min_minor, bool) or not isinstance(min_minor, int)
                                  or min_minor < 0):
        raise ValueError("min_minor must be a whole number of minor units")
    sub = terms.get("sub")
    if sub is not None and not isinstance(sub, str):
        raise ValueError("sub must be a customer id")
    return Coupon(
        id=coupon_id, campaign=campaign, customer=sub,
        not_before=_numeric_date(terms.get("nbf"), "nbf"),
        expires=_numeric_date(terms.get("exp"), "exp"),
        max_uses=max_uses, rule=rule, min_minor=min_minor,
        stackable=_flag(terms.get("stack"), "stack", False),
        offline_ok=_flag(terms.get("off"), "off", True), plain=plain,
        description=description or describe(rule, locale),
        until=parse_until(terms.get("until")))


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
            _numeric_date(claims[name], name)  # ValueError when it is not a time
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


@dataclass(frozen=True)
class Campaign:
    """A campaign as the hub (or an import file) sends it."""

    id: str
    name: str
    description: str
    code: str | None
    terms: dict[str, Any]
    offer: bool
    tiers: list[str] | None
    starts_at: float | None
    ends_at: float | None
    segments: list[str] | None = None
    until: date | None = None  # last local date, judged in each store's zone (like a coupon's)


def _instant(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an RFC 3339 time such as 2026-12-01T00:00:00Z")
    try:
        moment_ = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} must be an RFC 3339 time such as 2026-12-01T00:00:00Z") \
            from None
    if moment_.tzinfo is None:
        raise ValueError(f"{name} must say its time zone (Z or +01:00)")
    return moment_.timestamp()


def parse_campaign(obj: Any, locale: str) -> Campaign:
    """Validate one campaign record; ValueError says what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    cid = obj.get("id")
    if not isinstance(cid, str) or not COUPON_ID_RE.match(cid):
        raise ValueError("id missing or not 1-128 of letters, digits and ._:-")
    name = obj.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 120:
        raise ValueError("name missing or longer than 120 characters")
    description = obj.get("description", "")
    if not isinstance(description, str) or len(description) > 200:
        raise ValueError("description must be text of at most 200 characters")
    code = obj.get("code")
    if code is not None and (not isinstance(code, str) or not PLAIN_CODE_RE.match(code)):
        raise ValueError("code must be 3-32 letters, digits or '-'")
    tiers = obj.get("tiers")
    if tiers is not None and (not isinstance(tiers, list)
                              or not all(isinstance(t, str) for t in tiers)):
        raise ValueError("tiers must be a list of tier names")
    segments = obj.get("segments")
    if segments is not None and (not isinstance(segments, list)
                                 or not all(isinstance(g, str) for g in segments)):
        raise ValueError("segments must be a list of segment names")
    offer = _flag(obj.get("offer"), "offer", False)
    starts, ends = _instant(obj.get("starts_at"), "starts_at"), _instant(obj.get("ends_at"),
                                                                           "ends_at")
    until = parse_until(obj.get("until"))
    terms = {k: obj[k] for k in ("disc", "min_minor", "skus", "cats", "stack", "off")
             if k in obj}
    if starts is not None:
        terms["nbf"] = starts
    if ends is not None:
        terms["exp"] = ends
    if until is not None:
        terms["until"] = until.isoformat()
    # Checks the terms the way a scanned coupon's are checked.
    coupon_from_terms(terms, coupon_id=cid, campaign=cid, plain=True,
                      description=description or name, locale=locale)
    return Campaign(cid, name, description, code.upper() if code else None, terms, offer,
                    tiers, starts, ends, segments, until)


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
