"""Device presence: birth, clean goodbye, Last Will on a dead device or a silent link, restarts."""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edge.app.service import EdgeService
from edge.broker import BrokerProcess
from edge.devices import Enrolment, list_devices
from edge.settings import Settings
from pos_bridge.device import DeviceClient, DeviceError
from store_contract.mqtt import make_client, parse_mqtt_url, stop_loop
from tests.conftest import free_port, wait_until

DeviceFactory = Callable[..., DeviceClient]


def state_of(edge: EdgeService, kind: str, device_id: str) -> str:
    for row in list_devices(edge.store):
        if (row["kind"], row["id"]) == (kind, device_id):
            return str(row["state"])
    return "missing"


def test_device_is_online_after_connecting_and_offline_after_a_clean_goodbye(
        edge: EdgeService, device: DeviceFactory) -> None:
    printer = device("printer", "printer-1", model="TM-T20III")
    assert wait_until(lambda: state_of(edge, "printer", "printer-1") == "online", 5)
    row = [r for r in list_devices(edge.store) if r["id"] == "printer-1"][0]
    assert row["status"]["model"] == "TM-T20III" and row["last_seen"]
    printer.set_status(paper="near_end")
    assert wait_until(lambda: [r for r in list_devices(edge.store)
                               if r["id"] == "printer-1"][0]["status"].get("paper") == "near_end")
    printer.close()
    assert wait_until(lambda: state_of(edge, "printer", "printer-1") == "offline", 5)
    row = [r for r in list_devices(edge.store) if r["id"] == "printer-1"][0]
    assert row["status"]["model"] == "TM-T20III", "going offline must not forget the device"


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_devices_that_come_and_go_leave_no_descriptors_behind(
        settings: Settings, broker: BrokerProcess,
        enrolled: Callable[..., Enrolment]) -> None:
    """paho opens a socket pair at every loop_start and leaves it to the garbage collector:
    a till that reconnects all day, or a refused one that keeps trying, must not leak."""
    cred = enrolled("pos", "lane-4")
    gc.collect()
    before = open_descriptors()
    for _ in range(5):
        DeviceClient(settings.store_id, "pos", "lane-4", settings.mqtt_url, cred.username,
                     cred.password).connect(timeout=5).close()
        refused = DeviceClient(settings.store_id, "pos", "lane-4", settings.mqtt_url,
                               cred.username, "wrong")
        with pytest.raises(DeviceError, match="refused"):
            refused.connect(timeout=5)
    # Without a collection: closed means closed now, not when a cycle is finally broken.
    assert open_descriptors() == before


DEVICE_SCRIPT = """
import sys, time
from pos_bridge.device import DeviceClient
store, url, user, pw, keepalive = sys.argv[1:6]
DeviceClient(store, "pos", "lane-9", url, user, pw, keepalive=int(keepalive)).connect()
print("up", flush=True)
time.sleep(600)
"""


