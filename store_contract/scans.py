"""The scan record (docs/protocol.md, "Scans"): what a scanner publishes as `evt/scan` and
what the edge forwards to the lane or kiosk it is assigned to as `cmd/scan`.

One definition for both ends: the scanner service (`pos_bridge.scanner`) builds a `Scan`
and sends `to_data()`; the edge reads it back with `parse_scan`, which refuses what does
not fit with a reason naming the field, and forwards `forward_data(scanner)`.

A code is text, exactly as read (control characters and all: showing it safely is the
reader's job). When the symbol's bytes are not the UTF-8 of that text (a binary QR, a
Latin-1 one), they travel beside it in `raw_b64`, so nothing the symbol held is lost.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SOURCES = ("hid", "serial", "camera")
# ISO/IEC 15424 symbology identifier: "]", a symbology letter, a modifier character.
AIM_RE = re.compile(r"^\][A-Za-z][0-9A-Za-z]\Z")
GTIN14_RE = re.compile(r"^\d{14}\Z")
AI_RE = re.compile(r"^\d{2,4}\Z")
FORMAT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,31}\Z")
# A 4 kB QR (version 40, binary) holds 2,953 bytes; a text one up to 7,089 digits.
MAX_CODE_CHARS = 8192
MAX_RAW_BYTES = 4096


@dataclass(frozen=True)
class Product:
    """A product code as GS1 reads it: the GTIN-14 always, the GTIN-13 and the 12-digit
    UPC-A when the GTIN has that form, and the element strings of a GS1 code (AI → value)."""

    gtin: str
    ai: Mapping[str, str] = field(default_factory=dict)

    @property
    def gtin13(self) -> str | None:
        return self.gtin[1:] if self.gtin.startswith("0") else None

    @property
    def upc(self) -> str | None:
        # A GTIN-12 has no "0000" company prefix: that range holds the GTIN-8s (EAN-8),
        # which are not UPCs.
        return self.gtin[2:] if self.gtin.startswith("00") \
            and not self.gtin.startswith("000000") else None

    def to_data(self) -> dict[str, Any]:
        out: dict[str, Any] = {"gtin": self.gtin, "gtin13": self.gtin13, "upc": self.upc}
        if self.ai:
            out["ai"] = dict(self.ai)
        return out


@dataclass(frozen=True)
class Scan:
    """One code read by one scanner."""

    code: str
    source: str
    symbology: str | None = None  # AIM id such as "]Q1", "]E0", "]C1"; None: not known
    format: str | None = None  # the decoder's name for it ("QRCode", "EAN13", ...)
    raw: bytes | None = None  # the symbol's bytes, when they are not code.encode("utf-8")
    seq: int | None = None  # per scanner, from 1 each time the scanner service starts
    product: Product | None = None

    def to_data(self) -> dict[str, Any]:
        """`evt/scan`'s data."""
        out: dict[str, Any] = {"code": self.code, "symbology": self.symbology,
                               "source": self.source}
        if self.format is not None:
            out["format"] = self.format
        if self.raw is not None and self.raw != self.code.encode("utf-8"):
            out["raw_b64"] = base64.b64encode(self.raw).decode("ascii")
        if self.seq is not None:
            out["seq"] = self.seq
        if self.product is not None:
            out["product"] = self.product.to_data()
        return out

    def forward_data(self, scanner: str) -> dict[str, Any]:
        """`cmd/scan`'s data: the scan as the scanner sent it, and which scanner it was."""
        return {**self.to_data(), "scanner": scanner}

    @property
    def payload(self) -> bytes:
        """The symbol's bytes: `raw` when it was sent, else the UTF-8 of `code`."""
        return self.raw if self.raw is not None else self.code.encode("utf-8")


def _bad(name: str, what: str) -> ValueError:
    return ValueError(f"data.{name}: {what}")


def _optional_str(data: Mapping[str, Any], name: str, pattern: re.Pattern[str],
                  what: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise _bad(name, what)
    return value


def _parse_product(value: Any) -> Product | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad("product", "not an object")
    gtin = value.get("gtin")
    if not isinstance(gtin, str) or not GTIN14_RE.match(gtin) or not gtin_ok(gtin):
        raise _bad("product.gtin", "not a GTIN-14 with a right check digit")
    ai = value.get("ai") or {}
    if not isinstance(ai, dict) or not all(
            isinstance(k, str) and AI_RE.match(k) and isinstance(v, str) and len(v) <= 90
            for k, v in ai.items()):
        raise _bad("product.ai", "not an object of GS1 application identifiers and values")
    return Product(gtin, dict(ai))


def parse_scan(data: Any) -> Scan:
    """The scan in an `evt/scan` (or `cmd/scan`) data; ValueError naming the field."""
    if not isinstance(data, dict):
        raise ValueError("data: not an object")
    code = data.get("code")
    if not isinstance(code, str) or not 0 < len(code) <= MAX_CODE_CHARS:
        raise _bad("code", f"missing or not 1-{MAX_CODE_CHARS} characters of text")
    source = data.get("source")
    if source not in SOURCES:
        raise _bad("source", f"not one of {', '.join(SOURCES)}")
    raw = None
    if data.get("raw_b64") is not None:
        try:
            raw = base64.b64decode(str(data["raw_b64"]), validate=True)
        except (binascii.Error, ValueError):
            raise _bad("raw_b64", "not base64") from None
        if len(raw) > MAX_RAW_BYTES:
            raise _bad("raw_b64", f"more than {MAX_RAW_BYTES} bytes")
    seq = data.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 1):
        raise _bad("seq", "not a whole number from 1")
    return Scan(code=code, source=source,
                symbology=_optional_str(data, "symbology", AIM_RE,
                                        "not an AIM symbology identifier such as ]Q1"),
                format=_optional_str(data, "format", FORMAT_RE, "not a symbology name"),
                raw=raw, seq=seq, product=_parse_product(data.get("product")))


def gtin_ok(digits: str) -> bool:
    """A GTIN (8, 12, 13 or 14 digits) whose GS1 mod-10 check digit is right."""
    from biip.checksums import gs1_standard_check_digit

    if not digits.isdigit() or len(digits) not in (8, 12, 13, 14):
        return False
    return str(gs1_standard_check_digit(digits[:-1])) == digits[-1]
