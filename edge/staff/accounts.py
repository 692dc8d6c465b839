"""Staff accounts: roles `cashier` and `manager`, scrypt password hashes, lock-out on guessing."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlite_utils
from werkzeug.security import check_password_hash, generate_password_hash

from edge.errors import BadRequest, Conflict
from edge.protocol import ID_RE, now_rfc3339
from edge.store import Store

ROLES = ("cashier", "manager")
MAX_FAILURES = 5
LOCK_SECONDS = 300
MIN_PASSWORD = 10
# Checked when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-real-password", method="scrypt")


@dataclass(frozen=True)
class StaffUser:
    username: str
    role: str

    def may(self, role: str) -> bool:
        """Managers may do everything cashiers may."""
        return self.role == "manager" or self.role == role


def add_user(store: Store, username: str, password: str, role: str, *,
             replace: bool = False) -> StaffUser:
    if not ID_RE.match(username):
        raise BadRequest("A staff username is 1-32 characters of a-z, 0-9 and '-'.")
    if role not in ROLES:
        raise BadRequest(f"Role must be one of {', '.join(ROLES)}.")
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"A staff password needs at least {MIN_PASSWORD} characters.")
    row = {"username": username, "password_hash": generate_password_hash(password, method="scrypt"),
           "role": role, "created_at": now_rfc3339(), "failed_logins": 0, "locked_until": 0}

    def _write(db: sqlite_utils.Database) -> None:
        exists = db.execute("SELECT 1 FROM staff_users WHERE username = ?", (username,)).fetchone()
        if exists and not replace:
            raise Conflict(f"Staff user {username!r} already exists.")
        db.table("staff_users").upsert(row, pk="username")

    store.write(_write)
    return StaffUser(username, role)


def authenticate(store: Store, username: str, password: str) -> StaffUser | None:
    """The user if the password is right and the account is not locked; counts failures."""
    row = store.query_one("SELECT * FROM staff_users WHERE username = ?", (username,))
    if row is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    now = time.time()
    if row["locked_until"] > now:
        return None
    if check_password_hash(row["password_hash"], password):
        if row["failed_logins"]:
            store.write(lambda db: db.execute(
                "UPDATE staff_users SET failed_logins = 0 WHERE username = ?", (username,)))
        return StaffUser(row["username"], row["role"])

    def _fail(db: sqlite_utils.Database) -> None:
        failures = row["failed_logins"] + 1
        locked = now + LOCK_SECONDS if failures >= MAX_FAILURES else 0
        db.execute("UPDATE staff_users SET failed_logins = ?, locked_until = ? WHERE username = ?",
                   (0 if locked else failures, locked, username))

    store.write(_fail)
    return None


def get_user(store: Store, username: str) -> StaffUser | None:
    row = store.query_one("SELECT username, role FROM staff_users WHERE username = ?", (username,))
    return StaffUser(row["username"], row["role"]) if row else None
