"""The running edge: every long-lived part, built once and hung off `app.extensions["edge"]`."""

from __future__ import annotations

import logging
import time
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from edge.bus import Bus
from edge.datadir import DataDir
from edge.dispatch import Dispatcher, ReplyCache, register_builtin
from edge.metrics import Metrics
from edge.settings import Settings
from edge.store import Store

log = logging.getLogger(__name__)


class EdgeService:
    """Settings, store, dispatcher, bus and scheduler of one store edge."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.datadir = DataDir(settings.data_path).ensure()
        self.store = Store(self.datadir.database)
        self.metrics = Metrics()
        self.dispatcher = Dispatcher(self.metrics, ReplyCache(settings.reply_cache_size,
                                                              settings.reply_cache_ttl_s))
        register_builtin(self.dispatcher)
        self.bus = Bus(settings, self.datadir, self.store, self.dispatcher, self.metrics)
        self.scheduler = BackgroundScheduler(timezone=settings.zone)
        self.scheduler.add_job(self.dispatcher.cache.prune, "interval", seconds=60,
                               id="reply_cache_prune", coalesce=True, max_instances=1)
        self.scheduler.add_job(self.store.checkpoint, "interval", minutes=5, id="wal_checkpoint",
                               coalesce=True, max_instances=1)
        self.started_at: float | None = None

    def start(self) -> None:
        """Connect the bus and start scheduled jobs."""
        self.bus.refresh_presence_gauge()
        self.bus.start()
        self.scheduler.start()
        self.started_at = time.time()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.bus.stop()
        self.store.close()

    def outbox_state(self) -> dict[str, Any]:
        row = self.store.query_one(
            "SELECT COUNT(*) AS depth, MIN(created_at) AS oldest FROM outbox")
        depth = row["depth"] if row else 0
        age = round(time.time() - row["oldest"], 1) if row and row["oldest"] else None
        self.metrics.outbox_depth.set(depth)
        self.metrics.outbox_oldest_age.set(age or 0)
        return {"depth": depth, "oldest_age_s": age}

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, report) for /healthz: the database must answer; the rest is reported."""
        try:
            self.store.check()
            database: dict[str, Any] = {"ok": True}
        except Exception as exc:  # report, never raise, from a health check
            database = {"ok": False, "error": str(exc)}
        broker = {"connected": self.bus.connected.is_set(),
                  "url": f"{self.bus.address.host}:{self.bus.address.port}"}
        if self.bus.refused:
            broker["refused"] = self.bus.refused
        queue: dict[str, Any] = self.outbox_state() if database["ok"] else {"depth": None}
        queue["bus_backlog"] = self.bus.executor.depth()
        ok = database["ok"]
        status = "ok" if ok and broker["connected"] else ("degraded" if ok else "failing")
        return ok, {"status": status, "store": self.settings.store_id, "database": database,
                    "broker": broker, "queue": queue}
