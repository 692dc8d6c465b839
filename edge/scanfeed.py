"""Scans pushed live to the staff checkout pages open for a lane (server-sent events).

Each open page's event stream is one `Listener` with a small queue of its own. Publishing
never blocks: the bus worker that routes a scan only puts it into the queues of the pages
open for that lane, and a page whose queue is full (a stalled browser) loses that scan,
counted in metrics, instead of holding up the scanner. Each stream holds one of the HTTP
server's threads while it is open, so at most `limit` are open at once (half of
`http_threads`): the staff pages and the POS HTTP API always keep threads to answer with.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any

from edge.metrics import Metrics

QUEUE_SIZE = 64


_CLOSED: dict[str, Any] = {}  # put in a listener's queue to end its stream at once


class Listener:
    """One page's stream: the scans for its lane, in the order they were routed."""

    def __init__(self, lane: str) -> None:
        self.lane = lane
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(QUEUE_SIZE)

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next scan, or None when none came within `timeout` seconds; EOFError once
        the stream was closed (`close`)."""
        try:
            item = self.queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _CLOSED:
            raise EOFError("the stream was closed")
        return item

    def close(self) -> None:
        """End the stream now: its page has gone (the same screen opened a new one)."""
        while True:
            try:
                self.queue.put_nowait(_CLOSED)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self.queue.get_nowait()


class LiveScans:
    """The open pages' listeners, by lane."""

    def __init__(self, metrics: Metrics, limit: int) -> None:
        self.metrics = metrics
        self.limit = max(1, limit)
        self._by_lane: dict[str, list[Listener]] = {}
        self._count = 0
        self._lock = threading.Lock()

    def listen(self, lane: str, *, only: bool = False) -> Listener | None:
        """A listener for `lane`; None when `limit` streams are open already. `only`: the
        key has one screen (a kiosk), so a new page's stream ends the streams its earlier
        pages left open, at once, instead of holding a server thread each until the next
        keep-alive finds the browser gone."""
        with self._lock:
            if only:
                for old in self._by_lane.pop(lane, []):
                    old.close()
                    self._count -= 1
            if self._count >= self.limit:
                return None
            listener = Listener(lane)
            self._by_lane.setdefault(lane, []).append(listener)
            self._count += 1
        self.metrics.live_scan_pages.set(self._count)
        return listener

    def leave(self, listener: Listener) -> None:
        with self._lock:
            listeners = self._by_lane.get(listener.lane, [])
            if listener in listeners:
                listeners.remove(listener)
                self._count -= 1
            if not listeners:
                self._by_lane.pop(listener.lane, None)
        self.metrics.live_scan_pages.set(self._count)

    def listening(self, lane: str) -> bool:
        """Is any page open for `lane`?"""
        return lane in self._by_lane

    def publish(self, lane: str, data: dict[str, Any]) -> int:
        """Give a scan to every page open for `lane`; how many took it."""
        with self._lock:
            listeners = list(self._by_lane.get(lane, ()))
        sent = 0
        for listener in listeners:
            try:
                listener.queue.put_nowait(data)
                sent += 1
            except queue.Full:
                self.metrics.live_scans.labels(outcome="dropped").inc()
        if sent:
            self.metrics.live_scans.labels(outcome="sent").inc(sent)
        return sent
