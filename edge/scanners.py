"""Scanners and where their scans go (docs/protocol.md, "Scans").

A scanner is a device of kind `scanner` (its own broker login, like any device) plus a row
of `scanners`: the lane (`pos`) or kiosk it is assigned to. Its `evt/scan` is read with the
shared `store_contract.scans.parse_scan` and forwarded to that device as `cmd/scan`; a scan
for a lane is also pushed live to the staff checkout pages open for that lane.

The assignment is read from the database for every scan, so `edge scanners assign` (a
separate process) moves a scanner from its next scan on, without a restart. A scan with
nowhere to go (never assigned, or assigned to a device since removed) is not lost
silently: it is logged, counted in metrics and on the scanner's row, which the devices
page shows. Neither the log nor the table ever holds a code's text (it may be a member
code or a coupon): only its length, symbology and when it came.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from edge.datadir import DataDir
from edge.devices import Enrolment, check_device, enrol, remove
from edge.metrics import Metrics
from edge.settings import Settings
from edge.store import Store
from store_contract.errors import BadRequest, Conflict, Forbidden, NotFound
from store_contract.protocol import ID_RE, Envelope, now_rfc3339
from store_contract.scans import Scan, parse_scan

log = logging.getLogger(__name__)

# What a scanner may be assigned to: a device kind, and how the command line names it.
TARGET_KINDS = {"pos": "lane", "kiosk": "kiosk"}


@dataclass(frozen=True)
class Target:
    """The device a scanner's scans go to: a lane (kind `pos`) or a kiosk."""

    kind: str
    id: str

    def __str__(self) -> str:
        return f"{TARGET_KINDS[self.kind]} {self.id}"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id}


def page_key(target: Target) -> str:
    """Which open pages see a target's scans live (`LiveScans`): the staff checkout pages
    of a lane (keyed by its id, as the page asks), or a kiosk's pages ("kiosk/ID"; no lane
    id has a "/")."""
    return target.id if target.kind == "pos" else f"kiosk/{target.id}"


def target_of(lane: str | None, kiosk: str | None) -> Target:
    """The target named on the command line: exactly one of a lane and a kiosk."""
    if (lane is None) == (kiosk is None):
        raise BadRequest("Name exactly one of --lane LANE and --kiosk KIOSK.")
    kind, ident = ("pos", lane) if lane is not None else ("kiosk", kiosk)
    assert ident is not None
    if not ID_RE.match(ident):
        raise BadRequest(f"{TARGET_KINDS[kind].capitalize()} id {ident!r} must be 1-32 "
                         "characters of a-z, 0-9 and '-'.")
    return Target(kind, ident)


def check_target(store: Store, target: Target) -> None:
    """A scanner goes only to an enrolled lane or kiosk: one clear line otherwise."""
    if store.query_one("SELECT 1 AS x FROM devices WHERE kind = ? AND id = ?",
                       (target.kind, target.id)) is None:
        add = f"edge devices add {target.kind} {target.id}"
        raise BadRequest(f"There is no enrolled {target} (a {target.kind} device); enrol it "
                         f"first with `{add}`.")


def _scanner_enrolled(store: Store, scanner_id: str) -> bool:
    return store.query_one("SELECT 1 AS x FROM devices WHERE kind = 'scanner' AND id = ?",
                           (scanner_id,)) is not None


def _set_target(store: Store, scanner_id: str, target: Target) -> None:
    def _write(db: sqlite_utils.Database) -> None:
        db.execute("INSERT INTO scanners (id, target_kind, target, assigned_at) "
                   "VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                   "target_kind = excluded.target_kind, target = excluded.target, "
                   "assigned_at = excluded.assigned_at",
                   (scanner_id, target.kind, target.id, now_rfc3339()))

    store.write(_write)


def add_scanner(settings: Settings, datadir: DataDir, store: Store, scanner_id: str,
                target: Target, *, rotate: bool = False) -> tuple[dict[str, Any], Enrolment]:
    """Enrol a scanner (its broker login, as `edge devices add` hands out) and assign it.

    The target is checked first, so a refused assignment leaves no half-enrolled scanner."""
    check_device("scanner", scanner_id)
    check_target(store, target)
    if _scanner_enrolled(store, scanner_id) and not rotate:
        raise Conflict(f"Scanner {scanner_id} is already enrolled: move it with `edge scanners "
                       "assign`, or give it a new password with --rotate.")
    enrolment = enrol(settings, datadir, store, "scanner", scanner_id, rotate=rotate)
    _set_target(store, scanner_id, target)
    return get_scanner(store, scanner_id), enrolment


