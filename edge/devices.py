"""Devices of the store: enrolment with their own broker credentials, and presence.

Presence comes from each device's retained `status` message; its `offline` form is the
device's Last Will, which the broker publishes when the connection drops without a
DISCONNECT (at the latest 1.5x the device's keep-alive after the last packet).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from edge.broker import Login, hash_password, verify_password, write_broker_files
from edge.datadir import DataDir
from edge.outbox import queue_event
from edge.settings import Settings
from edge.store import Store
from store_contract.errors import BadRequest, Conflict, NotFound
from store_contract.events import DeviceStatus
from store_contract.protocol import DEVICE_KINDS, ID_RE, format_ts, now_rfc3339, parse_ts

PRESENCE_STATES = ("online", "offline")


@dataclass(frozen=True)
class Enrolment:
    kind: str
    id: str
    username: str
    password: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id, "username": self.username,
                "password": self.password}


def username_for(kind: str, device_id: str) -> str:
    """The broker login of a device: its kind and id, unique in the store."""
    return f"{kind}-{device_id}"


def check_device(kind: str, device_id: str) -> None:
    if kind not in DEVICE_KINDS:
        raise BadRequest(f"Unknown device kind {kind!r}; use one of {', '.join(DEVICE_KINDS)}.")
    if not ID_RE.match(device_id):
        raise BadRequest(f"Device id {device_id!r} must be 1-32 characters of a-z, 0-9 and '-', "
                         "starting with a letter or digit.")


def edge_login(datadir: DataDir) -> Login:
    creds = datadir.edge_mqtt_credentials()
    return Login(creds["username"], hash_password(creds["password"]))


def sync_broker_files(settings: Settings, datadir: DataDir, store: Store) -> None:
    """Render passwd/acl/conf for the devices in the database and reload the broker."""
    rows = store.query("SELECT kind, id, username, password_hash FROM devices ORDER BY kind, id")
    devices = [Login(r["username"], r["password_hash"], r["kind"], r["id"]) for r in rows]
    write_broker_files(settings, datadir, edge_login(datadir), devices)


def enrol(settings: Settings, datadir: DataDir, store: Store, kind: str, device_id: str, *,
          rotate: bool = False, password: str | None = None) -> Enrolment:
    """Enrol a device (or give it a new password with `rotate`) and update the broker.

    `password` is for the edge's own hosted printers, whose password it keeps itself;
    otherwise a random one is made and only returned."""
    check_device(kind, device_id)
    password = password or secrets.token_urlsafe(18)
    username = username_for(kind, device_id)
    row = {"kind": kind, "id": device_id, "username": username,
           "password_hash": hash_password(password), "created_at": now_rfc3339()}

    def _write(db: sqlite_utils.Database) -> None:
        exists = db.execute("SELECT 1 FROM devices WHERE kind = ? AND id = ?",
                            (kind, device_id)).fetchone()
        if exists and not rotate:
            raise Conflict(f"Device {kind} {device_id} is already enrolled; use --rotate to "
                           "give it a new password.")
        if exists:
            db.execute("UPDATE devices SET password_hash = ? WHERE kind = ? AND id = ?",
                       (row["password_hash"], kind, device_id))
        else:
            db.table("devices").insert(row)

    store.write(_write)
    sync_broker_files(settings, datadir, store)
    return Enrolment(kind, device_id, username, password)


# The table of rows that some kinds keep about a device beside its login (a scanner's
# assignment, a kiosk's settings and credential): they go with the device, never to a
# device enrolled later under the same id.
DEVICE_ROWS = {"scanner": "scanners", "kiosk": "kiosks"}


def remove(settings: Settings, datadir: DataDir, store: Store, kind: str, device_id: str, *,
           noun: str | None = None) -> None:
    """Remove a device's login and the row its kind keeps about it (DEVICE_ROWS); refused
    when there was neither, as "No {noun} 'id' is enrolled." (`noun`: "{kind} device")."""
    check_device(kind, device_id)
    table = DEVICE_ROWS.get(kind)

    def _delete(db: sqlite_utils.Database) -> int:
        count: int = db.execute("DELETE FROM devices WHERE kind = ? AND id = ?",
                                (kind, device_id)).rowcount
        if table is not None:
            count += db.execute(f"DELETE FROM {table} WHERE id = ?", (device_id,)).rowcount
        return count

    deleted = store.write(_delete)
    if not deleted:
        raise NotFound(f"No {noun or f'{kind} device'} {device_id!r} is enrolled.")
    sync_broker_files(settings, datadir, store)


def authenticate(store: Store, kind: str, device_id: str, password: str) -> bool:
    """Is `password` this enrolled device's (its broker password, also its HTTP token)?"""
    row = store.query_one("SELECT password_hash FROM devices WHERE kind = ? AND id = ?",
                          (kind, device_id))
    return row is not None and verify_password(password, row["password_hash"])


