"""The version of the hub's database: Alembic migrations in cloud_sync/hub/migrations/,
configured here (no alembic.ini), on SQLite and PostgreSQL alike.

At start-up (`check_at_start`): an empty database, or one the hub made before it had
migrations (no alembic_version table), is brought to the newest revision, as start-up
always made the tables; a database at an older revision needs `edge-hub migrate` (back it
up first); a database at a revision this code does not know (a newer hub migrated it) is
refused. `upgrade` is `edge-hub migrate`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, Integer, MetaData, inspect
from sqlalchemy.schema import CreateColumn

from store_contract.errors import StartupError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any number: hub processes starting together on one PostgreSQL database migrate one at a
# time (a transaction-scoped advisory lock), the later ones find the work done.
_PG_LOCK = 0x6875625F6D6967  # "hub_mig"


class SchemaError(StartupError):
    """The database's revision does not fit this code (one line, no traceback)."""


@dataclass(frozen=True)
class Version:
    current: str | None    # the database's revision; None: none recorded
    head: str              # the newest revision this code knows
    tables: bool           # the database holds any of the hub's tables
    known: bool            # this code knows `current` (or there is none)

    @property
    def state(self) -> str:
        """empty | unversioned (made before migrations) | current | older | newer."""
        if self.current is None:
            return "unversioned" if self.tables else "empty"
        if not self.known:
            return "newer"
        return "current" if self.current == self.head else "older"


def scripts(location: Path | None = None) -> ScriptDirectory:
    return ScriptDirectory.from_config(_config(None, location))


def _config(conn: Connection | None, location: Path | None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(location or MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def version(conn: Connection, location: Path | None = None) -> Version:
    script = scripts(location)
    head = script.get_current_head()
    assert head is not None, "the hub's migrations have one head"
    current = MigrationContext.configure(conn).get_current_revision()
    known = True
    if current is not None:
        try:
            known = script.get_revision(current) is not None
        except CommandError:
            known = False
    names = set(inspect(conn).get_table_names())
    return Version(current, head, bool(names & set(_hub_table_names())), known)


def _hub_table_names() -> list[str]:
    from cloud_sync.hub.schema import metadata

    return list(metadata.tables)


def refuse_newer(v: Version) -> None:
    if v.state == "newer":
        raise SchemaError(
            f"the hub database is at revision {v.current}, which this edge-hub does not know "
            f"(its newest is {v.head}): a newer edge-hub migrated it; run that version, or "
            "restore the backup taken before it migrated")


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
        yield conn


def upgrade(engine: Engine, location: Path | None = None) -> dict[str, Any]:
    """Bring the database to the newest revision in one transaction; what was done:
    {"from": revision or None, "was": state, "to": head, "applied": [revisions]}."""
    with _locked(engine) as conn:
        before = version(conn, location)
        refuse_newer(before)
        applied = [s.revision for s in reversed(list(
            scripts(location).iterate_revisions(before.head, before.current)))]
        if applied:
            command.upgrade(_config(conn, location), "head")
    return {"from": before.current, "was": before.state, "to": before.head,
            "applied": applied}


def check_at_start(engine: Engine, location: Path | None = None) -> None:
    """Refuse a newer database or an older revision (`edge-hub migrate`); make an empty
    one, and adopt one made before migrations, as start-up always did."""
    with engine.connect() as conn:
        v = version(conn, location)
    refuse_newer(v)
    if v.state == "older":
        raise SchemaError(
            f"the hub database is at revision {v.current}, this edge-hub needs {v.head}: back "
            "the database up, then run `edge-hub migrate` (docs/hub.md, \"Upgrading the hub\")")
    if v.state in ("empty", "unversioned"):
        done = upgrade(engine, location)
        if done["applied"]:
            log.info("hub database %s: now at revision %s", done["was"], done["to"])


# ---------------------------------------------------------------- used by the revisions


def adopt_or_create(conn: Connection, md: MetaData) -> None:
    """Revision 0001: create the tables of `md`; or, when some exist already (a database
    the hub made before migrations), add what start-up used to add and check that the
    result has exactly the shape of `md`, keeping the data."""
    have = inspect(conn)
    existing = [t for t in md.tables if have.has_table(t)]
    if not existing:
        md.create_all(conn)
        return
    added = add_missing_columns(conn, md)
    md.create_all(conn)  # tables added to the hub since the database was made
    if ("changes", "region") in added:
        # Customer changes from before the region rule carry raw phone numbers, e-mails
        # and cards: they leave the feed now; `customers import` sends them hashed.
        changes = md.tables["changes"]
        gone = conn.execute(changes.delete().where(changes.c.kind == "customer"))
        log.warning("removed %d customer changes of the old (raw) form from the feed; "
                    "import the customers again to send them hashed", gone.rowcount)
    diffs = differences(conn, md, adopting=True)
    if diffs:
        raise SchemaError("the hub database's tables differ from what this edge-hub expects "
                          f"and were left as they were: {'; '.join(diffs[:5])}"
                          f"{' …' if len(diffs) > 5 else ''}")
    log.warning("adopted a hub database made before migrations (%d tables, data kept)",
                len(existing))


def differences(conn: Connection, md: MetaData, *, adopting: bool = False) -> list[str]:
    """What Alembic finds different between the database and `md` (empty: the same).

    `adopting` lets pass what hand-made or early tables differ in without changing what the
    hub reads or writes: an integer column of another width, and a primary key column not
    declared NOT NULL (a key is never null).
    """
    found: list[str] = []
    for diff in compare_metadata(MigrationContext.configure(conn), md):
        for one in diff if isinstance(diff, list) else [diff]:
            if adopting and _harmless(one, md):
                continue
            names = [x if isinstance(x, str) else getattr(x, "name", None) for x in one[1:]]
            found.append(f"{one[0]} {'.'.join(n for n in names if isinstance(n, str))[:80]}")
    return found


def _harmless(diff: tuple[Any, ...], md: MetaData) -> bool:
    kind = diff[0]
    if kind == "modify_type":
        return isinstance(diff[5], Integer) and isinstance(diff[6], Integer)
    if kind == "modify_nullable":
        table = md.tables.get(diff[2])
        return table is not None and diff[3] in table.primary_key.columns
    return False


def add_missing_columns(conn: Connection, md: MetaData) -> list[tuple[str, str]]:
    """Add the columns `md` has and an existing table lacks; (table, column) added.

    What start-up did before migrations: new columns were nullable additions, which
    `ALTER TABLE ... ADD COLUMN` does the same on SQLite and PostgreSQL.
    """
    added: list[tuple[str, str]] = []
    have = inspect(conn)
    for table in md.sorted_tables:
        if not have.has_table(table.name):
            continue
        present = {c["name"] for c in have.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable or column.primary_key:
                raise SchemaError(f"the hub database's {table.name}.{column.name} is missing "
                                  "and cannot be added automatically (not nullable)")
            ddl = CreateColumn(column).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
            added.append((table.name, column.name))
            log.info("added column %s.%s", table.name, column.name)
    return added
