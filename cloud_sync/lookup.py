"""Online look-up of a shopper this store does not hold (docs/checkout.md, docs/hub.md).

The checkout asks only when nobody matched locally, the store has a hub and the hub link
is online; it never waits longer than `hub_lookup_timeout_ms`. The request runs on a small
pool of its own and the till waits on its future with that bound, so even a hub whose
connects hang (black-holed) costs the till the bound and no more; requests' own connect and
read timeouts are the same bound, so abandoned requests end soon after and do not pile up.
With every worker busy the answer is "unknown" at once.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import requests

from edge.hublink import HubLink
from edge.metrics import Metrics
from edge.settings import Settings

log = logging.getLogger(__name__)
MAX_IN_FLIGHT = 4


class OnlineLookup:
    """`lookup(kind, value, seconds)`: the hub's customer record, or None (unknown, slow,
    offline); never waits longer than `seconds` nor than `hub_lookup_timeout_ms`."""

    def __init__(self, settings: Settings, link: HubLink, metrics: Metrics) -> None:
        self.url = (f"{settings.hub_url.rstrip('/')}/api/v1/stores/{settings.store_id}"
                    "/lookup")
        self.headers = {"Authorization": f"Bearer {settings.hub_token}",
                        "User-Agent": f"store-edge/{settings.store_id}"}
        self.bound = settings.hub_lookup_timeout_ms / 1000.0
        self.link = link
        self.metrics = metrics
        self.pool = ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="hub-lookup")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._in_flight = 0

    def __call__(self, kind: str, value: str, seconds: float | None = None
                 ) -> dict[str, Any] | None:
        wait = self.bound if seconds is None else min(seconds, self.bound)
        if self.link.standalone or not self.link.online():
            self.metrics.hub_lookups.labels(outcome="offline").inc()
            return None
        if wait <= 0:
            self.metrics.hub_lookups.labels(outcome="timeout").inc()
            return None
        with self._lock:
            if self._in_flight >= MAX_IN_FLIGHT:
                self.metrics.hub_lookups.labels(outcome="busy").inc()
                return None
            self._in_flight += 1
        started = time.perf_counter()
        body = {"kind": kind, "token" if kind == "member" else "value": value}
        try:
            future = self.pool.submit(self._ask, body)
        except RuntimeError:  # the pool was shut down: the edge is stopping
            self._done(None)
            return None
        future.add_done_callback(self._done)
        try:
            outcome, record = future.result(timeout=wait)
        except FutureTimeout:
            outcome, record = "timeout", None
        except requests.RequestException as exc:
            outcome, record = "error", None
            log.info("online look-up failed: %s", exc.__class__.__name__)
        self.metrics.hub_lookup_seconds.observe(time.perf_counter() - started)
        self.metrics.hub_lookups.labels(outcome=outcome).inc()
        return record

    def _done(self, _future: Future[Any] | None) -> None:
        with self._lock:
            self._in_flight -= 1

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(self.headers)
            self._local.session = session
        return session

    def _ask(self, body: dict[str, str]) -> tuple[str, dict[str, Any] | None]:
        resp = self._session().post(self.url, json=body, timeout=(self.bound, self.bound))
        if resp.status_code == 404:
            self.link.record_contact()
            return "not_found", None
        if resp.status_code == 429:
            return "throttled", None
        if resp.status_code != 200:
            return "error", None
        self.link.record_contact()
        try:
            record = resp.json()["customer"]
        except (ValueError, KeyError, TypeError):
            return "error", None
        return ("found", record) if isinstance(record, dict) else ("error", None)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