class LastSeen:
    """When each device was last heard from: any message (a lane's request, an event, a
    status) or HTTP call, not only a change of status.

    Noted in memory on paho's network thread (one dict store, no lock held long) and written
    to the devices table by `flush` (a job every few seconds, one write for all of them), so a
    lane selling every second, or a device flooding the edge, costs no database write per
    message. `merge` puts the newest moments into what the devices API shows."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._unsaved: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def note(self, kind: str, device_id: str, now: float | None = None) -> None:
        key = (kind, device_id)
        with self._lock:
            self._seen[key] = time.time() if now is None else now
            self._unsaved.add(key)

    def get(self, kind: str, device_id: str) -> float | None:
        return self._seen.get((kind, device_id))

    def merge(self, devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`list_devices` rows with `last_seen` moved on to what was heard since the flush."""
        for row in devices:
            at = self.get(row["kind"], row["id"])
            if at is not None:
                text = format_ts(datetime.fromtimestamp(at, UTC))
                if row["last_seen"] is None or text > row["last_seen"]:
                    row["last_seen"] = text
        return devices

    def flush(self, store: Store) -> int:
        """Write the moments noted since the last flush (never moving one back); how many."""
        with self._lock:
            keys, self._unsaved = self._unsaved, set()
            rows = [(format_ts(datetime.fromtimestamp(self._seen[k], UTC)), *k) for k in keys]
        if not rows:
            return 0

        def _write(db: sqlite_utils.Database) -> int:
            return sum(db.execute(
                "UPDATE devices SET last_seen = ? WHERE kind = ? AND id = ? AND "
                "(last_seen IS NULL OR last_seen < ?)", (at, kind, dev, at)).rowcount
                for at, kind, dev in rows)

        return store.write(_write)


def list_devices(store: Store) -> list[dict[str, Any]]:
    """Every enrolled device with its presence, for the API and the staff page."""
    out = []
    for row in store.query("SELECT kind, id, username, created_at, state, last_seen, status, "
                           "flaps FROM devices ORDER BY kind, id"):
        status = json.loads(row.pop("status"))
        row["status"] = {k: v for k, v in status.items() if k not in ("state", "ts")}
        flaps = row.pop("flaps")
        row["flapping"] = flaps >= FLAPPING_CHANGES
        if row["flapping"]:
            row["status"]["flapping"] = f"{flaps} changes since the last one sent to the hub"
        out.append(row)
    return out


def parse_status(payload: Any) -> dict[str, Any]:
    """Check a presence payload: `{"state": "online"|"offline", "ts", ...}`, at most 4 KiB."""
    if not isinstance(payload, dict) or payload.get("state") not in PRESENCE_STATES:
        raise BadRequest('Status must be a JSON object with "state" "online" or "offline".')
    ts = payload.get("ts")
    if ts is not None:
        try:
            parse_ts(ts)
        except ValueError:
            raise BadRequest('Status "ts" must be an RFC 3339 timestamp.') from None
    if len(json.dumps(payload)) > 4096:
        raise BadRequest("Status is larger than 4 KiB; keep it to presence and device state.")
    return payload


