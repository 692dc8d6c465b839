"""The rig the benchmarks share: broker, `edge serve`, a bare paho echo, load processes.

Everything runs on 127.0.0.1 with the store id `bench`:

* `bench_settings` / `start_broker`: the store's Mosquitto (`edge.broker.BrokerProcess`) on a
  free port, with the password file and ACL rendered from the data dir;
* `start_edge`: `edge serve` as its own process; returns once /healthz reports the broker
  connected, with its VmRSS read then;
* `start_echo`: the floor, one plain paho client (`loop_forever`, a `bench-echo` login of its
  own that the rig adds to the broker files: read the echo events, write the lanes' reply
  topics; the edge's login would take the running edge's connection over) that
  republishes every `store/bench/pos/+/evt/bench/echo` payload at QoS 1 to its MQTT 5
  Response Topic with its Correlation Data (the edge subscribes to `evt/+` only, so it never
  sees these two-level event topics);
* `start_loaders`: load processes; each drives its lanes' paho clients from one thread with
  `NetLoop` (select, then `loop_read`/`loop_write`) and answers the parent over a pipe;
* figures: nearest-rank percentiles, VmRSS, process CPU time and the machine's CPU steal.

Each benchmark script (`bus_rtt.py`, `checkout.py`) imports this module by name, so run them
as scripts: `.venv/bin/python bench/NAME.py`.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import secrets
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.broker import BrokerProcess, hash_password, reload_broker
from edge.datadir import DataDir, write_private
from edge.devices import Enrolment, sync_broker_files
from edge.settings import Settings, load_settings
from edge.store import Store
from edge.supervise import stop_process
from store_contract.mqtt import BrokerAddress, make_client
from store_contract.protocol import event_topic

STORE = "bench"
KEEPALIVE = 60
DRAIN_S = 3.0  # how long to wait for replies still in flight when a window closes


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
            if events & selectors.EVENT_READ and self._read(client):
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

    @staticmethod
    def _read(client: mqtt.Client) -> bool:
        """Read what has arrived; True when the connection is gone. A TLS socket may hold
        decrypted bytes that select() cannot see: read until it holds none."""
        while True:
            if client.loop_read() and client.socket() is None:
                return True
            sock = client.socket()
            if not isinstance(sock, ssl.SSLSocket) or not sock.pending():
                return False

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


# ---------------------------------------------------------------- pacing


class PacedLane(Protocol):
    """What `pace` needs of a lane: an id and its requests still awaiting a reply."""

    @property
    def id(self) -> str: ...

    @property
    def pending(self) -> Sized: ...


LaneT = TypeVar("LaneT", bound=PacedLane)
DueT = TypeVar("DueT")


def pace(net: NetLoop, lanes: Sequence[LaneT], spec: dict[str, Any], *,
         reset: Callable[[LaneT, float, float], None], start: Callable[[LaneT], None],
         due: list[DueT], follow_up: Callable[[DueT], None]) -> float:
    """Drive `lanes` through one phase of `spec` (rate, start_at, warmup, seconds); the worst
    lag (s) behind the open-loop schedule within the measured window.

    At `spec["start_at"]` (monotonic) each lane is `reset(lane, measure_from, end)`. With a
    rate, `start(lane)` runs on each lane's own fixed schedule (a random offset, then every
    1/rate s); with rate 0 (closed loop) it runs once per lane up front. After each network
    step the work the callbacks queued on `due` is handed to `follow_up` while the window is
    open (and dropped after it). When the window closes, replies still in flight get
    `DRAIN_S` to arrive.
    """
    rate: float = spec["rate"]
    delay = spec["start_at"] - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    t0 = time.perf_counter()
    measure_from = t0 + spec["warmup"]
    end = measure_from + spec["seconds"]
    due.clear()
    for lane in lanes:
        reset(lane, measure_from, end)
    period = 1.0 / rate if rate > 0 else 0.0
    next_at = {lane.id: t0 + random.uniform(0.0, period) for lane in lanes}
    max_lag = 0.0
    if rate <= 0:
        for lane in lanes:
            start(lane)
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if rate > 0:
            for lane in lanes:
                at = next_at[lane.id]
                while at <= now and at < end:
                    if at >= measure_from:
                        max_lag = max(max_lag, now - at)
                    start(lane)
                    at += period
                next_at[lane.id] = at
            timeout = min([*next_at.values(), end]) - time.perf_counter()
        else:
            timeout = end - now
        net.step(min(timeout, 0.25))
        if due:
            batch = due[:]
            due.clear()
            if time.perf_counter() < end:  # after the window, work still queued is abandoned
                for item in batch:
                    follow_up(item)
                net.flush()
    drain_until = time.perf_counter() + DRAIN_S
    while any(len(lane.pending) for lane in lanes) and time.perf_counter() < drain_until:
        net.step(0.05)
    due.clear()
    return max_lag


# ---------------------------------------------------------------- echo responder


class BenchLane:
    """A load lane's paho client: its login, the Response Topic it asks replies on, ready once
    subscribed to it, and a count of dropped connections. Subclasses time their own replies
    in `_on_message`."""

    def __init__(self, lane_id: str, username: str, password: str, address: BrokerAddress,
                 reply_suffix: str) -> None:
        self.id = lane_id
        self.reply_topic = f"store/{STORE}/pos/{lane_id}/res/{reply_suffix}"
        self.client = make_client(f"bench-{lane_id}", address, username=username,
                                  password=password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.ready = [False]
        self.disconnects = 0
        self.props = Properties(PacketTypes.PUBLISH)
        self.props.ResponseTopic = self.reply_topic

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason_code: Any,
                    _p: Any) -> None:
        if reason_code.is_failure:
            raise RuntimeError(f"lane {self.id}: the broker refused the login ({reason_code})")
        client.subscribe(self.reply_topic, qos=1)

    def _on_subscribe(self, *_args: Any) -> None:
        self.ready[0] = True

    def _on_disconnect(self, *_args: Any) -> None:
        self.disconnects += 1

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        raise NotImplementedError


def echo_topic_of(lane_id: str) -> str:
    """Where a lane sends what the echo should bounce: a two-level event the edge ignores."""
    return event_topic(STORE, "pos", lane_id, "bench") + "/echo"


def echo_main(conn: Connection, address: BrokerAddress, username: str, password: str) -> None:
    """The floor: a plain paho client (`loop_forever`) that bounces each request to its
    Response Topic at QoS 1, with its Correlation Data."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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

    client.on_connect = on_connect
    client.on_message = on_message
    serve_until_told(client, conn, address)


