"""The running edge: every long-lived part, built once and hung off `app.extensions["edge"]`."""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler

from cloud_sync.lookup import OnlineLookup
from cloud_sync.puller import Puller
from cloud_sync.sender import Sender
from edge.app.printers import PrinterHost
from edge.bus import Bus
from edge.coupons import CouponBook
from edge.customers import local_bundle
from edge.datadir import DataDir
from edge.devices import LastSeen
from edge.dispatch import Dispatcher, ReplyCache, register_builtin
from edge.hublink import HubLink
from edge.metrics import Metrics
from edge.outbox import OutboxCap
from edge.pos import register_pos_methods
from edge.receipts import Receipts
from edge.scanfeed import LiveScans
from edge.scanners import ScanRouter
from edge.settings import Settings
from edge.spool import Spool
from edge.store import Store
from edge.tls import StoreTLS
from edge.tokens import TrustedKeys, store_signing_key
from edge.transactions import Checkout
from store_contract.customers import Lookup
from store_contract.errors import StartupError

log = logging.getLogger(__name__)
# How often the devices' "last seen" noted in memory is written to the database.
LAST_SEEN_FLUSH_S = 5


class EdgeService:
    """Settings, store, dispatcher, bus and scheduler of one store edge."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.hub_url and not settings.hub_token:
            raise StartupError("config error: hub_url is set but hub_token is empty; set "
                               "EDGE_HUB_TOKEN to the token `edge-hub stores add` printed")
        self.datadir = DataDir(settings.data_path).ensure()
        self.store = Store(self.datadir.database)
        self.metrics = Metrics()
        self.store.outbox_cap = OutboxCap(settings.outbox_max_events, settings.outbox_alarm_pct,
                                          self.metrics)
        self.dispatcher = Dispatcher(self.metrics, ReplyCache(settings.reply_cache_size,
                                                              settings.reply_cache_ttl_s))
        register_builtin(self.dispatcher)
        self.signing_key = store_signing_key(self.datadir, settings.store_id)
        self.keys = TrustedKeys(self.store, settings.trusted_keys, self.signing_key,
                                settings.store_id)
        self.lookup = Lookup(local_bundle(self.datadir), settings.country)
        self.hub = HubLink(settings)
        self.coupons = CouponBook(settings, self.store, self.keys)
        self.receipts = Receipts(settings, self.coupons, self.signing_key)
        self.spool = Spool(settings, self.store)
        self.online_lookup = None if self.hub.standalone else \
            OnlineLookup(settings, self.hub, self.metrics)
        self.checkout = Checkout(settings, self.store, self.keys, self.coupons, self.lookup,
                                 self.hub, self.receipts, self.spool, self.online_lookup)
        register_pos_methods(self.dispatcher, self.checkout)
        self.dispatcher.event("job")(self.spool.on_job_event)
        self.last_seen = LastSeen()
        self.bus = Bus(settings, self.datadir, self.store, self.dispatcher, self.metrics,
                       self.last_seen)
        self.bus.on_status = self._device_status
        self.spool.send = self._send_print
        self.printers = PrinterHost(settings, self.datadir, self.store)
        # Scans: forwarded to the scanner's lane or kiosk, and live to the lane's open pages.
        self.live_scans = LiveScans(self.metrics, settings.http_threads // 2)
        self.scans = ScanRouter(self.store, self.metrics, self.bus.command,
                                self.live_scans.publish, self.live_scans.listening,
                                later=self.bus.executor.submit)
        self.dispatcher.event("scan", inline=True)(self.scans.on_scan_event)
        self.scheduler = BackgroundScheduler(timezone=settings.zone)
        self.sender = Sender(settings, self.store, self.hub, self.metrics,
                             wake=lambda delay: self._run_job_in("sync_send", delay))
        self.puller = Puller(settings, self.store, self.hub, self.metrics, self.keys,
                             self.coupons, self.lookup, self.signing_key,
                             wake=lambda delay: self._run_job_in("sync_pull", delay),
                             datadir=self.datadir)
        self.store.on_outbox = self.sender.kick
        self.scheduler.add_job(self.dispatcher.cache.prune, "interval", seconds=60,
                               id="reply_cache_prune", coalesce=True, max_instances=1)
        self.scheduler.add_job(self._flush_statuses, "interval",
                               seconds=max(1, settings.status_event_interval_s // 2),
                               id="device_status_flush")
        self.scheduler.add_job(self._flush_last_seen, "interval", seconds=LAST_SEEN_FLUSH_S,
                               id="last_seen_flush", coalesce=True, max_instances=1)
        self.scheduler.add_job(self.scans.tally.flush, "interval", args=(self.store,),
                               seconds=LAST_SEEN_FLUSH_S, id="scan_tally_flush",
                               coalesce=True, max_instances=1)
        self.scheduler.add_job(self.store.checkpoint, "interval", minutes=5, id="wal_checkpoint",
                               coalesce=True, max_instances=1)
        self.scheduler.add_job(self.checkout.sweep, "interval",
                               seconds=settings.reservation_sweep_s,
                               id="reservation_sweep", coalesce=True, max_instances=1)
        self.scheduler.add_job(self.spool.tick, "interval", seconds=1, id="print_spool",
                               coalesce=True, max_instances=1)
        self.scheduler.add_job(self.printers.refresh, "interval", seconds=30,
                               id="printer_refresh", coalesce=True, max_instances=1)
        if not self.hub.standalone:
            now = datetime.now(settings.zone)
            self.scheduler.add_job(self.hub.probe, "interval", seconds=30, id="hub_probe",
                                   coalesce=True, max_instances=1, next_run_time=now)
            self.scheduler.add_job(self.sender.run, "interval", seconds=settings.sync_interval_s,
                                   id="sync_send", coalesce=True, max_instances=1,
                                   next_run_time=now)
            self.scheduler.add_job(self.puller.run, "interval",
                                   seconds=settings.sync_pull_interval_s, id="sync_pull",
                                   coalesce=True, max_instances=1, next_run_time=now)
        self._printers_ready: dict[str, bool] = {}
        self.started_at: float | None = None

    def start(self) -> None:
        """Connect the bus and start scheduled jobs."""
        self.bus.refresh_presence_gauge()
        self.bus.start()
        self.printers.start()
        self.scheduler.start()
        # Receipts not yet printed when the edge last stopped are sent again (the printers'
        # journals keep them from printing twice) as soon as the bus is up.
        threading.Thread(target=self._resume_printing, name="print-resume", daemon=True).start()
        self.started_at = time.time()

    def stop(self) -> None:
        self.store.on_outbox = None
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.sender.close()
        self.puller.close()
        if self.online_lookup is not None:
            self.online_lookup.close()
        self.printers.stop()
        self.bus.stop()
        with contextlib.suppress(Exception):  # the last moments heard, kept for next time
            self.last_seen.flush(self.store)
        with contextlib.suppress(Exception):  # the scans counted since the last flush
            self.scans.tally.flush(self.store)
        self.store.close()

    def _send_print(self, printer: str, job: str, document: dict[str, Any]) -> None:
        self.bus.command("printer", printer, "print", {"job": job, "document": document})

    def _resume_printing(self) -> None:
        if self.bus.wait_connected(30):
            try:
                self.spool.resume()
            except Exception:  # the spool's own job sends them a second later
                log.exception("could not resume the print spool")

    def _device_status(self, kind: str, device: str, status: dict[str, Any]) -> None:
        """A printer that becomes ready (back online, paper loaded, cover closed) gets what
        waits for it at once, instead of at the next retry."""
        if kind != "printer":
            return
        ready = status.get("state") == "online" and status.get("printer", "ready") == "ready" \
            and status.get("paper") != "empty" and status.get("cover") != "open"
        was = self._printers_ready.get(device, False)
        self._printers_ready[device] = ready
        if ready and not was:
            self.spool.on_printer_ready(device)

    def _run_job_in(self, job_id: str, delay: float) -> None:
        """Run a sync job once, `delay` seconds from now (a kick, or the end of a backoff).

        A one-off job of its own (with a generated id) beside the interval job: moving the
        interval job instead would be refused while it runs, and reusing one id races with
        the scheduler removing the finished one. The sender and puller keep these to one
        at a time, and their own locks make an overlapping run return at once.
        """
        if not self.scheduler.running:
            return
        fn = {"sync_send": self.sender.run, "sync_pull": self.puller.run}[job_id]
        when = datetime.now(self.settings.zone) + timedelta(seconds=delay)
        with contextlib.suppress(SchedulerNotRunningError):  # stopping meanwhile
            self.scheduler.add_job(fn, "date", run_date=when, name=f"{job_id} (soon)",
                                   misfire_grace_time=60)

    def _flush_last_seen(self) -> None:
        self.last_seen.flush(self.store)

    def _flush_statuses(self) -> None:
        from edge.devices import flush_statuses

        flush_statuses(self.store, self.settings.status_event_interval_s)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, report) for /healthz: the database must answer; the rest is reported."""
        try:
            self.store.check()
            database: dict[str, Any] = {"ok": True}
        except Exception as exc:  # report, never raise, from a health check
            database = {"ok": False, "error": str(exc)}
        readable = database["ok"]
        # Reading is not enough: the write path must commit, and the disk must have room.
        database["write"] = self.store.probe_write()
        if self.store.write_failure is not None:
            database["write"]["last_failure"] = self.store.write_failure
        try:
            free_mb = shutil.disk_usage(self.store.path.parent).free // 2**20
            database["disk"] = {"ok": free_mb >= self.settings.disk_min_free_mb,
                                "free_mb": free_mb, "min_free_mb": self.settings.disk_min_free_mb}
        except OSError as exc:
            database["disk"] = {"ok": False, "error": exc.strerror or type(exc).__name__}
        database["ok"] = database["ok"] and database["write"]["ok"] and database["disk"]["ok"]
        broker = {"connected": self.bus.connected.is_set(),
                  "url": f"{self.bus.address.host}:{self.bus.address.port}"}
        if self.bus.refused:
            broker["refused"] = self.bus.refused
        queue: dict[str, Any] = self.sender.state() if readable else {"depth": None}
        queue["bus_backlog"] = self.bus.executor.depth()
        if not self.hub.standalone and readable:  # the pull state is read from it
            queue["pull"] = self.puller.state()
        report: dict[str, Any] = {"database": database, "broker": broker, "queue": queue}
        tls_ok = True
        if self.settings.broker_tls_port:
            report["tls"] = StoreTLS.of(self.datadir).health()
            tls_ok = report["tls"]["ok"]
        ok = database["ok"]
        # A full-ish outbox does not stop sales (200), but someone must look (degraded).
        outbox_alarm = bool(queue.get("outbox", {}).get("alarm"))
        status = "ok" if ok and broker["connected"] and tls_ok and not outbox_alarm else (
            "degraded" if ok else "failing")
        return ok, {"status": status, "store": self.settings.store_id, **report}
