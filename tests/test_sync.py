"""The edge's outbox sender against a real `edge-hub serve` process: a hub that is down for
10,000 events, a hub (or the proxy in front of it) answering 500 and 429 with Retry-After,
an event the hub refuses, and an edge SIGKILLed while a batch is in flight.

The proxy here stands where a load balancer would: between the edge and the real hub,
answering for the hub when told to, or holding the hub's answer back.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from sqlalchemy import select

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.schema import events as hub_events
from cloud_sync.hub.settings import HubSettings
from edge.app.service import EdgeService
from edge.outbox import queue_event
from edge.settings import Settings
from edge.store import Store
from edge.supervise import stop_process
from store_contract.events import TransactionCompleted
from store_contract.protocol import uuid7
from tests.conftest import start_edge, wait_until
from tests.hubfix import HubServer, run_hub, start_hub, stop_hub

# ---------------------------------------------------------------- fixtures


def add_store(hub: HubSettings, store_id: str, region: str = "north",
              name: str | None = None) -> str:
    done = run_hub(hub, "stores", "add", store_id, "--region", region,
                   *(("--name", name) if name else ()))
    assert done.returncode == 0, done.stderr
    token: str = json.loads(done.stdout)["token"]
    return token


def edge_for(settings: Settings, url: str, token: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"hub_url": url, "hub_token": token, "sync_interval_s": 1,
                              "sync_backoff_max_s": 2, "sync_pull_interval_s": 3600}
    values.update(overrides)
    return settings.with_overrides(**values)


@pytest.fixture
def services() -> Iterator[list[EdgeService]]:
    made: list[EdgeService] = []
    yield made
    for svc in made:
        svc.stop()


def produce(store: Store, n: int, per_txn: int = 100) -> dict[str, dict[str, Any]]:
    """Queue `n` sale events the way the checkout does (in store transactions); by id."""
    made: dict[str, dict[str, Any]] = {}
    for start in range(0, n, per_txn):
        with store.transaction() as db:
            for i in range(start, min(n, start + per_txn)):
                event = TransactionCompleted(
                    txn=f"t-{i}", customer_id=None if i % 3 else f"c-{i % 7}",
                    total_minor=100 + i, discount_minor=0, currency="EUR",
                    lines=[{"sku": "milk", "qty": 1, "unit_minor": 100 + i}],
                    completed_at="2026-11-22T10:00:00.000Z")
                made[queue_event(db.conn, event, device_id="lane-1")] = event.to_data()
    return made


def hub_rows(hub: HubSettings, store_id: str) -> dict[str, dict[str, Any]]:
    db = HubDB(hub.db_url)
    try:
        with db.read() as conn:
            rows = conn.execute(select(hub_events.c.event_id, hub_events.c.data)
                                .where(hub_events.c.store_id == store_id)).all()
    finally:
        db.dispose()
    return {r.event_id: json.loads(r.data) for r in rows}


def outbox_depth(store: Store) -> int:
    row = store.query_one("SELECT COUNT(*) AS n FROM outbox")
    return int(row["n"]) if row else -1


# ---------------------------------------------------------------- a proxy in front of the hub


class Proxy:
    """Forwards to the hub; `canned` answers go first (to event batches), and `hold_s` delays
    each answer of the hub."""

    def __init__(self, target: str) -> None:
        self.target = target
        # (status, headers) or (status, headers, body): to event batches, then to feed reads
        self.canned: list[tuple[Any, ...]] = []
        self.canned_changes: list[tuple[Any, ...]] = []
        self.refuse_if: bytes | None = None  # a bare 422 for any request holding these bytes
        self.hold_s = 0.0
        self.log: list[dict[str, Any]] = []
        self.in_flight = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    events = self.path.endswith("/events")
                    canned = proxy.canned.pop(0) if proxy.canned and events else None
                    if "/changes" in self.path and proxy.canned_changes:
                        canned = proxy.canned_changes.pop(0)
                    entry: dict[str, Any] = {"at": time.monotonic(), "path": self.path}
                    proxy.log.append(entry)
                if canned is None and proxy.refuse_if and proxy.refuse_if in body:
                    canned = (422, {})
                if canned is not None:
                    status, headers, *rest = canned
                    answer: bytes = rest[0] if rest else b""
                    entry["status"] = status
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                with proxy.lock:
                    proxy.in_flight += 1
                try:
                    resp = requests.request(
                        self.command, proxy.target + self.path, data=body or None, timeout=60,
                        headers={k: v for k, v in self.headers.items()
                                 if k.lower() in ("authorization", "content-type")})
                    entry["status"] = resp.status_code
                    if resp.headers.get("Content-Type", "").startswith("application/json"):
                        entry["answer"] = resp.json()
                    time.sleep(proxy.hold_s)
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1
                try:
                    self.send_response(resp.status_code)
                    self.send_header("Content-Type", resp.headers.get("Content-Type", ""))
                    self.send_header("Content-Length", str(len(resp.content)))
                    self.end_headers()
                    self.wfile.write(resp.content)
                except OSError:
                    entry["undelivered"] = True  # the edge was gone before the answer

            do_GET = do_POST = do_PUT = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def batches(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.log if e["path"].endswith("/events")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub_proxy(settings: Settings, hub: HubServer) -> Iterator[tuple[Proxy, str]]:
    """A proxy in front of the hub (canned answers, held answers, refusals) and this store's
    token at the hub."""
    token = add_store(hub.settings, settings.store_id)
    proxy = Proxy(hub.url)
    try:
        yield proxy, token
    finally:
        proxy.close()


# ---------------------------------------------------------------- the tests


@pytest.mark.process
def test_ten_thousand_events_made_while_the_hub_is_down_all_arrive_once(
        settings: Settings, hub_sqlite: HubSettings, services: list[EdgeService]) -> None:
    token = add_store(hub_sqlite, settings.store_id)
    svc = EdgeService(edge_for(settings, f"http://127.0.0.1:{hub_sqlite.http_port}", token))
    services.append(svc)
    svc.scheduler.start()
    made = produce(svc.store, 10_000)
    # The hub is down: nothing leaves, nothing is lost, and the reason is on record.
    assert wait_until(lambda: svc.sender.last_error is not None, 10)
    assert "could not be reached" in (svc.sender.last_error or "")
    assert outbox_depth(svc.store) == 10_000
    health = svc.health()[1]["queue"]
    assert health["depth"] == 10_000 and health["last_success"] is None

    server = start_hub(hub_sqlite, keep_port=True)
    try:
        assert wait_until(lambda: outbox_depth(svc.store) == 0, 90, interval=0.2), \
            f"{outbox_depth(svc.store)} events still queued: {svc.sender.last_error}"
        at_hub = hub_rows(hub_sqlite, settings.store_id)
    finally:
        stop_hub(server)
    assert len(at_hub) == 10_000
    assert at_hub == made  # every event, with its content as the edge wrote it
    assert svc.health()[1]["queue"]["last_success"] is not None


@pytest.mark.process
def test_hub_answering_500_then_429_is_waited_out_as_told(
        settings: Settings, hub: HubServer, services: list[EdgeService],
        hub_proxy: tuple[Proxy, str]) -> None:
    proxy, token = hub_proxy
    proxy.canned = [(500, {}), (429, {"Retry-After": "3"})]
    svc = EdgeService(edge_for(settings, proxy.url, token))
    services.append(svc)
    made = produce(svc.store, 50)
    svc.scheduler.start()
    assert wait_until(lambda: outbox_depth(svc.store) == 0, 30, interval=0.1), \
        svc.sender.last_error
    tries = proxy.batches()
    assert [t["status"] for t in tries[:3]] == [500, 429, 200]
    after_500 = tries[1]["at"] - tries[0]["at"]
    after_429 = tries[2]["at"] - tries[1]["at"]
    assert after_500 >= 0.5  # backoff: half to all of the first 1 s step
    assert after_429 >= 3.0 - 0.05  # Retry-After: 3, waited out
    assert "429" in (svc.sender.last_error or "")
    assert set(hub_rows(hub.settings, settings.store_id)) == set(made)


def _queue_raw(store: Store, type_: str, data: Any) -> str:
    """An outbox row written without queue_event's checks (an older edge, a bad migration)."""
    event_id = uuid7()
    store.write(lambda db: db.execute(
        "INSERT INTO outbox (event_id, type, occurred_at, device_id, data, created_at) "
        "VALUES (?, ?, '2026-11-22T10:00:00.000Z', 'lane-1', ?, ?)",
        (event_id, type_, json.dumps(data), time.time())))
    return event_id


