"""Round trip of the edge's `ping` through the real broker, beside a bare paho echo as the floor.

What runs, all on 127.0.0.1 in a temporary data dir that is removed at the end:

* the store's Mosquitto (`edge.broker.BrokerProcess`) with its password file and ACL, and
  `--lanes` enrolled `pos` lanes;
* `edge serve` as its own process, as a store box runs it; its VmRSS is read from
  /proc/PID/status once /healthz reports the broker connected;
* an echo responder in its own process: one plain paho client (`loop_forever`, the edge's
  broker login) subscribed to `store/{s}/pos/+/evt/bench/echo` that republishes each payload
  at QoS 1 to the request's MQTT 5 Response Topic with its Correlation Data. The edge
  subscribes to `evt/+` only, so it never sees these two-level event topics;
* `--procs` load processes driving the lanes (round robin), each lane one paho client with
  its own login. Each load process drives all of its clients from one thread (select, then
  `loop_read`/`loop_write`), so no client waits for another's network thread.

Every lane sends the same ping envelope at QoS 1 with Response Topic
`store/{s}/pos/{id}/res/rtt` and a Correlation Data counter, to `req/ping` (the edge) or to
`evt/bench/echo` (the echo); only the topic and the responder differ. The round trip is
`time.perf_counter()` from just before `publish()` to the reply's `on_message`.

Each load runs against the echo and against the edge in turns: its `--seconds` are cut into
`--rounds` slices per responder, ordered echo, edge, edge, echo, ... so that drift and other
work on the machine fall on both alike; each slice starts with `--warmup` s not counted.

* (a) one lane, back to back: the next request goes when the reply arrives;
* (b) `--lanes` lanes at `--rate` requests/s each, open loop on a fixed schedule with a random
  start offset per lane (a late reply never delays the next request);
* (c) `--lanes` lanes as fast as replies come (closed loop, one request in flight per lane).

Latency percentiles cover the requests sent in the measured window; throughput is the
replies that arrived in the window divided by its length. Targets (2-core store box):
edge p99 <= 2x echo p99 in (a) and (b), >= 1,000 requests/s in (c), edge VmRSS after start
<= 120 MB (MiB, as /proc reports kB = KiB). The figures are printed for people, then the
last line is the same figures as one JSON object.

    .venv/bin/python bench/bus_rtt.py [--seconds 10] [--rounds 5] [--warmup 0.5] [--lanes 20]
                                      [--rate 10] [--procs 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.broker import BrokerProcess
from edge.datadir import DataDir
from edge.devices import enrol, sync_broker_files
from edge.mqtt import BrokerAddress, make_client, parse_mqtt_url
from edge.protocol import event_topic, new_envelope, request_topic
from edge.settings import Settings, load_settings
from edge.store import Store
from edge.supervise import stop_process

STORE = "bench"
KEEPALIVE = 60
DRAIN_S = 3.0  # how long to wait for replies still in flight when a window closes
RSS_TARGET_MB = 120.0
C_RPS_TARGET = 1000.0
P99_FACTOR = 2.0


# ---------------------------------------------------------------- network loop


class NetLoop:
    """Drives several paho clients from one thread: select, read, write and keep-alive.

    Publishing outside a paho callback writes straight to the socket (no network thread);
    anything queued inside a callback (replies, PUBACKs) is flushed after each read.
    """

    def __init__(self, control: Connection | None = None) -> None:
        self.sel = selectors.DefaultSelector()
        self.clients: dict[mqtt.Client, int] = {}  # client -> selector events registered
        self._misc_at = 0.0
        if control is not None:
            self.sel.register(control.fileno(), selectors.EVENT_READ, None)

    def connect(self, client: mqtt.Client, address: BrokerAddress, ready: list[bool],
                timeout: float = 10.0) -> None:
        """Connect `client` and step until `ready[0]` (set by its callbacks) is true."""
        client.connect(address.host, address.port, keepalive=KEEPALIVE)
        sock = client.socket()
        assert sock is not None
        self.sel.register(sock, selectors.EVENT_READ, client)
        self.clients[client] = selectors.EVENT_READ
        deadline = time.monotonic() + timeout
        while not ready[0]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{client._client_id!r} got no CONNACK/SUBACK in {timeout} s")
            self.step(0.05)

    def step(self, timeout: float) -> bool:
        """Handle network events for up to `timeout` s; True when the control pipe is readable."""
        control = False
        for key, events in self.sel.select(max(timeout, 0.0)):
            client: mqtt.Client | None = key.data
            if client is None:
                control = True
                continue
            if events & selectors.EVENT_READ and client.loop_read() and client.socket() is None:
                self._drop(client, key.fileobj)  # connection lost: on_disconnect counted it
                continue
            if events & selectors.EVENT_WRITE:
                client.loop_write()
        self.flush()
        now = time.monotonic()
        if now >= self._misc_at:
            self._misc_at = now + 1.0
            for c in self.clients:
                c.loop_misc()
        return control

    def flush(self) -> None:
        """Write whatever the clients have queued; wait for writability only if a socket is full."""
        for c, events in self.clients.items():
            if c.want_write():
                c.loop_write()
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.want_write() else 0)
            if wanted != events:
                sock = c.socket()
                if sock is not None:
                    self.sel.modify(sock, wanted, c)
                    self.clients[c] = wanted

    def _drop(self, client: mqtt.Client, fileobj: Any) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.sel.unregister(fileobj)
        self.clients.pop(client, None)

    def close(self) -> None:
        """Disconnect every client cleanly and close the selector."""
        for c in list(self.clients):
            sock = c.socket()
            if sock is not None:
                self._drop(c, sock)
            c.disconnect()
        self.sel.close()


# ---------------------------------------------------------------- lanes (load processes)


def reply_topic_of(lane_id: str) -> str:
    return f"store/{STORE}/pos/{lane_id}/res/rtt"


def echo_topic_of(lane_id: str) -> str:
    return event_topic(STORE, "pos", lane_id, "bench") + "/echo"


class Lane:
    """One POS lane: a paho client that sends pings and times the replies."""

    def __init__(self, lane_id: str, username: str, password: str, address: BrokerAddress) -> None:
        self.id = lane_id
        self.client = make_client(f"bench-{lane_id}", address, username=username,
                                  password=password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.ready = [False]
        self.topics = {"edge": request_topic(STORE, "pos", lane_id, "ping"),
                       "echo": echo_topic_of(lane_id)}
        self.props = Properties(PacketTypes.PUBLISH)
        self.props.ResponseTopic = reply_topic_of(lane_id)
        self.seq = 0
        self.reset("echo", 0.0, 0.0, [])

    def reset(self, target: str, measure_from: float, measure_to: float,
              ready_list: list[Lane] | None) -> None:
        """Start a phase: where to send, the measured window, and (closed loop) where to queue
        this lane when its reply is in."""
        self.topic = self.topics[target]
        self.check_ok = target == "edge"
        self.measure_from = measure_from
        self.measure_to = measure_to
        self.ready_list = ready_list
        self.pending: dict[bytes, float] = {}
        self.latencies: list[float] = []
        self.completed = 0  # replies that arrived inside the window
        self.sent = 0  # requests sent inside the window
        self.errors = 0  # edge replies that were not ok
        self.replies = 0  # every reply, warm-up included
        self.disconnects = 0

    def send(self) -> None:
        self.seq += 1
        corr = self.seq.to_bytes(8, "big")
        payload = new_envelope("ping", {"echo": self.seq}).to_json()
        self.props.CorrelationData = corr
        started = time.perf_counter()
        self.pending[corr] = started
        if self.measure_from <= started < self.measure_to:
            self.sent += 1
        self.client.publish(self.topic, payload, qos=1, properties=self.props)

    def measured_pending(self) -> int:
        return sum(1 for t in self.pending.values() if self.measure_from <= t < self.measure_to)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason_code: Any,
                    _p: Any) -> None:
        if reason_code.is_failure:
            raise RuntimeError(f"lane {self.id}: the broker refused the login ({reason_code})")
        client.subscribe(reply_topic_of(self.id), qos=1)

    def _on_subscribe(self, *_args: Any) -> None:
        self.ready[0] = True

    def _on_disconnect(self, *_args: Any) -> None:
        self.disconnects += 1

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        corr = getattr(msg.properties, "CorrelationData", None)
        started = self.pending.pop(corr, None) if corr is not None else None
        if started is None:
            return  # a reply to an earlier phase
        self.replies += 1
        if self.check_ok and b'"ok":true' not in msg.payload:
            self.errors += 1
        if self.measure_from <= started < self.measure_to:
            self.latencies.append((now - started) * 1000.0)
        if self.measure_from <= now < self.measure_to:
            self.completed += 1
        if self.ready_list is not None:
            self.ready_list.append(self)


def run_phase(net: NetLoop, lanes: list[Lane], spec: dict[str, Any]) -> dict[str, Any]:
    """Run one load over `lanes` (closed loop if rate is 0, else paced) and collect figures."""
    rate: float = spec["rate"]
    delay = spec["start_at"] - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    t0 = time.perf_counter()
    measure_from = t0 + spec["warmup"]
    end = measure_from + spec["seconds"]
    ready: list[Lane] = []
    for lane in lanes:
        lane.reset(spec["target"], measure_from, end, ready if rate <= 0 else None)
    period = 1.0 / rate if rate > 0 else 0.0
    next_at = {lane.id: t0 + random.uniform(0.0, period) for lane in lanes}
    max_lag = 0.0
    if rate <= 0:
        for lane in lanes:
            lane.send()
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if rate > 0:
            for lane in lanes:
                due = next_at[lane.id]
                while due <= now and due < end:
                    if due >= measure_from:
                        max_lag = max(max_lag, now - due)
                    lane.send()
                    due += period
                next_at[lane.id] = due
            timeout = min([*next_at.values(), end]) - time.perf_counter()
        else:
            timeout = end - now
        net.step(min(timeout, 0.25))
        if rate <= 0 and ready:
            now = time.perf_counter()
            batch = ready[:]
            ready.clear()
            if now < end:
                for lane in batch:
                    lane.send()
                net.flush()
    drain_until = time.perf_counter() + DRAIN_S
    while any(lane.pending for lane in lanes) and time.perf_counter() < drain_until:
        net.step(0.05)
    return {
        "latencies": [x for lane in lanes for x in lane.latencies],
        "completed": sum(lane.completed for lane in lanes),
        "sent": sum(lane.sent for lane in lanes),
        "lost": sum(lane.measured_pending() for lane in lanes),
        "errors": sum(lane.errors for lane in lanes),
        "replies": sum(lane.replies for lane in lanes),
        "disconnects": sum(lane.disconnects for lane in lanes),
        "max_lag_ms": max_lag * 1000.0,
    }


def load_main(conn: Connection, address: BrokerAddress, creds: list[tuple[str, str, str]]) -> None:
    """A load process: connect its lanes, then run phases as the parent asks until 'stop'."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    net = NetLoop(conn)
    lanes = [Lane(lane_id, user, password, address) for lane_id, user, password in creds]
    try:
        for lane in lanes:
            net.connect(lane.client, address, lane.ready)
        conn.send(("ready", len(lanes)))
        while True:
            if not net.step(0.5):
                continue
            msg = conn.recv()
            if msg[0] == "stop":
                break
            spec = msg[1]
            conn.send(("done", run_phase(net, lanes[:spec["active"]], spec)))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        net.close()