def assign(store: Store, scanner_id: str, target: Target) -> dict[str, Any]:
    """Move an enrolled scanner to another lane or kiosk; its next scan goes there."""
    check_device("scanner", scanner_id)
    if not _scanner_enrolled(store, scanner_id):
        raise NotFound(f"No scanner {scanner_id!r} is enrolled; add it with `edge scanners "
                       f"add {scanner_id} --lane LANE`.")
    check_target(store, target)
    _set_target(store, scanner_id, target)
    return get_scanner(store, scanner_id)


def remove_scanner(settings: Settings, datadir: DataDir, store: Store, scanner_id: str) -> None:
    """Remove a scanner's assignment, its scan counts and its broker login."""
    remove(settings, datadir, store, "scanner", scanner_id, noun="scanner")


_LIST_SQL = """
    SELECT d.id AS id, s.target_kind, s.target, s.assigned_at, s.last_scan,
           COALESCE(s.scans, 0) AS scans, COALESCE(s.unassigned_scans, 0) AS unassigned_scans,
           s.last_unassigned, t.id IS NOT NULL AS target_enrolled
    FROM devices d
    LEFT JOIN scanners s ON s.id = d.id
    LEFT JOIN devices t ON t.kind = s.target_kind AND t.id = s.target
    WHERE d.kind = 'scanner'
"""


def _row(row: dict[str, Any]) -> dict[str, Any]:
    target = None
    if row["target_kind"] is not None:
        target = {"kind": row["target_kind"], "id": row["target"],
                  "enrolled": bool(row["target_enrolled"])}
    return {"id": row["id"], "assigned_to": target, "assigned_at": row["assigned_at"],
            "last_scan": row["last_scan"], "scans": row["scans"],
            "unassigned_scans": row["unassigned_scans"],
            "last_unassigned": row["last_unassigned"]}


def list_scanners(store: Store) -> list[dict[str, Any]]:
    """Every enrolled scanner: where it sends, when it last scanned, and how many of its
    scans had nowhere to go (and the last time one had)."""
    return [_row(r) for r in store.query(_LIST_SQL + " ORDER BY d.id")]


def get_scanner(store: Store, scanner_id: str) -> dict[str, Any]:
    row = store.query_one(_LIST_SQL + " AND d.id = ?", (scanner_id,))
    if row is None:
        raise NotFound(f"No scanner {scanner_id!r} is enrolled.")
    return _row(row)


def route_of(store: Store, scanner_id: str) -> Target | None:
    """Where this scanner's scans go now; None: nowhere (unassigned, or its lane or kiosk
    is no longer enrolled)."""
    row = store.query_one(
        "SELECT s.target_kind, s.target FROM scanners s JOIN devices t "
        "ON t.kind = s.target_kind AND t.id = s.target WHERE s.id = ?", (scanner_id,))
    return Target(row["target_kind"], row["target"]) if row else None


