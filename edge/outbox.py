"""The outbox: every interaction the CRM must hear about, written in the same SQLite
transaction as the change it describes (docs/sync.md §1), so neither exists without the other.
The sender (cloud_sync) delivers the rows in order and deletes what the hub accepted.

The event types (what each one's `data` holds) are defined once, in
`store_contract.events`; writers queue one of those (`queue_event`).

The outbox has a cap (`outbox_max_events`): while the hub is away for long, it stops growing
with telemetry, never with business. Once full, only the kinds in `DROPPABLE` are dropped
(and counted); every other event is queued whatever the depth.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from typing import Any

from edge.metrics import Metrics
from store_contract.events import DROPPABLE, EVENT_TYPES, OutboxEvent
from store_contract.protocol import now_rfc3339, uuid7

log = logging.getLogger(__name__)

class OutboxCap:
    """The outbox's cap, checked in `queue_event` without counting the table each time.

    `MAX(seq) - MIN(seq) + 1` (two index seeks) bounds the depth from above; only when that
    bound reaches the cap is the table counted, at most every `recount_s` seconds, and the
    count carried forward by the events admitted since.
    """

    def __init__(self, max_events: int, alarm_pct: int, metrics: Metrics | None = None, *,
                 recount_s: float = 5.0, log_every_s: float = 60.0) -> None:
        self.max_events = max_events
        self.alarm_at = max_events * alarm_pct // 100
        self.metrics = metrics
        self.recount_s = recount_s
        self.log_every_s = log_every_s
        self._count = 0
        self._counted_at = float("-inf")
        self._dropped_since_log = 0
        self._logged_at = float("-inf")
        if metrics is not None:
            metrics.outbox_max_events.set(max_events)
            metrics.outbox_alarm_events.set(self.alarm_at)

    def admit(self, conn: sqlite3.Connection, type_: str) -> bool:
        """May an event of `type_` be queued now (inside the writer's transaction)?"""
        if type_ not in DROPPABLE:
            return True
        hi, lo = conn.execute("SELECT (SELECT MAX(seq) FROM outbox), "
                              "(SELECT MIN(seq) FROM outbox)").fetchone()
        if hi is None or hi - lo + 1 < self.max_events:
            return True
        # Only ever called under the store's write lock: no lock of its own.
        now = time.monotonic()
        if now - self._counted_at >= self.recount_s:
            self._count = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            self._counted_at = now
        if self._count < self.max_events:
            self._count += 1
            return True
        self._dropped(type_, now)
        return False

    def _dropped(self, type_: str, now: float) -> None:
        if self.metrics is not None:
            self.metrics.outbox_dropped.labels(type=type_).inc()
        self._dropped_since_log += 1
        if now - self._logged_at >= self.log_every_s:
            log.error("the outbox is full (%d events for the hub): dropped %d device.status/"
                      "kiosk.session event(s); sales and redemptions are still queued. Check "
                      "the connection to the hub", self._count, self._dropped_since_log)
            self._dropped_since_log = 0
            self._logged_at = now


def queue_event(conn: sqlite3.Connection, event: OutboxEvent, *,
                device_id: str | None = None, occurred_at: str | None = None) -> str | None:
    """Add one event to the outbox inside the caller's open write transaction; its id, or
    None when the outbox is full and the event is of a kind it drops (`DROPPABLE`)."""
    return queue_data(conn, event.TYPE, event.to_data(), device_id=device_id,
                      occurred_at=occurred_at)


def queue_data(conn: sqlite3.Connection, type_: str, data: dict[str, Any], *,
               device_id: str | None = None, occurred_at: str | None = None) -> str | None:
    """`queue_event` for an event's `data` as it is (tests, benchmarks, events replayed
    from elsewhere): the type must be known, the data is not checked."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown outbox event type {type_!r}")
    cap: OutboxCap | None = getattr(conn, "outbox_cap", None)
    if cap is not None and not cap.admit(conn, type_):
        return None
    event_id = uuid7()
    conn.execute(
        "INSERT INTO outbox (event_id, type, occurred_at, device_id, data, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (event_id, type_, occurred_at or now_rfc3339(), device_id,
         json.dumps(data, separators=(",", ":")), time.time()))
    if hasattr(conn, "outbox_written"):  # the store's writer: kick the sender after commit
        conn.outbox_written = True
    return event_id
