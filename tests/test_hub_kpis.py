"""The dashboard's figures, computed from events sent through the hub's real ingest path and
checked against what was sent: counts, money, identified share, reversals, periods in the
hub's zone, region scoping, sync health and conflicts. Every test runs on SQLite and on
PostgreSQL (`hub_db_url` from tests/hubfix.py): the queries must mean the same on both."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync.hub import kpis
from cloud_sync.hub.db import HubDB
from cloud_sync.hub.ingest import ingest
from cloud_sync.hub.settings import HubSettings
from cloud_sync.hub.stores import add_store
from store_contract.jws import SigningKey

ZONE = "Europe/Berlin"  # not UTC on purpose: days must be the hub's local days
DAY = 86400.0


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def local_ts(day: str, hh: int, mm: int = 0) -> float:
    """An instant given as a local wall-clock time in the hub's zone."""
    return datetime.fromisoformat(f"{day}T{hh:02d}:{mm:02d}").replace(
        tzinfo=ZoneInfo(ZONE)).timestamp()


# The hub's signing key for these in-process ingests: coupons it signed are believed.
HUB_KEY = SigningKey("hub-1", Ed25519PrivateKey.generate())


class Store:
    """Builds one store's events the way its edge sends them, and posts them via ingest."""

    def __init__(self, db: HubDB, settings: HubSettings, store_id: str) -> None:
        self.db, self.settings, self.id = db, settings, store_id
        self.batches = 0

    def send(self, *events: dict[str, Any], edge: dict[str, Any] | None = None) -> None:
        self.batches += 1
        body: dict[str, Any] = {"batch_id": f"{self.id}-{self.batches}", "events": list(events)}
        if edge is not None:
            body["edge"] = edge
        answer = ingest(self.db, self.settings, self.id, body, HUB_KEY)
        assert answer["rejected"] == [] and len(answer["accepted"]) == len(events), answer

    def event(self, type_: str, data: dict[str, Any], at: float) -> dict[str, Any]:
        return {"event_id": str(uuid.uuid4()), "type": type_, "occurred_at": rfc3339(at),
                "store_id": self.id, "device_id": "lane-1", "data": data}

    def sale(self, total_minor: int, at: float, customer: str | None = None,
             currency: str = "EUR") -> dict[str, Any]:
        return self.event("transaction.completed", {
            "txn": uuid.uuid4().hex[:12], "customer_id": customer, "total_minor": total_minor,
            "discount_minor": 0, "currency": currency, "redemptions": []}, at)

    def redeemed(self, redemption: str, coupon: str, discount_minor: int, at: float,
                 max_uses: int = 1) -> dict[str, Any]:
        """A use of a coupon the hub signed for `max_uses` uses (so the hub believes it)."""
        token = HUB_KEY.sign({"jti": coupon, "cmp": "autumn", "max": max_uses,
                              "exp": int(at) + 3600}, "coupon+jwt")
        return self.event("coupon.redeemed", {
            "redemption": redemption, "coupon": coupon, "campaign": "autumn",
            "discount_minor": discount_minor, "currency": "EUR", "customer_id": "cust-1",
            "max_uses": max_uses, "token": token}, at)

    def reversed_(self, redemption: str, coupon: str, at: float) -> dict[str, Any]:
        return self.event("coupon.redemption_reversed", {
            "redemption": redemption, "coupon": coupon, "campaign": "autumn",
            "discount_minor": 0, "currency": "EUR", "reversed_at": rfc3339(at)}, at)

    def kiosk(self, at: float) -> dict[str, Any]:
        return self.event("kiosk.session", {"session": uuid.uuid4().hex[:12]}, at)

    def receipt(self, at: float) -> dict[str, Any]:
        return self.event("receipt.printed", {"job": uuid.uuid4().hex[:12],
                                              "txn": "t"}, at)

    def voided(self, at: float) -> dict[str, Any]:
        return self.event("transaction.voided", {"txn": "t", "voided_at": rfc3339(at),
                                                 "redemptions_reversed": []}, at)


