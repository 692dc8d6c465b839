"""Restoring a store edge from an older backup of its database is safe: the edge reads the
hub's change feed again from the backup's older cursor and learns back its own redemptions
made since, so a single-use coupon redeemed after the backup is still refused.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.schema import redemptions as hub_redemptions
from edge.app.service import EdgeService
from edge.coupons import CouponRefused
from edge.settings import Settings
from store_contract.basket import parse_basket
from tests.hubfix import HubServer
from tests.test_sync import add_store, edge_for
from tests.test_sync_feed import BASKET, CAMPAIGN, hub_cli, import_jsonl, sell


@pytest.fixture
def running() -> Iterator[list[EdgeService]]:
    made: list[EdgeService] = []
    yield made
    for svc in made:
        svc.stop()


def _backup(database: Path, to: Path) -> None:
    """A consistent copy of a live database (SQLite's online backup)."""
    src, dst = sqlite3.connect(database), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _restore(backup: Path, database: Path) -> None:
    """What an operator does with the edge stopped: the backup replaces the database."""
    for leftover in (database.with_name(database.name + "-wal"),
                     database.with_name(database.name + "-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(backup, database)


@pytest.mark.process
def test_an_edge_restored_from_a_backup_before_a_redemption_refuses_that_coupon_after_a_pull(
        settings: Settings, hub: HubServer, tmp_path: Path,
        running: list[EdgeService]) -> None:
    import_jsonl(hub, tmp_path, "campaigns", CAMPAIGN)
    coupon = hub_cli(hub, "coupons", "issue", "--campaign", "cmp-5off", "--max", "1")
    token = add_store(hub.settings, "store-a", name="Market Square")
    edge_settings = edge_for(settings, hub.url, token, store_id="store-a",
                             store_name="Market Square", data_dir=str(tmp_path / "store-a"),
                             trusted_keys="")
    svc = EdgeService(edge_settings)
    running.append(svc)
    svc.puller.run()
    database = svc.datadir.database
    backup = tmp_path / "edge-backup.db"
    _backup(database, backup)
    cursor_at_backup = svc.puller.cursor

    assert sell(svc, "t-1", coupon=coupon["token"])["redemptions"]
    svc.sender.run()
    assert svc.health()[1]["queue"]["depth"] == 0
    svc.puller.run()  # its own redemption comes back in the feed: not doubled
    assert len(svc.store.query("SELECT id FROM redemptions")) == 1
    svc.stop()
    running.remove(svc)

    _restore(backup, database)
    restored = EdgeService(edge_settings)
    running.append(restored)
    assert restored.puller.cursor == cursor_at_backup
    assert restored.store.query("SELECT id FROM redemptions") == []  # lost with the backup
    restored.puller.run()
    assert restored.puller.last_error is None

    with pytest.raises(CouponRefused) as again:
        restored.checkout.apply("lane-2", "t-9", coupon["token"], parse_basket(BASKET, "EUR"))
    assert again.value.code == "coupon_used"
    assert again.value.message.startswith("Coupon already used at Market Square on ")
    rows = restored.store.query("SELECT store_id, coupon_id, device_id, txn, reversed_at "
                                "FROM redemptions")
    assert rows == [{"store_id": "store-a", "coupon_id": coupon["coupon"], "device_id": None,
                     "txn": None, "reversed_at": None}]
    # What the backup still had queued goes again; the hub keeps each event once.
    restored.sender.run()
    db = HubDB(hub.settings.db_url)
    try:
        with db.read() as conn:
            at_hub = conn.execute(select(hub_redemptions.c.id)
                                  .where(hub_redemptions.c.coupon_id == coupon["coupon"])).all()
    finally:
        db.dispose()
    assert len(at_hub) == 1


def _feed_redemption(rid: str, store: str, **more: Any) -> dict[str, Any]:
    return {"seq": 1, "kind": "redemption", "redemption": {
        "id": rid, "coupon": "cpn-1", "campaign": "cmp-5off", "store_id": store,
        "redeemed_at": "2026-11-20T10:00:00.000Z", **more}}


def test_a_relearned_redemption_never_changes_one_the_store_has_except_for_a_reversal(
        edge: EdgeService) -> None:
    own = edge.settings.store_id
    edge.store.write(lambda db: db.execute(
        "INSERT INTO redemptions (id, coupon_id, campaign_id, store_id, device_id, txn, "
        "discount_minor, currency, redeemed_at, reversed_at) VALUES "
        "('r-1', 'cpn-1', 'cmp-5off', ?, 'lane-1', 't-1', 500, 'EUR', "
        "'2026-11-20T10:00:00.000Z', NULL), "
        "('r-2', 'cpn-2', 'cmp-5off', ?, 'lane-1', 't-2', 500, 'EUR', "
        "'2026-11-20T10:00:00.000Z', '2026-11-20T11:00:00.000Z')", (own, own)))
    rows = {r["id"]: r for r in edge.store.query("SELECT * FROM redemptions")}

    edge.puller.apply([
        _feed_redemption("r-1", own),  # the feed's copy of one we have: left alone
        _feed_redemption("r-2", own),  # reversed here already: the older record un-reverses nothing
        _feed_redemption("r-1", "store-rogue", reversed_at="2026-11-21T09:00:00.000Z"),
    ], "", "3")
    assert {r["id"]: r for r in edge.store.query("SELECT * FROM redemptions")} == rows
    assert edge.puller.skipped == 0

    edge.puller.apply([_feed_redemption("r-1", own, reversed_at="2026-11-21T09:00:00.000Z")],
                      "3", "4")
    r1 = edge.store.query_one("SELECT * FROM redemptions WHERE id = 'r-1'")
    assert r1 == {**rows["r-1"], "reversed_at": "2026-11-21T09:00:00.000Z"}
