"""What a scanned code means to a shop: the product behind it, if it is one.

Every kind of scanner (camera, HID, serial) calls `product_of(text, symbology)`, so a code
means the same whichever scanner read it. GS1's rules are `biip`'s job: GTINs and GS1 element
strings are parsed by it and their check digits verified. A code that is not a product
(a member QR, a coupon JWS, a URL, a wrong check digit) gives `None`: the scan still goes
through untouched, it just carries no `product` (docs/protocol.md, "Scans").

The AIM symbology identifier decides how far to trust the digits:

* `]E*` (EAN/UPC): the digits are a GTIN; 8 digits under `]E0` are a UPC-E, expanded to
  its UPC-A (under `]E4` they are an EAN-8);
* `]C1`, `]Q3`, `]d2`, `]e0` (and the other GS1 flavours): a GS1 element string, AI → value;
* another known symbology (a plain QR `]Q1`, Code 128 `]C0`, ...): text, never a product,
  even when it is all digits (a 12-digit loyalty card is not a UPC);
* unknown (a keyboard-wedge scanner sends no identifier): digits of a GTIN's length with a
  right check digit are a GTIN; a text holding the GS1 separator (GS, 0x1D) is read as a
  GS1 element string.
"""

from __future__ import annotations

import logging

from store_contract.scans import Product

log = logging.getLogger(__name__)

GS = "\x1d"
# The GS1 flavours of each symbology (ISO/IEC 15424; GS1 General Specifications 5.4.1).
GS1_SYMBOLOGIES = frozenset({"]C1", "]Q3", "]Q5", "]d2", "]e0", "]e1", "]e2", "]J1"})
GTIN_LENGTHS = (8, 12, 13, 14)


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
