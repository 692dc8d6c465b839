"""Scan routing latency: a scanner's `evt/scan` to the lane's `cmd/scan` and to the staff
checkout page's live stream, beside a bare MQTT echo through the same broker.

What runs, all on 127.0.0.1 in a temporary data dir that is removed at the end:

* the store's Mosquitto (`edge.broker.BrokerProcess`) with its password file and ACL; lane
  `lane-1` (a `pos` device) and scanner `scan-1` assigned to it (`edge.scanners.add_scanner`,
  what `edge scanners add scan-1 --lane lane-1` does), and a manager account;
* `edge serve` as its own process, as a store box runs it (`bench/rig.py`);
* a relay, a process of its own as the edge is: a plain paho client (`bench-relay` login)
  passing each message on `store/bench/bench/relay/in` on to `.../relay/out` at QoS 1;
* the lane (`pos_bridge.device.DeviceClient` with its own login) in a process of its own,
  as a till is, and an HTTP client reading `GET /staff/checkout/scans?lane=lane-1`
  (server-sent events) with the manager's HTTP Basic login, as the cashier's page does, in
  another: each tells this process when a scan reached it (`time.perf_counter()`, the
  system's monotonic clock, the same in every process);
* in this process, each with its own paho network thread: the scanner
  (`DeviceClient`, its own login) and the echo (a plain paho client with a `bench-self`
  login of its own that may read and write only `store/bench/bench/#`, topics the edge
  does not subscribe to).

Each turn sends one echo (QoS 1 to the echo's own topic; the time until the broker hands it
back), one relayed echo (to the relay; the time until the relay's copy comes back: two
broker crossings and another process, as a routed scan makes) and one scan
(its envelope built beforehand, as the echoes' payloads are, and published at QoS 1; the
time until the lane's `cmd/scan` arrives, and until the page's `event: scan` arrives), one
at a time, `--interval-ms` apart (under the edge's per-device event rate,
`device_event_rate`), after `--warmup` turns not counted. Times are `time.perf_counter()`
from just before `publish()` to the receiving callback.

Target: scan -> lane p99 <= 2x the echo's p99 (the scan crosses the broker twice and the
edge once; the echo crosses the broker once; the relayed echo is the floor of the scan's
path without the edge's work). The figures are printed for people, then the
last line is the same figures as one JSON object.

    .venv/bin/python bench/scan_route.py [--scans 300] [--warmup 30] [--interval-ms 60]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from rig import (
    STORE,
    bench_settings,
    child,
    exit_on_sigterm,
    json_ms,
    percentile,
    report,
    serve_until_told,
    start_broker,
    start_edge,
    verdict,
)

from edge.accounts import add_user
from edge.broker import hash_password, reload_broker
from edge.datadir import DataDir, write_private
from edge.devices import enrol
from edge.scanners import Target, add_scanner
from edge.store import Store
from pos_bridge.device import DeviceClient
from store_contract.mqtt import BrokerAddress, make_client, parse_mqtt_url
from store_contract.protocol import event_topic, new_envelope
from store_contract.scans import Scan

P99_FACTOR = 2.0
SELF_USER = "bench-self"
RELAY_USER = "bench-relay"
SELF_TOPIC = f"store/{STORE}/bench/self/echo"
RELAY_IN = f"store/{STORE}/bench/relay/in"
RELAY_OUT = f"store/{STORE}/bench/relay/out"
MANAGER = ("bench-manager", "bench-manager-password-1")
WAIT_S = 5.0  # a scan or echo not back within this is counted lost


def add_bench_logins(datadir: DataDir) -> str:
    """The echo's and the relay's logins (one password), added to the rendered passwd and
    acl (the broker reloads them): read and write `store/bench/bench/#` only."""
    password = secrets.token_urlsafe(18)
    folder = datadir.mosquitto
    passwd = (folder / "passwd").read_text().rstrip("\n")
    acl = (folder / "acl").read_text()
    for user in (SELF_USER, RELAY_USER):
        passwd += f"\n{user}:{hash_password(password)}"
        acl += f"\n# {user}\nuser {user}\ntopic readwrite store/{STORE}/bench/#\n"
    write_private(folder / "passwd", passwd + "\n", replace=True)
    write_private(folder / "acl", acl, replace=True)
    reload_broker(datadir)
    time.sleep(0.3)  # the broker re-reads passwd and acl
    return password


class Arrivals:
    """When each numbered message came back, by number."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.cond = threading.Condition()

    def note(self, n: int, now: float | None = None) -> None:
        """`n` came back `now` (`time.perf_counter()`: one clock for every process here)."""
        now = time.perf_counter() if now is None else now
        with self.cond:
            self.at.setdefault(n, now)
            self.cond.notify_all()

    def wait(self, n: int, timeout: float) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: n in self.at, timeout)
            return self.at.get(n)