def serve_until_told(client: mqtt.Client, conn: Connection, address: BrokerAddress) -> None:
    """Run a helper process's paho client (`loop_forever`): tell the parent 'ready' once its
    subscription is granted, disconnect when the parent says stop (or dies)."""
    subscribed = threading.Event()
    client.on_subscribe = lambda *_args: subscribed.set()

    def control() -> None:
        if subscribed.wait(20):
            conn.send(("ready", 1))
            with contextlib.suppress(EOFError, OSError):
                conn.recv()
        client.disconnect()

    client.connect(address.host, address.port, keepalive=KEEPALIVE)
    threading.Thread(target=control, name="helper-control", daemon=True).start()
    client.loop_forever()


# ---------------------------------------------------------------- figures


def percentile(sorted_values: Sequence[float], pct: float) -> float:
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


def steal_pct(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The share of CPU time the hypervisor gave to others between two `cpu_steal()` readings."""
    return 100.0 * (after[0] - before[0]) / max(after[1] - before[1], 1e-9)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def json_ms(value: float) -> float | None:
    """A latency for the JSON line: rounded to the microsecond, null when nothing was measured."""
    return None if math.isnan(value) else round(value, 3)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_settings(data_dir: Path, **values: Any) -> Settings:
    """Settings of a bench store: its own data dir, broker and HTTP ports that are free now."""
    return load_settings(
        {}, store_id=STORE, data_dir=str(data_dir),
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}", http_port=free_port(),
        broker_bin=shutil.which("mosquitto") or "/usr/sbin/mosquitto", **values)


def start_broker(stack: contextlib.ExitStack, settings: Settings, datadir: DataDir,
                 store: Store) -> BrokerProcess:
    """Render the broker files for the devices enrolled so far and start Mosquitto."""
    sync_broker_files(settings, datadir, store)
    broker = BrokerProcess(settings, datadir, quiet=True).start()
    stack.callback(broker.stop)
    return broker


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
        proc = subprocess.Popen([sys.executable, "-m", "edge.app.cli", "serve"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc)


def start_edge(stack: contextlib.ExitStack, settings: Settings,
               log_path: Path) -> tuple[subprocess.Popen[bytes], float]:
    """`edge serve`, healthy and settled; the process and its VmRSS (MiB) after start."""
    edge = stack.enter_context(edge_process(settings, log_path))
    try:
        wait_healthy(settings.http_port, edge, 30)
    except (RuntimeError, TimeoutError):
        sys.stderr.write(log_path.read_text(errors="replace"))
        raise
    time.sleep(0.5)
    return edge, rss_mb(edge.pid)


def edge_warnings(log_text: str) -> list[str]:
    """The lines of an edge log that are warnings, errors or tracebacks."""
    return [line for line in log_text.splitlines()
            if " WARNING " in line or " ERROR " in line or line.startswith("Traceback")]


def report(result: dict[str, Any], edge_logs: dict[str, str]) -> None:
    """The end of a benchmark's output: the edges' last warnings and errors on stderr (the
    figures stay on stdout), then the figures as one JSON line, the last line printed.
    `edge_logs`: each edge run's log text by its name ("" when there was one edge)."""
    for name, log_text in edge_logs.items():
        noted = edge_warnings(log_text)
        if noted:
            who = f"the edge ({name})" if name else "the edge"
            print(f"\n{who} logged {len(noted)} warnings or errors; the last ones:",
                  file=sys.stderr)
            print("\n".join(noted[-5:]), file=sys.stderr)
    sys.stdout.flush()
    print(json.dumps(result, separators=(",", ":")))


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


ECHO_USER = "bench-echo"


def add_echo_login(datadir: DataDir) -> str:
    """Add the echo's own login to the rendered passwd and acl and reload the broker; its
    password. Only as much as the echo does: read the echo events, write the lanes' reply
    topics. (Enrolling a device afterwards renders the files anew without it.)"""
    password = secrets.token_urlsafe(18)
    folder = datadir.mosquitto
    passwd = [line for line in (folder / "passwd").read_text().splitlines()
              if not line.startswith(f"{ECHO_USER}:")]
    passwd.append(f"{ECHO_USER}:{hash_password(password)}")
    write_private(folder / "passwd", "\n".join(passwd) + "\n", replace=True)
    acl = (folder / "acl").read_text().split(f"\n# {ECHO_USER}\n")[0]
    acl += (f"\n# {ECHO_USER}\nuser {ECHO_USER}\n"
            f"topic read store/{STORE}/pos/+/evt/bench/echo\n"
            f"topic write store/{STORE}/pos/+/res/#\n")
    write_private(folder / "acl", acl, replace=True)
    reload_broker(datadir)
    time.sleep(0.2)  # the broker re-reads passwd and acl
    return password


def start_echo(stack: contextlib.ExitStack, address: BrokerAddress, datadir: DataDir) -> Child:
    """The echo responder with its own login (added now: start it after enrolling the lanes);
    call `.expect("ready", ...)` before use."""
    password = add_echo_login(datadir)
    return stack.enter_context(child(echo_main, "echo", address, ECHO_USER, password))


def start_loaders(stack: contextlib.ExitStack, target: Any, address: BrokerAddress,
                  lanes: Sequence[Enrolment], procs: int, *args: Any) -> list[Child]:
    """`procs` load processes running `target(conn, address, creds, *args)`, lanes dealt round
    robin; call `.expect("ready", ...)` on each before use."""
    return [stack.enter_context(child(
        target, f"load-{p}", address,
        [(e.id, e.username, e.password) for e in lanes[p::procs]], *args))
        for p in range(procs)]


def run_slice(loaders: list[Child], lanes: int, procs: int,
              spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one measured slice of a load on every load process at once; their figures."""
    start_at = time.monotonic() + 0.2
    for p, ld in enumerate(loaders):
        ld.conn.send(("run", {**spec, "active": len(range(p, lanes, procs)),
                              "start_at": start_at}))
    timeout = spec["warmup"] + spec["seconds"] + DRAIN_S + 30
    return [ld.expect("done", timeout) for ld in loaders]


def turns(rounds: int) -> Iterator[str]:
    """Echo and edge in turns (echo, edge, edge, echo, ...) so that drift and noise from other
    work on the machine fall on both alike."""
    for r in range(rounds):
        yield from ("echo", "edge") if r % 2 == 0 else ("edge", "echo")


def exit_on_sigterm(_signum: int, _frame: Any) -> None:
    raise SystemExit(143)


def filesystem_of(path: Path) -> str:
    """The type of the file system `path` lives on, from /proc/mounts."""
    best, kind = "", "unknown"
    resolved = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            mount = parts[1].replace("\\040", " ")
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, parts[2]
    return kind
