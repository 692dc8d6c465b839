"""Erasure at the edge: a person removed from everything this store kept of them
(docs/sync.md §5): the customer cache, sales, receipts and unsent events.

Its own module so that the customer cache and the receipts need not know each other.
"""

from __future__ import annotations

import json
from typing import Any

from edge.receipts import anonymise_document

# Events that are only about the person: dropped on erasure. Others (a sale, a redemption)
# are kept for the store's figures with the person taken out.
PERSONAL_EVENTS = ("customer.identified", "consent.changed", "offer.clipped", "kiosk.session")


# A coupon token bound to the person names them (`sub`): it goes too.
_PERSONAL_KEYS = ("customer_id", "identifier", "display_name", "token")


def erase_customer(conn: Any, customer_id: str) -> dict[str, int]:
    """Remove a person from this edge (inside a store transaction); what was touched.

    Profile, look-up hashes and wallet go; sales, redemptions and receipts stay for the
    books without the link to the person; events not yet sent to the hub lose theirs too
    (docs/sync.md §5), as do dead letters.
    """
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
