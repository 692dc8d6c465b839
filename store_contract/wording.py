"""How money and moments read in the sentences cashiers and shoppers see.

Amounts are integer minor units on the wire; Babel turns them into "€3.20" or "3,20 €" for
the store's locale, and moments into the store's local time ("21 Nov, 17:40") through one function,
`local_time`, which every page, script and receipt uses.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime, get_date_format
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


# The forms a moment takes for people, all in the store's (or hub's) zone and locale.
FORMS = {
    "moment": "d MMM, HH:mm",     # "21 Nov, 17:40": lists, receipts, the audit trail
    "day": "d MMM yyyy",          # "21 Nov 2026"
    "day_month": "d MMM",         # "21 Nov": a chart's days
    "clock": "HH:mm",             # "17:40"
    "seconds": "HH:mm:ss",        # "17:40:09": what changes every few seconds (last seen)
    "full": "d MMM yyyy, HH:mm:ss",
}
Moment = datetime | float | int | str


def local_time(when: Moment, zone: ZoneInfo, locale: str, form: str = "moment") -> str:
    """THE way a moment reads for people, everywhere (staff pages, their scripts through the
    server, receipts, the hub's dashboard): in `zone`, 24-hour, with the locale's month
    names. `when` is an aware datetime, a Unix time, or RFC 3339 / ISO 8601 text."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    elif not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, UTC)
    if when.tzinfo is None:
        raise ValueError("a moment without a zone cannot be shown in the store's zone")
    return str(format_datetime(when.astimezone(zone), FORMS[form], locale=locale))


def moment(when: datetime, zone: ZoneInfo, locale: str) -> str:
    """A moment in the store's local time, short: "21 Nov, 17:40"."""
    return local_time(when, zone, locale, "moment")


def day(when: datetime, zone: ZoneInfo, locale: str) -> str:
    """A local calendar day, short: "21 Nov 2026"."""
    return local_time(when, zone, locale, "day")


def calendar_day(when: date, locale: str, form: str = "day") -> str:
    """A calendar date as it is (no zone to convert from), short: "30 Nov 2026"."""
    return str(format_date(when, FORMS[form], locale=locale))


def clock_time(when: datetime, zone: ZoneInfo, locale: str) -> str:
    """A time of day in the store's zone: "17:40"."""
    return local_time(when, zone, locale, "clock")


# ------------------------------------------------------------ dates typed by people


@lru_cache(maxsize=32)
def date_pattern(locale: str) -> str:
    """The locale's numeric date pattern with a four-digit year and two-digit day and
    month, for a date field people type in: de_DE "dd.MM.yyyy", en_IE "dd/MM/yyyy",
    en_US "MM/dd/yyyy" (CLDR's short date format, widened)."""
    pattern = str(get_date_format("short", locale=locale).pattern)
    pattern = re.sub(r"y+", "yyyy", pattern)
    pattern = re.sub(r"M+", "MM", pattern)
    return re.sub(r"d+", "dd", pattern)


def input_date(when: date, locale: str) -> str:
    """A date as the date field of `locale` shows it: 24.11.2026 (de_DE)."""
    return str(format_date(when, date_pattern(locale), locale=locale))


def parse_input_date(text: str, locale: str) -> date:
    """A date typed in the locale's field (24.11.2026, 24.11.26, 2026-11-24 too); ValueError
    when it is not one."""
    text = text.strip()
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    parts = re.findall(r"\d+", text)
    order = [c for c in re.findall(r"[yMd]", date_pattern(locale)) if c]
    order = list(dict.fromkeys(order))
    if len(parts) != 3 or len(order) != 3 or re.sub(r"[\d\s./-]", "", text):
        raise ValueError(f"{text!r} is not a date such as {input_date(date(2026, 11, 24), locale)}")
    values = dict(zip(order, (int(p) for p in parts), strict=True))
    year = values["y"] + (2000 if values["y"] < 100 else 0)
    return date(year, values["M"], values["d"])


def device_name(kind: str, ident: str) -> str:
    """A device as staff read it: "lane 3", "kiosk entrance", or the id alone when it already
    says what it is ("lane-3", "kiosk-1"), never "lane lane-3"."""
    word = {"pos": "lane", "kiosk": "kiosk", "printer": "printer", "scanner": "scanner"}.get(
        kind, kind)
    return ident if ident.lower().startswith(word) else f"{word} {ident}"
