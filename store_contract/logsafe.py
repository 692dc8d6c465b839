"""Personal data never reaches a log line: a filter on the edge's log handlers that masks
e-mail addresses, phone numbers and card numbers in whatever a message says.

The code takes care not to log them in the first place (ids and hashes only); this is the
net under it, for a message that quotes what a device or a file sent (an exception text,
a value in an error). It is deliberately coarse: a long run of digits is masked whatever
it was, since a card number and an order number look the same to it.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from zoneinfo import ZoneInfo

MASK = "[redacted]"
_PATTERNS = [
    re.compile(r"[^\s@<>()\"',;:]{1,64}@[^\s@<>()\"',;:]{1,255}\.[A-Za-z]{2,}"),  # e-mail
    re.compile(r"\+\d[\d ()./-]{6,}\d"),                     # a phone number with +country
    re.compile(r"(?<![\w.-])\d(?:[ -]?\d){11,18}(?![\w.-])"),  # a card (12-19 digits)
    re.compile(r"(?<![\w.-])0\d{2,4}[ /-]?\d(?:[ /-]?\d){4,9}(?![\w.-])"),  # 0151 2345678
]


def redact(text: str) -> str:
    """`text` with every e-mail address, phone and card number replaced by MASK."""
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    return text


class RedactFilter(logging.Filter):
    """Rewrites each record's message, arguments applied, without personal data."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class ZonedFormatter(logging.Formatter):
    """Log lines stamped with the moment in the store's zone and its UTC offset
    ("2026-11-24T16:07:09.123+02:00"), so a time a line quotes and the line's own stamp
    read alike, and nobody has to guess which zone a line is in."""

    def __init__(self, fmt: str | None, zone: ZoneInfo | None) -> None:
        super().__init__(fmt)
        self.zone = zone  # None: the machine's own zone (a device's processes)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        when = datetime.fromtimestamp(record.created, self.zone) if self.zone is not None \
            else datetime.fromtimestamp(record.created).astimezone()
        return when.isoformat(timespec="milliseconds")


def install(logger: logging.Logger | None = None, zone: ZoneInfo | None = None) -> None:
    """Put the filter on every handler of `logger` (the root logger by default), once; with
    `zone`, stamp their lines with ISO 8601 times in that zone with the offset."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())
    if zone is not None:
        stamp(zone, logger)


def stamp(zone: ZoneInfo | None = None, logger: logging.Logger | None = None) -> None:
    """Stamp the lines of every handler of `logger` (the root logger by default) with ISO
    8601 times with their offset, in `zone` (None: the machine's zone), keeping each
    handler's format."""
    for handler in (logger or logging.getLogger()).handlers:
        if not isinstance(handler.formatter, ZonedFormatter):
            fmt = handler.formatter._fmt if handler.formatter is not None else None
            handler.setFormatter(ZonedFormatter(fmt, zone))
