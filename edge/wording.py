"""How money and moments read in the sentences cashiers and shoppers see.

Amounts are integer minor units on the wire; Babel turns them into "€3.20" or "3,20 €" for
the store's locale, and moments into the store's local time ("21 Nov, 17:40").
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, get_currency_precision


@lru_cache(maxsize=64)
def _precision(currency: str) -> int:
    return int(get_currency_precision(currency))


def to_major(minor: int, currency: str) -> Decimal:
    """500 EUR minor units -> Decimal('5.00'); exact, never a float."""
    places = _precision(currency)
    return (Decimal(minor) / (Decimal(10) ** places)).quantize(Decimal(1).scaleb(-places))


def money(minor: int, currency: str, locale: str) -> str:
    """An amount for people: money(320, "EUR", "en_IE") == "€3.20"."""
    return str(format_currency(to_major(minor, currency), currency, locale=locale))


def moment(when: datetime, zone: ZoneInfo, locale: str) -> str:
    """A moment in the store's local time, short: "21 Nov, 17:40"."""
    return str(format_datetime(when.astimezone(zone), "d MMM, HH:mm", locale=locale))


def day(when: datetime, zone: ZoneInfo, locale: str) -> str:
    """A local calendar day, short: "21 Nov 2026"."""
    return str(format_datetime(when.astimezone(zone), "d MMM yyyy", locale=locale))


def calendar_day(when: date, locale: str) -> str:
    """A calendar date as it is (no zone to convert from), short: "30 Nov 2026"."""
    return str(format_date(when, "d MMM yyyy", locale=locale))


def clock_time(when: datetime, zone: ZoneInfo, locale: str) -> str:
    """A time of day in the store's zone: "17:40"."""
    return str(format_datetime(when.astimezone(zone), "HH:mm", locale=locale))
