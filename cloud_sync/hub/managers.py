"""Regional managers: the people who sign in to the hub's dashboard.

A manager sees one region's stores; a manager without a region (`--all-regions`) sees every
region. Passwords are scrypt hashes. Wrong passwords are counted as the edge's staff accounts
count them (edge/staff/accounts.py), per manager and client (the address the sign-in came
from): 5 lock that manager for that client for 5 minutes, 20 from one client lock the client
for every manager, 50 for one manager from anywhere lock the manager for everyone. So one
machine guessing cannot lock a manager out of the dashboard elsewhere. A try is counted
before the password is checked, in one transaction holding the counters' rows
(`SELECT ... FOR UPDATE` on PostgreSQL, the one writer on SQLite), so guesses sent in
parallel get no more tries, and no more hashes, than guesses sent one after another.

Setting a password (`edge-hub managers add --replace`) gives the account a new random
`session_epoch`; a dashboard session made under another ends at its next request.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from werkzeug.security import check_password_hash, generate_password_hash

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.schema import manager_login_failures as failures_t
from cloud_sync.hub.schema import managers
from store_contract.errors import BadRequest, Conflict, NotFound
from store_contract.passwords import ANY, PasswordPolicy

log = logging.getLogger(__name__)

# Regional managers' own policy (store_contract/passwords.py), apart from store staff's.
POLICY = PasswordPolicy("manager", min_length=10, max_failures=5, client_max_failures=20,
                        account_max_failures=50, lock_seconds=300)

ID_LEN = 64  # schema.ID: an address, even IPv6 with a zone, fits
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}\Z")
REGION_RE = USERNAME_RE  # regions are ids like stores' (`edge-hub stores add --region R`)
# Checked when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-real-password", method="scrypt")


@dataclass(frozen=True)
class Manager:
    """A signed-in manager; `region` None means every region."""

    username: str
    region: str | None
    session_epoch: int | None = field(default=None, compare=False)

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
    POLICY.check_new(password)
    epoch = secrets.randbelow(2**31)
    row = {"password_hash": generate_password_hash(password, method="scrypt"),
           "region": region, "created_ts": time.time(), "failed_logins": 0,
           "locked_until": 0.0, "session_epoch": epoch}
    with db.write() as conn:
        exists = conn.execute(select(managers.c.username)
                              .where(managers.c.username == username)).first()
        if exists and not replace:
            raise Conflict(f"Manager {username!r} already exists (use --replace to reset).")
        if exists:
            # A new password: open sessions end, and the old guesses are forgotten.
            conn.execute(update(managers).where(managers.c.username == username).values(row))
            conn.execute(delete(failures_t).where(failures_t.c.username == username))
        else:
            conn.execute(managers.insert().values(username=username, **row))
    return Manager(username, region, epoch)


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
        row = conn.execute(select(managers.c.username, managers.c.region,
                                  managers.c.session_epoch)
                           .where(managers.c.username == username)).first()
    return Manager(row.username, row.region, row.session_epoch) if row else None


def _check_hash(stored: str, password: str) -> bool:
    return check_password_hash(stored, password)


def _take_try(db: HubDB, username: str, client: str, now: float) -> bool:
    """Count one try (as if it fails) unless the manager, the client or the pair is locked;
    whether the try may go ahead. One transaction holds the three counters' rows."""
    keys = POLICY.counters(username, client)
    insert = sqlite_insert if db.sqlite else pg_insert
    with db.write() as conn:
        for user, cl, _ in keys:
            conn.execute(insert(failures_t).values(
                username=user, client=cl, failures=0, locked_until=0.0, updated=now)
                .on_conflict_do_nothing())
        rows = _locked_rows(conn, keys)
        if any(row.locked_until > now for row in rows.values()):
            return False
        for user, cl, limit in keys:
            row = rows[(user, cl)]
            count, locked = POLICY.after_try(row.failures, row.updated, limit, now)
            conn.execute(update(failures_t).where(failures_t.c.username == user,
                                                  failures_t.c.client == cl)
                         .values(failures=count, locked_until=locked, updated=now))
        if int(now) % 60 == 0:  # now and then: forget counts nobody added to for a day
            conn.execute(delete(failures_t).where(failures_t.c.updated < now - 86400))
    return True


def _locked_rows(conn: Connection, keys: list[tuple[str, str, int]]) -> dict[tuple[str, str], Any]:
    """The counters' rows of `keys`, locked until the transaction ends (always in the same
    order, so two sign-ins never wait for each other's locks crosswise)."""
    found = {}
    for user, cl, _ in sorted(keys):
        found[(user, cl)] = conn.execute(
            select(failures_t).where(failures_t.c.username == user, failures_t.c.client == cl)
            .with_for_update()).one()
    return found


def _forget_try(db: HubDB, username: str, client: str) -> None:
    """A right password: the pair starts again, and the wider counts lose this try."""
    with db.write() as conn:
        conn.execute(delete(failures_t).where(failures_t.c.username == username,
                                              failures_t.c.client == client))
        for user, cl in ((ANY, client), (username, ANY)):
            conn.execute(update(failures_t).where(failures_t.c.username == user,
                                                  failures_t.c.client == cl,
                                                  failures_t.c.failures > 0)
                         .values(failures=failures_t.c.failures - 1))


def authenticate(db: HubDB, username: str, password: str, client: str = "local"
                 ) -> Manager | None:
    """The manager if the password is right and neither the manager nor the client is
    locked (see the module doc); None otherwise, always after one hash, so timing does not
    tell which names exist or which are locked."""
    name = username if USERNAME_RE.match(username or "") else "?"  # what is kept of a bad name
    client = client[:ID_LEN]
    if not _take_try(db, name, client, time.time()):
        _check_hash(_DUMMY_HASH, password)
        log.warning("dashboard sign-in as %s from %s refused: locked after wrong passwords",
                    name, client)
        return None
    with db.read() as conn:
        row = conn.execute(select(managers).where(managers.c.username == username)).first()
    if row is None:
        _check_hash(_DUMMY_HASH, password)
        return None
    if not _check_hash(row.password_hash, password):
        log.warning("dashboard sign-in as %s from %s refused: wrong password", name, client)
        return None
    _forget_try(db, name, client)
    return Manager(row.username, row.region, row.session_epoch)