# ---------------------------------------------------------------- echo responder


def echo_main(conn: Connection, address: BrokerAddress, username: str, password: str) -> None:
    """The floor: a plain paho client (`loop_forever`) that bounces each request to its
    Response Topic at QoS 1, with its Correlation Data."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    subscribed = threading.Event()
    client = make_client("bench-echo", address, username=username, password=password)

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
        if reason_code.is_failure:
            raise RuntimeError(f"echo: the broker refused the login ({reason_code})")
        c.subscribe(f"store/{STORE}/pos/+/evt/bench/echo", qos=1)

    def on_message(c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        req = msg.properties
        target = getattr(req, "ResponseTopic", None)
        if not target:
            return
        props = Properties(PacketTypes.PUBLISH)
        corr = getattr(req, "CorrelationData", None)
        if corr is not None:
            props.CorrelationData = corr
        c.publish(target, msg.payload, qos=1, properties=props)

    def control() -> None:
        """Say 'ready' once subscribed, then disconnect when the parent says stop (or dies)."""
        if subscribed.wait(20):
            conn.send(("ready", 1))
            with contextlib.suppress(EOFError, OSError):
                conn.recv()
        client.disconnect()

    client.on_connect = on_connect
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_message = on_message
    client.connect(address.host, address.port, keepalive=KEEPALIVE)
    threading.Thread(target=control, name="echo-control", daemon=True).start()
    client.loop_forever()


# ---------------------------------------------------------------- figures


@dataclass
class Figures:
    """One load against one responder, merged over the load processes."""

    p50_ms: float
    p99_ms: float
    rps: float
    sent: int
    replies: int
    lost: int
    errors: int
    max_lag_ms: float
    replies_all: int  # warm-up included

    @classmethod
    def merge(cls, parts: list[dict[str, Any]], seconds: float) -> Figures:
        lat = sorted(x for p in parts for x in p["latencies"])
        return cls(p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99),
                   rps=sum(p["completed"] for p in parts) / seconds,
                   sent=sum(p["sent"] for p in parts), replies=len(lat),
                   lost=sum(p["lost"] for p in parts),
                   errors=sum(p["errors"] + p["disconnects"] for p in parts),
                   max_lag_ms=max(p["max_lag_ms"] for p in parts),
                   replies_all=sum(p["replies"] for p in parts))


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of sorted values (NaN when there are none)."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(pct / 100.0 * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of a process from /proc/PID/status, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def cpu_steal() -> tuple[float, float]:
    """(steal, total) jiffies of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return float(values[7]) if len(values) > 7 else 0.0, float(sum(values[:8]))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(http_port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll /healthz until the edge reports the broker connected."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{http_port}/healthz"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"edge serve exited with {proc.returncode}")
        with contextlib.suppress(OSError, ValueError), \
                opener.open(url, timeout=1) as resp:
            if json.load(resp)["broker"]["connected"]:
                return
        time.sleep(0.1)
    raise TimeoutError(f"the edge did not report the broker connected within {timeout} s")