class Echo:
    """A plain paho client that publishes to its own topic and hears it back (`arrivals`),
    and, for the relayed echo, publishes to the relay and hears the relay's copy
    (`relayed`)."""

    def __init__(self, address: BrokerAddress, password: str) -> None:
        self.arrivals = Arrivals()
        self.relayed = Arrivals()
        self.ready = threading.Event()
        self.client = make_client(SELF_USER, address, username=SELF_USER, password=password)
        self.client.on_connect = lambda c, *_: c.subscribe([(SELF_TOPIC, 1), (RELAY_OUT, 1)])
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(address.host, address.port, keepalive=60)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise RuntimeError("the echo client did not subscribe")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        n = json.loads(msg.payload)["n"]
        (self.arrivals if msg.topic == SELF_TOPIC else self.relayed).note(n)

    def send(self, payload: bytes, topic: str = SELF_TOPIC) -> None:
        self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def relay_main(conn: Any, address: BrokerAddress, password: str) -> None:
    """The relay, a process of its own as the edge is: a plain paho client (`loop_forever`)
    that passes each message on `RELAY_IN` on to `RELAY_OUT` at QoS 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    client = make_client(RELAY_USER, address, username=RELAY_USER, password=password)
    client.on_connect = lambda c, *_: c.subscribe(RELAY_IN, qos=1)
    client.on_message = lambda c, _u, msg: c.publish(RELAY_OUT, msg.payload, qos=1)
    serve_until_told(client, conn, address)


def lane_main(conn: Any, mqtt_url: str, username: str, password: str) -> None:
    """The lane, a process of its own as a till is: tells the parent when each `cmd/scan`
    arrives ("at", seq, perf_counter)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lane = DeviceClient(STORE, "pos", "lane-1", mqtt_url, username, password)
    lane.command_handlers["scan"] = lambda envelope: conn.send(
        ("at", int(envelope.data["seq"]), time.perf_counter()))
    lane.connect()
    conn.send(("ready", 1))
    with contextlib.suppress(EOFError, OSError):
        conn.recv()
    lane.close()


