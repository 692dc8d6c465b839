"""What a scanned or typed code is: one set of rules for the lanes and the staff checkout page.

`classify_code` reads a code by its shape only (no look-up, no signature check): the
domain then verifies what the shape says. The lanes' `identify` (MQTT, HTTP) reads its
`code` with it, and the staff checkout page routes every scan with it, so a code that
identifies a shopper at a lane identifies them on the page too (docs/checkout.md §8.2).

The rules, in order:

1. It contains a dot: a signed token. `member` when its (unverified) header says
   `member+jwt`, else `coupon` (the domain checks the signature and the `typ`).
2. It starts with `+` or `00`, or with one `0` and is a valid number of the store's
   country (national form), in any common spacing (spaces, `-`, `/`, `.`, brackets):
   `phone`, normalised to E.164. `+49 160 5550199`, `0049 160 5550199` and `0160 5550199`
   are the same number in a German store.
3. 6-32 digits once spaces and dashes are left out: `card` (`4000 1234 1234 1234`).
4. 3-32 letters, digits or `-`: a `plain` campaign code (`SAVE10`); 3-5 digit codes too.
5. Anything else: `unreadable` (`hint` "phone" when it was meant as one but is not valid).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import jwt

from store_contract.campaigns import PLAIN_CODE_RE
from store_contract.customers import IdentifierError, normalise_card, normalise_phone
from store_contract.jws import MEMBER_TYP, looks_like_jws

# A phone number as people write it: digits with spaces, dashes, slashes, dots or brackets.
PHONE_SHAPE_RE = re.compile(r"^\+?[0-9][0-9 ()/.\-]{3,30}\Z|^\([0-9][0-9 ()/.\-]{3,30}\Z")
SHOPPER_KINDS = ("member", "card", "phone")
KINDS = ("member", "coupon", "phone", "card", "plain", "unreadable")


@dataclass(frozen=True, slots=True)
class Scanned:
    """A code read by its shape. `value`: E.164 for a phone, the digits of a card, the
    code as scanned otherwise. `hint`: for `unreadable`, what it looked like ("phone")."""

    kind: str
    value: str
    hint: str | None = None

    @property
    def names_shopper(self) -> bool:
        return self.kind in SHOPPER_KINDS


def _phone_like(text: str) -> bool:
    lead = text.lstrip("(")
    return bool(PHONE_SHAPE_RE.match(text)) and (lead.startswith(("+", "0")))


def classify_code(code: str, country: str) -> Scanned:
    """What `code` is by its shape; `country` reads phone numbers in national form."""
    text = code.strip()
    if looks_like_jws(text):
        try:
            typ = jwt.get_unverified_header(text).get("typ")
        except jwt.PyJWTError:
            typ = None
        return Scanned("member" if typ == MEMBER_TYP else "coupon", text)
    if _phone_like(text):
        lead = text.lstrip("(")
        try:
            return Scanned("phone", normalise_phone(text, country))
        except IdentifierError:
            if lead.startswith(("+", "00")):
                return Scanned("unreadable", text, hint="phone")
        # A national form that is not a valid number here: perhaps a card starting with 0.
    try:
        return Scanned("card", normalise_card(text))
    except IdentifierError:
        pass
    if PLAIN_CODE_RE.match(text):
        return Scanned("plain", text)
    return Scanned("unreadable", text, hint="phone" if _phone_like(text) else None)