@pytest.fixture
def hub_settings(tmp_path: Path, hub_db_url: str) -> HubSettings:
    return HubSettings(data_dir=tmp_path / "hub", database_url=hub_db_url, tz=ZONE)


@pytest.fixture
def db(hub_settings: HubSettings) -> Iterator[HubDB]:
    db = HubDB(hub_settings.db_url)
    yield db
    db.dispose()


@pytest.fixture
def stores(db: HubDB, hub_settings: HubSettings) -> dict[str, Store]:
    add_store(db, "north-1", "north", "Nordstadt")
    add_store(db, "north-2", "north", "Hafen")
    add_store(db, "south-1", "south", "Südstadt")
    return {s: Store(db, hub_settings, s) for s in ("north-1", "north-2", "south-1")}


def week(now: float | None = None) -> kpis.Period:
    return kpis.period_of("7d", ZoneInfo(ZONE), now or time.time())


def by_id(rows: list[kpis.StoreKpis]) -> dict[str, kpis.StoreKpis]:
    return {r.store_id: r for r in rows}


def test_store_figures_equal_what_the_store_sent(db: HubDB, stores: dict[str, Store]) -> None:
    n1, now = stores["north-1"], time.time()
    n1.send(n1.sale(1000, now - 60, "cust-1"), n1.sale(2000, now - 50, "cust-2"),
            n1.sale(550, now - 40),
            n1.redeemed("red-1", "cpn-1", 150, now - 60), n1.redeemed("red-2", "cpn-2", 300,
                                                                      now - 50),
            n1.kiosk(now - 30), n1.kiosk(now - 20), n1.receipt(now - 59), n1.voided(now - 10))
    n1.send(n1.reversed_("red-2", "cpn-2", now - 5))  # a void later: the redemption is off
    period = week()
    rows = by_id(kpis.store_kpis(db, kpis.stores_in(db, "north"), period.start_ts,
                                 period.end_ts))
    got = rows["north-1"]
    assert (got.transactions, got.identified, got.identified_pct) == (3, 2, 66.7)
    assert got.sales == {"EUR": 3550}
    assert (got.redemptions, got.discount) == (1, {"EUR": 150})
    assert (got.kiosk_sessions, got.receipts, got.voids) == (2, 1, 1)
    empty = rows["north-2"]
    assert (empty.transactions, empty.sales, empty.identified_pct) == (0, {}, None)


def test_events_outside_the_period_are_not_counted(db: HubDB, stores: dict[str, Store]) -> None:
    n1, now = stores["north-1"], time.time()
    period = week(now)
    n1.send(n1.sale(100, period.start_ts - 1), n1.sale(200, period.start_ts),
            n1.sale(400, now - 1), n1.redeemed("red-old", "cpn-old", 50, period.start_ts - 5))
    store = kpis.get_store(db, "north-1")
    assert store == kpis.StoreRef("north-1", "north", "Nordstadt")
    got = kpis.store_kpis(db, [store], period.start_ts, period.end_ts)[0]
    assert (got.transactions, got.sales, got.redemptions) == (2, {"EUR": 600}, 0)
    today = kpis.period_of("today", ZoneInfo(ZONE), now)
    got = kpis.store_kpis(db, [store], today.start_ts, today.end_ts)[0]
    assert got.transactions == 1


def test_a_region_sees_only_its_stores_and_totals_add_up(db: HubDB,
                                                       stores: dict[str, Store]) -> None:
    now = time.time()
    for store_id, totals in (("north-1", [100, 200]), ("north-2", [300]),
                             ("south-1", [5000, 5000, 5000])):
        s = stores[store_id]
        s.send(*[s.sale(t, now - 10, "cust-9" if i == 0 else None) for i, t in enumerate(totals)])
    north = kpis.stores_in(db, "north")
    assert [s.id for s in north] == ["north-2", "north-1"]  # by name: Hafen, Nordstadt
    period = week()
    rows = kpis.store_kpis(db, north, period.start_ts, period.end_ts)
    assert "south-1" not in by_id(rows)
    total = kpis.totals(rows)
    assert (total.transactions, total.identified, total.sales) == (3, 2, {"EUR": 600})
    assert total.identified_pct == 66.7  # recomputed from the sums, not averaged
    assert {s.id for s in kpis.stores_in(db, None)} == set(stores)
    assert kpis.regions(db) == ["north", "south"]


