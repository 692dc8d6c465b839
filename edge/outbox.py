"""The outbox: every interaction the CRM must hear about, written in the same SQLite
transaction as the change it describes (ARCHITECTURE §7), so neither exists without the other.
The sender (cloud_sync) delivers the rows in order and deletes what the hub accepted.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from edge.protocol import now_rfc3339, uuid7

EVENT_TYPES = frozenset({
    "customer.identified", "coupon.redeemed", "coupon.redemption_reversed",
    "transaction.completed", "transaction.voided", "receipt.printed", "kiosk.session",
    "offer.clipped", "consent.changed", "device.status",
    "staff.action",  # a void of an open sale or a reprint at a till (edge/audit.py)
})


def queue_event(conn: sqlite3.Connection, type_: str, data: dict[str, Any], *,
                device_id: str | None = None, occurred_at: str | None = None) -> str:
    """Add one event to the outbox inside the caller's open write transaction; its id."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown outbox event type {type_!r}")
    event_id = uuid7()
    conn.execute(
        "INSERT INTO outbox (event_id, type, occurred_at, device_id, data, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (event_id, type_, occurred_at or now_rfc3339(), device_id,
         json.dumps(data, separators=(",", ":")), time.time()))
    if hasattr(conn, "outbox_written"):  # the store's writer: kick the sender after commit
        conn.outbox_written = True
    return event_id
