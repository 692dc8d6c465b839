"""The printer service: receipt jobs from the bus to paper, exactly once (docs/receipts.md §2).

    python -m pos_bridge.printer --store S --device D --mqtt-url mqtt://edge:1883 \\
        --username U --connect usb://04b8:0202 --profile TM-T88V --journal /var/lib/printer.db

The edge hosts the same `PrinterService` in its own process for network printers
(`device=None`, answers through `publish`).

Three parts, each small enough to trust:

- `PrinterLink` talks to one printer through the `PrinterTransport` its URL names
  (`tcp://`, `usb://`, `serial://`, `file://`; `pos_bridge.printing.transports`, where a new
  connection kind goes): it sends bytes and reads the real-time status (DLE EOT), connects
  lazily, reconnects after any error and never waits longer than its timeouts. It has no
  per-kind code: what differs between a socket, a USB endpoint, a serial line and a device
  file is in the transport classes.
- `PrintJournal` remembers, in SQLite, which jobs were started and which confirmed printed,
  so a job sent again is never printed twice and a job cut off by a crash is never printed
  again without a person deciding so.
- `PrinterService` runs one worker thread per printer: jobs print in arrival order, a printer
  out of paper or with its cover open holds them and prints them by itself when it is ready.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from pos_bridge.device import DeviceClient, DeviceError, connect_until
from pos_bridge.printing.transports import (
    DLE_EOT,
    Connection,
    PrinterTransport,
    PrinterUnreachable,
    Timeouts,
    parse_connection,
    transport_for,
)
from pos_bridge.receipt_render import DocumentError, check_profile, render_escpos
from store_contract import logsafe
from store_contract.protocol import Envelope

log = logging.getLogger(__name__)

Paper = Literal["ok", "near_end", "empty"]
Cover = Literal["closed", "open"]
Readiness = Literal["ready", "offline", "unreachable"]

JOURNAL_KEEP_DAYS = 7.0
MAX_JOB_ID = 128


# ---------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class PrinterStatus:
    """What DLE EOT says: the paper roll, the cover and whether the printer is taking jobs."""

    paper: Paper = "ok"
    cover: Cover = "closed"
    printer: Readiness = "ready"

    @property
    def ready(self) -> bool:
        """True when a job can print now (paper near its end still prints)."""
        return self.printer == "ready" and self.paper != "empty" and self.cover == "closed"

    @property
    def hold_reason(self) -> str:
        """Why a job waits: the reason a person can fix, most specific first."""
        if self.paper == "empty":
            return "paper_empty"
        if self.cover == "open":
            return "cover_open"
        return "offline"

    def as_dict(self) -> dict[str, str]:
        return {"paper": self.paper, "cover": self.cover, "printer": self.printer}


def status_from_bytes(printer: int, offline: int, paper: int) -> PrinterStatus:
    """Decode the answers to DLE EOT 1 (printer), 2 (offline cause) and 4 (roll paper sensor)
    as Epson documents them."""
    empty = bool(paper & 0x60) or bool(offline & 0x20)
    near_end = bool(paper & 0x0C)
    state: Paper = "empty" if empty else "near_end" if near_end else "ok"
    cover: Cover = "open" if offline & 0x04 else "closed"
    online = not printer & 0x08 and not offline & 0x40
    return PrinterStatus(state, cover, "ready" if online else "offline")


def _valid_status_byte(value: int) -> bool:
    # Every DLE EOT answer has bits 1 and 4 set and bits 0 and 7 clear.
    return value & 0x93 == 0x12


# ---------------------------------------------------------------- the link to one printer


class PrinterLink:
    """Bytes to one printer and DLE EOT status from it, through its `PrinterTransport`
    (`pos_bridge.printing.transports`), chosen once from the connection URL.

    Not a thread pool: one worker uses it at a time (a lock keeps stray callers in line).
    Every call returns within its timeouts; errors close the connection and the next call
    opens a fresh one. A `PrinterTransport` may be given instead of a URL (tests use a
    `MemoryTransport`).
    """

    def __init__(self, connection: str | Connection | PrinterTransport, *,
                 profile: str = "default", connect_timeout: float = 2.0,
                 read_timeout: float = 1.0, write_timeout: float = 5.0,
                 spool_dir: str | Path | None = None) -> None:
        if isinstance(connection, PrinterTransport):
            self.transport = connection
        else:
            # The edge's printers: a file:// connection only inside spool_dir, checked here
            # and again at every open (the path may have become a symlink since).
            self.transport = transport_for(
                connection, profile=profile, spool_dir=spool_dir,
                timeouts=Timeouts(connect_timeout, read_timeout, write_timeout))
        self.connection = self.transport.connection
        self.spool_dir = spool_dir
        self.profile = profile
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self._lock = threading.RLock()
        self._last = PrinterStatus()

    # ------------------------------------------------------------ public

    def status(self) -> PrinterStatus:
        """The printer's status now; `unreachable` (paper and cover as last seen) when it does
        not answer. Never raises."""
        with self._lock:
            for attempt in (1, 2):
                had_connection = self.transport.is_open
                try:
                    self._open()
                    if not self.transport.answers_status:
                        # A device file cannot answer: if it opens, assume ready.
                        return self._seen(PrinterStatus())
                    return self._seen(status_from_bytes(*self._ask()))
                except Exception as exc:  # any driver error means: not reachable right now
                    self.close()
                    # A kept-open connection the printer has dropped earns one fresh try.
                    if attempt == 1 and had_connection:
                        log.debug("printer %s: reconnecting after %s", self.connection, exc)
                        continue
                    log.info("printer %s unreachable: %s", self.connection, exc)
                    break
            return self._seen(PrinterStatus(self._last.paper, self._last.cover, "unreachable"))

    def send(self, data: bytes) -> None:
        """Hand `data` to the printer; raises PrinterUnreachable if it did not take all of it."""
        with self._lock:
            try:
                self._open()
                self.transport.write(data)
            except Exception as exc:
                self.close()
                raise PrinterUnreachable(f"printer {self.connection}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            try:
                self.transport.close()
            except Exception:  # closing a broken connection may fail; it is gone anyway
                log.debug("printer %s: error while closing", self.connection, exc_info=True)

    # ------------------------------------------------------------ talking

    def _seen(self, status: PrinterStatus) -> PrinterStatus:
        self._last = status
        return status

    def _open(self) -> None:
        if not self.transport.is_open:
            self.transport.open()

    def _read(self, count: int) -> bytes:
        """Exactly `count` bytes, or TimeoutError once the read timeout has passed."""
        deadline = time.monotonic() + self.read_timeout
        got = b""
        while len(got) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            chunk = self.transport.read(count - len(got), left)
            if not chunk:
                break
            got += chunk
        if len(got) < count:
            raise TimeoutError(f"the printer answered {len(got)} of {count} status bytes")
        return got

    def _ask(self) -> tuple[int, int, int]:
        """DLE EOT 1, 2 and 4 in one write and their three answers in one read: one round
        trip per status instead of three. Bytes that are not status answers (a late answer
        to an earlier query) earn one more try."""
        for _ in range(2):
            self.transport.drain()
            self.transport.write(b"".join(DLE_EOT + bytes((n,)) for n in (1, 2, 4)))
            answers = self._read(3)
            if all(_valid_status_byte(b) for b in answers):
                return answers[0], answers[1], answers[2]
        raise TimeoutError(f"the printer answered DLE EOT with {answers.hex(' ')}")


# ---------------------------------------------------------------- the journal


class PrintJournal:
    """Which jobs were started (`printing`) and which confirmed on paper (`printed`).

    SQLite in WAL mode with synchronous=FULL: `begin()` is on disk before the first byte
    goes to the printer, so after a power cut the service knows a job may be half printed.
    """

    def __init__(self, path: Path | str, *, keep_days: float = JOURNAL_KEEP_DAYS) -> None:
        self.path = Path(path)
        self.keep_days = keep_days
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False,
                                     isolation_level=None, timeout=5.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS jobs (job TEXT PRIMARY KEY, state TEXT NOT NULL "
            "CHECK (state IN ('printing', 'printed')), started_at REAL NOT NULL, "
            "printed_at REAL)")
        self._conn.execute("CREATE INDEX IF NOT EXISTS jobs_started ON jobs (started_at)")
        self.prune()

    def begin(self, job: str) -> None:
        """Mark `job` printing (its first byte is about to go out)."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO jobs (job, state, started_at) VALUES (?, 'printing', ?) "
                "ON CONFLICT (job) DO UPDATE SET state = 'printing', "
                "started_at = excluded.started_at, printed_at = NULL", (job, time.time()))

    def done(self, job: str) -> None:
        """Mark `job` printed (the printer was still ready after its last byte)."""
        with self._lock:
            self._conn.execute("UPDATE jobs SET state = 'printed', printed_at = ? WHERE job = ?",
                               (time.time(), job))

    def forget(self, job: str) -> None:
        """Drop `job`: it did not print whole and will be printed again from the start."""
        with self._lock:
            self._conn.execute("DELETE FROM jobs WHERE job = ?", (job,))

    def state(self, job: str) -> str | None:
        """`printing`, `printed` or None for a job this printer never started."""
        with self._lock:
            row = self._conn.execute("SELECT state FROM jobs WHERE job = ?", (job,)).fetchone()
        return str(row[0]) if row else None

    def prune(self, now: float | None = None) -> int:
        """Forget jobs older than `keep_days`; the edge never resends one that old."""
        cutoff = (time.time() if now is None else now) - self.keep_days * 86400
        with self._lock:
            return self._conn.execute("DELETE FROM jobs WHERE started_at < ?",
                                      (cutoff,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# ---------------------------------------------------------------- the service


@dataclass
class _Job:
    job: str
    document: Any
    data: bytes | None = None
    held: str | None = None  # the reason last answered `held`, if it was


@dataclass
class _Queue:
    incoming: deque[_Job] = field(default_factory=deque)
    wake: threading.Condition = field(default_factory=threading.Condition)


class PrinterService:
    """One printer: takes print jobs (`cmd/print` or `submit`), prints them in arrival order
    exactly once, answers every job (`evt/job`) and keeps the retained status current.

    Job answers: `printed`; `held` (`paper_empty`, `cover_open`, `offline`; the job prints by
    itself when the printer is ready); `failed` (`unreachable`: the edge retries;
    `interrupted`: a crash cut it off, a person decides; `bad_document`).
    """

    def __init__(self, device: DeviceClient | None, connection: str, profile: str,
                 journal: Path, *, logo: Path | None = None, poll_s: float = 1.0,
                 publish: Callable[[dict[str, Any]], None] | None = None,
                 on_status: Callable[[dict[str, str]], None] | None = None,
                 link: PrinterLink | None = None, spool_dir: str | Path | None = None) -> None:
        if device is None and publish is None:
            raise ValueError("a printer service needs a device or a publish callable")
        self.device = device
        self.profile = profile
        self.link = link or PrinterLink(connection, profile=profile, spool_dir=spool_dir)
        self.journal_path = Path(journal)
        self.logo_path = logo
        self.poll_s = poll_s
        self._publish = publish
        self._on_status = on_status
        self.status: PrinterStatus | None = None
        self._journal: PrintJournal | None = None
        self._logo: Image.Image | None = None
        self._queue = _Queue()
        self._held: OrderedDict[str, _Job] = OrderedDict()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_poll = 0.0
        self._last_prune = 0.0
        check_profile(profile)  # fail at start-up, not at the first receipt

    # ------------------------------------------------------------ lifecycle

    def start(self) -> PrinterService:
        self._journal = PrintJournal(self.journal_path)
        self._last_prune = time.monotonic()
        if self.logo_path is not None:
            try:
                with Image.open(self.logo_path) as image:
                    self._logo = image.convert("RGBA")
            except OSError as exc:
                log.warning("printer: logo %s not usable (%s); printing without", self.logo_path,
                            exc)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"printer {self.link.connection}",
                                        daemon=True)
        self._thread.start()
        if self.device is not None:
            self.device.command_handlers["print"] = self._on_print_command
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.device is not None and self.device.command_handlers.get("print") == \
                self._on_print_command:
            del self.device.command_handlers["print"]
        self._stopping.set()
        with self._queue.wake:
            self._queue.wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("printer: worker still busy after %.0f s; leaving it", timeout)
            self._thread = None
        self.link.close()
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    # ------------------------------------------------------------ taking jobs

    def submit(self, job: str, document: Any) -> None:
        """Queue a job; returns at once (the answer comes as an `evt/job`)."""
        with self._queue.wake:
            self._queue.incoming.append(_Job(job, document))
            self._queue.wake.notify()

    def _on_print_command(self, envelope: Envelope) -> None:
        # On paho's network thread: decode, queue, return; the worker does the rest.
        data = envelope.data if isinstance(envelope.data, dict) else {}
        job = data.get("job")
        if not isinstance(job, str) or not job or len(job) > MAX_JOB_ID:
            log.warning("printer: cmd/print %s without a usable job id; ignored", envelope.id)
            return
        self.submit(job, data.get("document"))

    # ------------------------------------------------------------ the worker

    def _run(self) -> None:
        try:
            self._poll(force=True)
        except Exception:
            log.exception("printer: first status read failed")
        while not self._stopping.is_set():
            job = self._next(self.poll_s if self._held else self.poll_s * 5)
            try:
                if job is not None:
                    self._accept(job)
                elif time.monotonic() - self._last_poll >= self.poll_s * 0.9:
                    self._poll()
                if self._held and self.status is not None and self.status.ready:
                    self._print_held()
                self._housekeeping()
            except Exception:
                # One bad job or a driver surprise must not end the printer.
                log.exception("printer: unexpected error in the worker")
                self.link.close()
                time.sleep(min(self.poll_s, 1.0))

    def _next(self, timeout: float) -> _Job | None:
        with self._queue.wake:
            if not self._queue.incoming and not self._stopping.is_set():
                self._queue.wake.wait(timeout)
            return self._queue.incoming.popleft() if self._queue.incoming else None

    def _accept(self, job: _Job) -> None:
        journal = self._journal
        assert journal is not None
        state = journal.state(job.job)
        if state == "printed":
            self._answer(job.job, "printed")
            return
        if state == "printing":
            self._answer(job.job, "failed", "interrupted")
            return
        held = self._held.get(job.job)
        if held is not None:  # the edge sent it again while it waits: same answer
            self._answer(job.job, "held", held.held)
            return
        try:
            job.data = render_escpos(job.document, self.profile, logo=self._logo)
        except DocumentError as exc:
            log.warning("printer: job %s refused: %s", job.job, exc)
            self._answer(job.job, "failed", "bad_document")
            return
        if self._held:
            # Jobs print in arrival order: behind the ones already waiting.
            status = self._poll()
            if status.printer == "unreachable":
                self._answer(job.job, "failed", "unreachable")
                return
            self._held[job.job] = job
            if status.ready:
                self._print_held()
            if job.job in self._held:
                self._hold(job, (self.status or status).hold_reason)
            return
        self._print(job)

    def _print(self, job: _Job) -> bool:
        """Print one job now if the printer is ready; True when it printed."""
        assert self._journal is not None and job.data is not None
        before = self._poll()
        if before.printer == "unreachable":
            if job.job in self._held:
                return False  # it keeps waiting; it was answered `held` already
            self._answer(job.job, "failed", "unreachable")
            return False
        if not before.ready:
            self._held[job.job] = job
            self._hold(job, before.hold_reason)
            return False
        self._journal.begin(job.job)
        try:
            self.link.send(job.data)
            sent = True
        except PrinterUnreachable as exc:
            log.warning("printer: job %s: %s", job.job, exc)
            sent = False
        after = self._poll(force=True)
        if sent and after.ready:
            self._journal.done(job.job)
            self._held.pop(job.job, None)
            self._answer(job.job, "printed")
            return True
        if sent and after.printer == "unreachable":
            # Every byte went out, then the printer vanished: it may well have printed. Not
            # knowing, the journal keeps the job as `printing`, so it is never printed again
            # without a person looking at the paper first.
            self._held.pop(job.job, None)
            self._answer(job.job, "failed", "interrupted")
            return False
        # It did not print whole: start again from the top when the printer is ready, or
        # let the edge send it again when the printer cannot be reached.
        self._journal.forget(job.job)
        if after.ready or after.printer == "unreachable":
            self._held.pop(job.job, None)
            self._answer(job.job, "failed", "unreachable")
            return False
        self._held[job.job] = job
        self._hold(job, after.hold_reason, again=True)
        return False

    def _print_held(self) -> None:
        while self._held and not self._stopping.is_set():
            job = next(iter(self._held.values()))
            if not self._print(job):
                return

    def _hold(self, job: _Job, reason: str, *, again: bool = False) -> None:
        if again or job.held != reason:
            job.held = reason
            self._answer(job.job, "held", reason)

    def _answer(self, job: str, state: str, reason: str | None = None) -> None:
        body: dict[str, Any] = {"job": job, "state": state}
        if reason is not None:
            body["reason"] = reason
        log.info("printer: job %s %s%s", job, state, f" ({reason})" if reason else "")
        try:
            if self.device is not None:
                self.device.event("job", body)
            if self._publish is not None:
                self._publish(body)
        except Exception:
            log.exception("printer: could not answer job %s", job)

    # ------------------------------------------------------------ status

    def _poll(self, *, force: bool = False) -> PrinterStatus:
        status = self.link.status()
        self._last_poll = time.monotonic()
        if force or status != self.status:
            if status != self.status:
                log.info("printer %s: %s", self.link.connection, status.as_dict())
            self.status = status
            self._publish_status(status)
        return status

    def _publish_status(self, status: PrinterStatus) -> None:
        fields = {**status.as_dict(), "profile": self.profile}
        try:
            if self.device is not None:
                self.device.set_status(**fields)
            if self._on_status is not None:
                self._on_status(fields)
        except Exception:
            log.exception("printer: could not publish the status")

    def _housekeeping(self) -> None:
        if time.monotonic() - self._last_prune > 3600 and self._journal is not None:
            self._last_prune = time.monotonic()
            self._journal.prune()


# ---------------------------------------------------------------- standalone process


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pos_bridge.printer",
        description="Print receipt jobs from the store bus on a USB, serial or network "
                    "printer. The MQTT password is read from PRINTER_MQTT_PASSWORD.")
    p.add_argument("--store", required=True, help="store id")
    p.add_argument("--device", required=True, help="this printer's device id")
    p.add_argument("--mqtt-url", required=True, help="the store broker, e.g. mqtt://edge:1883")
    p.add_argument("--username", required=True, help="this printer's MQTT user name")
    p.add_argument("--connect", required=True, metavar="URL",
                   help="usb://VID:PID, serial:///dev/ttyUSB0?baudrate=19200, "
                        "tcp://HOST:9100 or file:///dev/usb/lp0")
    p.add_argument("--profile", default="default",
                   help="python-escpos printer profile, e.g. TM-T88V (default: default)")
    p.add_argument("--journal", required=True, type=Path,
                   help="SQLite file remembering printed jobs")
    p.add_argument("--logo", type=Path, help="PNG printed in the receipt header")
    p.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                   help="status poll interval while jobs wait (default 1)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s printer %(levelname)s: %(message)s")
    logsafe.stamp()  # ISO 8601 times with the offset, as the edge's lines
    password = os.environ.get("PRINTER_MQTT_PASSWORD")
    if not password:
        print("PRINTER_MQTT_PASSWORD is not set", file=sys.stderr)
        return 2
    try:
        parse_connection(args.connect)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    device = DeviceClient(args.store, "printer", args.device, args.mqtt_url, args.username,
                          password, model=args.profile)
    try:
        service = PrinterService(device, args.connect, args.profile, args.journal,
                                 logo=args.logo, poll_s=args.poll)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    # Handlers first, so no cmd/print that arrives right after connecting is missed.
    service.start()
    try:
        connect_until(device, stop)
        stop.wait()
    except DeviceError as exc:  # the broker refused the login
        log.error("%s", exc)
        return 3
    finally:
        service.stop()
        device.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
