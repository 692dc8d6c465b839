"""A coupon's terms and the campaign records the hub sends (docs/sync.md, docs/checkout.md).

A coupon is good from its `nbf` moment and strictly before its `exp` moment (RFC 7519). A
coupon meant to last "until 30 Nov" everywhere carries that date as its `until` claim: it
ends at midnight after that date in each store's own zone, and its `exp` (`until_exp`) is
late enough for the last zone on earth to reach that midnight. The edge and the hub read
terms with this one parser, so a campaign the hub accepts is one every store can honour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from typing import Any
from zoneinfo import ZoneInfo

from store_contract.basket import Discount, Rule, parse_discount
from store_contract.protocol import parse_ts
from store_contract.wording import money

PLAIN_CODE_RE = re.compile(r"^[A-Za-z0-9-]{3,32}\Z")


UNTIL_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


# The last zone on earth where a calendar date ends (UTC-12; POSIX-style names flip the sign).
LAST_ZONE = ZoneInfo("Etc/GMT+12")


COUPON_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")


MAX_USES = 1_000_000


# Coupon ids of receipt offers signed by a store key: `rc:{store}:{unique part}`.
RECEIPT_COUPON_PREFIX = "rc:"


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


def numeric_date(value: Any, name: str) -> datetime | None:
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
        not_before=numeric_date(terms.get("nbf"), "nbf"),
        expires=numeric_date(terms.get("exp"), "exp"),
        max_uses=max_uses, rule=rule, min_minor=min_minor,
        stackable=_flag(terms.get("stack"), "stack", False),
        offline_ok=_flag(terms.get("off"), "off", True), plain=plain,
        description=description or describe(rule, locale),
        until=parse_until(terms.get("until")))


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


_NO_ZONE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?\Z")


def _instant(value: Any, name: str) -> float | None:
    """A campaign's start or end: RFC 3339 with its zone (the one parser, `parse_ts`)."""
    if value is None:
        return None
    try:
        return parse_ts(value).timestamp()
    except ValueError:
        if isinstance(value, str) and _NO_ZONE_RE.match(value):
            raise ValueError(f"{name} must say its time zone (Z or +01:00)") from None
        raise ValueError(f"{name} must be an RFC 3339 time such as 2026-12-01T00:00:00Z") \
            from None


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