def test_money_is_kept_per_currency(db: HubDB, stores: dict[str, Store]) -> None:
    n1, now = stores["north-1"], time.time()
    n1.send(n1.sale(1000, now - 3), n1.sale(700, now - 2, currency="GBP"))
    period = week()
    rows = kpis.store_kpis(db, kpis.stores_in(db, "north"), period.start_ts, period.end_ts)
    assert by_id(rows)["north-1"].sales == {"EUR": 1000, "GBP": 700}
    assert kpis.money_columns(rows) == ["EUR", "GBP"]


def test_periods_are_whole_local_days() -> None:
    zone = ZoneInfo(ZONE)
    now = local_ts("2026-11-22", 0, 30)  # 23:30 UTC the day before: the local day counts
    today = kpis.period_of("today", zone, now)
    assert (today.first, today.last) == (date(2026, 11, 22), date(2026, 11, 22))
    assert today.start_ts == local_ts("2026-11-22", 0) and today.end_ts == today.start_ts + DAY
    last7 = kpis.period_of("7d", zone, now)
    assert (last7.first, last7.last, len(last7.days())) == (date(2026, 11, 16),
                                                            date(2026, 11, 22), 7)
    assert len(kpis.period_of("30d", zone, now).days()) == 30
    custom = kpis.period_of("custom", zone, now, "2026-10-24", "2026-10-26")
    # 25 October 2026 has 25 hours in Berlin (summer time ends).
    assert custom.end_ts - custom.start_ts == 3 * DAY + 3600
    for first, last, words in (("2026-13-01", "2026-12-02", "year-month-day"),
                               ("", "2026-12-02", "year-month-day"),
                               ("2026-12-02", "2026-12-01", "ends before it starts"),
                               ("2024-01-01", "2026-01-01", "at most")):
        with pytest.raises(kpis.PeriodError, match=words):
            kpis.period_of("custom", zone, now, first, last)
    with pytest.raises(kpis.PeriodError):
        kpis.period_of("forever", zone, now)


def test_daily_series_counts_per_local_day_across_a_clock_change(
        db: HubDB, stores: dict[str, Store]) -> None:
    n1, n2 = stores["north-1"], stores["north-2"]
    n1.send(n1.sale(100, local_ts("2026-10-24", 23, 30)),   # 21:30 UTC: still the 24th here
            n1.sale(100, local_ts("2026-10-25", 0, 15)),
            n1.sale(100, local_ts("2026-10-25", 23, 45)),   # the 25-hour day's last hour
            n1.sale(100, local_ts("2026-10-26", 9)),
            n1.redeemed("red-a", "cpn-a", 10, local_ts("2026-10-26", 9)))
    n2.send(n2.sale(100, local_ts("2026-10-25", 12)), n2.sale(100, local_ts("2026-10-27", 1)))
    period = kpis.period_of("custom", ZoneInfo(ZONE), time.time(), "2026-10-24", "2026-10-26")
    series = kpis.daily_series(db, ["north-1", "north-2"], period, ZoneInfo(ZONE))
    assert series.days == [date(2026, 10, 24), date(2026, 10, 25), date(2026, 10, 26)]
    assert series.transactions == {"north-1": [1, 2, 1], "north-2": [0, 1, 0]}
    assert series.redemptions == {"north-1": [0, 0, 1], "north-2": [0, 0, 0]}


