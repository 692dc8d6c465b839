"""The customer cache at the edge: just enough to greet a shopper and check their coupons.

Kept per customer: id, display name, tier, points and consent flags. Phone numbers, e-mail
addresses and loyalty-card numbers are never stored: only a look-up hash of each, so the
cache can answer "whose card is this?" without holding the numbers.
The identifiers are normalised and hashed by `store_contract.customers` (docs/sync.md §8),
the same code the hub runs, so a number typed at the till finds the customer the hub sent.
The hub sends this store's key bundle (`lookup_key` change); a stand-alone store makes its
own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from edge.store import Store
from store_contract.customers import CustomerRecord, KeyBundle
from store_contract.protocol import now_rfc3339


def local_bundle(datadir: Any) -> KeyBundle:
    """This store's key bundle from secrets/lookup-key.json (0600): the hub's when it sent
    one, else a local one made on first use (a stand-alone store)."""
    return KeyBundle.from_json(datadir.secret_json("lookup-key",
                                                   lambda: KeyBundle.generate().to_json()))


def save_bundle(datadir: Any, bundle: KeyBundle) -> None:
    """Keep the hub's bundle as this store's (replacing the file atomically)."""
    from edge.datadir import write_private

    write_private(datadir.secrets / "lookup-key.json",
                  json.dumps(bundle.to_json(), indent=2) + "\n", replace=True)


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


# A coupon in the shopper's wallet (`wallet w`; customer id, now) that can still be used:
# not expired, not used up.
USABLE_IN_WALLET = (
    "w.customer_id = ? AND (w.expires_at IS NULL OR w.expires_at > ?) AND (SELECT COUNT(*) "
    "FROM redemptions d WHERE d.coupon_id = w.coupon_id AND d.reversed_at IS NULL) "
    "< w.max_uses")


def add_to_wallet(conn: Any, customer_id: str, entry: dict[str, Any], token: str,
                  clipped_at: str) -> None:
    """Put a coupon (a `CouponBook.wallet_entry`) in the customer's wallet."""
    conn.execute(
        "INSERT OR REPLACE INTO wallet (customer_id, coupon_id, campaign_id, description, "
        "expires_at, until, max_uses, token, clipped_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (customer_id, entry["coupon"], entry["campaign"], entry["description"],
         entry["expires_at"], entry.get("until"), entry["max_uses"], token.strip(), clipped_at))


def customer_of(rec: CustomerRecord) -> Customer:
    """The profile of a validated record, as the cache would give it back after upsert."""
    return Customer(rec.id, rec.display_name, rec.tier, rec.points, dict(rec.consent),
                    tuple(rec.segments))


def forget_customer(conn: Any, customer_id: str) -> int:
    """Drop a customer from this store's cache (inside a store transaction): the profile,
    its look-up hashes and its wallet (ON DELETE CASCADE). Unlike an erasure, sales and
    events keep their link: the person was not erased, only not seen here lately."""
    return int(conn.execute("DELETE FROM customers WHERE id = ?", (customer_id,)).rowcount)


# ---------------------------------------------------------------- erasure


