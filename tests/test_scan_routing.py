"""Scans routed at the edge (docs/protocol.md §10.5), on a real Mosquitto.

The scanners are `DeviceClient`s of kind `scanner` logged in with what `edge scanners add`
printed, sending `Scan(...).to_data()` as `evt/scan`, as the scanner service does. Lanes
and kiosks are device clients too; what they receive on `cmd/scan` is what a till gets.
The staff page's live stream is read through the edge's own Flask app (a streamed
response), with a manager's HTTP Basic login.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import re
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from edge.app import create_app
from edge.app.service import EdgeService
from edge.broker import BrokerProcess
from edge.dispatch import Caller
from edge.scanners import list_scanners
from edge.settings import Settings
from pos_bridge.device import DeviceClient
from store_contract.protocol import Envelope, event_topic, new_envelope, request_topic
from store_contract.scans import Product, Scan, parse_scan
from tests.conftest import edge_cli, edge_env, running_edge, wait_until

DeviceFactory = Callable[..., DeviceClient]
MANAGER = ("mia", "manager-password-1")
CASHIER = ("carla", "cashier-password-1")
# A member code's shape: what must never reach a log line.
SECRET = "MEMBER-7f3a9c2e41d8b6"


# ---------------------------------------------------------------- helpers and fixtures

def edge_command(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*edge_cli(), *args], env=edge_env(settings), capture_output=True,
                          text=True, timeout=60, check=False)


def edge_json(settings: Settings, *args: str) -> Any:
    done = edge_command(settings, *args)
    assert done.returncode == 0, f"edge {' '.join(args)} failed:\n{done.stderr}"
    return json.loads(done.stdout)


class Inbox:
    """The `cmd/scan` commands a lane or kiosk received, in order."""

    def __init__(self, client: DeviceClient) -> None:
        self.received: queue.Queue[Envelope] = queue.Queue()
        client.command_handlers["scan"] = self.received.put

    def next(self) -> Envelope:
        try:
            return self.received.get(timeout=10)
        except queue.Empty:
            raise AssertionError("no cmd/scan arrived") from None

    def empty(self) -> bool:
        return self.received.empty()


@pytest.fixture
def app(settings: Settings, broker: BrokerProcess) -> Iterator[Flask]:
    """The edge as `edge serve` builds it (service and staff pages), started on the broker;
    a manager and a cashier account."""
    from edge.accounts import add_user

    flask_app = create_app(settings)
    service: EdgeService = flask_app.extensions["edge"]
    add_user(service.store, *MANAGER, "manager")
    add_user(service.store, *CASHIER, "cashier")
    with running_edge(settings, service):
        yield flask_app


@pytest.fixture
def edge(app: Flask) -> EdgeService:
    service: EdgeService = app.extensions["edge"]
    return service


@pytest.fixture
def scanners(settings: Settings) -> Iterator[Callable[..., DeviceClient]]:
    """Factory: `edge scanners add ID --lane/--kiosk ...` and the scanner connected with the
    login it printed; all closed after the test."""
    made: list[DeviceClient] = []

    def _scanner(scanner_id: str, *target: str) -> DeviceClient:
        added = edge_json(settings, "scanners", "add", scanner_id, *target)
        client = DeviceClient(settings.store_id, "scanner", scanner_id, settings.mqtt_url,
                              added["username"], added["password"])
        made.append(client)
        return client.connect()

    yield _scanner
    for client in made:
        client.close()


def metric(edge: EdgeService, name: str, **labels: str) -> float:
    return edge.metrics.registry.get_sample_value(name, labels) or 0.0


def basic(user: tuple[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def publish(client: DeviceClient, topic: str, payload: bytes) -> None:
    client.client.publish(topic, payload, qos=1).wait_for_publish(5)


# ---------------------------------------------------------------- the command line

@pytest.mark.process
def test_scanners_go_only_to_an_enrolled_lane_or_kiosk(settings: Settings,
                                                       broker: BrokerProcess) -> None:
    edge_json(settings, "devices", "add", "printer", "printer-1")
    edge_json(settings, "devices", "add", "pos", "lane-1")
    refused = [
        (["--lane", "lane-9"], "There is no enrolled lane lane-9 (a pos device)"),
        (["--kiosk", "kiosk-9"], "There is no enrolled kiosk kiosk-9 (a kiosk device)"),
        (["--lane", "printer-1"], "There is no enrolled lane printer-1 (a pos device)"),
        (["--lane", "lane-1", "--kiosk", "kiosk-1"], "Name exactly one of --lane"),
        ([], "Name exactly one of --lane"),
        (["--lane", "Lane 1"], "must be 1-32 characters"),
    ]
    for target, sentence in refused:
        done = edge_command(settings, "scanners", "add", "scan-1", *target)
        assert done.returncode == 1, (target, done.stdout)
        assert done.stderr.startswith("edge: ") and sentence in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    # Nothing half-made: no scanner login, no assignment.
    assert edge_json(settings, "scanners", "list") == []
    assert [d["kind"] for d in edge_json(settings, "devices", "list")] == ["pos", "printer"]

    added = edge_json(settings, "scanners", "add", "scan-1", "--lane", "lane-1")
    assert added["username"] == "scanner-scan-1" and added["password"]
    assert added["assigned_to"] == {"kind": "pos", "id": "lane-1", "enrolled": True}
    again = edge_command(settings, "scanners", "add", "scan-1", "--lane", "lane-1")
    assert again.returncode == 1 and "already enrolled" in again.stderr
    moved = edge_command(settings, "scanners", "assign", "scan-1", "--kiosk", "kiosk-1")
    assert moved.returncode == 1 and "no enrolled kiosk kiosk-1" in moved.stderr
    unknown = edge_command(settings, "scanners", "assign", "scan-2", "--lane", "lane-1")
    assert unknown.returncode == 1 and "No scanner 'scan-2' is enrolled" in unknown.stderr
    [listed] = edge_json(settings, "scanners", "list")
    assert listed["assigned_to"]["id"] == "lane-1" and "password" not in listed
    assert edge_json(settings, "scanners", "remove", "scan-1") == {"id": "scan-1",
                                                                  "removed": True}
    assert edge_json(settings, "scanners", "list") == []
    assert "scanner" not in [d["kind"] for d in edge_json(settings, "devices", "list")]
    gone = edge_command(settings, "scanners", "remove", "scan-1")
    assert gone.returncode == 1 and "No scanner 'scan-1' is enrolled" in gone.stderr

    # Removed as a plain device, its assignment goes too: enrolled again under the same id
    # (by someone else, for another till) it sends nowhere until it is assigned.
    edge_json(settings, "scanners", "add", "scan-1", "--lane", "lane-1")
    edge_json(settings, "devices", "remove", "scanner", "scan-1")
    edge_json(settings, "devices", "add", "scanner", "scan-1")
    [listed] = edge_json(settings, "scanners", "list")
    assert listed["assigned_to"] is None and listed["scans"] == 0


# ---------------------------------------------------------------- routing

def test_a_scan_reaches_the_assigned_lane_and_follows_each_reassignment(
        settings: Settings, edge: EdgeService, device: DeviceFactory,
        scanners: Callable[..., DeviceClient]) -> None:
    lane1, lane2 = Inbox(device("pos", "lane-1")), Inbox(device("pos", "lane-2"))
    kiosk = Inbox(device("kiosk", "kiosk-1"))
    scanner = scanners("scan-1", "--lane", "lane-1")

    first = Scan("4006381333931", "hid", "]E0", "EAN13", seq=1,
                 product=Product("04006381333931"))
    scanner.event("scan", first.to_data())
    got = lane1.next()
    assert got.type == "scan"
    assert got.data == first.forward_data("scan-1")
    assert parse_scan(got.data) == first

    edge_json(settings, "scanners", "assign", "scan-1", "--lane", "lane-2")
    second = Scan(SECRET, "serial", "]Q1", seq=2)
    scanner.event("scan", second.to_data())
    assert lane2.next().data == second.forward_data("scan-1")

    edge_json(settings, "scanners", "assign", "scan-1", "--kiosk", "kiosk-1")
    third = Scan("CPN-12345", "camera", None, seq=3)
    scanner.event("scan", third.to_data())
    assert kiosk.next().data == third.forward_data("scan-1")
    # Each scan went to one device only.
    assert lane1.empty() and lane2.empty() and kiosk.empty()

    # Counted in memory, written to the table by a job every few seconds.
    assert wait_until(lambda: list_scanners(edge.store)[0]["scans"] == 3, 15)
    [row] = edge_json(settings, "scanners", "list")
    assert row["scans"] == 3 and row["unassigned_scans"] == 0 and row["last_scan"]
    assert row["assigned_to"] == {"kind": "kiosk", "id": "kiosk-1", "enrolled": True}
    assert metric(edge, "edge_scans_total", outcome="routed") == 3


def test_a_scan_with_nowhere_to_go_is_logged_without_its_code_counted_and_shown(
        settings: Settings, app: Flask, edge: EdgeService, device: DeviceFactory,
        scanners: Callable[..., DeviceClient], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Enrolled as a plain device: a scanner no one assigned.
    loose = device("scanner", "scan-7")
    # Assigned to a lane that is then removed.
    lane = Inbox(device("pos", "lane-1"))
    orphan = scanners("scan-8", "--lane", "lane-1")
    edge_json(settings, "devices", "remove", "pos", "lane-1")

    loose.event("scan", Scan(SECRET, "hid", "]Q1", seq=1).to_data())
    orphan.event("scan", Scan(SECRET + "-2", "camera", "]Q1", seq=1).to_data())
    orphan.event("scan", Scan(SECRET + "-3", "camera", "]Q1", seq=2).to_data())
    assert wait_until(lambda: metric(edge, "edge_scans_total", outcome="unassigned") == 3)
    assert lane.empty()

    warnings = [r.getMessage() for r in caplog.records if "nowhere to go" in r.getMessage()]
    assert len(warnings) == 3
    assert any("scan-7" in w and f"{len(SECRET)} characters" in w for w in warnings)
    assert all(SECRET not in r.getMessage() for r in caplog.records)

    # The devices page shows the counts at once; the table has them after the next flush.
    page = app.test_client().get("/staff/devices", headers=basic(CASHIER))
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-scanner="scan-7"' in html and "nowhere: not assigned" in html
    assert "lane-1, no longer enrolled" in html and "lane lane-1" not in html
    rows_html = {m.group(1): m.group(2) for m in re.finditer(
        r'<tr data-scanner="([^"]+)">(.*?)</tr>', html, re.S)}
    assert '<td class="unassigned">1 (last ' in rows_html["scan-7"]
    assert '<td class="unassigned">2 (last ' in rows_html["scan-8"]
    assert SECRET not in html
    # The page's script refreshes the table from the API, worded the same way.
    api = app.test_client().get("/api/v1/scanners", headers=basic(CASHIER))
    assert api.status_code == 200 and SECRET not in api.get_data(as_text=True)
    listed = {r["id"]: r for r in api.get_json()["scanners"]}
    assert listed["scan-7"]["sends_to"] == "nowhere: not assigned"
    assert listed["scan-8"]["sends_to"] == "lane-1, no longer enrolled"
    assert (listed["scan-7"]["unassigned_scans"], listed["scan-8"]["unassigned_scans"]) == (1, 2)
    assert listed["scan-8"]["last_unassigned_local"] and listed["scan-8"]["last_scan_local"]
    assert app.test_client().get("/api/v1/scanners").status_code == 401
    assert wait_until(lambda: sum(r["unassigned_scans"] for r in list_scanners(edge.store))
                      == 3, 15)
    rows = {r["id"]: r for r in edge_json(settings, "scanners", "list")}
    assert rows["scan-7"]["assigned_to"] is None
    assert (rows["scan-7"]["unassigned_scans"], rows["scan-8"]["unassigned_scans"]) == (1, 2)
    assert rows["scan-8"]["assigned_to"] == {"kind": "pos", "id": "lane-1", "enrolled": False}
    assert rows["scan-8"]["last_unassigned"] is not None


# Each bad `evt/scan` data, with the field the refusal must name.
BAD_SCANS: list[tuple[Any, str]] = [
    ({"source": "hid"}, "data.code"),
    ({"code": "", "source": "hid"}, "data.code"),
    ({"code": 4006381333931, "source": "hid"}, "data.code"),
    ({"code": "x" * 8193, "source": "hid"}, "data.code"),
    ({"code": "AB\ud800C", "source": "hid"}, "data.code"),
    ({"code": SECRET}, "data.source"),
    ({"code": SECRET, "source": "keyboard"}, "data.source"),
    ({"code": SECRET, "source": "hid", "symbology": "Q1"}, "data.symbology"),
    ({"code": SECRET, "source": "hid", "symbology": 5}, "data.symbology"),
    ({"code": SECRET, "source": "hid", "format": "<b>"}, "data.format"),
    ({"code": SECRET, "source": "hid", "raw_b64": "not base64!"}, "data.raw_b64"),
    ({"code": SECRET, "source": "hid",
      "raw_b64": base64.b64encode(bytes(4097)).decode()}, "data.raw_b64"),
    ({"code": SECRET, "source": "hid", "seq": 0}, "data.seq"),
    ({"code": SECRET, "source": "hid", "seq": "7"}, "data.seq"),
    ({"code": SECRET, "source": "hid", "seq": True}, "data.seq"),
    ({"code": SECRET, "source": "hid", "product": "4006381333931"}, "data.product"),
    ({"code": SECRET, "source": "hid", "product": {"gtin": "04006381333932"}},
     "data.product.gtin"),
    ({"code": SECRET, "source": "hid",
      "product": {"gtin": "04006381333931", "ai": {"x": "1"}}}, "data.product.ai"),
]
# Payloads that are not a scan envelope at all.
BAD_PAYLOADS = [b"", b"\xff\xfe not json", b"[]", json.dumps({"v": 1, "type": "scan"}).encode(),
                new_envelope("job", {"code": SECRET, "source": "hid"}).to_json()]


def test_each_bad_scan_is_refused_and_the_edge_keeps_serving(
        settings: Settings, edge: EdgeService, device: DeviceFactory,
        scanners: Callable[..., DeviceClient], caplog: pytest.LogCaptureFixture) -> None:
    lane_client = device("pos", "lane-1")
    lane = Inbox(lane_client)
    scanner = scanners("scan-1", "--lane", "lane-1")
    topic = event_topic(settings.store_id, "scanner", "scan-1", "scan")
    seq = 0

    def still_served() -> None:
        """The scanner's next good scan is the next thing the lane gets (the bad one went
        nowhere), and another device is answered."""
        nonlocal seq
        seq += 1
        good = Scan("4006381333931", "hid", "]E0", seq=seq)
        scanner.event("scan", good.to_data())
        assert lane.next().data == good.forward_data("scan-1")
        assert lane_client.request("ping", {"echo": seq})["data"]["echo"] == seq

    for data, field in BAD_SCANS:
        caplog.clear()
        envelope = new_envelope("scan", {})  # JSON with \u escapes: any code can travel
        publish(scanner, topic, json.dumps({"v": 1, "id": envelope.id, "ts": envelope.ts,
                                            "type": "scan", "data": data}).encode())
        still_served()
        refusals = [r.getMessage() for r in caplog.records if "dropped event scan" in
                    r.getMessage()]
        assert len(refusals) == 1 and f"{field}:" in refusals[0], (data, refusals)
        assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert metric(edge, "edge_scans_total", outcome="refused") == len(BAD_SCANS)

    for payload in BAD_PAYLOADS:
        publish(scanner, topic, payload)
        still_served()
    assert metric(edge, "edge_device_events_total", type="scan", outcome="bad_request") == \
        len(BAD_SCANS) + len(BAD_PAYLOADS)
    assert metric(edge, "edge_scans_total", outcome="routed") == seq
    assert all(SECRET not in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- what a scanner may not do

def test_a_scanner_cannot_call_pos_methods_print_or_send_commands(
        settings: Settings, edge: EdgeService, device: DeviceFactory,
        scanners: Callable[..., DeviceClient]) -> None:
    s = settings.store_id
    printed: queue.Queue[Envelope] = queue.Queue()
    printer = device("printer", "printer-1")
    printer.command_handlers["print"] = printed.put
    lane1_client = device("pos", "lane-1")
    lane1, lane2 = Inbox(lane1_client), Inbox(device("pos", "lane-2"))
    scanner = scanners("scan-1", "--lane", "lane-1")
    apply = new_envelope("coupon.apply", {"txn": "t-1", "code": "CPN-1", "basket": {}})

    # The broker refuses each of these (ACL): none reaches the edge or the other devices.
    forbidden = [
        (request_topic(s, "scanner", "scan-1", "coupon.apply"), apply.to_json()),
        (request_topic(s, "scanner", "scan-1", "txn.complete"),
         new_envelope("txn.complete", {"txn": "t-1"}).to_json()),
        (f"store/{s}/printer/printer-1/cmd/print",
         new_envelope("print", {"job": "j-1", "document": {}}).to_json()),
        (f"store/{s}/pos/lane-2/cmd/scan",
         new_envelope("scan", Scan("FORGED", "hid").forward_data("scan-1")).to_json()),
        (event_topic(s, "printer", "printer-1", "job"),
         new_envelope("job", {"job": "j-1", "state": "printed"}).to_json()),
        (event_topic(s, "scanner", "scan-1", "job"),
         new_envelope("job", {"job": "j-1", "state": "printed"}).to_json()),
    ]
    heard: list[str] = []
    handle = edge.bus.client.on_message
    edge.bus.client.on_message = lambda c, u, msg: (heard.append(msg.topic), handle(c, u, msg))
    try:
        for topic, payload in forbidden:
            publish(scanner, topic, payload)
        # A barrier: the broker passes one client's messages on in order.
        good = Scan("4006381333931", "hid", "]E0", seq=1)
        scanner.event("scan", good.to_data())
        assert lane1.next().data == good.forward_data("scan-1")
    finally:
        edge.bus.client.on_message = handle
    assert [t for t, _ in forbidden if t in heard] == []
    assert printed.empty() and lane2.empty() and lane1.empty()
    assert metric(edge, "edge_requests_total", method="coupon.apply", outcome="forbidden") == 0

    # Behind the ACL, the dispatcher's kind check: a scanner may not call POS methods.
    for method in ("coupon.apply", "identify", "txn.complete", "txn.void"):
        reply = edge.dispatcher.handle_request(
            Caller("scanner", "scan-1"), method, new_envelope(method, {"txn": "t-1"}).to_json())
        assert reply.outcome == "forbidden", method
        assert json.loads(reply.body)["error"]["code"] == "forbidden"

    # A lane may publish evt/# (its ACL), but a scan only counts from a scanner.
    publish(lane1_client, event_topic(s, "pos", "lane-1", "scan"),
            new_envelope("scan", Scan("4006381333931", "hid").to_data()).to_json())
    assert wait_until(lambda: metric(edge, "edge_scans_total", outcome="refused") == 1)
    assert lane1.empty() and lane2.empty()


# ---------------------------------------------------------------- awkward codes, the live stream

def awkward_scans() -> list[Scan]:
    binary = bytes(range(256)) * 2
    return [
        Scan(binary.decode("latin-1"), "camera", "]Q1", "QRCode", raw=binary, seq=1),
        Scan("".join(chr(0x21 + i % 94) for i in range(4096)), "camera", "]Q1", "QRCode",
             seq=2),
        Scan("AB\x00C\x1b[2J\r\n\t\x7f<script>alert(1)</script>\u202eZ", "serial", "]C0",
             seq=3),
    ]


def sse_events(response: Any) -> Iterator[tuple[str, str]]:
    """(event, data) of a streamed text/event-stream response."""
    buffer = b""
    for chunk in response.response:
        buffer += chunk if isinstance(chunk, bytes) else chunk.encode()
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.decode().split("\n")
                          if ": " in line and not line.startswith(":"))
            if "event" in fields:
                yield fields["event"], fields.get("data", "")


def test_binary_4k_and_control_character_codes_arrive_exactly(
        app: Flask, edge: EdgeService, device: DeviceFactory,
        scanners: Callable[..., DeviceClient]) -> None:
    lane = Inbox(device("pos", "lane-1"))
    scanner = scanners("scan-1", "--lane", "lane-1")
    stream = app.test_client().get("/staff/checkout/scans?lane=lane-1",
                                   headers=basic(MANAGER), buffered=False)
    assert stream.status_code == 200
    assert stream.mimetype == "text/event-stream"
    events = sse_events(stream)
    assert next(events)[0] == "ready"
    try:
        for scan in awkward_scans():
            scanner.event("scan", scan.to_data())
            got = lane.next()
            assert got.data == scan.forward_data("scan-1")
            assert parse_scan(got.data).payload == scan.payload
            assert parse_scan(got.data).code == scan.code
            event, data = next(events)
            assert event == "scan"
            assert data.isascii() and "\n" not in data  # one line, nothing raw
            assert json.loads(data) == scan.forward_data("scan-1")
    finally:
        stream.close()
    assert wait_until(lambda: metric(edge, "edge_live_scan_pages") == 0)
    assert metric(edge, "edge_live_scans_total", outcome="sent") == len(awkward_scans())


def test_the_scan_stream_is_for_signed_in_staff_of_that_lane(
        settings: Settings, app: Flask, device: DeviceFactory) -> None:
    device("pos", "lane-1")
    client = app.test_client()
    assert client.get("/staff/checkout/scans?lane=lane-1").status_code == 401
    wrong = client.get("/staff/checkout/scans?lane=lane-1",
                       headers=basic((MANAGER[0], "not-the-password")))
    assert wrong.status_code == 401
    # A cashier with HTTP Basic works at the page's own lane only (docs/operations.md §16.3).
    other = client.get("/staff/checkout/scans?lane=lane-1",
                       headers={**basic(CASHIER), "Accept": "application/json"})
    assert other.status_code == 403
    assert other.get_json()["error"]["detail"]["reason"] == "other_lane"
    unknown = client.get("/staff/checkout/scans?lane=lane-9", headers=basic(MANAGER))
    assert unknown.status_code == 404
    own = client.get("/staff/checkout/scans?lane=staff-web", headers=basic(CASHIER),
                     buffered=False)
    assert own.status_code == 200
    own.close()


def test_open_streams_are_capped_at_half_the_http_threads(app: Flask, edge: EdgeService,
                                                          device: DeviceFactory) -> None:
    device("pos", "lane-1")
    client = app.test_client()
    cap = edge.settings.http_threads // 2
    streams = [client.get("/staff/checkout/scans?lane=lane-1", headers=basic(MANAGER),
                          buffered=False) for _ in range(cap)]
    try:
        assert [s.status_code for s in streams] == [200] * cap
        busy = client.get("/staff/checkout/scans?lane=lane-1",
                          headers={**basic(MANAGER), "Accept": "application/json"})
        assert busy.status_code == 503
        assert busy.get_json()["error"]["detail"]["reason"] == "busy"
        assert metric(edge, "edge_live_scan_pages") == cap
    finally:
        for s in streams:
            s.close()
    again = client.get("/staff/checkout/scans?lane=lane-1", headers=basic(MANAGER),
                       buffered=False)
    assert again.status_code == 200
    again.close()


def test_a_page_that_does_not_keep_up_loses_scans_not_the_lane() -> None:
    from edge.metrics import Metrics
    from edge.scanfeed import QUEUE_SIZE, LiveScans

    metrics = Metrics()
    live = LiveScans(metrics, limit=2)
    slow, other = live.listen("lane-1"), live.listen("lane-2")
    assert slow is not None and other is not None
    assert live.listen("lane-1") is None  # the cap
    for n in range(QUEUE_SIZE + 3):
        live.publish("lane-1", {"seq": n + 1})
    assert metrics.registry.get_sample_value("edge_live_scans_total",
                                             {"outcome": "dropped"}) == 3
    # The oldest are kept in order; the other lane's page got none of them.
    assert [slow.next(0)["seq"] for _ in range(QUEUE_SIZE)] == list(range(1, QUEUE_SIZE + 1))
    assert slow.next(0) is None and other.next(0) is None
    live.leave(slow)
    assert live.listening("lane-1") is False and live.listen("lane-1") is not None


def test_the_lane_gets_the_scan_at_once_and_the_page_after_it_from_a_worker(
        caplog: pytest.LogCaptureFixture) -> None:
    """The router queues the lane's command itself and hands the page's copy to `later`
    (a bus worker); a full backlog costs the page its copy, never the lane."""
    from edge.metrics import Metrics
    from edge.scanners import ScanRouter

    sent: list[tuple[str, str, str]] = []
    pushed: list[str] = []
    queued: list[tuple[str, Callable[[], None]]] = []

    class Handle:
        def wait_for_publish(self, timeout: float) -> None:
            assert pushed == []  # the page's copy waits for the lane's

    class Routes:
        def query_one(self, *_args: Any) -> dict[str, Any]:
            return {"target_kind": "pos", "target": "lane-1"}

    def send(kind: str, device: str, name: str, data: dict[str, Any]) -> Handle:
        sent.append((kind, device, data["code"]))
        return Handle()

    accept = [True]
    router = ScanRouter(Routes(), Metrics(), send,  # type: ignore[arg-type]
                        lambda lane, data: pushed.append(data["code"]) or 1,
                        later=lambda key, task: accept[0] and not queued.append((key, task)))
    caller = Caller("scanner", "scan-1")
    router.on_scan_event(caller, new_envelope("scan", Scan("A1", "hid").to_data()))
    assert sent == [("pos", "lane-1", "A1")] and pushed == []
    assert [key for key, _ in queued] == ["scanner/scan-1"]
    queued.pop()[1]()
    assert pushed == ["A1"]
    accept[0] = False
    with caplog.at_level("WARNING", logger="edge.scanners"):
        router.on_scan_event(caller, new_envelope("scan", Scan("B2", "hid").to_data()))
    assert sent[-1] == ("pos", "lane-1", "B2") and pushed == ["A1"]
    assert "not shown on lane-1's page" in caplog.text and "B2" not in caplog.text


def test_a_kiosks_new_page_ends_the_stream_its_old_page_left_open() -> None:
    """A kiosk has one screen: its next page's stream takes over at once, so pages left in
    quick succession never hold the server's stream slots (and threads) until their next
    keep-alive."""
    from edge.metrics import Metrics
    from edge.scanfeed import LiveScans

    live = LiveScans(Metrics(), limit=2)
    lane = live.listen("lane-1")
    first = live.listen("kiosk/k1", only=True)
    assert lane is not None and first is not None
    assert live.listen("kiosk/k2") is None  # the cap
    second = live.listen("kiosk/k1", only=True)
    assert second is not None
    with pytest.raises(EOFError):
        first.next(5)  # at once, not after 5 s
    live.leave(first)  # its stream's end: nothing more to free
    live.publish("kiosk/k1", {"seq": 1})
    assert second.next(0) == {"seq": 1}
    assert live.listen("kiosk/k3") is None  # still two open: lane-1's and k1's newest