def page_main(conn: Any, http_port: int, lane: str) -> None:
    """The staff checkout page's stream, in a process of its own as the cashier's browser
    is: tells the parent when each `event: scan` arrives ("at", seq, perf_counter)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    page = PageStream(http_port, lane, lambda n: conn.send(("at", n, time.perf_counter())))
    conn.send(("ready", 1))
    with contextlib.suppress(EOFError, OSError):
        conn.recv()
    page.close()


def collect(helper: Any, arrivals: Arrivals) -> None:
    """Note the arrival times a helper process reports, in a thread of our own."""
    def run() -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                msg = helper.conn.recv()
                if msg[0] == "at":
                    arrivals.note(msg[1], msg[2])

    threading.Thread(target=run, name=f"collect-{helper.proc.name}", daemon=True).start()


class PageStream:
    """The staff checkout page's live stream, read in a thread of its own. The edge ends a
    stream after a minute; like the page's EventSource, this opens it again at once."""

    def __init__(self, http_port: int, lane: str, arrived: Callable[[int], None]) -> None:
        self.arrived = arrived
        self.ready = threading.Event()
        self.http_port, self.lane = http_port, lane
        self.closed = False
        self.conn: http.client.HTTPConnection | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="page-stream")
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("the scan stream sent no ready event")

    def _run(self) -> None:
        token = base64.b64encode(f"{MANAGER[0]}:{MANAGER[1]}".encode()).decode()
        while not self.closed:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=120)
            with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                self.conn.request("GET", f"/staff/checkout/scans?lane={self.lane}",
                                  headers={"Authorization": f"Basic {token}",
                                           "Accept": "text/event-stream"})
                response = self.conn.getresponse()
                if response.status != 200:
                    raise RuntimeError(f"the scan stream answered {response.status}")
                self._read(response)
            self.conn.close()

    def _read(self, response: http.client.HTTPResponse) -> None:
        event = None
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "ready":
                self.ready.set()
            elif line.startswith("data: ") and event == "scan":
                self.arrived(int(json.loads(line[6:])["seq"]))

    def close(self) -> None:
        self.closed = True
        if self.conn is not None:
            self.conn.close()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp, \
            contextlib.ExitStack() as stack:
        settings = bench_settings(Path(tmp) / "data")
        datadir = DataDir(settings.data_path).ensure()
        store = Store(datadir.database)
        lane_login = enrol(settings, datadir, store, "pos", "lane-1")
        _, scanner_login = add_scanner(settings, datadir, store, "scan-1",
                                       Target("pos", "lane-1"))
        add_user(store, *MANAGER, "manager")
        store.close()
        start_broker(stack, settings, datadir, Store(datadir.database))
        log_path = Path(tmp) / "edge.log"
        start_edge(stack, settings, log_path)
        password = add_bench_logins(datadir)
        address = parse_mqtt_url(settings.mqtt_url)
        relay = stack.enter_context(child(relay_main, "relay", address, password))
        relay.expect("ready", 20)
        echo = Echo(address, password)
        stack.callback(echo.close)

        # The lane and the page each in a process of their own, as a till and the cashier's
        # browser are: in this one they would compete with the scanner and the echoes for
        # one interpreter.
        lane_arrivals, page_arrivals = Arrivals(), Arrivals()
        lane = stack.enter_context(child(lane_main, "lane", settings.mqtt_url,
                                         lane_login.username, lane_login.password))
        lane.expect("ready", 20)
        collect(lane, lane_arrivals)
        scanner = DeviceClient(STORE, "scanner", "scan-1", settings.mqtt_url,
                               scanner_login.username, scanner_login.password)
        scanner.connect()
        stack.callback(scanner.close)
        page = stack.enter_context(child(page_main, "page", settings.http_port, "lane-1"))
        page.expect("ready", 20)
        collect(page, page_arrivals)

        echo_ms: list[float] = []
        relay_ms: list[float] = []
        lane_ms: list[float] = []
        page_ms: list[float] = []
        lost = {"echo": 0, "relay": 0, "lane": 0, "page": 0}
        # A member-code-sized QR: what a lane's scanner most often reads.
        code = "M1." + secrets.token_urlsafe(90)
        scan_topic = event_topic(STORE, "scanner", "scan-1", "scan")
        for n in range(1, args.warmup + args.scans + 1):
            counted = n > args.warmup
            payload = json.dumps({"n": n, "code": code}).encode()
            for name, topic, arrivals, into in (
                    ("echo", SELF_TOPIC, echo.arrivals, echo_ms),
                    ("relay", RELAY_IN, echo.relayed, relay_ms)):
                sent = time.perf_counter()
                echo.send(payload, topic)
                back = arrivals.wait(n, WAIT_S)
                if counted:
                    if back is None:
                        lost[name] += 1
                    else:
                        into.append((back - sent) * 1000)
                time.sleep(args.interval_ms / 3000)
            # Built before the clock starts, as the echoes' payloads are: what is timed is
            # the way from the scanner's publish() to the lane, not the scanner's own work.
            body = new_envelope("scan", Scan(code, "camera", "]Q1", "QRCode",
                                             seq=n).to_data()).to_json()
            sent = time.perf_counter()
            scanner.client.publish(scan_topic, body, qos=1)
            at_lane = lane_arrivals.wait(n, WAIT_S)
            at_page = page_arrivals.wait(n, WAIT_S)
            if counted:
                for name, at, into in (("lane", at_lane, lane_ms), ("page", at_page, page_ms)):
                    if at is None:
                        lost[name] += 1
                    else:
                        into.append((at - sent) * 1000)
            time.sleep(args.interval_ms / 3000)
        return {"echo": sorted(echo_ms), "relay": sorted(relay_ms), "lane": sorted(lane_ms),
                "page": sorted(page_ms), "lost": lost,
                "edge_log": log_path.read_text(errors="replace")}


