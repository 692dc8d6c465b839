"""The hub's statement helpers (cloud_sync/hub/db.py) on SQLite and PostgreSQL: a batch's
rows inserted once with the new ones reported, and one list parameter of any length."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from cloud_sync.hub.db import HubDB, ListQuery, insert_new
from cloud_sync.hub.schema import issued_coupons


@pytest.fixture
def db(tmp_path: Path, hub_db_url: str) -> Iterator[HubDB]:
    hub = HubDB(hub_db_url or f"sqlite:///{tmp_path / 'hub.db'}")
    yield hub
    hub.dispose()


def coupon(i: int, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {"id": f"cpn-{i:04d}", "campaign_id": "cmp-a", "customer_id": None,
                              "max_uses": 1, "expires_ts": 2e9, "issued_ts": 1.5e9,
                              "token_sha256": None}
    row.update(extra)
    return row


def test_insert_new_reports_only_the_rows_it_inserted_and_keeps_the_first(db: HubDB) -> None:
    with db.write() as conn:
        assert insert_new(conn, issued_coupons, [coupon(i) for i in range(5)], "id") == {
            f"cpn-{i:04d}" for i in range(5)}
    with db.write() as conn:
        # Two already there (with other values: they must not overwrite), three new, and a
        # customer id and a quote that must go through as values, not SQL.
        got = insert_new(conn, issued_coupons, [
            coupon(3, max_uses=9), coupon(4, max_uses=9), coupon(5, customer_id="c-'1"),
            coupon(6), coupon(7)], "id")
    assert got == {"cpn-0005", "cpn-0006", "cpn-0007"}
    with db.read() as conn:
        rows: dict[str, int] = dict(
            conn.execute(select(issued_coupons.c.id, issued_coupons.c.max_uses)).all())
        who = conn.execute(select(issued_coupons.c.customer_id)
                           .where(issued_coupons.c.id == "cpn-0005")).scalar()
    assert len(rows) == 8 and rows["cpn-0003"] == 1 and rows["cpn-0004"] == 1
    assert who == "c-'1"


def test_insert_new_on_sqlite_splits_rows_past_the_parameter_limit(tmp_path: Path) -> None:
    hub = HubDB(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        with hub.write() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            # 7 columns a row: 3 rows a statement, so 25 rows take 9 statements.
            raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 21)
            got = insert_new(conn, issued_coupons, [coupon(i) for i in range(25)], "id")
            again = insert_new(conn, issued_coupons, [coupon(i) for i in range(20, 30)], "id")
        assert got == {f"cpn-{i:04d}" for i in range(25)}
        assert again == {f"cpn-{i:04d}" for i in range(25, 30)}
    finally:
        hub.dispose()


def test_a_list_query_matches_exactly_the_values_whatever_their_number(db: HubDB) -> None:
    ids = ListQuery(lambda in_list: select(issued_coupons.c.id)
                    .where(in_list(issued_coupons.c.id)).order_by(issued_coupons.c.id))
    with db.write() as conn:
        insert_new(conn, issued_coupons, [coupon(i) for i in range(300)], "id")
    with db.read() as conn:
        for wanted in (["cpn-0007"], [f"cpn-{i:04d}" for i in range(0, 600, 2)], [],
                       ["cpn-0001'); DROP TABLE issued_coupons; --", "cpn-0002"]):
            expected = sorted(w for w in wanted if w in {f"cpn-{i:04d}" for i in range(300)})
            assert [r[0] for r in ids(conn, wanted)] == expected