@contextlib.contextmanager
def edge_process(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`edge serve` as its own process; SIGTERM (then SIGKILL) on the way out."""
    env = settings.with_overrides(log_level="WARNING").environ()
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "serve"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc)


@dataclass
class Child:
    """A helper process and our end of its pipe."""

    proc: mp.process.BaseProcess
    conn: Connection

    def expect(self, kind: str, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"{self.proc.name} did not answer within {timeout:.0f} s")
        try:
            msg = self.conn.recv()
        except EOFError:
            self.proc.join(1)
            raise RuntimeError(f"{self.proc.name} exited (code {self.proc.exitcode})") from None
        if msg[0] != kind:
            raise RuntimeError(f"{self.proc.name} said {msg!r}, expected {kind!r}")
        return msg[1]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("stop",))
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()


@contextlib.contextmanager
def child(target: Any, name: str, *args: Any) -> Iterator[Child]:
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=target, name=name, args=(theirs, *args), daemon=True)
    proc.start()
    theirs.close()
    c = Child(proc, ours)
    try:
        yield c
    finally:
        c.stop()


def run_slice(loaders: list[Child], lanes: int, procs: int,
              spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one measured slice of a load on every load process at once; their figures."""
    start_at = time.monotonic() + 0.2
    for p, ld in enumerate(loaders):
        ld.conn.send(("run", {**spec, "active": len(range(p, lanes, procs)),
                              "start_at": start_at}))
    timeout = spec["warmup"] + spec["seconds"] + DRAIN_S + 30
    return [ld.expect("done", timeout) for ld in loaders]


LOADS = (
    ("a", "(a) 1 lane, back to back"),
    ("b", "(b) {lanes} lanes x {rate:g}/s"),
    ("c", "(c) {lanes} lanes, closed loop"),
)


@dataclass
class Rig:
    """Everything a run drives: the edge process, the echo responder and the load processes."""

    edge: subprocess.Popen[bytes]
    edge_log: Path
    echo: Child
    loaders: list[Child]
    rss_start_mb: float


def build_rig(stack: contextlib.ExitStack, args: argparse.Namespace) -> Rig:
    """Data dir, broker, lanes, edge, echo and load processes; all undone by `stack`."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bus-rtt-")))
    settings = load_settings(
        {}, store_id=STORE, data_dir=str(tmp / "data"),
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}", http_port=free_port(),
        broker_bin=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    datadir = DataDir(settings.data_path).ensure()
    store = Store(datadir.database)
    stack.callback(store.close)
    edge_creds = datadir.edge_mqtt_credentials()
    sync_broker_files(settings, datadir, store)
    broker = BrokerProcess(settings, datadir, quiet=True).start()
    stack.callback(broker.stop)
    lanes = [enrol(settings, datadir, store, "pos", f"lane-{i + 1:02d}")
             for i in range(args.lanes)]
    time.sleep(0.2)  # enrol() SIGHUPs the broker to re-read passwd and acl
    address = parse_mqtt_url(settings.mqtt_url)

    log_path = tmp / "edge.log"
    edge = stack.enter_context(edge_process(settings, log_path))
    try:
        wait_healthy(settings.http_port, edge, 30)
    except (RuntimeError, TimeoutError):
        sys.stderr.write(log_path.read_text(errors="replace"))
        raise
    time.sleep(0.5)
    rss_start = rss_mb(edge.pid)

    echo = stack.enter_context(child(echo_main, "echo", address, edge_creds["username"],
                                     edge_creds["password"]))
    loaders = [stack.enter_context(child(
        load_main, f"load-{p}", address,
        [(e.id, e.username, e.password) for e in lanes[p::args.procs]]))
        for p in range(args.procs)]
    echo.expect("ready", 20)
    for ld in loaders:
        ld.expect("ready", 30)
    return Rig(edge, log_path, echo, loaders, rss_start)


def measure_load(rig: Rig, args: argparse.Namespace, key: str) -> dict[str, Any]:
    """One load against echo and edge in turns: their figures, the edge's CPU, the steal."""
    lanes = 1 if key == "a" else args.lanes
    spec = {"rate": args.rate if key == "b" else 0.0, "warmup": args.warmup,
            "seconds": args.seconds / args.rounds}
    parts: dict[str, list[dict[str, Any]]] = {"echo": [], "edge": []}
    edge_cpu = 0.0
    steal_before = cpu_steal()
    # Echo and edge take turns (echo, edge, edge, echo, ...) so that drift and noise from
    # other work on the machine fall on both alike.
    for r in range(args.rounds):
        for target in ("echo", "edge") if r % 2 == 0 else ("edge", "echo"):
            cpu_before = cpu_seconds(rig.edge.pid)
            parts[target] += run_slice(rig.loaders, lanes, args.procs,
                                       {**spec, "target": target})
            if target == "edge":
                edge_cpu += cpu_seconds(rig.edge.pid) - cpu_before
    steal_after = cpu_steal()
    figs = {t: Figures.merge(parts[t], args.seconds) for t in parts}
    steal_pct = 100.0 * (steal_after[0] - steal_before[0]) / max(
        steal_after[1] - steal_before[1], 1e-9)
    return {"figures": figs, "edge_cpu_us": edge_cpu / max(figs["edge"].replies_all, 1) * 1e6,
            "steal_pct": steal_pct}


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        rig = build_rig(stack, args)
        loads = {key: measure_load(rig, args, key) for key, _ in LOADS}
        return {"loads": loads, "rss_start": rig.rss_start_mb, "rss_end": rss_mb(rig.edge.pid),
                "rss_hwm": rss_mb(rig.edge.pid, "VmHWM"),
                "edge_log": rig.edge_log.read_text(errors="replace")}


def figures_of(args: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
    """The run's figures and target verdicts, as the final JSON line holds them."""
    figs: dict[str, dict[str, Figures]] = {k: v["figures"] for k, v in out["loads"].items()}
    result: dict[str, Any] = {"bench": "bus_rtt", "lanes": args.lanes, "seconds": args.seconds,
                              "rounds": args.rounds, "rate_per_lane": args.rate,
                              "procs": args.procs, "cpus": os.cpu_count()}
    for key, _ in LOADS:
        for target in ("edge", "echo"):
            f = figs[key][target]
            result[f"{key}_{target}_p50_ms"] = _ms(f.p50_ms)
            result[f"{key}_{target}_p99_ms"] = _ms(f.p99_ms)
            result[f"{key}_{target}_rps"] = round(f.rps, 1)
            result[f"{key}_{target}_lost"] = f.lost
            result[f"{key}_{target}_errors"] = f.errors
        result[f"{key}_edge_cpu_us_per_req"] = round(out["loads"][key]["edge_cpu_us"], 1)
        result[f"{key}_steal_pct"] = round(out["loads"][key]["steal_pct"], 1)
    result["edge_rss_mb"] = round(out["rss_start"], 1)
    result["edge_rss_end_mb"] = round(out["rss_end"], 1)
    a, b, c = figs["a"], figs["b"], figs["c"]
    targets = {
        "a_p99_le_2x_echo": a["edge"].p99_ms <= P99_FACTOR * a["echo"].p99_ms,
        "b_p99_le_2x_echo": b["edge"].p99_ms <= P99_FACTOR * b["echo"].p99_ms,
        "c_rps_ge_1000": c["edge"].rps >= C_RPS_TARGET,
        "rss_le_120mb": out["rss_start"] <= RSS_TARGET_MB,
        "no_lost_or_errors": all(f.lost == 0 and f.errors == 0
                                 for per in figs.values() for f in per.values()),
    }
    result["targets_met"] = targets
    result["all_targets_met"] = all(targets.values())
    return result


def print_human(args: argparse.Namespace, out: dict[str, Any], result: dict[str, Any]) -> None:
    labels = {k: v.format(lanes=args.lanes, rate=args.rate) for k, v in LOADS}
    print(f"bus_rtt: edge ping vs bare paho QoS 1 echo through Mosquitto; {args.lanes} lanes; "
          f"{args.seconds:g} s measured per load and responder, in {args.rounds} turns each "
          f"after {args.warmup:g} s warm-up; {args.procs} load processes; {os.cpu_count()} CPUs")
    print()
    print(f"{'load':<28} {'who':<5} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} {'sent':>6} "
          f"{'lost':>4} {'errors':>6} {'lag ms':>6}")
    for key, _ in LOADS:
        load = out["loads"][key]
        for target in ("echo", "edge"):
            f: Figures = load["figures"][target]
            name = labels[key] if target == "echo" else ""
            print(f"{name:<28} {target:<5} {f.p50_ms:>7.3f} {f.p99_ms:>7.3f} {f.rps:>7.0f} "
                  f"{f.sent:>6} {f.lost:>4} {f.errors:>6} {f.max_lag_ms:>6.1f}")
        print(f"{'':<28} edge CPU {load['edge_cpu_us']:.0f} us/request; "
              f"CPU steal {load['steal_pct']:.1f}%")
    print("(lag: worst delay of a paced send behind its schedule, a load-generator figure;")
    print(" steal: CPU time the hypervisor gave to others during the load, a noise figure)")
    print()
    print(f"edge VmRSS: {out['rss_start']:.1f} MiB after start, {out['rss_end']:.1f} MiB at the "
          f"end, peak {out['rss_hwm']:.1f} MiB")
    print()
    met = result["targets_met"]
    print("targets:")
    for key in ("a", "b"):
        edge, echo = out["loads"][key]["figures"]["edge"], out["loads"][key]["figures"]["echo"]
        print(f"  ({key}) edge p99 {edge.p99_ms:.3f} ms <= {P99_FACTOR:g} x echo p99 "
              f"{echo.p99_ms:.3f} ms = {P99_FACTOR * echo.p99_ms:.3f}: "
              f"{_yes(met[f'{key}_p99_le_2x_echo'])}")
    print(f"  (c) edge {out['loads']['c']['figures']['edge'].rps:.0f} requests/s >= "
          f"{C_RPS_TARGET:.0f}: {_yes(met['c_rps_ge_1000'])}")
    print(f"  edge VmRSS after start {out['rss_start']:.1f} MiB <= {RSS_TARGET_MB:.0f}: "
          f"{_yes(met['rss_le_120mb'])}")
    print(f"  no lost replies, error replies or disconnects: {_yes(met['no_lost_or_errors'])}")


def _ms(value: float) -> float | None:
    """A latency for the JSON line: rounded to the microsecond, null when nothing was measured."""
    return None if math.isnan(value) else round(value, 3)


def _yes(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _exit_on_sigterm(_signum: int, _frame: Any) -> None:
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per load")
    parser.add_argument("--rounds", type=int, default=5,
                        help="slices each load's seconds are cut into, echo and edge in turn")
    parser.add_argument("--warmup", type=float, default=0.5,
                        help="seconds of load before each slice is measured")
    parser.add_argument("--lanes", type=int, default=20, help="lanes in loads (b) and (c)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s per lane in (b)")
    parser.add_argument("--procs", type=int, default=2, help="load-generating processes")
    args = parser.parse_args(argv)
    if min(args.lanes, args.procs, args.rounds) < 1 or args.seconds <= 0 or args.rate <= 0:
        parser.error("--lanes, --procs, --rounds, --seconds and --rate must be positive")
    args.procs = min(args.procs, args.lanes)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so the broker and edge are stopped too
    out = run(args)
    result = figures_of(args, out)
    print_human(args, out, result)
    noted = [line for line in out["edge_log"].splitlines()
             if " WARNING " in line or " ERROR " in line or line.startswith("Traceback")]
    if noted:
        print(f"\nthe edge logged {len(noted)} warnings or errors; the last ones:", file=sys.stderr)
        print("\n".join(noted[-5:]), file=sys.stderr)
    sys.stdout.flush()
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
