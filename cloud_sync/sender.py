"""The outbox sender: every event the edge queued reaches the hub, in order, at least once.

The hub deduplicates on `event_id`, so sending a batch again (after a timeout, a crash
between the hub's answer and our delete, a restart) has its effect once. An event leaves
the outbox only when the hub has stored it (accepted or duplicate) or refused it as such;
refused events go to `dead_letters`, where staff see them, never to nowhere.

What the hub's answers mean here:
- 200: accepted and duplicates are deleted; `rejected` ones become dead letters.
- 4xx naming events (`error.detail.rejected`, by `event_id` or `index`): those become dead
  letters, the rest of the batch is sent again at once.
- 413 naming no event: the batch is halved and sent again; a single event the hub still
  finds too large is refused as such and becomes a dead letter.
- Any other 4xx naming no event (400 `bad_batch`/`bad_json`, 409, 422 ...): a refusal of
  the batch, not of an event (a hub that cannot read our queue report, say). Nothing is
  dead-lettered: the events stay queued, the sender waits (backoff) and staff see why.
- 408, 429, 5xx, timeouts, no connection: wait (exponential backoff with jitter, capped;
  `Retry-After` honoured) and send the same events again.
- 401, 403, 404: the store's token or the hub URL is wrong. That is no fault of the
  events, so they stay queued (with backoff) and staff see the reason.

It runs as an APScheduler job (every `sync_interval_s`) that the store kicks as soon as a
transaction that queued events commits.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from cloud_sync.client import Backoff, HubClient, retry_after, rfc3339
from edge.hublink import HubLink
from edge.metrics import Metrics
from edge.settings import Settings
from edge.store import Store
from store_contract.protocol import uuid7

log = logging.getLogger(__name__)
TRANSIENT = frozenset({408, 429})
ENVELOPE_BYTES = 512  # room in sync_batch_bytes for batch_id and the queue report
NOT_THE_EVENTS = frozenset({401, 403, 404})


class Sender:
    """Delivers the outbox to the hub; `run()` is the scheduled job, `kick()` wakes it."""

    def __init__(self, settings: Settings, store: Store, link: HubLink, metrics: Metrics,
                 wake: Callable[[float], None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.link = link
        self.metrics = metrics
        self.wake = wake  # wake(delay): run the job again in `delay` seconds
        self.client = HubClient(settings) if not link.standalone else None
        self.backoff = Backoff(cap=settings.sync_backoff_max_s)
        self.limit = settings.sync_batch_events
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        row = store.query_one("SELECT value FROM sync_state WHERE key = 'last_sent'")
        self.last_success: float | None = float(row["value"]) if row else None
        self._lock = threading.Lock()
        self._running = False
        self._dirty = False
        self._wake_pending = False

    # ------------------------------------------------------------ scheduling

    def kick(self) -> None:
        """New events were committed: send them now, unless the hub asked us to wait."""
        if self.client is None or self.wake is None:
            return
        with self._lock:
            self._dirty = True
            # One wake-up in the scheduler at a time: a busy store commits many times a second.
            if self._running or self._wake_pending or self.backoff.remaining() > 0:
                return
            self._wake_pending = True
        self.wake(0)

    def run(self) -> None:
        """Send batches until the outbox is empty or the hub cannot take more for now."""
        with self._lock:
            self._wake_pending = False
            if self.client is None or self.backoff.remaining() > 0 or self._running:
                return
            self._running = True
        try:
            while True:
                with self._lock:
                    self._dirty = False
                if not self.send_batch():
                    with self._lock:
                        if not self._dirty or self.backoff.remaining() > 0:
                            break
        finally:
            with self._lock:
                self._running = False
                again = self._dirty and self.backoff.remaining() == 0 and \
                    not self._wake_pending and self.wake is not None
                if again:
                    self._wake_pending = True
            if again and self.wake is not None:
                self.wake(0)

    # ------------------------------------------------------------ one batch

    def _batch(self) -> list[dict[str, Any]]:
        rows = self.store.query(
            "SELECT seq, event_id, type, occurred_at, device_id, data FROM outbox "
            "ORDER BY seq LIMIT ?", (self.limit,))
        batch: list[dict[str, Any]] = []
        size = 0
        for row in rows:
            # `data` is stored as JSON text: put it in as it is rather than parse and dump it.
            row["json"] = (
                f'{{"event_id":{json.dumps(row["event_id"])},"type":{json.dumps(row["type"])},'
                f'"occurred_at":{json.dumps(row["occurred_at"])},'
                f'"store_id":{json.dumps(self.settings.store_id)},'
                f'"device_id":{json.dumps(row["device_id"])},"data":{row["data"]}}}')
            size += len(row["json"]) + 1
            if batch and size > self.settings.sync_batch_bytes - ENVELOPE_BYTES:
                break
            batch.append(row)
        return batch

    def send_batch(self) -> bool:
        """Send one batch; True if the outbox may hold more to send right away."""
        assert self.client is not None
        batch = self._batch()
        if not batch:
            self.limit = self.settings.sync_batch_events
            return False
        report = self.queue_report()
        body = (f'{{"batch_id":"{uuid7()}","events":[{",".join(r["json"] for r in batch)}],'
                f'"edge":{json.dumps(report)}}}').encode()
        try:
            resp = self.client.post_events(body)
        except requests.RequestException as exc:
            return self._wait(f"the hub could not be reached ({exc.__class__.__name__})", None)
        status = resp.status_code
        if status == 200:
            try:
                answer = resp.json()
                done = set(answer["accepted"]) | set(answer["duplicates"])
                refused = {r["event_id"]: str(r.get("error", "rejected"))
                           for r in answer.get("rejected", [])}
            except (ValueError, KeyError, TypeError):
                return self._wait("the hub's answer was not the expected JSON", None)
            self._delivered(batch, done, refused, status)
            return True
        if status in TRANSIENT or status >= 500:
            return self._wait(f"the hub answered {status}", retry_after(resp))
        if status in NOT_THE_EVENTS:
            what = {401: "refused this store's token (check EDGE_HUB_TOKEN)",
                    403: "says this token is not this store's (check EDGE_STORE_ID and "
                         "EDGE_HUB_TOKEN)",
                    404: "has no such address (check EDGE_HUB_URL)"}[status]
            return self._wait(f"the hub {what}", retry_after(resp))
        return self._refused(batch, resp)

    def _refused(self, batch: list[dict[str, Any]], resp: requests.Response) -> bool:
        """A 4xx about the content: dead-letter the events the hub names, and only those."""
        self.link.record_contact()
        status = resp.status_code
        named = _rejected_events(resp, batch)
        if named:
            self._delivered(batch, set(), named, status)
            return True
        if status == 413:
            if len(batch) == 1:
                # One event on its own is too large for the hub: that event is refused.
                self._delivered(batch, set(), {batch[0]["event_id"]: _error_text(resp)},
                                status)
                return True
            self.limit = max(1, len(batch) // 2)
            log.warning("the hub found a batch of %d events too large; trying %d at a time",
                        len(batch), self.limit)
            return True
        # The hub refused the batch as a whole: no event of it is at fault, so none is
        # dead-lettered; they wait for the cause (hub or edge) to be fixed.
        return self._wait(f"the hub refused a batch of {len(batch)} events without naming "
                          f"any ({_error_text(resp)}); they stay queued", retry_after(resp))

    def _delivered(self, batch: list[dict[str, Any]], done: set[str], refused: dict[str, str],
                   status: int) -> None:
        now = time.time()
        by_id = {r["event_id"]: r for r in batch}
        with self.store.transaction() as db:
            conn = db.conn
            for event_id, error in refused.items():
                if event_id not in by_id:
                    continue
                conn.execute(
                    "INSERT OR REPLACE INTO dead_letters (event_id, seq, type, occurred_at, "
                    "device_id, data, created_at, status, error, failed_at) "
                    "SELECT event_id, seq, type, occurred_at, device_id, data, created_at, ?, ?, ? "
                    "FROM outbox WHERE event_id = ?", (status, error[:500], now, event_id))
            gone = [(e,) for e in (done | set(refused)) if e in by_id]
            conn.executemany("DELETE FROM outbox WHERE event_id = ?", gone)
            conn.execute("INSERT OR REPLACE INTO sync_state (key, value) VALUES "
                         "('last_sent', ?)", (repr(now),))
        missing = len(batch) - len(gone)
        if missing:
            log.warning("the hub's answer left %d of %d events unaccounted for; they stay "
                        "queued", missing, len(batch))
        if refused:
            log.warning("the hub refused %d event(s); kept as dead letters for staff: %s",
                        len(refused), "; ".join(f"{k}: {v}" for k, v in list(refused.items())[:3]))
        self.metrics.sync_events.labels(outcome="delivered").inc(len(done))
        self.metrics.sync_events.labels(outcome="dead_letter").inc(len(refused))
        self.backoff.succeeded()
        self.link.record_contact()
        self.last_success = now
        self.metrics.sync_last_success.set(now)
        if not refused:
            self.limit = min(self.settings.sync_batch_events, max(self.limit, len(batch)) * 2)

    def _wait(self, reason: str, hub_wait: float | None) -> bool:
        delay = self.backoff.failed(hub_wait)
        self.last_error, self.last_error_at = reason, time.time()
        self.metrics.sync_failures.inc()
        log.warning("sync: %s; trying again in %.1f s", reason, delay)
        if self.wake is not None:
            self.wake(delay)
        return False

    # ------------------------------------------------------------ what staff and monitoring see

    def queue_report(self) -> dict[str, Any]:
        """Depth and oldest age of the outbox, and the dead letters (also sent to the hub)."""
        # MIN on its own reads one entry of the outbox_created index; in one query with
        # COUNT(*) it would scan it, once per batch (bench/sync.py).
        row = self.store.query_one(
            "SELECT (SELECT COUNT(*) FROM outbox) AS depth, "
            "(SELECT MIN(created_at) FROM outbox) AS oldest, "
            "(SELECT COUNT(*) FROM dead_letters) AS dead")
        assert row is not None
        # Never negative: a clock stepped back makes the oldest event look queued in the future.
        age = max(0.0, round(time.time() - row["oldest"], 1)) if row["oldest"] else None
        self.metrics.outbox_depth.set(row["depth"])
        self.metrics.outbox_oldest_age.set(age or 0)
        self.metrics.sync_dead_letters.set(row["dead"])
        alarm_at = self.settings.outbox_max_events * self.settings.outbox_alarm_pct // 100
        alarm = row["depth"] >= alarm_at
        self.metrics.outbox_alarm.set(1 if alarm else 0)
        return {"queue_depth": row["depth"], "oldest_age_s": age, "dead_letters": row["dead"],
                "outbox_alarm": alarm, "outbox_alarm_at": alarm_at,
                "outbox_max_events": self.settings.outbox_max_events}

    def state(self) -> dict[str, Any]:
        """For /healthz and the staff sync page."""
        report = self.queue_report()
        age = report["oldest_age_s"]
        return {
            "depth": report["queue_depth"], "oldest_age_s": age,
            "dead_letters": report["dead_letters"],
            "hub": self.settings.hub_url or None,
            "last_success": rfc3339(self.last_success),
            "last_error": self.last_error, "last_error_at": rfc3339(self.last_error_at),
            "retry_in_s": round(self.backoff.remaining(), 1) or None,
            "backlog_old": age is not None and age > self.settings.sync_backlog_warn_s,
            "outbox": {"alarm": report["outbox_alarm"], "alarm_at": report["outbox_alarm_at"],
                       "max_events": report["outbox_max_events"]},
        }

    def dead_letters(self, limit: int = 200) -> list[dict[str, Any]]:
        return self.store.query(
            "SELECT event_id, type, occurred_at, device_id, status, error, failed_at, data "
            "FROM dead_letters ORDER BY failed_at DESC LIMIT ?", (limit,))

    def send_again(self, event_id: str) -> bool:
        """Put a dead letter back in the outbox (after the cause was fixed at the hub)."""
        with self.store.transaction() as db:
            conn = db.conn
            moved = conn.execute(
                "INSERT INTO outbox (event_id, type, occurred_at, device_id, data, created_at) "
                "SELECT event_id, type, occurred_at, device_id, data, created_at "
                "FROM dead_letters WHERE event_id = ?", (event_id,)).rowcount
            conn.execute("DELETE FROM dead_letters WHERE event_id = ?", (event_id,))
        if moved:
            self.kick()
        return bool(moved)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def _rejected_events(resp: requests.Response, batch: list[dict[str, Any]]) -> dict[str, str]:
    """The events of `batch` a 4xx answer names in `error.detail.rejected` (by `event_id`,
    else by `index`), with their reasons; empty unless every entry names one of them."""
    ids = {r["event_id"] for r in batch}
    try:
        rejected = resp.json()["error"]["detail"]["rejected"]
        named: dict[str, str] = {}
        for r in rejected:
            event_id, index = r.get("event_id"), r.get("index")
            if event_id not in ids and isinstance(index, int) and not isinstance(index, bool) \
                    and 0 <= index < len(batch):
                event_id = batch[index]["event_id"]
            if event_id not in ids:
                return {}
            named[event_id] = str(r.get("error", "rejected"))
        return named
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def _error_text(resp: requests.Response) -> str:
    try:
        error = resp.json()["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
