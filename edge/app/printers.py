"""Receipt printers: which lane prints where, and the printer services the edge runs itself.

A printer is a device of kind `printer` (it has its own MQTT login like any device) plus a
row of `printers`: its profile (python-escpos capability database), the lanes whose
receipts it prints and, for a printer the edge can reach itself (a network printer on
port 9100, or a device file on the edge box), its connection. The edge runs the printer
service for those in its own process, each logged in with the printer's own broker login
(the broker makes the username the client id, so sharing the edge's login would take the
edge's own connection over); the edge keeps those passwords in
`secrets/mqtt-printer-ID.json` and never prints them. A USB or serial printer at a till gets
the same service as its own `python -m pos_bridge.printer` process, with the password
`edge printers add` printed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

from edge.broker import verify_password
from edge.datadir import DataDir, write_private
from edge.devices import Enrolment, check_device, enrol, username_for
from edge.settings import Settings
from edge.store import Store
from store_contract.errors import BadRequest
from store_contract.protocol import ID_RE, now_rfc3339

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Printer:
    id: str
    connection: str | None
    profile: str
    lanes: list[str]

    @property
    def hosted(self) -> bool:
        """Does the edge run this printer's service itself?"""
        return bool(self.connection)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "connection": self.connection, "profile": self.profile,
                "lanes": self.lanes, "hosted": self.hosted}


def check_profile(profile: str) -> None:
    """The renderer's own check, with a hint a person can act on."""
    from escpos.capabilities import CAPABILITIES

    from pos_bridge.receipt_render import check_profile as renderer_knows

    try:
        renderer_knows(profile)
    except ValueError:
        near = get_close_matches(profile, list(CAPABILITIES["profiles"]), n=4, cutoff=0.75)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise BadRequest(f"Unknown printer profile {profile!r}{hint}; the profiles are those of "
                         "python-escpos' capability database, e.g. TM-T88V, TM-T20II, "
                         "default.") from None


def check_connection(connection: str, settings: Settings) -> None:
    """A connection the edge may serve: well formed, and a file:// one only inside the
    printer spool folder (`printer_spool_dir`)."""
    from pos_bridge.printing.transports import inside_spool_dir, parse_connection

    try:
        parsed = parse_connection(connection)
        if parsed.scheme == "file":
            inside_spool_dir(parsed.path, settings.printer_spool_path)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def add_printer(settings: Settings, datadir: DataDir, store: Store, printer_id: str, *,
                lanes: list[str], connection: str | None, profile: str,
                rotate: bool = False) -> tuple[Printer, Enrolment | None]:
    """Register (or change) a printer; enrols its device login the first time."""
    check_device("printer", printer_id)
    bad = [lane for lane in lanes if not ID_RE.match(lane)]
    if bad:
        raise BadRequest(f"Lane ids are 1-32 of a-z, 0-9 and '-': {', '.join(bad)}")
    check_profile(profile)
    if connection:
        check_connection(connection, settings)
    known = store.query_one("SELECT 1 AS x FROM devices WHERE kind = 'printer' AND id = ?",
                            (printer_id,))
    enrolment: Enrolment | None = None
    if connection:
        # The edge serves it: a login only the edge knows, never printed.
        if known is None or rotate or read_hosted_login(datadir, store, printer_id) is None:
            hosted_login(settings, datadir, store, printer_id, renew=True)
    else:
        # Served by its own process: a password for that process, printed once. A printer
        # the edge served until now gets a new one (the edge's copy is dropped).
        was_hosted = datadir.hosted_printer_secret(printer_id).exists()
        if known is None or rotate or was_hosted:
            enrolment = enrol(settings, datadir, store, "printer", printer_id,
                              rotate=known is not None)
        forget_hosted_login(datadir, printer_id)
    with store.transaction() as db:
        conn = db.conn
        # A lane prints on one printer: moving it here takes it off any other.
        for row in conn.execute("SELECT id, lanes FROM printers WHERE id != ?",
                                (printer_id,)).fetchall():
            rest = [lane for lane in json.loads(row["lanes"]) if lane not in lanes]
            conn.execute("UPDATE printers SET lanes = ? WHERE id = ?",
                         (json.dumps(rest), row["id"]))
        conn.execute("INSERT INTO printers (id, connection, profile, lanes, added_at) "
                     "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                     "connection = excluded.connection, profile = excluded.profile, "
                     "lanes = excluded.lanes",
                     (printer_id, connection or None, profile, json.dumps(sorted(set(lanes))),
                      now_rfc3339()))
    printer = get_printer(store, printer_id)
    assert printer is not None
    return printer, enrolment


def get_printer(store: Store, printer_id: str) -> Printer | None:
    row = store.query_one("SELECT * FROM printers WHERE id = ?", (printer_id,))
    return _printer(row) if row else None


def list_printers(store: Store) -> list[Printer]:
    return [_printer(r) for r in store.query("SELECT * FROM printers ORDER BY id")]


