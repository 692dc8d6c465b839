"""The hub's database: SQLite (a file in the hub's data dir) by default, PostgreSQL when the
hub is given a `postgresql://` URL. One engine per process; writes go through `write()`."""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ARRAY,
    Column,
    ColumnElement,
    Connection,
    CursorResult,
    Engine,
    Executable,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from cloud_sync.hub.schema import metadata
from cloud_sync.hub.schema_version import add_missing_columns, check_at_start

log = logging.getLogger(__name__)


def engine_url(url: str) -> str:
    """`postgresql://…` means the psycopg 3 driver; other URLs pass through."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class HubDB:
    """The engine, the schema, and one write path that works the same on both databases."""

    def __init__(self, url: str, *, check_schema: bool = True) -> None:
        """Open the database; `check_schema` (start-up) refuses a revision that does not fit
        this code and makes an empty database (cloud_sync/hub/schema_version.py)."""
        self.url = engine_url(url)
        self.sqlite = self.url.startswith("sqlite")
        if self.sqlite:
            path = self.url.split("///", 1)[1] if "///" in self.url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                self.url, connect_args={"timeout": 30, "check_same_thread": False},
                pool_size=8, max_overflow=8)
            event.listen(self.engine, "connect", _sqlite_pragmas)
            # pysqlite's own BEGIN handling is switched off in _sqlite_pragmas; say BEGIN here.
            event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        else:
            self.engine = create_engine(self.url, pool_size=10, max_overflow=10,
                                        pool_pre_ping=True)
            event.listen(self.engine, "connect", _postgres_session)
        # SQLite has one writer at a time: writers queue here rather than on "database is
        # locked". PostgreSQL takes concurrent writers; the lock is not used there.
        self._write_lock = threading.Lock()
        if check_schema:
            try:
                check_at_start(self.engine)
            except BaseException:
                self.engine.dispose()
                raise

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction; commits on success, rolls back on error."""
        if self.sqlite:
            with self._write_lock, self.engine.begin() as conn:
                yield conn
        else:
            with self.engine.begin() as conn:
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def upgrade_schema(engine: Engine) -> list[tuple[str, str]]:
    """Add the nullable columns the schema has and an existing table lacks; (table, column)
    added. Start-up did this before the hub had migrations; now revision 0001 does it when
    it adopts such a database (schema_version.add_missing_columns)."""
    with engine.begin() as conn:
        return add_missing_columns(conn, metadata)


# ---------------------------------------------------------------- statements of any size
# The ingest path runs a handful of statements per batch, thousands of times an hour. On
# PostgreSQL a statement whose text is the same every time is parsed once per connection and
# then prepared by psycopg; one whose text grows with its rows (an IN list, a multi-row
# VALUES) is parsed, planned and sent in full every time.


class ListQuery:
    """A statement with one list of values in it, made once per kind of database and run
    with the list as one parameter (`= ANY(array)` on PostgreSQL, `IN (SELECT value FROM
    json_each(…))` on SQLite): one text for any count, and none of the cost of building the
    statement again for every batch.

    `build(in_list)` makes the statement; `in_list(column)` is the condition "column is one
    of the values".
    """

    def __init__(self, build: Callable[[Callable[[Column[Any]], ColumnElement[bool]]],
                                       Executable]) -> None:
        self._build = build
        self._made: dict[str, Executable] = {}

    def __call__(self, conn: Connection, values: Iterable[str], **params: Any
                 ) -> CursorResult[Any]:
        kind = conn.dialect.name
        stmt = self._made.get(kind)
        if stmt is None:
            stmt = self._made[kind] = self._build(functools.partial(_in_list, kind))
        listed = list(values)
        return conn.execute(stmt, {"listed": listed if kind == "postgresql"
                                   else json.dumps(listed), **params})


def _in_list(kind: str, column: Column[Any]) -> ColumnElement[bool]:
    if kind == "postgresql":
        return column == any_(bindparam("listed", type_=ARRAY(column.type)))
    rows = func.json_each(bindparam("listed")).table_valued("value")
    return column.in_(select(rows.c.value))


def upsert(conn: Connection, table: Any, keys: Sequence[str], rows: list[dict[str, Any]]
           ) -> None:
    """INSERT … ON CONFLICT (`keys`) DO UPDATE of `rows`: each row's other columns replace
    those of the row with the same keys, on SQLite and PostgreSQL alike."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: stmt.excluded[c] for c in rows[0] if c not in keys}), rows)


def insert_new(conn: Connection, table: Any, rows: list[dict[str, Any]], key: str) -> set[Any]:
    """INSERT … ON CONFLICT DO NOTHING of `rows` (plain values: text, numbers, None); the
    `key` values actually inserted.

    The rows go to the driver as they are, without SQLAlchemy's per-row parameter handling
    (it costs more than the insert itself for a batch of 500 events). On PostgreSQL they go
    as one array per column through unnest(): a short statement, the same every time. On
    SQLite, as one multi-row VALUES per as many rows as the build allows parameters.
    """
    if not rows:
        return set()
    cols = list(rows[0])
    head = f"INSERT INTO {table.name} ({', '.join(cols)}) "
    tail = f" ON CONFLICT DO NOTHING RETURNING {key}"
    if conn.dialect.name == "postgresql":
        arrays = ", ".join(f"%({c})b::{table.c[c].type.compile(dialect=conn.dialect)}[]"
                           for c in cols)
        params = {c: [r[c] for r in rows] for c in cols}
        return {r[0] for r in conn.exec_driver_sql(f"{head}SELECT * FROM unnest({arrays}){tail}",
                                                   params)}
    limit = conn.connection.dbapi_connection.getlimit(  # type: ignore[union-attr]
        sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per = max(1, limit // len(cols))
    one = "(" + ", ".join("?" * len(cols)) + ")"
    inserted: set[Any] = set()
    for start in range(0, len(rows), per):
        part = rows[start:start + per]
        sql = f"{head}VALUES {', '.join([one] * len(part))}{tail}"
        inserted.update(r[0] for r in conn.exec_driver_sql(
            sql, tuple(r[c] for r in part for c in cols)))
    return inserted


def _postgres_session(dbapi_conn: Any, _record: Any) -> None:
    # psycopg prepares a statement it has run five times on a connection, and PostgreSQL
    # then soon plans it once for any parameters. The hub's data is skewed (a shared code
    # has thousands of redemptions, an app coupon one; a table planned while it was small
    # stays planned that way), so each run is planned for its own parameters: planning
    # these short statements costs far less than one wrong plan.
    with dbapi_conn.cursor() as cur:
        cur.execute("SET plan_cache_mode = force_custom_plan")
    dbapi_conn.commit()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we say BEGIN ourselves (see HubDB.__init__)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode = WAL")
    # FULL: an event the hub acknowledged survives a power cut (the edge deletes it then).
    cur.execute("PRAGMA synchronous = FULL")
    cur.execute("PRAGMA busy_timeout = 30000")
    cur.close()
