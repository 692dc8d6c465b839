"""The customer cache at the edge: just enough to greet a shopper and check their coupons.

Kept per customer: id, display name, tier, points and consent flags. Phone numbers, e-mail
addresses and loyalty-card numbers are never stored: only an HMAC of each (key in the data
dir), so the cache can answer "whose card is this?" without holding the numbers.
Phone numbers are normalised to E.164 with `phonenumbers` before hashing, so "0151 2345
6789" typed at a German till finds the customer whose number the app sent as +4915123456789.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

from edge.protocol import now_rfc3339
from edge.store import Store

CUSTOMER_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
CARD_RE = re.compile(r"^[0-9]{6,32}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
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


class Lookup:
    """Keyed hashes of identifiers: the only form in which they are kept at the edge."""

    def __init__(self, key: str, country: str) -> None:
        self._key = key.encode()
        self.country = country

    def hash(self, kind: str, normalised: str) -> str:
        return hmac.new(self._key, f"{kind}:{normalised}".encode(), hashlib.sha256).hexdigest()

    def phone(self, text: str) -> str:
        return self.hash("phone", normalise_phone(text, self.country))

    def card(self, text: str) -> str:
        return self.hash("card", normalise_card(text))

    def email(self, text: str) -> str:
        return self.hash("email", normalise_email(text))


@dataclass(frozen=True)
class Customer:
    id: str
    display_name: str
    tier: str
    points: int
    consent: dict[str, bool]
    segments: tuple[str, ...] = ()

    @property
    def personalised(self) -> bool:
        """May receipts, kiosks and offers use this shopper's profile?"""
        return bool(self.consent.get("personalised"))

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "display_name": self.display_name, "tier": self.tier,
                "points": self.points}


def get_customer(store: Store, customer_id: str) -> Customer | None:
    row = store.query_one("SELECT * FROM customers WHERE id = ?", (customer_id,))
    return customer_from_row(row) if row else None


def find_by_hash(store: Store, kind: str, digest: str) -> Customer | None:
    row = store.query_one(
        "SELECT c.* FROM customer_lookup l JOIN customers c ON c.id = l.customer_id "
        "WHERE l.hash = ? AND l.kind = ?", (digest, kind))
    return customer_from_row(row) if row else None


def customer_from_row(row: Any) -> Customer:
    return Customer(row["id"], row["display_name"], row["tier"], row["points"],
                    json.loads(row["consent"]), tuple(json.loads(row["segments"] or "[]")))


# ---------------------------------------------------------------- import


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


def _strings(obj: dict[str, Any], one: str, many: str) -> list[str]:
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


def parse_customer(obj: Any, lookup: Lookup) -> CustomerRecord:
    """Validate one customer record; raises ValueError with a reason a person can act on."""
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
    lookups: list[tuple[str, str]] = []
    lookups += [("phone", lookup.phone(p)) for p in _strings(obj, "phone", "phones")]
    lookups += [("email", lookup.email(e)) for e in _strings(obj, "email", "emails")]
    lookups += [("card", lookup.card(c)) for c in _strings(obj, "card", "cards")]
    wallet = _strings(obj, "coupon", "wallet")
    segments = obj.get("segments", [])
    if not isinstance(segments, list) or len(segments) > 50 or not all(
            isinstance(g, str) and 0 < len(g) <= 64 for g in segments):
        raise ValueError("segments must be a list of at most 50 segment names")
    return CustomerRecord(cid, name.strip(), tier, points, consent, lookups, wallet,
                          sorted(set(segments)))


