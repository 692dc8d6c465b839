"""The broker enforces who may say what: passwords, and each device only on its own topics."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.app.printers import add_printer
from edge.app.service import EdgeService
from edge.broker import BrokerProcess
from edge.datadir import DataDir
from edge.settings import Settings
from pos_bridge.device import DeviceClient, DeviceError
from store_contract.mqtt import make_client, parse_mqtt_url, stop_loop
from store_contract.protocol import new_envelope
from tests.conftest import subscribed, wait_until

DeviceFactory = Callable[..., DeviceClient]


class Observer:
    """Every store message the edge itself receives, recorded from its own connection (no
    second login: a second connection with the edge's login would take the edge's over)."""

    def __init__(self, edge: EdgeService) -> None:
        self.edge = edge
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self._handle: Any = edge.bus.client.on_message
        edge.bus.client.on_message = self._on_message

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload))
        self._handle(client, userdata, msg)

    def topics(self) -> list[str]:
        with self.lock:
            return [t for t, _ in self.messages]

    def close(self) -> None:
        self.edge.bus.client.on_message = self._handle


@pytest.fixture
def observer(edge: EdgeService) -> Iterator[Observer]:
    obs = Observer(edge)
    yield obs
    obs.close()


def test_wrong_password_is_refused(settings: Settings, device: DeviceFactory,
                                   enrolled: Callable[..., Any]) -> None:
    device("pos", "lane-1")  # enrolled and working
    intruder = DeviceClient(settings.store_id, "pos", "lane-1", settings.mqtt_url, "pos-lane-1",
                            "not-the-password")
    with pytest.raises(DeviceError, match="refused"):
        intruder.connect(timeout=5)


def test_anonymous_and_unknown_users_are_refused(settings: Settings,
                                                 broker: BrokerProcess) -> None:
    a = parse_mqtt_url(settings.mqtt_url)
    for user in (None, "nobody"):
        client = make_client("anon", a, username=user, password="x" if user else None)
        refused = threading.Event()

        def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any,
                       refused: threading.Event = refused) -> None:
            if rc.is_failure:
                refused.set()

        client.on_connect = on_connect
        client.connect(a.host, a.port)
        client.loop_start()
        assert refused.wait(5), f"{user!r} was let in"
        stop_loop(client)


def _publish(client: DeviceClient, topic: str, payload: bytes) -> None:
    client.client.publish(topic, payload, qos=1).wait_for_publish(5)


def _arrived(observer: Observer, topic: str) -> None:
    """Wait until the edge has received `topic`. The broker delivers one client's messages
    to the edge in the order they were sent, so whatever that client published before it
    (and the broker let through) has arrived too: a barrier, not a sleep."""
    assert wait_until(lambda: topic in observer.topics(), 10), f"{topic} never arrived"


def test_a_device_cannot_publish_on_another_devices_topics(
        settings: Settings, device: DeviceFactory, observer: Observer) -> None:
    lane1 = device("pos", "lane-1")
    device("pos", "lane-2")
    s = settings.store_id
    assert wait_until(lambda: f"store/{s}/pos/lane-2/status" in observer.topics(), 10)
    _publish(lane1, f"store/{s}/pos/lane-2/req/ping", new_envelope("ping").to_json())
    _publish(lane1, f"store/{s}/pos/lane-2/status", b'{"state":"offline"}')
    _publish(lane1, f"store/{s}/pos/lane-1/req/ping", new_envelope("ping").to_json())
    _arrived(observer, f"store/{s}/pos/lane-1/req/ping")
    topics = observer.topics()
    assert f"store/{s}/pos/lane-1/req/ping" in topics  # its own topic works
    assert f"store/{s}/pos/lane-2/req/ping" not in topics
    assert topics.count(f"store/{s}/pos/lane-2/status") == 1  # lane-2's own birth only


def test_a_device_cannot_read_another_devices_replies(settings: Settings, device: DeviceFactory,
                                                      edge: Any) -> None:
    lane1 = device("pos", "lane-1")
    spy = device("pos", "lane-2")
    leaked: list[bytes] = []
    s = settings.store_id
    spy.client.message_callback_add(f"store/{s}/pos/lane-1/res", lambda _c, _u, m:
                                    leaked.append(m.payload))
    # Mosquitto grants the subscription (its SUBACK says so) and then delivers nothing on it.
    assert not subscribed(spy.client, f"store/{s}/pos/lane-1/res")[0].is_failure
    # Positive control: a subscription the spy may have receives the edge's replies.
    own: list[bytes] = []
    spy.client.message_callback_add(f"store/{s}/pos/lane-2/res/spy", lambda _c, _u, m:
                                    own.append(m.payload))
    assert not subscribed(spy.client, f"store/{s}/pos/lane-2/res/spy")[0].is_failure
    assert lane1.request("ping")["ok"]
    # The edge answers the spy after lane-1, on one connection, so the broker delivers in
    # that order: once the spy has its own reply, a leaked one would already be here.
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = f"store/{s}/pos/lane-2/res/spy"
    spy.client.publish(f"store/{s}/pos/lane-2/req/ping", new_envelope("ping").to_json(),
                       qos=1, properties=props)
    assert wait_until(lambda: own, 10), "the spy's own reply never came: the test proves nothing"
    assert leaked == []


def test_a_kiosk_cannot_call_a_pos_method(settings: Settings, device: DeviceFactory,
                                          observer: Observer) -> None:
    kiosk = device("kiosk", "kiosk-1")
    s = settings.store_id
    apply = new_envelope("coupon.apply", {"txn": "t1", "code": "SAVE10"}).to_json()
    _publish(kiosk, f"store/{s}/pos/kiosk-1/req/coupon.apply", apply)
    _publish(kiosk, f"store/{s}/kiosk/kiosk-1/req/coupon.apply", apply)
    _publish(kiosk, f"store/{s}/kiosk/kiosk-1/req/ping", new_envelope("ping").to_json())
    _arrived(observer, f"store/{s}/kiosk/kiosk-1/req/ping")
    topics = observer.topics()
    assert f"store/{s}/kiosk/kiosk-1/req/ping" in topics
    assert not [t for t in topics if t.endswith("/req/coupon.apply")]


def test_a_scanner_cannot_send_print_commands(settings: Settings, device: DeviceFactory,
                                              observer: Observer) -> None:
    printer = device("printer", "printer-1")
    scanner = device("scanner", "scanner-1")
    jobs: list[Any] = []
    printer.command_handlers["print"] = jobs.append
    s = settings.store_id
    forged = new_envelope("print", {"job": "x", "document": {}}).to_json()
    _publish(scanner, f"store/{s}/printer/printer-1/cmd/print", forged)
    _publish(scanner, f"store/{s}/scanner/scanner-1/cmd/print", forged)
    # The edge's own login may: the printer really is listening. The broker routed the
    # scanner's messages before it acknowledged them, so they would come first.
    legit = new_envelope("print", {"job": "legit", "document": {}}).to_json()
    observer.edge.bus.client.publish(f"store/{s}/printer/printer-1/cmd/print", legit, qos=1)
    assert wait_until(lambda: jobs, 5)
    assert len(jobs) == 1 and "legit" in repr(jobs[0]), jobs


def test_broker_files_and_secrets_are_private(datadir: DataDir, device: DeviceFactory) -> None:
    device("pos", "lane-1")
    for path in [datadir.mosquitto / "passwd", datadir.mosquitto / "acl",
                 datadir.secrets / "mqtt-edge.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(datadir.secrets.stat().st_mode) == 0o700
    line = [ln for ln in (datadir.mosquitto / "passwd").read_text().splitlines()
            if ln.startswith("pos-lane-1:")][0]
    assert line.split(":", 1)[1].startswith("$7$101$")


# ---------------------------------------------------------------- client ids are logins


class Hijacker:
    """Someone with a kiosk's password connecting over and over with another client's id,
    each time as soon as the previous connection is gone (a reconnect loop)."""

    def __init__(self, settings: Settings, username: str, password: str, client_id: str) -> None:
        self.address = parse_mqtt_url(settings.mqtt_url)
        self.args = (username, password, client_id)
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="hijacker")

    def _loop(self) -> None:
        username, password, client_id = self.args
        while not self.stop.is_set():
            client = make_client(client_id, self.address, username=username, password=password)
            connected = threading.Event()

            def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any,
                           connected: threading.Event = connected) -> None:
                if not rc.is_failure:
                    connected.set()

            client.on_connect = on_connect
            try:
                client.connect(self.address.host, self.address.port, keepalive=5)
            except OSError:
                continue
            client.loop_start()
            if connected.wait(2):
                self.accepted += 1
            time.sleep(0.2)
            client.disconnect()
            stop_loop(client)

    def __enter__(self) -> Hijacker:
        self.thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stop.set()
        self.thread.join(10)


def _count_disconnects(client: DeviceClient) -> list[int]:
    count = [0]
    original: Any = client.client.on_disconnect

    def on_disconnect(*args: Any) -> None:
        count[0] += 1
        original(*args)

    client.client.on_disconnect = on_disconnect
    return count


@pytest.mark.parametrize("target", ["edge", "lane"])
def test_a_kiosks_login_cannot_take_over_the_edges_or_a_lanes_connection(
        settings: Settings, edge: EdgeService, device: DeviceFactory,
        enrolled: Callable[..., Any], target: str) -> None:
    lane = device("pos", "lane-1")
    lane_drops = _count_disconnects(lane)
    kiosk = enrolled("kiosk", "kiosk-1")
    client_id = f"edge-{settings.store_id}" if target == "edge" else "pos-lane-1"
    connects = edge.metrics.bus_connects._value.get()
    replies = 0
    with Hijacker(settings, kiosk.username, kiosk.password, client_id) as hijacker:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            assert edge.bus.connected.is_set(), "the edge lost its connection"
            assert lane.connected.is_set(), "the lane lost its connection"
            # A POS request from the lane still gets the edge's reply, at once.
            reply = lane.request("ping", timeout=2)
            assert reply["ok"], reply
            replies += 1
            time.sleep(0.1)
    assert hijacker.accepted >= 5, "the kiosk's login never got in: the test tested nothing"
    assert edge.metrics.bus_connects._value.get() == connects, "the edge had to reconnect"
    assert lane_drops == [0], "the lane was disconnected"
    assert edge.bus.connected.is_set() and lane.connected.is_set()
    assert replies >= 10


def test_a_hosted_printer_has_its_own_login_not_the_edges(
        settings: Settings, edge: EdgeService, datadir: DataDir,
        virtual_printer: Callable[[str], Any]) -> None:
    vp = virtual_printer("TM-T20II")
    connects = edge.metrics.bus_connects._value.get()
    _, enrolment = add_printer(settings, datadir, edge.store, "printer-1", lanes=["lane-1"],
                               connection=vp.address, profile="TM-T20II")
    assert enrolment is None  # nobody else is told the password of a printer the edge serves
    secret = datadir.hosted_printer_secret("printer-1")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "printer-printer-1:" in (datadir.mosquitto / "passwd").read_text()
    edge.printers.refresh()
    assert wait_until(lambda: (edge.printers.services.get("printer-1") or (0, None))[1]
                      is not None
                      and edge.printers.services["printer-1"][1].device.connected.is_set(), 15)
    service = edge.printers.services["printer-1"][1]
    assert service.device.client._username == b"printer-printer-1"
    assert wait_until(lambda: (edge.store.query_one(
        "SELECT state FROM devices WHERE id = 'printer-1'") or {}).get("state") == "online", 5)
    # No wait needed: a take-over would have cut the edge off when the printer logged in,
    # before the printer could publish its status, so the edge could only have seen the
    # status (device online, above) after reconnecting, which bus_connects counts.
    assert edge.bus.connected.is_set()
    assert edge.metrics.bus_connects._value.get() == connects
    assert service.device.connected.is_set()
    # Served by its own process from now on: a new password, printed; the edge's copy goes.
    _, enrolment = add_printer(settings, datadir, edge.store, "printer-1", lanes=["lane-1"],
                               connection=None, profile="TM-T20II")
    assert enrolment is not None and enrolment.username == "printer-printer-1"
    assert not secret.exists()


def test_a_hosted_printer_without_a_kept_password_gets_a_new_login(
        settings: Settings, edge: EdgeService, datadir: DataDir,
        virtual_printer: Callable[[str], Any]) -> None:
    """As after an upgrade: the printer was enrolled (its password printed, not kept) and the
    edge served it with its own login. Now the edge makes the printer a login it keeps."""
    vp = virtual_printer("TM-T20II")
    add_printer(settings, datadir, edge.store, "printer-1", lanes=["lane-1"],
                connection=None, profile="TM-T20II")
    with edge.store.transaction() as db:
        db.conn.execute("UPDATE printers SET connection = ? WHERE id = 'printer-1'",
                        (vp.address,))
    secret = datadir.hosted_printer_secret("printer-1")
    assert not secret.exists()
    before = (datadir.mosquitto / "passwd").read_text()
    edge.printers.refresh()
    assert secret.exists() and (datadir.mosquitto / "passwd").read_text() != before
    assert wait_until(lambda: (edge.printers.services.get("printer-1") or (0, None))[1]
                      is not None
                      and edge.printers.services["printer-1"][1].device.connected.is_set(), 15)
    assert edge.bus.connected.is_set()