@pytest.mark.process
def test_an_event_the_hub_refuses_becomes_a_dead_letter_and_the_rest_go_through(
        settings: Settings, hub: HubServer, services: list[EdgeService]) -> None:
    token = add_store(hub.settings, settings.store_id)
    svc = EdgeService(edge_for(settings, hub.url, token))
    services.append(svc)
    before = produce(svc.store, 5)
    bad = _queue_raw(svc.store, "coupon.redeemed", {"coupon": 5})  # no redemption, no amount
    after = produce(svc.store, 5)
    svc.sender.run()
    assert outbox_depth(svc.store) == 0
    letters = svc.sender.dead_letters()
    assert [d["event_id"] for d in letters] == [bad]
    assert letters[0]["status"] == 400 and letters[0]["error"]
    assert set(hub_rows(hub.settings, settings.store_id)) == set(before) | set(after)
    # Later batches are not held up by it.
    later = produce(svc.store, 3)
    svc.sender.run()
    assert set(later) <= set(hub_rows(hub.settings, settings.store_id))
    state = svc.health()[1]["queue"]
    assert state["dead_letters"] == 1 and state["depth"] == 0


@pytest.mark.process
def test_a_refusal_that_names_no_event_keeps_every_event_queued_and_says_why(
        settings: Settings, hub: HubServer, services: list[EdgeService],
        hub_proxy: tuple[Proxy, str]) -> None:
    """A proxy answers a bare 422 for any batch holding a marked event. Before, the sender
    halved the batch down to that event and dead-lettered it; but an answer that names no
    event is about the batch (a hub that cannot read its queue report, say), so now nothing
    is dead-lettered: everything stays queued, the sender backs off, staff see the reason,
    and it all arrives once the hub takes the batch."""
    proxy, token = hub_proxy
    svc = EdgeService(edge_for(settings, proxy.url, token, sync_batch_events=16))
    services.append(svc)
    made = produce(svc.store, 7)
    marked = _queue_raw(svc.store, "device.status", {"marker": "refuse-me"})
    made.update(produce(svc.store, 8))
    proxy.refuse_if = b"refuse-me"
    svc.sender.run()
    assert [b["status"] for b in proxy.batches()] == [422]  # one try, then it waits
    assert outbox_depth(svc.store) == 16 and svc.sender.dead_letters() == []
    state = svc.health()[1]["queue"]
    assert state["dead_letters"] == 0 and state["retry_in_s"]
    assert "without naming any" in state["last_error"] and "422" in state["last_error"]
    assert "stay queued" in state["last_error"]
    proxy.refuse_if = None
    assert wait_until(lambda: svc.sender.backoff.remaining() == 0, 10)
    svc.sender.run()
    assert outbox_depth(svc.store) == 0 and svc.sender.dead_letters() == []
    assert set(hub_rows(hub.settings, settings.store_id)) == set(made) | {marked}