def figures_of(args: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "scan_route", "scans": args.scans,
                              "interval_ms": args.interval_ms, "cpus": os.cpu_count()}
    for name in ("echo", "relay", "lane", "page"):
        values = out[name]
        result[f"{name}_p50_ms"] = json_ms(percentile(values, 50))
        result[f"{name}_p99_ms"] = json_ms(percentile(values, 99))
        result[f"{name}_max_ms"] = json_ms(values[-1]) if values else None
        result[f"{name}_n"] = len(values)
        result[f"{name}_lost"] = out["lost"][name]
    echo_p99, lane_p99 = result["echo_p99_ms"], result["lane_p99_ms"]
    result["lane_p99_over_echo_p99"] = round(lane_p99 / echo_p99, 2) \
        if echo_p99 and lane_p99 is not None else None
    result["target_lane_p99_le_2x_echo"] = bool(
        lane_p99 is not None and echo_p99 and lane_p99 <= P99_FACTOR * echo_p99
        and out["lost"]["lane"] == 0)
    return result


def print_human(args: argparse.Namespace, result: dict[str, Any]) -> None:
    print(f"scan_route: {args.scans} scans (after {args.warmup} not counted), one at a time "
          f"{args.interval_ms} ms apart, each beside one bare MQTT QoS 1 echo and one "
          f"relayed echo; "
          f"{os.cpu_count()} CPUs")
    print()
    print(f"{'path':<44} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'n':>5} {'lost':>4}")
    rows = (("echo", "echo: a client to itself through the broker"),
            ("relay", "relayed echo: via a paho relay process"),
            ("lane", "scan -> lane (cmd/scan at the lane's client)"),
            ("page", "scan -> staff page (SSE event at the client)"))
    for key, label in rows:
        def ms(v: float | None) -> str:
            return f"{v:>7.3f}" if v is not None else f"{'-':>7}"

        print(f"{label:<44} {ms(result[f'{key}_p50_ms'])} {ms(result[f'{key}_p99_ms'])} "
              f"{ms(result[f'{key}_max_ms'])} {result[f'{key}_n']:>5} {result[f'{key}_lost']:>4}")
    print()
    print("(the scan crosses the broker twice, as the relayed echo does; the echo once)")
    print(f"target: scan -> lane p99 <= {P99_FACTOR:g}x echo p99: "
          f"{result['lane_p99_over_echo_p99']}x, "
          f"{verdict(result['target_lane_p99_le_2x_echo'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=300, help="scans measured")
    parser.add_argument("--warmup", type=int, default=30, help="scans sent first, not counted")
    parser.add_argument("--interval-ms", type=float, default=60.0,
                        help="time between two scans (stay under device_event_rate, 20/s)")
    args = parser.parse_args(argv)
    if args.scans < 1 or args.warmup < 0 or args.interval_ms < 0:
        parser.error("--scans must be positive, --warmup and --interval-ms not negative")
    signal.signal(signal.SIGTERM, exit_on_sigterm)  # so the broker and edge are stopped too
    out = measure(args)
    result = figures_of(args, out)
    print_human(args, result)
    report(result, {"": out["edge_log"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