def upsert_customers(db: Any, records: Iterable[CustomerRecord],
                     wallet_entry: Callable[[str, str], dict[str, Any] | None]) -> None:
    """Write customers (inside a store transaction): replaces identifiers and wallet.

    `wallet_entry(customer_id, token)` turns a clipped coupon token into a wallet row, or
    None to leave it out (not genuine, or bound to someone else).
    """
    now = now_rfc3339()
    conn = db.conn
    for rec in records:
        conn.execute(
            "INSERT INTO customers (id, display_name, tier, points, consent, segments, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "display_name = excluded.display_name, tier = excluded.tier, "
            "points = excluded.points, consent = excluded.consent, "
            "segments = excluded.segments, updated_at = excluded.updated_at",
            (rec.id, rec.display_name, rec.tier, rec.points, json.dumps(rec.consent),
             json.dumps(rec.segments), now))
        conn.execute("DELETE FROM customer_lookup WHERE customer_id = ?", (rec.id,))
        # A number that moved to another customer (a card re-issued) belongs to the newer one.
        conn.executemany(
            "INSERT INTO customer_lookup (hash, kind, customer_id) VALUES (?, ?, ?) "
            "ON CONFLICT (hash) DO UPDATE SET kind = excluded.kind, "
            "customer_id = excluded.customer_id",
            [(digest, kind, rec.id) for kind, digest in rec.lookups])
        # The hub's wallet replaces ours, except next-visit coupons this store printed for
        # the shopper, which the hub may not have heard of yet.
        conn.execute("DELETE FROM wallet WHERE customer_id = ? AND coupon_id NOT IN "
                     "(SELECT id FROM issued_coupons WHERE customer_id = ?)", (rec.id, rec.id))
        for token in rec.wallet:
            entry = wallet_entry(rec.id, token)
            if entry is not None:
                add_to_wallet(conn, rec.id, entry, token, now)


def add_to_wallet(conn: Any, customer_id: str, entry: dict[str, Any], token: str,
                  clipped_at: str) -> None:
    """Put a coupon (a `CouponBook.wallet_entry`) in the customer's wallet."""
    conn.execute(
        "INSERT OR REPLACE INTO wallet (customer_id, coupon_id, campaign_id, description, "
        "expires_at, until, max_uses, token, clipped_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (customer_id, entry["coupon"], entry["campaign"], entry["description"],
         entry["expires_at"], entry.get("until"), entry["max_uses"], token.strip(), clipped_at))


# ---------------------------------------------------------------- erasure

# Events that are only about the person: dropped on erasure. Others (a sale, a redemption)
# are kept for the store's figures with the person taken out.
PERSONAL_EVENTS = ("customer.identified", "consent.changed", "offer.clipped", "kiosk.session")
# A coupon token bound to the person names them (`sub`): it goes too.
_PERSONAL_KEYS = ("customer_id", "identifier", "display_name", "token")


def erase_customer(conn: Any, customer_id: str) -> dict[str, int]:
    """Remove a person from this edge (inside a store transaction); what was touched.

    Profile, look-up hashes and wallet go; sales, redemptions and receipts stay for the
    books without the link to the person; events not yet sent to the hub lose theirs too
    (ARCHITECTURE §9), as do dead letters.
    """
    from edge.receipts import anonymise_document

    counts = {"customer": conn.execute("DELETE FROM customers WHERE id = ?",
                                       (customer_id,)).rowcount}
    # The look-up hashes and the wallet go with the profile (ON DELETE CASCADE); coupons
    # the store signed for the person on receipts go too.
    counts["issued_coupons"] = conn.execute(
        "DELETE FROM issued_coupons WHERE customer_id = ?", (customer_id,)).rowcount
    counts["transactions"] = conn.execute(
        "UPDATE transactions SET customer_id = NULL, identifier_kind = NULL, identifier = NULL "
        "WHERE customer_id = ?", (customer_id,)).rowcount
    conn.execute("UPDATE redemptions SET customer_id = NULL WHERE customer_id = ?",
                 (customer_id,))
    jobs = conn.execute("SELECT job, document FROM print_jobs WHERE customer_id = ?",
                        (customer_id,)).fetchall()
    conn.executemany(
        "UPDATE print_jobs SET customer_id = NULL, personalised = 0, offer_coupon = NULL, "
        "document = ? WHERE job = ?",
        [(json.dumps(anonymise_document(json.loads(j["document"]))), j["job"]) for j in jobs])
    counts["receipts"] = len(jobs)
    counts["events"] = 0
    for table, key in (("outbox", "seq"), ("dead_letters", "event_id")):
        rows = conn.execute(
            f"SELECT {key} AS k, type, data FROM {table} "  # noqa: S608 - fixed names
            "WHERE json_extract(data, '$.customer_id') = ?", (customer_id,)).fetchall()
        for row in rows:
            counts["events"] += 1
            if row["type"] in PERSONAL_EVENTS:
                conn.execute(f"DELETE FROM {table} WHERE {key} = ?", (row["k"],))  # noqa: S608
                continue
            data = json.loads(row["data"])
            for k in _PERSONAL_KEYS:
                data.pop(k, None)
            data["customer_id"] = None
            conn.execute(f"UPDATE {table} SET data = ? WHERE {key} = ?",  # noqa: S608
                         (json.dumps(data, separators=(",", ":")), row["k"]))
    return counts
