"""Staff accounts: roles `cashier` and `manager`, scrypt password hashes, lock-out on guessing.

Wrong passwords are counted per account and client (the address the request came from):
5 in a row lock that account for that client for 5 minutes; 20 from one client lock the
client for all accounts; 50 for one account from anywhere lock the account for everyone.
A try is counted before the password is checked, in one write transaction, so guesses sent
in parallel get no more tries than guesses sent one after another. A locked account, an
unknown user and a wrong password get the same answer after the same work (one hash), and
at most HASHING_AT_ONCE hashes run at a time, so a flood of sign-ins cannot take the CPU
the checkout needs.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass

import sqlite_utils
from werkzeug.security import check_password_hash, generate_password_hash

from edge.store import Store
from store_contract.errors import BadRequest, Conflict, NotFound
from store_contract.passwords import ANY, PasswordPolicy
from store_contract.protocol import ID_RE, now_rfc3339

log = logging.getLogger(__name__)

ROLES = ("cashier", "manager")
# Store staff's own policy (store_contract/passwords.py): the hub declares its managers'.
POLICY = PasswordPolicy("staff", min_length=10, max_failures=5, client_max_failures=20,
                        account_max_failures=50, lock_seconds=300)
HASHING_AT_ONCE = 2
HASHING_WAIT_S = 10.0
_hashing = threading.BoundedSemaphore(HASHING_AT_ONCE)
# Checked when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-real-password", method="scrypt")


@dataclass(frozen=True)
class StaffUser:
    username: str
    role: str
    session_epoch: int = 0  # a session made under another epoch has ended

    def may(self, role: str) -> bool:
        """Managers may do everything cashiers may."""
        return self.role == "manager" or self.role == role


def add_user(store: Store, username: str, password: str, role: str, *,
             replace: bool = False) -> StaffUser:
    if not ID_RE.match(username):
        raise BadRequest("A staff username is 1-32 characters of a-z, 0-9 and '-'.")
    if role not in ROLES:
        raise BadRequest(f"Role must be one of {', '.join(ROLES)}.")
    POLICY.check_new(password)
    row = {"username": username, "password_hash": generate_password_hash(password, method="scrypt"),
           "role": role, "created_at": now_rfc3339(), "failed_logins": 0, "locked_until": 0}

    def _write(db: sqlite_utils.Database) -> None:
        exists = db.execute("SELECT session_epoch FROM staff_users WHERE username = ?",
                            (username,)).fetchone()
        if exists and not replace:
            raise Conflict(f"Staff user {username!r} already exists.")
        # A new password (or role) ends the sessions made with the old one.
        # Random, not counted up: an account removed and made again does not bring back
        # the sessions of the old one.
        db.table("staff_users").upsert(
            {**row, "session_epoch": secrets.randbelow(2**31)}, pk="username")
        db.execute("DELETE FROM login_failures WHERE username = ?", (username,))

    store.write(_write)
    return StaffUser(username, role)


def _check_hash(stored: str, password: str) -> bool:
    """The scrypt check, at most HASHING_AT_ONCE at a time; a check that cannot start within
    HASHING_WAIT_S fails (the sign-in is refused like a wrong password)."""
    if not _hashing.acquire(timeout=HASHING_WAIT_S):
        return False
    try:
        return check_password_hash(stored, password)
    finally:
        _hashing.release()


def _take_try(db: sqlite_utils.Database, username: str, client: str, now: float) -> bool:
    """Count one try (as if it fails) unless the account, the client or the pair is locked;
    whether the try may go ahead."""
    keys = POLICY.counters(username, client)
    rows = {}
    for user, cl, _ in keys:
        row = db.execute("SELECT failures, locked_until, updated FROM login_failures "
                         "WHERE username = ? AND client = ?", (user, cl)).fetchone()
        rows[(user, cl)] = row
        if row is not None and row[1] > now:
            return False
    for user, cl, limit in keys:
        row = rows[(user, cl)]
        failures, locked = POLICY.after_try(row and row[0], row and row[2], limit, now)
        db.execute("INSERT OR REPLACE INTO login_failures (username, client, failures, "
                   "locked_until, updated) VALUES (?, ?, ?, ?, ?)",
                   (user, cl, failures, locked, now))
    if int(now) % 60 == 0:  # now and then: forget counts nobody added to for a day
        db.execute("DELETE FROM login_failures WHERE updated < ?", (now - 86400,))
    return True


def _forget_try(db: sqlite_utils.Database, username: str, client: str) -> None:
    """A right password: the pair starts again, and the wider counts lose this try."""
    db.execute("DELETE FROM login_failures WHERE username = ? AND client = ?",
               (username, client))
    db.execute("UPDATE login_failures SET failures = max(failures - 1, 0) "
               "WHERE (username = ? AND client = ?) OR (username = ? AND client = ?)",
               (ANY, client, username, ANY))


def authenticate(store: Store, username: str, password: str, client: str = "local"
                 ) -> StaffUser | None:
    """The user if the password is right and neither the account nor the client is locked
    (see the module doc); None otherwise, always after one hash."""
    name = username if ID_RE.match(username or "") else "?"  # what is kept of a bad name
    now = time.time()
    if not store.write(lambda db: _take_try(db, name, client[:64], now)):
        _check_hash(_DUMMY_HASH, password)
        log.warning("staff sign-in as %s from %s refused: locked after wrong passwords",
                    name, client[:64])
        return None
    row = store.query_one("SELECT username, role, password_hash, session_epoch "
                          "FROM staff_users WHERE username = ?", (username,))
    if row is None:
        _check_hash(_DUMMY_HASH, password)
        log.warning("staff sign-in as %s from %s refused: wrong password (no such user)",
                    name, client[:64])
        return None
    if not _check_hash(row["password_hash"], password):
        log.warning("staff sign-in as %s from %s refused: wrong password", name, client[:64])
        return None
    store.write(lambda db: _forget_try(db, name, client[:64]))
    return StaffUser(row["username"], row["role"], row["session_epoch"])


def remove_user(store: Store, username: str) -> None:
    """Delete a staff account: its sessions end at their next request."""

    def _write(db: sqlite_utils.Database) -> None:
        gone = db.execute("DELETE FROM staff_users WHERE username = ?", (username,)).rowcount
        if not gone:
            raise NotFound(f"There is no staff user {username!r}.")

    store.write(_write)


def get_user(store: Store, username: str) -> StaffUser | None:
    row = store.query_one("SELECT username, role, session_epoch FROM staff_users "
                          "WHERE username = ?", (username,))
    return StaffUser(row["username"], row["role"], row["session_epoch"]) if row else None