def test_a_single_day_is_counted_per_local_hour_and_future_hours_are_not_drawn(
        db: HubDB, stores: dict[str, Store]) -> None:
    n1 = stores["north-1"]
    # 25 October 2026 in Berlin: 02:00-03:00 comes twice (summer time ends), 25 hours.
    first_two = datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo(ZONE)).timestamp()
    n1.send(n1.sale(100, local_ts("2026-10-25", 0, 10)),
            n1.sale(100, first_two), n1.sale(100, first_two + 3600),   # the two 02:30s
            n1.sale(100, local_ts("2026-10-25", 23, 50)),
            n1.redeemed("red-h", "cpn-h", 10, local_ts("2026-10-25", 9, 5)))
    period = kpis.period_of("custom", ZoneInfo(ZONE), time.time(), "2026-10-25", "2026-10-25")
    series = kpis.daily_series(db, ["north-1"], period, ZoneInfo(ZONE))
    assert [h.strftime("%H:%M") for h in series.hours][:5] == \
        ["00:00", "01:00", "02:00", "02:00", "03:00"]
    assert len(series.hours) == 25
    counts = series.transactions["north-1"]
    assert (counts[0], counts[2], counts[3], counts[24], sum(counts)) == (1, 1, 1, 1, 4)
    assert series.redemptions["north-1"][10] == 1 and sum(series.redemptions["north-1"]) == 1
    # At 09:30 that day eleven hours (00, 01, 02, 02, 03 ... 08, 09) have begun.
    assert series.begun(datetime(2026, 10, 25, 9, 30, tzinfo=ZoneInfo(ZONE)).timestamp()) == 11
    week = kpis.daily_series(db, ["north-1"], kpis.period_of(
        "custom", ZoneInfo(ZONE), time.time(), "2026-10-24", "2026-10-26"), ZoneInfo(ZONE))
    assert week.hours == [] and len(week.transactions["north-1"]) == 3


def test_sync_health_reports_the_queue_and_a_store_that_stopped_syncing(
        db: HubDB, stores: dict[str, Store]) -> None:
    n1 = stores["north-1"]
    n1.send(n1.sale(100, time.time()),
            edge={"queue_depth": 42, "oldest_age_s": 125.5, "dead_letters": 2})
    now = time.time()
    health = {h.store_id: h for h in kpis.sync_health(db, kpis.stores_in(db, "north"), now, 900)}
    assert (health["north-1"].queue_depth, health["north-1"].oldest_age_s,
            health["north-1"].dead_letters) == (42, 125.5, 2)
    assert not health["north-1"].stale
    assert health["north-2"].last_contact_ts is None and health["north-2"].stale  # never
    later = {h.store_id: h.stale
             for h in kpis.sync_health(db, kpis.stores_in(db, "north"), now + 901, 900)}
    assert later == {"north-1": True, "north-2": True}


def test_a_single_use_coupon_redeemed_at_two_stores_is_one_open_conflict(
        db: HubDB, stores: dict[str, Store]) -> None:
    n1, n2, s1, now = stores["north-1"], stores["north-2"], stores["south-1"], time.time()
    n1.send(n1.redeemed("red-1", "cpn-x", 500, now - 20))
    n2.send(n2.redeemed("red-2", "cpn-x", 500, now - 10))
    s1.send(s1.redeemed("red-3", "cpn-south", 100, now - 10))  # used once: no conflict
    (conflict,) = kpis.open_conflicts(db, ["north-1", "north-2"])
    assert (conflict.coupon_id, conflict.campaign_id, conflict.uses, conflict.max_uses) == \
        ("cpn-x", "autumn", 2, 1)
    assert sorted(conflict.stores) == ["north-1", "north-2"] and conflict.other_stores == 0
    assert kpis.open_conflicts(db, ["south-1"]) == []
    (alone,) = kpis.open_conflicts(db, ["north-2"])
    assert (alone.stores, alone.other_stores) == (["north-2"], 1)  # the other is not named
    n2.send(n2.reversed_("red-2", "cpn-x", now - 1))
    assert kpis.open_conflicts(db, ["north-1", "north-2"]) == []
    (resolved,) = kpis.resolved_conflicts(db, ["north-1", "north-2"])
    assert resolved.coupon_id == "cpn-x" and resolved.resolved_ts is not None