class ScanTally:
    """Scans counted in memory and written to the scanners' rows by `flush` (a job every
    few seconds, one write for all of them), like the devices' last-seen moments: a write
    per scan would compete with the next scans' forwarding for the edge's threads.
    `merge` puts what was counted since the flush into rows read from the table."""

    def __init__(self) -> None:
        # scanner -> [scans, unassigned scans, last scan, last unassigned scan (or None)]
        self._pending: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def note(self, scanner_id: str, *, routed: bool) -> None:
        now = now_rfc3339()
        with self._lock:
            entry = self._pending.setdefault(scanner_id, [0, 0, now, None])
            entry[0] += 1
            entry[2] = now
            if not routed:
                entry[1] += 1
                entry[3] = now

    def merge(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            pending = {k: list(v) for k, v in self._pending.items()}
        for row in rows:
            entry = pending.get(row["id"])
            if entry is not None:
                row["scans"] += entry[0]
                row["unassigned_scans"] += entry[1]
                row["last_scan"] = entry[2]
                row["last_unassigned"] = entry[3] or row["last_unassigned"]
        return rows

    def flush(self, store: Store) -> int:
        """Write what was counted since the last flush; how many scanners it touched."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0

        def _write(db: sqlite_utils.Database) -> None:
            for scanner_id, (scans, misses, last, last_miss) in pending.items():
                db.execute(
                    "INSERT INTO scanners (id, last_scan, scans, unassigned_scans, "
                    "last_unassigned) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                    "last_scan = excluded.last_scan, scans = scans + excluded.scans, "
                    "unassigned_scans = unassigned_scans + excluded.unassigned_scans, "
                    "last_unassigned = COALESCE(excluded.last_unassigned, last_unassigned)",
                    (scanner_id, last, scans, misses, last_miss))

        store.write(_write)
        return len(pending)


def describe(scan: Scan) -> str:
    """A scan as a log line may name it: never its text, only its shape."""
    return (f"{len(scan.code)} characters, {scan.symbology or 'symbology unknown'}, "
            f"from {scan.source}")


# (kind, device, command, data) -> paho's MQTTMessageInfo (anything with wait_for_publish)
Send = Callable[[str, str, str, dict[str, Any]], Any]
Push = Callable[[str, dict[str, Any]], int]  # (lane, data) -> pages it reached
Listening = Callable[[str], bool]  # is a page open for this lane?
# (key, task) -> False if it could not be queued: runs a task on a worker, in order per key.
Later = Callable[[str, Callable[[], None]], bool]


def _now(_key: str, task: Callable[[], None]) -> bool:
    task()
    return True


# How long the page's copy waits for the broker to take the lane's (see ScanRouter).
LANE_FIRST_S = 0.05


class ScanRouter:
    """The edge's `evt/scan` handler: check, forward as `cmd/scan`, push to open pages.

    Runs inline on the bus's network thread (`Dispatcher.event(..., inline=True)`), so one
    scanner's scans keep their order and a scan reaches its lane with no thread hand-off:
    it only parses, reads the scanner's row and queues the command. The page's copy, which
    waits for the broker, is handed to a worker (`later`). Nothing is written per scan: the
    counts go to `tally`, which a scheduled job writes to the scanners' rows."""

    def __init__(self, store: Store, metrics: Metrics, send: Send, push: Push,
                 listening: Listening = lambda lane: True, later: Later = _now) -> None:
        self.store = store
        self.metrics = metrics
        self.send = send
        self.push = push
        self.listening = listening
        self.later = later
        self.tally = ScanTally()
        # Looked up once: labels() costs more than inc(), and this runs on the bus's
        # network thread.
        self._outcome = {o: metrics.scans.labels(outcome=o)
                         for o in ("routed", "refused", "unassigned")}

    def on_scan_event(self, caller: Any, envelope: Envelope) -> None:
        if caller.kind != "scanner":
            self._outcome["refused"].inc()
            raise Forbidden(f"Only scanners send scans, not a {caller.kind} device.")
        try:
            scan = parse_scan(envelope.data)
            # JSON can carry half of a surrogate pair ("\\ud800"), which no UTF-8 (no
            # command to a lane) can: refused here like any other bad code.
            scan.code.encode("utf-8")
        except UnicodeEncodeError:
            self._outcome["refused"].inc()
            raise BadRequest("Bad scan: data.code: not Unicode text (a lone surrogate).") \
                from None
        except ValueError as exc:  # names the field, never its value
            self._outcome["refused"].inc()
            raise BadRequest(f"Bad scan: {exc}.") from None
        target = route_of(self.store, caller.device)
        if target is None:
            self._outcome["unassigned"].inc()
            log.warning("scan from scanner %s has nowhere to go (not assigned to an enrolled "
                        "lane or kiosk; `edge scanners assign`): %s", caller.device,
                        describe(scan))
            self.tally.note(caller.device, routed=False)
            return
        data = scan.forward_data(caller.device)
        sent = self.send(target.kind, target.id, "scan", data)
        key = page_key(target)
        if self.listening(key):
            # The lane first: waking the page's stream at once would have it compete with
            # the bus's network thread for the interpreter before the command is written
            # (bench/scan_route.py). The page's copy goes, from a worker, once the broker
            # has the lane's.
            def to_page() -> None:
                with contextlib.suppress(Exception):  # not connected, or paho's queue full
                    sent.wait_for_publish(LANE_FIRST_S)
                self.push(key, data)

            if not self.later(caller.key, to_page):
                log.warning("scan from scanner %s not shown on %s's page: the scanner's "
                            "backlog is full", caller.device, target.id)
        self._outcome["routed"].inc()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("scan from scanner %s to %s: %s", caller.device, target, describe(scan))
        self.tally.note(caller.device, routed=True)
