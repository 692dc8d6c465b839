"""Customer records and look-up hashes, as the hub and the edge both compute them
(docs/sync.md, "Look-up hashes").

Phone numbers, e-mail addresses and loyalty-card numbers are kept only as a look-up hash.
Phone numbers are normalised to E.164 with `phonenumbers` before hashing, so "0151 2345
6789" typed at a German till finds the customer whose number the app sent as +4915123456789.
The hash is `HMAC-SHA256(region key, scrypt("kind:normalised", chain salt, n, r, p, 32))`:
the scrypt stretch is the same in every region (the hub computes it once per identifier),
the HMAC with the region's key is cheap. A thief holding a store's key bundle pays one
scrypt per guessed number.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

CUSTOMER_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")


CARD_RE = re.compile(r"^[0-9]{6,32}\Z")


EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\Z")


CONSENTS = ("personalised", "marketing")


class IdentifierError(ValueError):
    """A phone number, e-mail or card number that cannot be one."""


def normalise_phone(text: str, country: str) -> str:
    """E.164 form of a phone number typed at the till or sent by the hub."""
    try:
        number = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException:
        raise IdentifierError(f"{text!r} is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise IdentifierError(f"{text!r} is not a valid phone number for {country}")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def normalise_card(text: str) -> str:
    """A loyalty-card number without the spaces and dashes printed on the card."""
    digits = re.sub(r"[\s-]", "", text)
    if not CARD_RE.match(digits):
        raise IdentifierError(f"{text!r} is not a loyalty-card number (6-32 digits)")
    return digits


def normalise_email(text: str) -> str:
    address = text.strip().lower()
    if not EMAIL_RE.match(address):
        raise IdentifierError(f"{text!r} is not an e-mail address")
    return address


# scrypt cost of the look-up stretch: about 14 ms and 4 MiB per identifier on a store box.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**12, 8, 1


_KID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def stretch(kind: str, normalised: str, salt: str, n: int = SCRYPT_N, r: int = SCRYPT_R,
            p: int = SCRYPT_P) -> bytes:
    """The region-independent, deliberately slow part of a look-up hash."""
    return hashlib.scrypt(f"{kind}:{normalised}".encode(), salt=salt.encode(), n=n, r=r, p=p,
                          dklen=32, maxmem=256 * r * n * p + (1 << 20))


@dataclass(frozen=True)
class KeyBundle:
    """What a store needs to make look-up hashes: the region's key and the chain's stretch.

    JSON: `{"kid", "key" (base64url of 32 bytes), "salt", "n", "r", "p"}`.
    """

    kid: str
    key: bytes
    salt: str
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    @classmethod
    def generate(cls, kid: str | None = None, salt: str | None = None, n: int = SCRYPT_N,
                 r: int = SCRYPT_R, p: int = SCRYPT_P) -> KeyBundle:
        """A new random key (and salt, unless given)."""
        return cls(kid or f"local-{secrets.token_hex(6)}", secrets.token_bytes(32),
                   salt or secrets.token_urlsafe(16), n, r, p)

    @classmethod
    def from_json(cls, obj: Any) -> KeyBundle:
        """A bundle from its JSON form; ValueError when it is not one."""
        if not isinstance(obj, dict):
            raise ValueError("a look-up key bundle must be a JSON object")
        kid, key, salt = obj.get("kid"), obj.get("key"), obj.get("salt")
        if not isinstance(kid, str) or not _KID_RE.match(kid):
            raise ValueError("a look-up key bundle needs a kid")
        if not isinstance(salt, str) or not 8 <= len(salt) <= 128:
            raise ValueError("a look-up key bundle needs a salt of 8-128 characters")
        try:
            raw = _unb64(key) if isinstance(key, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError("a look-up key must be 32 bytes, base64url")
        cost = [obj.get(name) for name in ("n", "r", "p")]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in cost):
            raise ValueError("a look-up key bundle needs whole numbers n, r and p")
        n, r, p = (int(v) for v in cost)  # type: ignore[arg-type]
        # Bounds that keep one stretch within a store box's memory and a till's patience.
        if not (2 <= n <= 2**17 and n & (n - 1) == 0 and 1 <= r <= 16 and 1 <= p <= 4):
            raise ValueError("look-up stretch cost out of range (n a power of 2 up to 2**17, "
                             "r 1-16, p 1-4)")
        return cls(kid, raw, salt, n, r, p)

    def to_json(self) -> dict[str, Any]:
        return {"kid": self.kid, "key": _b64(self.key), "salt": self.salt, "n": self.n,
                "r": self.r, "p": self.p}

    def stretch(self, kind: str, normalised: str) -> bytes:
        return stretch(kind, normalised, self.salt, self.n, self.r, self.p)

    def keyed(self, stretched: bytes) -> str:
        """The look-up hash (hex) of an already stretched identifier."""
        return hmac.new(self.key, stretched, hashlib.sha256).hexdigest()


class Lookup:
    """Look-up hashes of identifiers: the only form in which they are kept at the edge.

    The one place the hash is defined; the hub uses `KeyBundle.keyed` on the stretch it
    keeps, which is the same function split in two. `rekey` swaps the bundle in place, so
    the checkout and the puller, which share this object, move to a new key together.
    """

    def __init__(self, bundle: KeyBundle, country: str) -> None:
        self.bundle = bundle
        self.country = country

    @property
    def kid(self) -> str:
        return self.bundle.kid

    def rekey(self, bundle: KeyBundle) -> None:
        self.bundle = bundle

    def hash(self, kind: str, normalised: str) -> str:
        bundle = self.bundle  # one bundle for both halves, even while another thread rekeys
        return bundle.keyed(bundle.stretch(kind, normalised))

    def phone(self, text: str) -> str:
        return self.hash("phone", normalise_phone(text, self.country))

    def card(self, text: str) -> str:
        return self.hash("card", normalise_card(text))

    def email(self, text: str) -> str:
        return self.hash("email", normalise_email(text))


@dataclass
class CustomerRecord:
    """One customer as the hub (or an import file) sends it, validated."""

    id: str
    display_name: str
    tier: str
    points: int
    consent: dict[str, bool]
    lookups: list[tuple[str, str]] = field(default_factory=list)  # (kind, hash)
    wallet: list[str] = field(default_factory=list)  # coupon tokens clipped to the customer
    segments: list[str] = field(default_factory=list)  # marketing segments, for offers
    # (kind, normalised) of the raw identifiers: only when parsed without a Lookup (the hub).
    identifiers: list[tuple[str, str]] = field(default_factory=list)


LOOKUP_KINDS = ("phone", "email", "card")


_HASH_RE = re.compile(r"^[0-9a-f]{64}\Z")


MAX_LOOKUPS = 32


def text_values(obj: dict[str, Any], one: str, many: str) -> list[str]:
    values: list[Any] = []
    if obj.get(one) is not None:
        values.append(obj[one])
    if obj.get(many) is not None:
        if not isinstance(obj[many], list):
            raise IdentifierError(f'"{many}" must be a list')
        values.extend(obj[many])
    if not all(isinstance(v, str) for v in values):
        raise IdentifierError(f'"{one}"/"{many}" must be text')
    return values


def normalised_identifiers(obj: dict[str, Any], country: str) -> list[tuple[str, str]]:
    """(kind, normalised) of the raw phone numbers, e-mail addresses and cards of a record."""
    out = [("phone", normalise_phone(p, country)) for p in text_values(obj, "phone", "phones")]
    out += [("email", normalise_email(e)) for e in text_values(obj, "email", "emails")]
    out += [("card", normalise_card(c)) for c in text_values(obj, "card", "cards")]
    if len(out) > MAX_LOOKUPS:
        raise ValueError(f"at most {MAX_LOOKUPS} phone numbers, e-mails and cards")
    return out


def _hashed_lookups(obj: dict[str, Any], lookup: Lookup) -> list[tuple[str, str]]:
    """The `lookups` of a record from the hub; only hashes made with our key bundle count."""
    items = obj["lookups"]
    if obj.get("key") != lookup.kid:
        # Made with another region's or an older key: useless here until the hub resends.
        raise ValueError("hashed with a look-up key this store does not hold")
    if not isinstance(items, list) or len(items) > MAX_LOOKUPS:
        raise ValueError(f"lookups must be a list of at most {MAX_LOOKUPS}")
    out = []
    for item in items:
        if not isinstance(item, dict) or item.get("kind") not in LOOKUP_KINDS or \
                not isinstance(item.get("hash"), str) or not _HASH_RE.match(item["hash"]):
            raise ValueError('each of lookups must be {"kind": phone|email|card, "hash": hex}')
        out.append((str(item["kind"]), str(item["hash"])))
    return out


def parse_customer(obj: Any, lookup: Lookup | None, country: str = "DE") -> CustomerRecord:
    """Validate one customer record; raises ValueError with a reason a person can act on.

    Identifiers come raw (an import file: normalised and hashed here with `lookup`) or as
    `lookups` hashed by the hub with the key bundle named in `key`. Without a `lookup` (the
    hub, which keeps the raw identifiers) they are only normalised, in `identifiers`.
    """
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    cid = obj.get("id")
    if not isinstance(cid, str) or not CUSTOMER_ID_RE.match(cid):
        raise ValueError("id missing or not 1-64 of letters, digits and ._:-")
    name = obj.get("display_name")
    if not isinstance(name, str) or not 0 < len(name.strip()) <= 80:
        raise ValueError("display_name missing or longer than 80 characters")
    tier = obj.get("tier", "member")
    if not isinstance(tier, str) or not 0 < len(tier) <= 32:
        raise ValueError("tier must be text of at most 32 characters")
    points = obj.get("points", 0)
    if not isinstance(points, int) or isinstance(points, bool) or points < 0:
        raise ValueError("points must be a whole number, 0 or more")
    consent_in = obj.get("consent", {})
    if not isinstance(consent_in, dict) or not all(
            k in CONSENTS and isinstance(v, bool) for k, v in consent_in.items()):
        raise ValueError(f"consent must be an object of true/false flags: {', '.join(CONSENTS)}")
    consent = {k: bool(consent_in.get(k, False)) for k in CONSENTS}
    raw = normalised_identifiers(obj, lookup.country if lookup else country)
    lookups: list[tuple[str, str]] = []
    if lookup is not None:
        lookups = [(kind, lookup.hash(kind, value)) for kind, value in raw]
        if obj.get("lookups") is not None:
            lookups += _hashed_lookups(obj, lookup)
    elif obj.get("lookups") is not None:
        raise ValueError("lookups are made by the hub; give phone, email and card instead")
    wallet = text_values(obj, "coupon", "wallet")
    segments = obj.get("segments", [])
    if not isinstance(segments, list) or len(segments) > 50 or not all(
            isinstance(g, str) and 0 < len(g) <= 64 for g in segments):
        raise ValueError("segments must be a list of at most 50 segment names")
    return CustomerRecord(cid, name.strip(), tier, points, consent, lookups, wallet,
                          sorted(set(segments)), [] if lookup is not None else raw)
