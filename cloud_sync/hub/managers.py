"""Regional managers: the people who sign in to the hub's dashboard.

A manager sees one region's stores; a manager without a region (`--all-regions`) sees every
region. Passwords are scrypt hashes; five wrong passwords in a row lock the account for five
minutes, as the edge's staff accounts do.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from werkzeug.security import check_password_hash, generate_password_hash

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.schema import managers
from edge.errors import BadRequest, Conflict, NotFound
from edge.staff.accounts import LOCK_SECONDS, MAX_FAILURES, MIN_PASSWORD

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}\Z")
REGION_RE = USERNAME_RE  # regions are ids like stores' (`edge-hub stores add --region R`)
# Checked when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-real-password", method="scrypt")


@dataclass(frozen=True)
class Manager:
    """A signed-in manager; `region` None means every region."""

    username: str
    region: str | None

    @property
    def all_regions(self) -> bool:
        return self.region is None

    def sees(self, region: str | None) -> bool:
        """Whether this manager may see the stores of `region`."""
        return self.region is None or self.region == region


def add_manager(db: HubDB, username: str, password: str, region: str | None, *,
                replace: bool = False) -> Manager:
    """Create (or with `replace`, reset) a manager account; region None = all regions.

    Raises BadRequest for a malformed name, region or short password, Conflict when the
    username exists and `replace` is not set.
    """
    if not USERNAME_RE.match(username):
        raise BadRequest("A manager username is 1-32 characters of a-z, 0-9 and '-'.")
    if region is not None and not REGION_RE.match(region):
        raise BadRequest("A region is 1-32 characters of a-z, 0-9 and '-'.")
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"A manager password needs at least {MIN_PASSWORD} characters.")
    row = {"password_hash": generate_password_hash(password, method="scrypt"),
           "region": region, "created_ts": time.time(), "failed_logins": 0,
           "locked_until": 0.0}
    with db.write() as conn:
        exists = conn.execute(select(managers.c.username)
                              .where(managers.c.username == username)).first()
        if exists and not replace:
            raise Conflict(f"Manager {username!r} already exists (use --replace to reset).")
        if exists:
            conn.execute(update(managers).where(managers.c.username == username).values(row))
        else:
            conn.execute(managers.insert().values(username=username, **row))
    return Manager(username, region)


def remove_manager(db: HubDB, username: str) -> None:
    """Delete a manager account; its dashboard sessions end at their next request (every
    request reads the account again)."""
    with db.write() as conn:
        gone = conn.execute(delete(managers).where(managers.c.username == username)).rowcount
    if not gone:
        raise NotFound(f"There is no manager {username!r}.", code="manager_unknown")


def get_manager(db: HubDB, username: str) -> Manager | None:
    """The manager named `username`, or None (a removed account ends its sessions)."""
    with db.read() as conn:
        row = conn.execute(select(managers.c.username, managers.c.region)
                           .where(managers.c.username == username)).first()
    return Manager(row.username, row.region) if row else None


def authenticate(db: HubDB, username: str, password: str) -> Manager | None:
    """The manager if the password is right and the account is not locked; counts failures.

    An unknown name costs one scrypt check too, so timing does not tell which names exist.
    """
    with db.read() as conn:
        row = conn.execute(select(managers).where(managers.c.username == username)).first()
    if row is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    now = time.time()
    if row.locked_until > now:
        check_password_hash(_DUMMY_HASH, password)  # a locked account answers as slowly
        return None
    where = managers.c.username == username
    if check_password_hash(row.password_hash, password):
        if row.failed_logins:
            with db.write() as conn:
                conn.execute(update(managers).where(where).values(failed_logins=0))
        return Manager(row.username, row.region)
    with db.write() as conn:
        # Counted in SQL: two wrong guesses at the same moment both count.
        conn.execute(update(managers).where(where)
                     .values(failed_logins=managers.c.failed_logins + 1))
        failures: int = conn.execute(select(managers.c.failed_logins).where(where)).scalar_one()
        if failures >= MAX_FAILURES:
            conn.execute(update(managers).where(where)
                         .values(failed_logins=0, locked_until=now + LOCK_SECONDS))
    return None