@pytest.mark.process
def test_a_wrong_token_store_or_address_keeps_every_event_queued_and_says_which(
        settings: Settings, hub: HubServer, services: list[EdgeService]) -> None:
    token = add_store(hub.settings, settings.store_id)
    other = add_store(hub.settings, "store-other")
    store = Store(settings.data_path / "edge.db")
    made = produce(store, 5)
    store.close()
    cases = [(hub.url, "not-a-token", 401, "EDGE_HUB_TOKEN"),
             (hub.url, other, 403, "EDGE_STORE_ID"),
             (f"{hub.url}/nowhere", token, 404, "EDGE_HUB_URL")]
    for url, bearer, status, hint in cases:
        svc = EdgeService(edge_for(settings, url, bearer))
        try:
            svc.sender.run()
            assert outbox_depth(svc.store) == 5, status
            assert svc.sender.dead_letters() == [], status
            state = svc.health()[1]["queue"]
            assert hint in state["last_error"], (status, state)
            assert state["retry_in_s"] > 0 and state["dead_letters"] == 0
            assert svc.sender.backoff.remaining() > 0  # it waits before trying again
        finally:
            svc.stop()
    assert hub_rows(hub.settings, settings.store_id) == {}
    # Once the settings are right, every event arrives, none lost to the refusals.
    svc = EdgeService(edge_for(settings, hub.url, token))
    services.append(svc)
    svc.sender.run()
    assert outbox_depth(svc.store) == 0 and svc.sender.dead_letters() == []
    assert hub_rows(hub.settings, settings.store_id) == made


