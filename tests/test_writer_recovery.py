"""The writer recovers from a failed COMMIT, and /healthz reports the write path and the
disk (edge/store.py, EdgeService.health; docs/operations.md §7)."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.app.service import EdgeService
from edge.settings import Settings
from edge.store import Store
from pos_bridge.device import DeviceClient
from tests.test_checkout import complete, ok


def _commit_fails_once(store: Store) -> None:
    """A transaction whose COMMIT fails: a deferred foreign key is only checked there (the
    same path a full disk or an I/O error takes at COMMIT)."""
    store.write(lambda db: db.executescript(
        "CREATE TABLE IF NOT EXISTS t_parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE IF NOT EXISTS t_child (pid INTEGER REFERENCES t_parent (id) "
        "DEFERRABLE INITIALLY DEFERRED);"))
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        store.write(lambda db: db.execute("INSERT INTO t_child (pid) VALUES (42)"))


def test_after_a_failed_commit_the_next_write_commits(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    try:
        _commit_fails_once(store)
        assert store.write_failure is not None
        assert store.write_failure["error"].startswith("IntegrityError: FOREIGN KEY")
        # Nothing of the failed transaction stayed, and the writer takes the next one.
        store.write(lambda db: db.execute("INSERT INTO t_parent (id) VALUES (1)"))
        assert store.query_one("SELECT count(*) AS n FROM t_child") == {"n": 0}
        assert store.query_one("SELECT count(*) AS n FROM t_parent") == {"n": 1}
        assert store.probe_write() == {"ok": True}
    finally:
        store.close()


def test_a_sale_commits_after_a_failed_commit_and_healthz_said_so(
        edge: EdgeService, device: Callable[..., DeviceClient]) -> None:
    lane = device("pos", "lane-1")
    ok(complete(lane, "before-1", 986))
    _commit_fails_once(edge.store)
    healthy, report = edge.health()
    assert healthy and report["database"]["write"]["ok"] is True
    failure = report["database"]["write"]["last_failure"]
    assert failure["error"].startswith("IntegrityError") and failure["at"]
    done = ok(complete(lane, "after-1", 986))
    assert done
    row = edge.store.query_one("SELECT txn FROM transactions WHERE txn = ?", ("after-1",))
    assert row is not None


def test_healthz_is_unhealthy_when_writes_fail_or_the_disk_is_nearly_full(
        edge: EdgeService, monkeypatch: pytest.MonkeyPatch) -> None:
    healthy, report = edge.health()
    assert healthy and report["database"]["disk"]["ok"] is True
    assert report["database"]["disk"]["free_mb"] > 0

    # A disk with less free space than disk_min_free_mb: flagged before it is full.
    real = edge.settings.disk_min_free_mb
    usage = shutil.disk_usage(edge.store.path.parent)
    monkeypatch.setattr(edge, "settings", _with(edge.settings,
                                                disk_min_free_mb=usage.free // 2**20 + 1024))
    healthy, report = edge.health()
    assert not healthy and report["status"] == "failing"
    assert report["database"]["disk"]["ok"] is False
    monkeypatch.setattr(edge, "settings", _with(edge.settings, disk_min_free_mb=real))

    # A database that can be read but no longer written (here: made read-only underneath).
    edge.store._probed = None
    edge.store._writer.execute("PRAGMA query_only = ON")
    try:
        healthy, report = edge.health()
        assert not healthy
        assert report["database"]["write"]["ok"] is False
        assert "readonly" in report["database"]["write"]["error"].lower() or \
            "read-only" in report["database"]["write"]["error"].lower()
    finally:
        edge.store._writer.execute("PRAGMA query_only = OFF")
    edge.store._probed = None
    assert edge.health()[0]


def _with(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)