def read_hosted_login(datadir: DataDir, store: Store, printer_id: str) -> tuple[str, str] | None:
    """The hosted printer's broker login the edge keeps, if it is still the enrolled one."""
    try:
        creds = json.loads(datadir.hosted_printer_secret(printer_id).read_text())
        username, password = creds["username"], creds["password"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    row = store.query_one("SELECT password_hash FROM devices WHERE kind = 'printer' AND id = ?",
                          (printer_id,))
    if row is None or not verify_password(password, row["password_hash"]):
        return None
    return username, password


def hosted_login(settings: Settings, datadir: DataDir, store: Store, printer_id: str, *,
                 renew: bool = False) -> tuple[str, str]:
    """The broker login the edge serves a hosted printer with: its own `printer-ID` login.

    Made (or, with `renew` or when the kept one no longer matches, made anew) with a random
    password kept in secrets/mqtt-printer-ID.json (0600); the password file and ACL are
    rendered again and the running broker reloaded. The secret is written before the
    password hash, so the edge never holds a password older than the broker's."""
    if not renew:
        login = read_hosted_login(datadir, store, printer_id)
        if login is not None:
            return login
    username = username_for("printer", printer_id)
    password = secrets.token_urlsafe(24)
    datadir.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(datadir.hosted_printer_secret(printer_id),
                  json.dumps({"username": username, "password": password}, indent=2) + "\n",
                  replace=True)
    known = store.query_one("SELECT 1 AS x FROM devices WHERE kind = 'printer' AND id = ?",
                            (printer_id,))
    enrol(settings, datadir, store, "printer", printer_id, rotate=known is not None,
          password=password)
    return username, password


def forget_hosted_login(datadir: DataDir, printer_id: str) -> None:
    """Drop the edge's copy of a printer's password (it no longer serves that printer)."""
    with contextlib.suppress(FileNotFoundError):
        datadir.hosted_printer_secret(printer_id).unlink()


def remove_printer(store: Store, printer_id: str) -> bool:
    with store.transaction() as db:
        return bool(db.conn.execute("DELETE FROM printers WHERE id = ?",
                                    (printer_id,)).rowcount)


def _printer(row: Any) -> Printer:
    return Printer(row["id"], row["connection"], row["profile"], json.loads(row["lanes"]))


class PrinterHost:
    """The printer services the edge runs in its own process (printers with a connection)."""

    def __init__(self, settings: Settings, datadir: DataDir, store: Store) -> None:
        self.settings = settings
        self.datadir = datadir
        self.store = store
        self.services: dict[str, tuple[Printer, Any]] = {}  # id -> (as configured, service)
        self._logins: dict[str, tuple[str, str]] = {}  # id -> the login its service uses
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        if not self.settings.printer_spool_dir:  # the default folder is the edge's own
            self.settings.printer_spool_path.mkdir(mode=0o750, exist_ok=True)
        self.refresh()

    def refresh(self) -> None:
        """Serve the hosted printers as the table now lists them (a scheduled job, so a
        printer added or changed with `edge printers add` is served without a restart).
        Each service starts in the background and never delays the edge."""
        wanted: dict[str, Printer] = {}
        logins: dict[str, tuple[str, str]] = {}
        for p in list_printers(self.store):
            if not p.hosted:
                continue
            if self.store.query_one("SELECT 1 AS x FROM devices WHERE kind = 'printer' "
                                    "AND id = ?", (p.id,)) is None:
                log.warning("printer %s has no device login (removed with `edge devices "
                            "remove`?); not serving it", p.id)
                continue
            try:
                logins[p.id] = hosted_login(self.settings, self.datadir, self.store, p.id)
            except Exception:  # never let one printer's login stop the others
                log.exception("printer %s: could not make its broker login", p.id)
                continue
            wanted[p.id] = p
        with self._lock:
            if self._stopped:
                return
            gone = [pid for pid, (printer, _) in self.services.items()
                    if wanted.get(pid) != printer or self._logins.get(pid) != logins[pid]]
            stopping = [self.services.pop(pid)[1] for pid in gone]
            for pid in gone:
                self._logins.pop(pid, None)
            new = [p for pid, p in wanted.items() if pid not in self.services]
            for printer in new:
                self.services[printer.id] = (printer, None)
                self._logins[printer.id] = logins[printer.id]
        for service in stopping:
            if service is not None:
                service.stop()
                service.device.close()
        for printer in new:
            threading.Thread(target=self._run, args=(printer,), daemon=True,
                             name=f"printer-{printer.id}").start()

    def _run(self, printer: Printer) -> None:
        from pos_bridge.device import DeviceClient, DeviceError
        from pos_bridge.printer import PrinterService

        assert printer.connection is not None
        with self._lock:
            login = self._logins.get(printer.id)
        if login is None:  # removed or changed meanwhile
            return
        device = DeviceClient(self.settings.store_id, "printer", printer.id,
                              self.settings.mqtt_url, *login, model=printer.profile,
                              sw="store-edge/printer")
        journal = self.datadir.root / "printers" / f"{printer.id}.journal.db"
        journal.parent.mkdir(parents=True, exist_ok=True)
        try:
            service = PrinterService(device, printer.connection, printer.profile, journal,
                                     spool_dir=self.settings.printer_spool_path)
        except ValueError as exc:  # e.g. a file:// path outside the spool folder
            log.error("printer %s: %s; not serving it", printer.id, exc)
            with self._lock:
                if self.services.get(printer.id) == (printer, None):
                    del self.services[printer.id]
            return
        with self._lock:
            if self._stopped or self.services.get(printer.id) != (printer, None):
                return
            self.services[printer.id] = (printer, service)
            # Started under the lock: a stop() that came between would otherwise be undone.
            service.start()
        while not self._stopped:
            try:
                device.connect(timeout=10)
                log.info("printer %s (%s, %s) is served by the edge", printer.id,
                         printer.connection, printer.profile)
                return
            except DeviceError as exc:
                log.warning("printer %s: %s; trying again", printer.id, exc)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            services = [service for _, service in self.services.values() if service is not None]
            self.services.clear()
        for service in services:
            service.stop()
            service.device.close()