@pytest.mark.process
def test_a_200_whose_body_is_unusable_keeps_the_events_queued(
        settings: Settings, hub: HubServer, services: list[EdgeService],
        hub_proxy: tuple[Proxy, str]) -> None:
    proxy, token = hub_proxy
    svc = EdgeService(edge_for(settings, proxy.url, token))
    services.append(svc)
    made = produce(svc.store, 4)
    json_type = {"Content-Type": "application/json"}
    unusable = [(200, {}), (200, json_type, b"not json"), (200, json_type, b"[1, 2]"),
                (200, json_type, b'{"accepted": "all"}'),
                (200, json_type, b'{"accepted": [], "rejected": []}')]
    for answer in unusable:
        proxy.canned = [answer]
        svc.sender.run()
        assert outbox_depth(svc.store) == 4, answer
        assert svc.sender.dead_letters() == [], answer
        assert svc.sender.last_error == "the hub's answer was not the expected JSON", answer
        assert wait_until(lambda: svc.sender.backoff.remaining() == 0, 10)
    assert [b["status"] for b in proxy.batches()] == [200] * len(unusable)
    svc.sender.run()  # the real hub's answer
    assert outbox_depth(svc.store) == 0 and svc.sender.dead_letters() == []
    assert hub_rows(hub.settings, settings.store_id) == made


def test_edge_killed_while_a_batch_is_in_flight_loses_and_doubles_nothing(
        settings: Settings, hub: HubServer, broker: Any) -> None:
    token = add_store(hub.settings, settings.store_id)
    proxy = Proxy(hub.url)
    proxy.hold_s = 0.4  # the hub has stored the batch; its answer is still on the way
    edge_settings = edge_for(settings, proxy.url, token, sync_batch_events=200, http_port=0)
    store = Store(edge_settings.data_path / "edge.db")
    made = produce(store, 3000)
    store.close()
    proc = start_edge(edge_settings)
    try:
        # Kill it once the hub has taken some batches and holds the answer to another.
        assert wait_until(lambda: len(proxy.batches()) >= 3 and proxy.in_flight > 0, 60,
                          interval=0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        time.sleep(proxy.hold_s + 0.2)
        with sqlite3.connect(edge_settings.data_path / "edge.db") as conn:
            left = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        assert 0 < left < 3000
        proc = start_edge(edge_settings)

        def drained() -> bool:
            with sqlite3.connect(edge_settings.data_path / "edge.db") as conn:
                return conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0

        assert wait_until(drained, 60, interval=0.2)
    finally:
        stop_process(proc)
        proxy.close()
    at_hub = hub_rows(hub.settings, settings.store_id)
    assert at_hub == made  # nothing lost, each event once
    # The batch whose answer never reached the edge was sent again and kept once.
    duplicates = sum(len(b.get("answer", {}).get("duplicates", [])) for b in proxy.batches())
    assert duplicates > 0


# ---------------------------------------------------------------- what staff see


def _staff_client(settings: Settings, username: str, role: str) -> Any:
    import re

    from edge.accounts import add_user
    from edge.app import create_app

    app = create_app(settings)
    add_user(app.extensions["edge"].store, username, "staff-password-1", role)
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"',
                      client.get("/staff/login").get_data(as_text=True))
    assert token
    client.post("/staff/login", data={"username": username, "password": "staff-password-1",
                                      "csrf_token": token.group(1)})
    return app, client


@pytest.mark.process
def test_staff_see_dead_letters_and_an_old_backlog_and_a_manager_sends_one_again(
        settings: Settings, hub: HubServer) -> None:
    token = add_store(hub.settings, settings.store_id)
    edge_settings = edge_for(settings, hub.url, token)
    svc = EdgeService(edge_settings)
    try:
        bad = _queue_raw(svc.store, "coupon.redeemed", {"coupon": "cpn-9", "txn": "t-77"})
        svc.sender.run()
        assert [d["event_id"] for d in svc.sender.dead_letters()] == [bad]
    finally:
        svc.stop()
    app, manager = _staff_client(edge_settings, "mia", "manager")
    edge = app.extensions["edge"]
    try:
        page = manager.get("/staff/sync/").get_data(as_text=True)
        assert bad in page and "coupon=cpn-9" in page and "Send again" in page
        assert 'id="sync-warning"' in manager.get("/staff/receipts/").get_data(as_text=True)
        # An event waiting for an hour: every staff page says so.
        old = _queue_raw(edge.store, "device.status", {"state": "online"})
        edge.store.write(lambda db: db.execute(
            "UPDATE outbox SET created_at = ? WHERE event_id = ?", (time.time() - 3600, old)))
        banner = manager.get("/staff/devices").get_data(as_text=True)
        assert "have not reached the CRM hub" in banner and "60 min" in banner
        assert edge.health()[1]["queue"]["backlog_old"] is True
        # Sending again needs the CSRF token, then puts the event back in the outbox.
        assert manager.post(f"/staff/sync/dead-letters/{bad}/send").status_code == 400
        csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
        resp = manager.post(f"/staff/sync/dead-letters/{bad}/send", data={"csrf_token": csrf})
        assert resp.status_code == 302
        assert edge.store.query_one("SELECT 1 FROM outbox WHERE event_id = ?", (bad,))
        assert edge.sender.dead_letters() == []
    finally:
        edge.stop()


