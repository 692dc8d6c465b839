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
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

SOURCES = ("hid", "serial", "camera")
# ISO/IEC 15424 symbology identifier: "]", a symbology letter, a modifier character.
AIM_RE = re.compile(r"^\][A-Za-z][0-9A-Za-z]\Z")
GTIN14_RE = re.compile(r"^\d{14}\Z")
AI_RE = re.compile(r"^\d{2,4}\Z")
FORMAT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,31}\Z")
GS = "\x1d"
# The GS1 flavours of each symbology (ISO/IEC 15424; GS1 General Specifications 5.4.1).
GS1_SYMBOLOGIES = frozenset({"]C1", "]Q3", "]Q5", "]d2", "]e0", "]e1", "]e2", "]J1"})
GTIN_LENGTHS = (8, 12, 13, 14)
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


# ------------------------------------------------------------------ what a code stands for
#
# Every reader of a code calls `product_of(text, symbology)`: the scanner service (camera,
# HID, serial) to put a scan's `product` on it, and the edge to find a product by any form
# of its GTIN (edge/products.py), so a code means the same wherever it is read. GS1's rules
# are `biip`'s job: GTINs and GS1 element strings are parsed by it and their check digits
# verified. A code that is not a product (a member QR, a coupon JWS, a URL, a wrong check
# digit) gives None.
#
# The AIM symbology identifier decides how far to trust the digits:
#
# * `]E*` (EAN/UPC): the digits are a GTIN; 8 digits under `]E0` are a UPC-E, expanded to
#   its UPC-A (under `]E4` they are an EAN-8);
# * `]C1`, `]Q3`, `]d2`, `]e0` (and the other GS1 flavours): a GS1 element string, AI → value;
# * another known symbology (a plain QR `]Q1`, Code 128 `]C0`, ...): text, never a product,
#   even when it is all digits (a 12-digit loyalty card is not a UPC);
# * unknown (a keyboard-wedge scanner sends no identifier, a code typed by hand): digits of
#   a GTIN's length with a right check digit are a GTIN; a text holding the GS1 separator
#   (GS, 0x1D) is read as a GS1 element string.


def product_of(text: str, symbology: str | None) -> Product | None:
    """The product a code stands for, or None when it is not one (or its check digit is
    wrong). Never raises for any text: a scanner may send anything."""
    try:
        if symbology is not None and symbology.startswith("]E"):
            return _gtin_product(text, upc_e=symbology == "]E0")
        if symbology in GS1_SYMBOLOGIES:
            return _gs1_product(text, symbology)
        if symbology is None:
            if text.isascii() and text.isdigit() and len(text) in GTIN_LENGTHS:
                return _gtin_product(text, upc_e=False)
            if GS in text.strip(GS):
                return _gs1_product(text.strip(GS), "]C1")
    except Exception:  # biip raising on some input must never stop a scan
        log.warning("product code not understood (%d characters, symbology %s)",
                    len(text), symbology, exc_info=True)
    return None


def gtin14(text: str, symbology: str | None = None) -> str | None:
    """The GTIN-14 a code stands for (an EAN-13, UPC-A, EAN-8, GTIN-14, a UPC-E under
    `]E0`, a GS1 code's (01)), or None: the one form two codes are compared in."""
    product = product_of(text, symbology)
    return product.gtin if product is not None else None


def _gtin_product(digits: str, *, upc_e: bool) -> Product | None:
    from biip.gtin import Gtin
    from biip.upc import Upc

    if not (digits.isascii() and digits.isdigit()):
        return None
    if upc_e and len(digits) == 8:
        try:
            return Product(Upc.parse(digits).as_gtin_14())
        except Exception:
            return None
    if len(digits) not in GTIN_LENGTHS:
        return None  # EAN-2/5 add-ons alone, or something else
    try:
        return Product(Gtin.parse(digits).as_gtin_14())
    except Exception:  # biip's ParseError: a wrong check digit, a bad length
        return None


def _gs1_product(text: str, symbology: str) -> Product | None:
    """A GS1 element string: its AIs, and the GTIN of AI (01) or (02) when there is one."""
    import biip

    result = biip.parse(symbology + text)
    message = result.gs1_message
    if message is None:
        return None
    ai = {element.ai.ai: element.value for element in message.element_strings}
    gtin = None
    for element in message.element_strings:
        if element.ai.ai in ("01", "02"):
            if element.gtin is None:  # a wrong check digit in the GTIN
                return None
            gtin = element.gtin.as_gtin_14()
            break
    if gtin is None:
        return None  # an SSCC, a GLN, ... without a trade item: not a product
    return Product(gtin, ai)