@pytest.fixture
def spawn_device(settings: Settings) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Run a lane in its own process, so that it can be SIGKILLed like a crashed till."""
    procs: list[subprocess.Popen[str]] = []

    def _spawn(cred: Enrolment, url: str, keepalive: int = 30) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", DEVICE_SCRIPT, settings.store_id, url,
                                 cred.username, cred.password, str(keepalive)],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        return proc

    yield _spawn
    for proc in procs:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_device_killed_without_disconnect_shows_offline_through_its_last_will(
        edge: EdgeService, settings: Settings, enrolled: Callable[..., Enrolment],
        spawn_device: Callable[..., subprocess.Popen[str]]) -> None:
    proc = spawn_device(enrolled("pos", "lane-9"), settings.mqtt_url)
    assert wait_until(lambda: state_of(edge, "pos", "lane-9") == "online", 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_until(lambda: state_of(edge, "pos", "lane-9") == "offline", 5)


class FreezableProxy:
    """A TCP relay that can go silent without closing, like a pulled cable or a dead switch."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = target_port
        self.frozen = threading.Event()
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        pair = {a: b, b: a}
        while True:
            try:
                ready, _, _ = select.select([a, b], [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if not self.frozen.is_set():
                        pair[sock].sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.server.close()
        for s in self.sockets:
            s.close()


@pytest.fixture
def proxy(settings: Settings, broker: BrokerProcess) -> Iterator[FreezableProxy]:
    p = FreezableProxy(parse_mqtt_url(settings.mqtt_url).port)
    yield p
    p.close()


def test_silent_connection_shows_offline_within_one_and_a_half_keepalives(
        edge: EdgeService, settings: Settings, enrolled: Callable[..., Enrolment],
        proxy: FreezableProxy, spawn_device: Callable[..., subprocess.Popen[str]]) -> None:
    keepalive = 6
    spawn_device(enrolled("pos", "lane-9"), f"mqtt://127.0.0.1:{proxy.port}", keepalive=keepalive)
    assert wait_until(lambda: state_of(edge, "pos", "lane-9") == "online", 5)
    time.sleep(0.5)
    proxy.frozen.set()
    cut = time.monotonic()
    assert wait_until(lambda: state_of(edge, "pos", "lane-9") == "offline", 15)
    took = time.monotonic() - cut
    # Mosquitto 2.0 compares keep-alives in whole seconds and checks them once a second,
    # which puts its Will up to ~2 s after 1.5x; 3 s leaves room for a busy test machine.
    assert took <= 1.5 * keepalive + 3, f"offline only after {took:.1f} s"


def _retained_edge_status(settings: Settings, login: Enrolment) -> dict[str, Any]:
    """The edge's retained status as a device sees it (with a device's own login: one with
    the edge's login would take the edge's connection over)."""
    a = parse_mqtt_url(settings.mqtt_url)
    got: list[dict[str, Any]] = []
    client = make_client("probe", a, username=login.username, password=login.password)
    client.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    client.on_connect = lambda c, *_: c.subscribe(f"store/{settings.store_id}/edge/status", 1)
    client.connect(a.host, a.port)
    client.loop_start()
    try:
        assert wait_until(lambda: got, 5), "no retained edge status"
        return got[0]
    finally:
        client.disconnect()
        stop_loop(client)


def test_broker_restart_edge_reconnects_resubscribes_and_presence_is_right(
        edge: EdgeService, settings: Settings, broker: BrokerProcess,
        device: DeviceFactory, enrolled: Callable[..., Enrolment]) -> None:
    lane = device("pos", "lane-1")
    printer = device("printer", "printer-1")
    assert wait_until(lambda: state_of(edge, "printer", "printer-1") == "online", 5)
    connects = edge.metrics.bus_connects._value.get()
    broker.stop()
    assert wait_until(lambda: not edge.bus.connected.is_set(), 5)
    # While the broker is away the printer goes away for good.
    stop_loop(printer.client)
    printer.client.on_connect = None
    broker.start()
    assert wait_until(lambda: edge.bus.connected.is_set(), 30), "edge did not reconnect"
    assert edge.metrics.bus_connects._value.get() == connects + 1
    assert wait_until(lambda: lane.connected.is_set(), 30)
    assert lane.request("ping", timeout=5)["ok"], "edge did not re-subscribe"
    status = _retained_edge_status(settings, enrolled("kiosk", "kiosk-probe"))
    assert status["state"] == "online"
    assert state_of(edge, "pos", "lane-1") == "online"


def test_edge_restart_learns_presence_from_retained_status(
        settings: Settings, broker: BrokerProcess, device: DeviceFactory) -> None:
    first = EdgeService(settings)
    first.start()
    assert first.bus.wait_connected(10)
    lane = device("pos", "lane-1")
    assert wait_until(lambda: state_of(first, "pos", "lane-1") == "online", 5)
    first.stop()
    lane.close()  # goes offline while no edge is listening
    second = EdgeService(settings)
    second.start()
    try:
        assert second.bus.wait_connected(10)
        assert wait_until(lambda: state_of(second, "pos", "lane-1") == "offline", 5)
    finally:
        second.stop()
