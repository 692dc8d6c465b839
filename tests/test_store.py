"""The store: WAL, migrations recorded once, and one write path that never loses a write."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge.store import MIGRATIONS, Store


def test_store_uses_wal_and_records_its_migrations(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    assert store.reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    applied = store.query("SELECT name FROM _sqlite_migrations WHERE migration_set = 'edge'")
    assert [r["name"] for r in applied] == [m.name for m in MIGRATIONS._migrations]
    store.close()
    again = Store(tmp_path / "edge.db")  # applying twice is a no-op
    assert len(again.query("SELECT name FROM _sqlite_migrations")) == len(applied)
    again.close()


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    with pytest.raises(RuntimeError), store.transaction() as db:
        db.execute("INSERT INTO outbox (event_id, type, occurred_at, data, created_at) "
                   "VALUES ('e1', 't', 'now', '{}', 0)")
        raise RuntimeError("power cut")
    assert store.query("SELECT * FROM outbox") == []
    store.close()


WRITER = """
import sys
from pathlib import Path
from edge.store import Store
store = Store(Path(sys.argv[1]))
for i in range(200):
    store.write(lambda db, i=i: db.execute(
        "INSERT INTO outbox (event_id, type, occurred_at, data, created_at) "
        "VALUES (?, 't', 'now', '{}', 0)", (f"p-{i}",)))
store.close()
"""


@pytest.mark.process
def test_threads_and_another_process_write_at_once_without_losing_a_row(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    store = Store(path)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])

    def writer(prefix: str) -> None:
        for i in range(200):
            store.write(lambda db, i=i: db.execute(
                "INSERT INTO outbox (event_id, type, occurred_at, data, created_at) "
                "VALUES (?, 't', 'now', '{}', 0)", (f"{prefix}-{i}",)))

    threads = [threading.Thread(target=writer, args=(f"t{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert proc.wait(60) == 0
    assert store.query_one("SELECT COUNT(*) AS n FROM outbox")["n"] == 1000  # type: ignore[index]
    store.close()
