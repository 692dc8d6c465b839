"""The broker enforces who may say what: passwords, and each device only on its own topics."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.broker import BrokerProcess
from edge.datadir import DataDir
from edge.mqtt import make_client, parse_mqtt_url
from edge.protocol import new_envelope
from edge.settings import Settings
from pos_bridge.device import DeviceClient, DeviceError
from tests.conftest import wait_until

DeviceFactory = Callable[..., DeviceClient]


class Observer:
    """A client with the edge's own login, recording every message in the store."""

    def __init__(self, settings: Settings, datadir: DataDir) -> None:
        creds = datadir.edge_mqtt_credentials()
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = make_client("observer", parse_mqtt_url(settings.mqtt_url),
                                  username=creds["username"], password=creds["password"])
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(*self._hostport(settings))
        self.client.loop_start()
        self.client.subscribe(f"store/{settings.store_id}/#", qos=1)
        assert subscribed.wait(5)

    @staticmethod
    def _hostport(settings: Settings) -> tuple[str, int]:
        a = parse_mqtt_url(settings.mqtt_url)
        return a.host, a.port

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def topics(self) -> list[str]:
        with self.lock:
            return [t for t, _ in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def observer(settings: Settings, datadir: DataDir, broker: BrokerProcess) -> Iterator[Observer]:
    obs = Observer(settings, datadir)
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
        client.loop_stop()


def _publish_and_settle(client: DeviceClient, topic: str, payload: bytes) -> None:
    client.client.publish(topic, payload, qos=1).wait_for_publish(5)
    time.sleep(0.3)


def test_a_device_cannot_publish_on_another_devices_topics(
        settings: Settings, device: DeviceFactory, observer: Observer) -> None:
    lane1 = device("pos", "lane-1")
    device("pos", "lane-2")
    s = settings.store_id
    _publish_and_settle(lane1, f"store/{s}/pos/lane-2/req/ping", new_envelope("ping").to_json())
    _publish_and_settle(lane1, f"store/{s}/pos/lane-2/status", b'{"state":"offline"}')
    _publish_and_settle(lane1, f"store/{s}/pos/lane-1/req/ping", new_envelope("ping").to_json())
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
    spy.client.subscribe(f"store/{s}/pos/lane-1/res", qos=1)
    time.sleep(0.3)
    assert lane1.request("ping")["ok"]
    time.sleep(0.3)
    assert leaked == []


def test_a_kiosk_cannot_call_a_pos_method(settings: Settings, device: DeviceFactory,
                                          observer: Observer) -> None:
    kiosk = device("kiosk", "kiosk-1")
    s = settings.store_id
    apply = new_envelope("coupon.apply", {"txn": "t1", "code": "SAVE10"}).to_json()
    _publish_and_settle(kiosk, f"store/{s}/pos/kiosk-1/req/coupon.apply", apply)
    _publish_and_settle(kiosk, f"store/{s}/kiosk/kiosk-1/req/coupon.apply", apply)
    _publish_and_settle(kiosk, f"store/{s}/kiosk/kiosk-1/req/ping", new_envelope("ping").to_json())
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
    _publish_and_settle(scanner, f"store/{s}/printer/printer-1/cmd/print", forged)
    _publish_and_settle(scanner, f"store/{s}/scanner/scanner-1/cmd/print", forged)
    assert jobs == []
    # The edge's own login may: the printer really is listening.
    observer.client.publish(f"store/{s}/printer/printer-1/cmd/print", forged, qos=1)
    assert wait_until(lambda: jobs, 5)


def test_broker_files_and_secrets_are_private(datadir: DataDir, device: DeviceFactory) -> None:
    device("pos", "lane-1")
    for path in [datadir.mosquitto / "passwd", datadir.mosquitto / "acl",
                 datadir.secrets / "mqtt-edge.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(datadir.secrets.stat().st_mode) == 0o700
    line = [ln for ln in (datadir.mosquitto / "passwd").read_text().splitlines()
            if ln.startswith("pos-lane-1:")][0]
    assert line.split(":", 1)[1].startswith("$7$101$")
