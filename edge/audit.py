"""The till's audit trail: every void, reversal and reprint, with who did it.

Each entry is written in the same SQLite transaction as the action it describes, and the hub
hears of it through the outbox in that transaction too: a completed sale's void as
`transaction.voided` (with `by` and `approved_by`), anything else as `staff.action`
(docs/sync.md). Staff user names are kept, nothing of the shopper.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from edge.outbox import queue_event
from edge.store import Store
from store_contract.events import StaffAction

VOID = "txn.void"
REPRINT = "receipt.reprint"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for an action at a till: a staff member on the staff pages (`kind`
    "staff"), or the lane's own POS (`kind` "device", whose own roles decided)."""

    by: str
    kind: str = "device"
    approved_by: str | None = None
    manager: bool = False  # the staff member is a manager

    @property
    def may_take_back(self) -> bool:
        """May void a completed sale or reprint a receipt: a lane's own POS, a manager, or
        a cashier with a manager's approval."""
        return self.kind == "device" or self.manager or self.approved_by is not None

    def fields(self) -> dict[str, Any]:
        """What the hub is told about the actor."""
        return {"by": self.by, "by_kind": self.kind, "approved_by": self.approved_by}


def record(conn: sqlite3.Connection, action: str, actor: Actor, *, lane: str, at: str,
           txn: str | None = None, job: str | None = None,
           detail: dict[str, Any] | None = None, event: bool = True) -> None:
    """Add one entry to the trail inside the caller's write transaction, and (`event`) a
    `staff.action` event for the hub; `event=False` when another event already says it."""
    conn.execute(
        "INSERT INTO till_audit (action, lane, txn, job, by, by_kind, approved_by, detail, at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (action, lane, txn, job, actor.by, actor.kind, actor.approved_by,
         json.dumps(detail or {}, separators=(",", ":")), at))
    if event:
        queue_event(conn, StaffAction(
            action=action, lane=lane, txn=txn, job=job, **actor.fields(),
            detail=detail or {}, at=at),
            device_id=lane, occurred_at=at)


def recent(store: Store, limit: int = 200) -> list[dict[str, Any]]:
    """The newest entries first, for the managers' audit page."""
    rows = store.query("SELECT * FROM till_audit ORDER BY id DESC LIMIT ?", (limit,))
    for row in rows:
        row["detail"] = json.loads(row["detail"])
    return rows