STATUS_WORTH_SYNCING = ("state", "printer", "paper", "cover", "model", "sw")
# Changes of one device since its last device.status event from which staff see it flapping.
FLAPPING_CHANGES = 3


def _worth(status: dict[str, Any]) -> dict[str, Any]:
    return {k: status[k] for k in STATUS_WORTH_SYNCING if k in status}


def record_status(store: Store, kind: str, device_id: str, payload: dict[str, Any], *,
                  interval_s: float = 60.0, now: float | None = None) -> bool:
    """Store a device's presence; False when the device is not enrolled here.

    The CRM hears of changes (online/offline, paper, cover), not of every heartbeat, and of
    at most one per device per `interval_s`: a device flapping its status 10,000 times
    costs the outbox one event an interval, which carries how many changes it stands for
    (`changes`). What changed in between is sent by `flush_statuses` once the interval is
    over. The devices table always holds the latest status (staff see it live)."""
    seen = now_rfc3339()
    now = time.time() if now is None else now

    def _write(db: sqlite_utils.Database) -> bool:
        row = db.execute("SELECT status, status_synced, status_synced_at, flaps FROM devices "
                         "WHERE kind = ? AND id = ?", (kind, device_id)).fetchone()
        if row is None:
            return False
        # A Last Will says only "offline": keep what the device last told about itself.
        before = json.loads(row[0])
        merged = {**before, **payload} if payload["state"] == "offline" else payload
        flaps = row[3] + (1 if _worth(before) != _worth(merged) else 0)
        synced = json.loads(row[1]) if row[1] else None
        if _worth(merged) != synced and now - row[2] >= interval_s and \
                _queue_status(db, kind, device_id, merged, flaps, seen, now):
            flaps = 0
        db.execute("UPDATE devices SET state = ?, last_seen = ?, status = ?, flaps = ? "
                   "WHERE kind = ? AND id = ?",
                   (payload["state"], seen, json.dumps(merged, separators=(",", ":")), flaps,
                    kind, device_id))
        return True

    return store.write(_write)


def _queue_status(db: sqlite_utils.Database, kind: str, device_id: str,
                  status: dict[str, Any], changes: int, at: str, now: float) -> bool:
    """Queue a device.status event and note it as sent; False when a full outbox dropped it
    (it is tried again with the device's next change or the next flush)."""
    worth = _worth(status)
    if queue_event(db.conn, DeviceStatus(
            kind=kind, device=device_id, status=worth,
            changes=changes if changes > 1 else None),
            device_id=device_id, occurred_at=at) is None:
        return False
    db.execute("UPDATE devices SET status_synced = ?, status_synced_at = ?, flaps = 0 "
               "WHERE kind = ? AND id = ?",
               (json.dumps(worth, separators=(",", ":")), now, kind, device_id))
    return True


def flush_statuses(store: Store, interval_s: float = 60.0, now: float | None = None) -> int:
    """Send the devices' statuses held back by `record_status` once their interval is over
    (a scheduled job); how many were sent."""
    now = time.time() if now is None else now

    def _write(db: sqlite_utils.Database) -> int:
        sent = 0
        for kind, device_id, status, synced, flaps in db.execute(
                "SELECT kind, id, status, status_synced, flaps FROM devices "
                "WHERE status_synced_at <= ?", (now - interval_s,)).fetchall():
            current = json.loads(status)
            if synced is not None and _worth(current) == json.loads(synced):
                if flaps:  # it flapped back to what the hub knows: calm again
                    db.execute("UPDATE devices SET flaps = 0 WHERE kind = ? AND id = ?",
                               (kind, device_id))
                continue
            if synced is None and current == {}:
                continue  # never reported anything
            sent += _queue_status(db, kind, device_id, current, flaps, now_rfc3339(), now)
        return sent

    return store.write(_write)
