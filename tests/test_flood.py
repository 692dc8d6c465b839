"""Flood control on the store's LAN: a device flapping its status or spraying events costs
the edge little and never starves the lanes, and a long hub outage fills the outbox only up
to its cap, with an alarm first, never at the cost of a sale.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from edge.app.service import EdgeService
from edge.dispatch import Caller
from edge.outbox import OutboxCap, queue_data
from edge.settings import Settings
from edge.store import Store
from pos_bridge.device import DeviceClient
from store_contract.protocol import Envelope, encode, now_rfc3339, uuid7
from tests.conftest import wait_until
from tests.test_checkout import complete

DeviceFactory = Callable[..., DeviceClient]


def _status_events(store: Store, device: str) -> int:
    row = store.query_one("SELECT COUNT(*) AS n FROM outbox WHERE type = 'device.status' "
                          "AND device_id = ?", (device,))
    assert row is not None
    return int(row["n"])


def _dropped(edge: EdgeService, reason: str) -> float:
    value = edge.metrics.registry.get_sample_value("edge_bus_dropped_total", {"reason": reason})
    return value or 0.0


def test_a_device_flapping_its_status_2000_times_adds_at_most_one_event_an_interval(
        edge: EdgeService, device: DeviceFactory) -> None:
    printer = device("printer", "printer-1")
    lane = device("pos", "lane-1")
    assert wait_until(lambda: _status_events(edge.store, "printer-1") == 1)
    topic = f"store/{edge.settings.store_id}/printer/printer-1/status"
    answers: list[bool] = []

    def lane_keeps_asking() -> None:
        for _ in range(20):
            answers.append(lane.request("ping", timeout=10)["ok"])

    asking = threading.Thread(target=lane_keeps_asking)
    asking.start()
    for i in range(2000):  # paper flapping between ok and near_end, as fast as paho goes
        paper = "near_end" if i % 2 == 0 else "ok"
        printer.client.publish(topic, encode({"state": "online", "ts": now_rfc3339(),
                                              "paper": paper, "n": i}), qos=1, retain=True)
    asking.join(60)
    assert answers == [True] * 20  # the other lane was answered all along

    def latest() -> Any:
        row = edge.store.query_one("SELECT status FROM devices WHERE id = 'printer-1'")
        return json.loads(row["status"]).get("n") if row else None

    # Only the latest status matters, and it is the one the edge ends up with (at the
    # latest once it listens to the device again, status_mute_s after it flooded).
    assert wait_until(lambda: latest() == 1999, 30)
    mutes = edge.metrics.registry.get_sample_value("edge_bus_status_mutes_total",
                                                   {"kind": "printer"})
    assert mutes is not None and mutes >= 1
    # The first status was sent at connect; within the interval (60 s) nothing more.
    assert _status_events(edge.store, "printer-1") == 1
    assert edge.bus.executor.depth() == 0


# An edge that stops listening to a flooding status for 2 s.
@pytest.mark.edge_settings(status_mute_s=2)
def test_a_flooding_status_is_muted_for_a_while_other_devices_are_heard_meanwhile(
        edge: EdgeService, device: DeviceFactory) -> None:
    printer = device("printer", "printer-1")
    kiosk = device("kiosk", "kiosk-1")
    topic = f"store/{edge.settings.store_id}/printer/printer-1/status"

    def status_of(device_id: str) -> dict[str, Any]:
        row = edge.store.query_one("SELECT status FROM devices WHERE id = ?", (device_id,))
        return json.loads(row["status"]) if row else {}

    for i in range(300):
        printer.client.publish(topic, encode({"state": "online", "ts": now_rfc3339(),
                                              "paper": "near_end" if i % 2 else "ok"}),
                               qos=1, retain=True)
    assert wait_until(lambda: edge.metrics.registry.get_sample_value(
        "edge_bus_status_mutes_total", {"kind": "printer"}) == 1)
    kiosk.set_status(screen="on")  # heard while the printer is muted
    assert wait_until(lambda: status_of("kiosk-1").get("screen") == "on")
    assert wait_until(lambda: status_of("printer-1").get("paper") == "near_end", 15)
    printer.set_status(paper="ok", cover="open")  # heard again, once calm
    assert wait_until(lambda: status_of("printer-1").get("cover") == "open", 15)


# An edge that takes 1 event a second from each device, 10 at once.
@pytest.mark.edge_settings(device_event_rate=1, device_event_burst=10)
def test_an_event_flood_from_one_device_is_rate_limited_while_others_go_through(
        edge: EdgeService, device: DeviceFactory) -> None:
    handled: dict[str, int] = {}
    lock = threading.Lock()

    @edge.dispatcher.event("test.tick")
    def tick(caller: Caller, envelope: Envelope) -> None:
        with lock:
            handled[caller.device] = handled.get(caller.device, 0) + 1

    noisy = device("pos", "lane-noisy")
    quiet = device("pos", "lane-quiet")
    started = time.monotonic()
    for i in range(300):
        noisy.event("test.tick", {"i": i})
    for i in range(5):
        quiet.event("test.tick", {"i": i})
    assert wait_until(lambda: handled.get("lane-quiet") == 5)
    # Requests are never rate limited: the noisy lane's own request is answered.
    assert noisy.request("ping", timeout=5)["ok"] is True
    assert wait_until(lambda: handled.get("lane-noisy", 0) + _dropped(edge, "event_rate") == 300,
                      15)
    elapsed = time.monotonic() - started
    assert handled["lane-noisy"] <= 10 + elapsed * 1 + 1
    assert _dropped(edge, "event_rate") >= 300 - 10 - elapsed - 1


# ---------------------------------------------------------------- the outbox's cap


def _fill_outbox(store: Store, count: int, type_: str = "receipt.printed") -> None:
    rows = [(uuid7(), type_, now_rfc3339(), "lane-1", '{"job":"j"}', time.time())
            for _ in range(count)]
    store.write(lambda db: db.conn.executemany(
        "INSERT INTO outbox (event_id, type, occurred_at, device_id, data, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)", rows))


@pytest.fixture
def small_outbox(settings: Settings) -> Settings:
    return settings.with_overrides(outbox_max_events=1000, outbox_alarm_pct=80)


def test_an_outbox_at_its_alarm_depth_shows_in_healthz_metrics_and_staff_pages(
        small_outbox: Settings) -> None:
    from tests.test_sync import _staff_client

    app, staff = _staff_client(small_outbox, "carl", "cashier")
    svc: EdgeService = app.extensions["edge"]
    try:
        client = app.test_client()
        _fill_outbox(svc.store, 799)
        body = client.get("/healthz").get_json()
        assert body["queue"]["outbox"] == {"alarm": False, "alarm_at": 800, "max_events": 1000}
        assert 'id="outbox-alarm"' not in staff.get("/staff/sync/").get_data(as_text=True)
        _fill_outbox(svc.store, 1)
        resp = client.get("/healthz")
        body = resp.get_json()
        assert resp.status_code == 200  # sales go on: degraded, not failing
        assert body["status"] == "degraded" and body["queue"]["outbox"]["alarm"] is True
        assert body["queue"]["depth"] == 800
        metrics = client.get("/metrics").get_data(as_text=True)
        assert "edge_outbox_alarm 1.0" in metrics and "edge_outbox_max_events 1000.0" in metrics
        page = staff.get("/staff/sync/").get_data(as_text=True)
        assert 'id="outbox-alarm"' in page and "full at 1000" in page
        assert 'id="sync-warning"' in page
    finally:
        svc.stop()


def test_a_full_outbox_drops_device_status_but_a_sale_commits_with_its_events(
        small_outbox: Settings, broker: Any, device: DeviceFactory) -> None:
    edge = EdgeService(small_outbox)
    edge.start()
    try:
        assert edge.bus.wait_connected(10)
        lane = device("pos", "lane-1")
        assert wait_until(lambda: _status_events(edge.store, "lane-1") == 1)
        _fill_outbox(edge.store, 999)
        printer = device("printer", "printer-1")  # its first status would be an event
        assert wait_until(lambda: (edge.store.query_one(
            "SELECT state FROM devices WHERE id = 'printer-1'") or {}).get("state") == "online")
        assert _status_events(edge.store, "printer-1") == 0
        dropped = edge.metrics.registry.get_sample_value(
            "edge_outbox_dropped_total", {"type": "device.status"})
        assert dropped == 1
        reply = complete(lane, "cap-1", 986)
        assert reply["ok"], reply
        row = edge.store.query_one("SELECT COUNT(*) AS n FROM outbox WHERE type = "
                                   "'transaction.completed' AND data LIKE '%cap-1%'")
        assert row is not None and row["n"] == 1
        # The printer's status is sent once there is room again.
        edge.store.write(lambda db: db.execute("DELETE FROM outbox WHERE seq IN "
                                               "(SELECT seq FROM outbox LIMIT 10)"))
        edge.store.outbox_cap = OutboxCap(1000, 80, recount_s=0)
        printer.set_status(paper="near_end")
        assert wait_until(lambda: _status_events(edge.store, "printer-1") == 1)
    finally:
        edge.stop()


def test_the_cap_never_drops_sales_redemptions_shoppers_or_consent(store: Store) -> None:
    store.outbox_cap = OutboxCap(1000, 80, recount_s=0)
    _fill_outbox(store, 1000)
    kept = ("transaction.completed", "transaction.voided", "coupon.redeemed",
            "coupon.redemption_reversed", "customer.identified", "consent.changed",
            "receipt.printed", "offer.clipped", "staff.action")
    ids = store.write(lambda db: [queue_data(db.conn, t, {"x": 1}) for t in kept])
    assert all(ids)
    dropped = store.write(lambda db: [queue_data(db.conn, t, {"x": 1})
                                      for t in ("device.status", "kiosk.session")])
    assert dropped == [None, None]