def test_a_cashier_sees_the_sync_page_but_cannot_send_dead_letters_again(
        settings: Settings) -> None:
    svc = EdgeService(edge_for(settings, "http://127.0.0.1:9", "t0ken"))
    bad = _queue_raw(svc.store, "receipt.printed", {"job": 1})
    svc.store.write(lambda db: db.execute(
        "INSERT INTO dead_letters (event_id, seq, type, occurred_at, data, created_at, status, "
        "error, failed_at) SELECT event_id, seq, type, occurred_at, data, created_at, 400, "
        "'bad_events: job must be text', ? FROM outbox WHERE event_id = ?", (time.time(), bad)))
    svc.stop()
    app, cashier = _staff_client(svc.settings, "carl", "cashier")
    try:
        page = cashier.get("/staff/sync/").get_data(as_text=True)
        assert "job must be text" in page and "Send again" not in page
        csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
        assert cashier.post(f"/staff/sync/dead-letters/{bad}/send",
                            data={"csrf_token": csrf}).status_code == 403
    finally:
        app.extensions["edge"].stop()


# An edge that sends a device's status changes at most once a second.
@pytest.mark.edge_settings(status_event_interval_s=1)
def test_device_status_changes_are_queued_for_the_hub_but_repeats_are_not(
        edge: EdgeService, device: Any) -> None:

    def statuses() -> list[dict[str, Any]]:
        return [json.loads(r["data"]) for r in edge.store.query(
            "SELECT data FROM outbox WHERE type = 'device.status' ORDER BY seq")]

    printer = device("printer", "printer-1")
    assert wait_until(lambda: len(statuses()) == 1)
    printer.set_status(paper="ok", cover="closed")
    assert wait_until(lambda: len(statuses()) == 2)
    printer.set_status(paper="ok", cover="closed")  # the same again: a heartbeat
    printer.set_status(paper="near_end", cover="closed")
    assert wait_until(lambda: len(statuses()) == 3)
    printer.close()
    assert wait_until(lambda: len(statuses()) == 4)
    seen = statuses()
    assert [s["state"] for s in seen] == ["online", "online", "online", "offline"]
    assert seen[2]["paper"] == "near_end" and seen[3]["device"] == "printer-1"


def test_a_flapping_device_costs_the_outbox_one_event_an_interval(
        edge: EdgeService, enrolled: Any) -> None:
    from edge.devices import flush_statuses, list_devices, record_status

    enrolled("printer", "printer-9")

    def outbox() -> list[dict[str, Any]]:
        return [json.loads(r["data"]) for r in edge.store.query(
            "SELECT data FROM outbox WHERE type = 'device.status' ORDER BY seq")]

    t0 = 1_800_000_000.0
    record_status(edge.store, "printer", "printer-9", {"state": "online"}, now=t0)
    assert len(outbox()) == 1
    for i in range(1, 1001):  # flaps for 50 s: online, offline, online, ...
        state = "offline" if i % 2 else "online"
        record_status(edge.store, "printer", "printer-9", {"state": state},
                      interval_s=60, now=t0 + i * 0.05)
    assert len(outbox()) == 1  # nothing more within the interval
    row = next(d for d in list_devices(edge.store) if d["id"] == "printer-9")
    assert row["state"] == "online" and row["flapping"] is True
    assert "1000 changes" in row["status"]["flapping"]
    # Still within the interval: the flush waits; after it, one event with the count.
    assert flush_statuses(edge.store, 60, now=t0 + 59) == 0
    # It flapped back to "online", what the hub last heard: nothing to send, and calm.
    assert flush_statuses(edge.store, 60, now=t0 + 61) == 0
    row = next(d for d in list_devices(edge.store) if d["id"] == "printer-9")
    assert row["flapping"] is False
    # Flapping again and ending offline: one event, with the changes it stands for.
    for i in range(1, 6):
        record_status(edge.store, "printer", "printer-9",
                      {"state": "offline" if i % 2 else "online"}, interval_s=60,
                      now=t0 + 61 + i)
    sent = outbox()
    assert len(sent) == 2 and sent[-1]["state"] == "offline" and "changes" not in sent[-1]
    # A change held back is sent by the flush once its interval is over.
    record_status(edge.store, "printer", "printer-9", {"state": "online"},
                  interval_s=60, now=t0 + 70)
    assert len(outbox()) == 2
    assert flush_statuses(edge.store, 60, now=t0 + 123) == 1
    assert outbox()[-1]["state"] == "online"
