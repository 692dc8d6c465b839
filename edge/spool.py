"""The durable print spool: every receipt reaches its printer, and comes out once.

A job is a row of `print_jobs`, written in the same transaction as the sale it belongs to,
so a committed sale always has its receipt queued. The spool sends the job's document to
the lane's printer (`cmd/print`) and follows the printer service's answers (`evt/job`):

    queued -> sending -> printed
                      -> held    (paper out, cover open: the printer prints it by itself
                                  when it is ready; the spool re-sends after a printer
                                  service restart, which is safe, see below)
                      -> queued  (no answer, or the printer could not be reached: sent
                                  again with backoff, `print_retries` times)
                      -> failed  (retries used up, a bad document, or printing was cut
                                  off half way: shown to staff with a Reprint button)

Sending a job again is always safe: the printer service keeps a journal of job ids and
answers a job it has printed with `printed` without printing it again (docs/receipts.md §2).
That is what lets the spool resend everything unfinished after an edge restart.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from edge.audit import REPRINT, Actor, record
from edge.dispatch import Caller
from edge.outbox import queue_event
from edge.receipts import Receipt
from edge.settings import Settings
from edge.store import Store
from store_contract.errors import BadRequest
from store_contract.events import ReceiptPrinted
from store_contract.protocol import Envelope, format_ts, uuid7

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 10.0  # a printer service answers in milliseconds; silence means it is away
HELD_RESEND_S = 30.0  # re-send held jobs this often, in case the printer service restarted
MAX_BACKOFF_S = 60.0
RETRYABLE = frozenset({"unreachable", "no_answer"})
HOLD_REASONS = frozenset({"paper_empty", "cover_open", "offline"})
FAIL_REASONS = frozenset({"unreachable", "interrupted", "bad_document"})
REASON_TEXT = {
    "paper_empty": "Out of paper: load a new roll and it prints by itself.",
    "cover_open": "The printer cover is open: close it and it prints by itself.",
    "offline": "The printer is offline: check it and it prints by itself when it is back.",
    "unreachable": "The printer could not be reached (power, cable or network).",
    "no_answer": "The printer service did not answer.",
    "interrupted": "Printing was cut off half way: check the paper, then reprint if the "
                   "receipt did not come out whole.",
    "bad_document": "This receipt could not be printed (the printer service refused it).",
    "no_printer": "No receipt printer is assigned to this lane.",
    "replaced": "Reprinted as a new receipt.",
}

Sender = Callable[[str, str, dict[str, Any]], None]  # (printer, job, document)
COUPON_SLIP = "coupon"  # the document kind of a coupon printed at a kiosk


def backoff(attempts: int) -> float:
    """Seconds before the next try after `attempts` tries: 2, 4, 8 ... capped at a minute."""
    return float(min(MAX_BACKOFF_S, 2 ** max(1, attempts)))


class Spool:
    """The print jobs of one store edge."""

    def __init__(self, settings: Settings, store: Store, send: Sender | None = None) -> None:
        self.settings = settings
        self.store = store
        self.send: Sender | None = send
        self.clock = time.time

    # ------------------------------------------------------------ creating jobs

    def printer_for(self, conn: sqlite3.Connection, lane: str) -> str | None:
        row = conn.execute("SELECT p.id FROM printers p, json_each(p.lanes) j "
                           "WHERE j.value = ? ORDER BY p.id LIMIT 1", (lane,)).fetchone()
        return row[0] if row else None

    def create(self, conn: sqlite3.Connection, job: str, device: str, txn: str | None,
               receipt: Receipt, customer_id: str | None, *, copy_of: str | None = None,
               printer: str | None = None) -> None:
        """Queue a receipt inside the caller's write transaction: on `printer`, or else the
        lane's (a kiosk names its own)."""
        now = self.clock()
        printer = printer or self.printer_for(conn, device)
        state, reason = ("queued", None) if printer else ("failed", "no_printer")
        conn.execute(
            "INSERT INTO print_jobs (job, device_id, txn, printer, state, reason, document, "
            "customer_id, personalised, offer_coupon, copy_of, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job, device, txn, printer, state, reason,
             json.dumps(receipt.document, ensure_ascii=False, separators=(",", ":")),
             customer_id, int(receipt.personalised),
             receipt.offer.coupon if receipt.offer else None, copy_of, now, now))
        if printer is None:
            log.warning("receipt %s of %s/%s: no printer is assigned to lane %s", job, device,
                        txn, device)

    # ------------------------------------------------------------ sending

    def send_now(self, job: str) -> bool:
        """Send one job if it is waiting (right after its sale commits); was it sent?"""
        if self.send is None:
            return False
        now = self.clock()
        with self.store.transaction() as db:
            row = db.conn.execute(
                "UPDATE print_jobs SET state = 'sending', attempts = attempts + 1, "
                "updated_at = ?, next_attempt_at = ? WHERE job = ? AND printer IS NOT NULL AND "
                "state IN ('queued', 'sending', 'held') RETURNING printer, document",
                (now, now + ANSWER_TIMEOUT_S, job)).fetchone()
        if row is None:
            return False
        try:
            self.send(row["printer"], job, json.loads(row["document"]))
        except Exception:  # the bus is down: the next tick sends it again
            log.exception("could not send receipt %s to %s", job, row["printer"])
        return True

    def tick(self) -> int:
        """Send what is due (a scheduled job, and at start-up); how many were sent."""
        now = self.clock()
        limit = self.settings.print_retries
        # Most seconds nothing is due: find that out without taking the writer.
        if self.store.query_one(
                "SELECT 1 AS due FROM print_jobs WHERE state IN ('queued', 'sending', 'held') "
                "AND next_attempt_at <= ? AND printer IS NOT NULL LIMIT 1", (now,)) is None:
            return 0
        with self.store.transaction() as db:
            conn = db.conn
            # Sent, but no answer in time: the printer service is away. Try again later.
            for r in conn.execute(
                    "SELECT job, attempts FROM print_jobs WHERE state = 'sending' AND "
                    "next_attempt_at <= ?", (now,)).fetchall():
                self._retry_or_fail(conn, r["job"], r["attempts"], "no_answer", now, limit)
            due = [r["job"] for r in conn.execute(
                "SELECT job FROM print_jobs WHERE state IN ('queued', 'held') AND "
                "next_attempt_at <= ? AND printer IS NOT NULL ORDER BY created_at",
                (now,)).fetchall()]
        return sum(self.send_now(job) for job in due)

    def resume(self) -> int:
        """After a restart: everything unfinished is due now (the journal stops doubles)."""
        with self.store.transaction() as db:
            db.conn.execute("UPDATE print_jobs SET next_attempt_at = 0, state = 'queued' "
                            "WHERE state IN ('queued', 'sending', 'held')")
        return self.tick()

    def _retry_or_fail(self, conn: sqlite3.Connection, job: str, attempts: int, reason: str,
                       now: float, limit: int) -> None:
        if attempts <= limit:
            conn.execute("UPDATE print_jobs SET state = 'queued', reason = ?, "
                         "next_attempt_at = ?, updated_at = ? WHERE job = ?",
                         (reason, now + backoff(attempts), now, job))
        else:
            conn.execute("UPDATE print_jobs SET state = 'failed', reason = ?, updated_at = ? "
                         "WHERE job = ?", (reason, now, job))
            log.warning("receipt %s failed after %d tries: %s", job, attempts, reason)

    # ------------------------------------------------------------ answers from printers

    def on_job_event(self, caller: Caller, envelope: Envelope) -> None:
        """`evt/job` from a printer service (a bus event handler)."""
        if caller.kind != "printer":
            raise BadRequest("Only printers report print jobs.")
        data = envelope.data
        job, state, reason = data.get("job"), data.get("state"), data.get("reason")
        if not isinstance(job, str) or state not in ("printed", "held", "failed"):
            raise BadRequest('evt/job needs "job" and "state" printed, held or failed.')
        if reason is not None and not isinstance(reason, str):
            raise BadRequest('"reason" must be text.')
        now = self.clock()
        with self.store.transaction() as db:
            conn = db.conn
            row = conn.execute("SELECT * FROM print_jobs WHERE job = ? AND printer = ?",
                               (job, caller.device)).fetchone()
            if row is None:
                log.warning("printer %s reported job %s, which is not its job", caller.device,
                            job)
                return
            if row["state"] == "printed":
                return  # a repeated answer to a re-sent job
            if row["reason"] == "replaced":
                # Reprinted under a new job id: that job is the sale's receipt now, so a
                # late answer for this one is not believed (no second receipt.printed).
                log.info("printer %s answered %s for job %s, which was replaced by a "
                         "reprint; ignored", caller.device, state, job)
                return
            if state == "printed":
                if row["printed_at"] is not None:  # known printed already: no second event
                    conn.execute("UPDATE print_jobs SET state = 'printed', reason = NULL, "
                                 "updated_at = ? WHERE job = ?", (now, job))
                    return
                printed_at = format_ts(datetime.fromtimestamp(now, UTC))
                conn.execute("UPDATE print_jobs SET state = 'printed', reason = NULL, "
                             "printed_at = ?, updated_at = ? WHERE job = ?",
                             (printed_at, now, job))
                self._printed_event(conn, row, printed_at)
            elif state == "held":
                why = reason if reason in HOLD_REASONS else "offline"
                conn.execute("UPDATE print_jobs SET state = 'held', reason = ?, "
                             "next_attempt_at = ?, updated_at = ? WHERE job = ?",
                             (why, now + HELD_RESEND_S, now, job))
            elif reason in RETRYABLE:
                self._retry_or_fail(conn, job, row["attempts"], reason, now,
                                    self.settings.print_retries)
            else:
                why = reason if reason in FAIL_REASONS else "bad_document"
                conn.execute("UPDATE print_jobs SET state = 'failed', reason = ?, "
                             "updated_at = ? WHERE job = ?", (why, now, job))
                log.warning("receipt %s failed on %s: %s", job, caller.device, why)

    def _printed_event(self, conn: sqlite3.Connection, row: sqlite3.Row, printed_at: str) -> None:
        if row["txn"] is None and row["copy_of"] is None \
                and json.loads(row["document"]).get("kind") == COUPON_SLIP:
            return  # a kiosk's coupon slip: no receipt (its offer.clipped said it all)
        offer = None
        if row["offer_coupon"]:
            issued = conn.execute("SELECT campaign_id, expires_at FROM issued_coupons "
                                  "WHERE id = ?", (row["offer_coupon"],)).fetchone()
            if issued is not None:
                offer = {"coupon": row["offer_coupon"], "campaign": issued["campaign_id"],
                         "expires_at": format_ts(datetime.fromtimestamp(issued["expires_at"],
                                                                        UTC))}
        queue_event(conn, ReceiptPrinted(
            job=row["job"], txn=row["txn"], printer=row["printer"],
            customer_id=row["customer_id"], personalised=bool(row["personalised"]),
            offer=offer, copy_of=row["copy_of"], attempts=row["attempts"],
            printed_at=printed_at), device_id=row["device_id"], occurred_at=printed_at)

    def on_printer_ready(self, printer: str) -> int:
        """A printer became ready (or its service came online): everything of it that is
        unfinished is due now, including jobs sent while its service was away."""
        with self.store.transaction() as db:
            waiting = db.conn.execute(
                "UPDATE print_jobs SET next_attempt_at = 0, state = 'queued' WHERE "
                "printer = ? AND state IN ('queued', 'sending', 'held')", (printer,)).rowcount
        return self.tick() if waiting else 0

    # ------------------------------------------------------------ staff

    LISTED = ("job, device_id, txn, printer, state, reason, personalised, copy_of, attempts, "
              "created_at, updated_at, printed_at")

    def recent(self, limit: int = 50, *, state: str | None = None,
               lane: str | None = None) -> list[dict[str, Any]]:
        """The newest jobs first, optionally of one state or lane (the staff list)."""
        where, args = [], []
        if state:
            where.append("state = ?")
            args.append(state)
        if lane:
            where.append("device_id = ?")
            args.append(lane)
        sql = f"SELECT {self.LISTED} FROM print_jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.store.query(sql + " ORDER BY created_at DESC, job DESC LIMIT ?",
                                (*args, limit))
        return [self.described(r) for r in rows]

    def job(self, job: str) -> dict[str, Any] | None:
        row = self.store.query_one(f"SELECT {self.LISTED} FROM print_jobs WHERE job = ?", (job,))
        return self.described(row) if row else None

    @staticmethod
    def described(row: dict[str, Any]) -> dict[str, Any]:
        row["reason_text"] = REASON_TEXT.get(row["reason"] or "", row["reason"])
        row["created"] = format_ts(datetime.fromtimestamp(row["created_at"], UTC))
        return row

    def counts(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self.store.query(
            "SELECT state, COUNT(*) AS n FROM print_jobs GROUP BY state")}

    def document(self, job: str) -> tuple[str, str | None] | None:
        """A job's document (JSON text, as stored) and its printer's profile (the preview)."""
        row = self.store.query_one(
            "SELECT j.document, p.profile FROM print_jobs j LEFT JOIN printers p "
            "ON p.id = j.printer WHERE j.job = ?", (job,))
        return (row["document"], row["profile"]) if row else None

    def reprint(self, job: str, actor: Actor | None = None) -> str:
        """Staff pressed Reprint: a failed or held job is tried again as it is (it never
        printed whole); a printed one is printed again as a copy under a new job id.
        Recorded in the audit trail with `actor` (the staff page says who; None: the
        edge itself)."""
        actor = actor or Actor("edge")
        now = self.clock()
        with self.store.transaction() as db:
            conn = db.conn
            row = conn.execute("SELECT * FROM print_jobs WHERE job = ?", (job,)).fetchone()
            if row is None:
                raise BadRequest("There is no such receipt.", detail={"job": job})
            while row["reason"] == "replaced":
                # Reprinted under a new id before (it was interrupted): its old id is
                # `printing` in the printer's journal, so reprint the receipt that replaced it.
                row = conn.execute("SELECT * FROM print_jobs WHERE copy_of = ? "
                                   "ORDER BY created_at DESC LIMIT 1", (row["job"],)).fetchone()
                if row is None:
                    raise BadRequest("This receipt was replaced by one that is gone.",
                                     detail={"job": job})
                job = row["job"]
            printer = row["printer"] or self.printer_for(conn, row["device_id"])
            if printer is None:
                raise BadRequest(f"No receipt printer is assigned to {row['device_id']}.",
                                 detail={"reason": "no_printer"})
            if row["state"] != "printed":
                # The printer's journal must forget an interrupted job, or it refuses it
                # again: a new job id does that, and says which receipt it replaces.
                new_job = uuid7() if row["reason"] == "interrupted" else job
            else:
                new_job = uuid7()
            if new_job == job:
                conn.execute("UPDATE print_jobs SET state = 'queued', reason = NULL, "
                             "printer = ?, attempts = 0, next_attempt_at = 0, updated_at = ? "
                             "WHERE job = ?", (printer, now, job))
            else:
                document = json.loads(row["document"])
                copy = row["state"] == "printed"
                document.update(job=new_job, copy=copy)
                if copy:  # a second paper for a sale must say so, at the top
                    document["blocks"].insert(0, {"type": "text", "text": "*** COPY ***",
                                                  "align": "center", "strong": True})
                conn.execute(
                    "INSERT INTO print_jobs (job, device_id, txn, printer, state, document, "
                    "customer_id, personalised, copy_of, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                    (new_job, row["device_id"], row["txn"], printer,
                     json.dumps(document, ensure_ascii=False, separators=(",", ":")),
                     row["customer_id"], row["personalised"], job, now, now))
                if row["state"] != "printed":
                    conn.execute("UPDATE print_jobs SET reason = 'replaced', updated_at = ? "
                                 "WHERE job = ?", (now, job))
            record(conn, REPRINT, actor, lane=row["device_id"], txn=row["txn"], job=job,
                   at=format_ts(datetime.fromtimestamp(now, UTC)),
                   detail={"copy": row["state"] == "printed", "new_job": new_job})
        self.send_now(new_job)
        return new_job
