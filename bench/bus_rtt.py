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

The rig (broker, edge, echo, load processes, figures) is shared with `checkout.py` in
`bench/rig.py`.

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

Then (d), flood control: `--lanes` lanes each complete sales (`txn.complete`, a durable
SQLite commit with its outbox event) at `--sale-rate` a second, open loop, for
`--flap-seconds` measured seconds while the store is quiet and as long again while one
enrolled printer (`printer-flap`, in a process of its own) flaps its retained status, paper
between `ok` and `near_end`, at `--flap-rate` changes a second (QoS 1, up to 100 in flight;
0: as fast as the broker takes them) from the start of each flapping slice's warm-up to the
end of its window, so the lanes are measured under flapping throughout. It must make at
least `--flaps` changes in all (the default rate makes over 30,000, twenty times the
`status_flood_per_s` that mutes it). The flapper runs at nice 19: on a store the printer's
CPU is its own, here it shares the box, so it should take only what the store's processes
leave idle (the broker, which does pay for every status it takes, runs at normal priority).
Quiet and flapping slices alternate (quiet, flap, flap, quiet, ...) within the same run.
Reported: the lanes' `txn.complete` p50/p99 quiet and under flapping, side by side; the CPU
of the edge, the broker and the flapper in each; and how many `device.status` events the
flap added to the outbox (read from the edge's database once the bus backlog is empty)
against the documented bound, one per `status_event_interval_s` plus one
(docs/operations.md §16.4).

Latency percentiles cover the requests sent in the measured window; throughput is the
replies that arrived in the window divided by its length. Targets (2-core store box):
edge p99 <= 2x echo p99 in (a) and (b), >= 1,000 requests/s in (c), edge VmRSS after start
<= 120 MB (MiB, as /proc reports kB = KiB); (d) txn.complete p99 under flapping <= 2x quiet,
and the flap's outbox growth within the documented bound. The figures are printed for
people, then the last line is the same figures as one JSON object.

    .venv/bin/python bench/bus_rtt.py [--seconds 10] [--rounds 5] [--warmup 0.5] [--lanes 20]
                                      [--rate 10] [--procs 2] [--flaps 10000]
                                      [--sale-rate 2] [--flap-seconds 30] [--flap-rate 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from rig import (
    KEEPALIVE,
    STORE,
    BenchLane,
    Child,
    NetLoop,
    bench_settings,
    child,
    cpu_seconds,
    cpu_steal,
    echo_topic_of,
    exit_on_sigterm,
    json_ms,
    pace,
    percentile,
    report,
    rss_mb,
    run_slice,
    start_broker,
    start_echo,
    start_edge,
    start_loaders,
    steal_pct,
    turns,
    verdict,
)

from edge.datadir import DataDir
from edge.devices import enrol
from edge.store import Store
from store_contract.mqtt import BrokerAddress, make_client, parse_mqtt_url
from store_contract.protocol import encode, new_envelope, now_rfc3339, request_topic, status_topic

RSS_TARGET_MB = 120.0
C_RPS_TARGET = 1000.0
P99_FACTOR = 2.0
FLAP_P99_FACTOR = 2.0
FLAPPER = "printer-flap"
BASKET = {"currency": "EUR", "total_minor": 986, "lines": [
    {"sku": "milk", "qty": 2, "unit_minor": 119, "categories": ["dairy"]},
    {"sku": "bread", "qty": 1, "unit_minor": 249, "categories": ["bakery"]},
    {"sku": "cheese", "qty": 1, "unit_minor": 499, "categories": ["dairy"]}]}



# ---------------------------------------------------------------- lanes (load processes)



class Lane(BenchLane):
    """One POS lane: a paho client that sends pings and times the replies."""

    def __init__(self, lane_id: str, username: str, password: str, address: BrokerAddress) -> None:
        super().__init__(lane_id, username, password, address, "rtt")
        self.topics = {"edge": request_topic(STORE, "pos", lane_id, "ping"),
                       "echo": echo_topic_of(lane_id),
                       "complete": request_topic(STORE, "pos", lane_id, "txn.complete")}
        self.seq = 0
        self.reset("echo", 0.0, 0.0, [])

    def reset(self, target: str, measure_from: float, measure_to: float,
              ready_list: list[Lane] | None) -> None:
        """Start a phase: where to send, the measured window, and (closed loop) where to queue
        this lane when its reply is in."""
        self.topic = self.topics[target]
        self.check_ok = target in ("edge", "complete")
        self.sale = target == "complete"
        self.measure_from = measure_from
        self.measure_to = measure_to
        self.ready_list = ready_list
        self.pending: dict[bytes, float] = {}
        self.latencies: list[float] = []
        self.completed = 0  # replies that arrived inside the window
        self.sent = 0  # requests sent inside the window
        self.errors = 0  # edge replies that were not ok
        self.disconnects = 0
        self.replies = 0  # every reply, warm-up included

    def send(self) -> None:
        self.seq += 1
        corr = self.seq.to_bytes(8, "big")
        if self.sale:  # a sale of its own each time: a durable commit and its outbox event
            payload = new_envelope("txn.complete", {
                "txn": f"{self.id}-{os.getpid()}-{self.seq}", "basket": BASKET,
                "total_minor": 986, "currency": "EUR",
                "tenders": [{"kind": "card", "amount_minor": 986}]}).to_json()
        else:
            payload = new_envelope("ping", {"echo": self.seq}).to_json()
        self.props.CorrelationData = corr
        started = time.perf_counter()
        self.pending[corr] = started
        if self.measure_from <= started < self.measure_to:
            self.sent += 1
        self.client.publish(self.topic, payload, qos=1, properties=self.props)

    def measured_pending(self) -> int:
        return sum(1 for t in self.pending.values() if self.measure_from <= t < self.measure_to)

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
    closed = spec["rate"] <= 0
    ready: list[Lane] = []  # closed loop: lanes whose reply came, to send again
    max_lag = pace(
        net, lanes, spec,
        reset=lambda lane, measure_from, end: lane.reset(
            spec["target"], measure_from, end, ready if closed else None),
        start=Lane.send, due=ready, follow_up=Lane.send)
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


def flapper_main(conn: Connection, address: BrokerAddress, username: str, password: str
                 ) -> None:
    """One enrolled printer flapping its retained status (QoS 1, at most 100 in flight) at
    `rate` changes a second (0: as fast as the broker takes them), for as long as each
    ("flap", seconds, rate) says."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The printer's own CPU is not the store box's: on a store it runs on the printer (or its
    # host). Here it shares the box, so it gets only what the box's processes leave idle;
    # what the box does pay for - the broker taking and storing every status, the edge -
    # runs at normal priority.
    os.nice(19)
    client = make_client(f"bench-{FLAPPER}", address, username=username, password=password)
    client.max_inflight_messages_set(100)
    client.connect(address.host, address.port, keepalive=KEEPALIVE)
    client.loop_start()
    topic = status_topic(STORE, "printer", FLAPPER)
    n = 0
    try:
        conn.send(("ready", 1))
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                break
            _, seconds, rate = msg
            started = time.perf_counter()
            end = started + seconds
            window: list[mqtt.MQTTMessageInfo] = []
            changes = 0
            while (now := time.perf_counter()) < end:
                if rate:  # on a fixed schedule; a late change is sent at once, not skipped
                    due = started + changes / rate
                    if due > now:
                        time.sleep(min(due, end) - now)
                        continue
                if len(window) >= 100:
                    window.pop(0).wait_for_publish(5)
                n += 1
                changes += 1
                body = {"state": "online", "ts": now_rfc3339(),
                        "paper": "near_end" if n % 2 else "ok"}
                window.append(client.publish(topic, encode(body), qos=1, retain=True))
            for info in window:
                info.wait_for_publish(5)
            conn.send(("done", {"changes": changes,
                                "seconds": time.perf_counter() - started}))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        client.disconnect()
        client.loop_stop()


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


# ---------------------------------------------------------------- the run


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
    flapper: Child
    broker_pid: int
    database: Path
    http_port: int
    status_interval_s: int


def build_rig(stack: contextlib.ExitStack, args: argparse.Namespace) -> Rig:
    """Data dir, broker, lanes, edge, echo and load processes; all undone by `stack`."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bus-rtt-")))
    settings = bench_settings(tmp / "data")
    datadir = DataDir(settings.data_path).ensure()
    store = Store(datadir.database)
    stack.callback(store.close)
    broker = start_broker(stack, settings, datadir, store)
    assert broker.process is not None
    lanes = [enrol(settings, datadir, store, "pos", f"lane-{i + 1:02d}")
             for i in range(args.lanes)]
    flap = enrol(settings, datadir, store, "printer", FLAPPER)
    time.sleep(0.2)  # enrol() SIGHUPs the broker to re-read passwd and acl
    address = parse_mqtt_url(settings.mqtt_url)

    log_path = tmp / "edge.log"
    edge, rss_start = start_edge(stack, settings, log_path)
    echo = start_echo(stack, address, datadir)
    loaders = start_loaders(stack, load_main, address, lanes, args.procs)
    flapper = stack.enter_context(child(flapper_main, "flapper", address, flap.username,
                                        flap.password))
    echo.expect("ready", 20)
    flapper.expect("ready", 20)
    for ld in loaders:
        ld.expect("ready", 30)
    return Rig(edge, log_path, echo, loaders, rss_start, flapper, broker.process.pid,
               datadir.database,
               settings.http_port, settings.status_event_interval_s)


def measure_load(rig: Rig, args: argparse.Namespace, key: str) -> dict[str, Any]:
    """One load against echo and edge in turns: their figures, the edge's CPU, the steal."""
    lanes = 1 if key == "a" else args.lanes
    spec = {"rate": args.rate if key == "b" else 0.0, "warmup": args.warmup,
            "seconds": args.seconds / args.rounds}
    parts: dict[str, list[dict[str, Any]]] = {"echo": [], "edge": []}
    edge_cpu = 0.0
    steal_before = cpu_steal()
    for target in turns(args.rounds):
        cpu_before = cpu_seconds(rig.edge.pid)
        parts[target] += run_slice(rig.loaders, lanes, args.procs, {**spec, "target": target})
        if target == "edge":
            edge_cpu += cpu_seconds(rig.edge.pid) - cpu_before
    steal = steal_pct(steal_before, cpu_steal())
    figs = {t: Figures.merge(parts[t], args.seconds) for t in parts}
    return {"figures": figs, "edge_cpu_us": edge_cpu / max(figs["edge"].replies_all, 1) * 1e6,
            "steal_pct": steal}


def _flapper_status_events(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT COUNT(*) FROM outbox WHERE type = 'device.status' AND "
                           "device_id = ?", (FLAPPER,)).fetchone()
    return int(row[0])


def _bus_backlog(http_port: int) -> int:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{http_port}/healthz", timeout=5) as resp:
        return int(json.load(resp)["queue"]["bus_backlog"])


def measure_flapping(rig: Rig, args: argparse.Namespace) -> dict[str, Any]:
    """(d) lanes completing sales, quiet and beside a printer flapping its status, in turns."""
    spec = {"rate": args.sale_rate, "warmup": args.warmup,
            "seconds": args.flap_seconds / args.rounds,
            "target": "complete"}
    parts: dict[str, list[dict[str, Any]]] = {"quiet": [], "flapping": []}
    flap_turns = [who for r in range(args.rounds)
                  for who in (("quiet", "flapping") if r % 2 == 0 else ("flapping", "quiet"))]
    changes, flap_seconds = 0, 0.0
    assert rig.flapper.proc.pid is not None  # started
    pids = {"edge": rig.edge.pid, "broker": rig.broker_pid, "flapper": rig.flapper.proc.pid}
    cpu = {who: dict.fromkeys(pids, 0.0) for who in ("quiet", "flapping")}
    wall = {"quiet": 0.0, "flapping": 0.0}
    events_before = _flapper_status_events(rig.database)
    first_flap: float | None = None
    for who in flap_turns:
        if who == "flapping":
            first_flap = first_flap or time.monotonic()
            # From the start of the warm-up to the end of the window.
            rig.flapper.conn.send(("flap", spec["warmup"] + spec["seconds"] + 0.2,
                                   args.flap_rate))
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        wall_before = time.monotonic()
        parts[who] += run_slice(rig.loaders, args.lanes, args.procs, spec)
        for name, pid in pids.items():
            cpu[who][name] += cpu_seconds(pid) - cpu_before[name]
        wall[who] += time.monotonic() - wall_before
        if who == "flapping":
            done = rig.flapper.expect("done", 60)
            changes += done["changes"]
            flap_seconds += done["seconds"]
    deadline = time.monotonic() + 60
    while _bus_backlog(rig.http_port) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # the last status's write
    span = time.monotonic() - (first_flap or time.monotonic())
    added = _flapper_status_events(rig.database) - events_before
    allowed = int(span // rig.status_interval_s) + 1
    return {"figures": {who: Figures.merge(parts[who], args.flap_seconds) for who in parts},
            "changes": changes, "flap_seconds": flap_seconds, "status_events": added,
            "status_events_allowed": allowed, "span_s": span,
            "cpu_pct": {who: {name: 100.0 * used / max(wall[who], 1e-9)
                              for name, used in cpu[who].items()} for who in cpu}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        rig = build_rig(stack, args)
        loads = {key: measure_load(rig, args, key) for key, _ in LOADS}
        flapping = measure_flapping(rig, args)
        return {"loads": loads, "flapping": flapping, "rss_start": rig.rss_start_mb,
                "rss_end": rss_mb(rig.edge.pid),
                "rss_hwm": rss_mb(rig.edge.pid, "VmHWM"),
                "edge_log": rig.edge_log.read_text(errors="replace")}


def figures_of(args: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
    """The run's figures and target verdicts, as the final JSON line holds them."""
    figs: dict[str, dict[str, Figures]] = {k: v["figures"] for k, v in out["loads"].items()}
    result: dict[str, Any] = {"bench": "bus_rtt", "lanes": args.lanes, "seconds": args.seconds,
                              "rounds": args.rounds, "rate_per_lane": args.rate,
                              "procs": args.procs, "cpus": os.cpu_count(),
                              "sale_rate_per_lane": args.sale_rate,
                              "flap_seconds": args.flap_seconds, "flap_rate": args.flap_rate}
    for key, _ in LOADS:
        for target in ("edge", "echo"):
            f = figs[key][target]
            result[f"{key}_{target}_p50_ms"] = json_ms(f.p50_ms)
            result[f"{key}_{target}_p99_ms"] = json_ms(f.p99_ms)
            result[f"{key}_{target}_rps"] = round(f.rps, 1)
            result[f"{key}_{target}_lost"] = f.lost
            result[f"{key}_{target}_errors"] = f.errors
        result[f"{key}_edge_cpu_us_per_req"] = round(out["loads"][key]["edge_cpu_us"], 1)
        result[f"{key}_steal_pct"] = round(out["loads"][key]["steal_pct"], 1)
    flap = out["flapping"]
    quiet, flapping = flap["figures"]["quiet"], flap["figures"]["flapping"]
    for who, f in (("quiet", quiet), ("flapping", flapping)):
        result[f"d_complete_{who}_p50_ms"] = json_ms(f.p50_ms)
        result[f"d_complete_{who}_p99_ms"] = json_ms(f.p99_ms)
        result[f"d_complete_{who}_rps"] = round(f.rps, 1)
        result[f"d_complete_{who}_lost"] = f.lost
        result[f"d_complete_{who}_errors"] = f.errors
    result["d_flap_changes"] = flap["changes"]
    result["d_flap_changes_per_s"] = round(flap["changes"] / max(flap["flap_seconds"], 1e-9))
    for who, by_process in flap["cpu_pct"].items():
        for name, pct in by_process.items():
            result[f"d_{name}_cpu_pct_{who}"] = round(pct, 1)
    result["d_flap_status_events"] = flap["status_events"]
    result["d_flap_status_events_allowed"] = flap["status_events_allowed"]
    result["edge_rss_mb"] = round(out["rss_start"], 1)
    result["edge_rss_end_mb"] = round(out["rss_end"], 1)
    a, b, c = figs["a"], figs["b"], figs["c"]
    targets = {
        "a_p99_le_2x_echo": a["edge"].p99_ms <= P99_FACTOR * a["echo"].p99_ms,
        "b_p99_le_2x_echo": b["edge"].p99_ms <= P99_FACTOR * b["echo"].p99_ms,
        "c_rps_ge_1000": c["edge"].rps >= C_RPS_TARGET,
        "rss_le_120mb": out["rss_start"] <= RSS_TARGET_MB,
        "no_lost_or_errors": all(f.lost == 0 and f.errors == 0
                                 for per in [*figs.values(), flap["figures"]]
                                 for f in per.values()),
        "d_flap_p99_le_2x_quiet": flapping.p99_ms <= FLAP_P99_FACTOR * quiet.p99_ms,
        "d_flap_outbox_within_bound": flap["status_events"] <= flap["status_events_allowed"],
        "d_flap_changes_made": flap["changes"] >= args.flaps,
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
    flap = out["flapping"]
    asked = f"{args.flap_rate:g}/s asked" if args.flap_rate else "as fast as it goes"
    print(f"(d) {args.lanes} lanes x {args.sale_rate:g} sales/s (txn.complete), "
          f"{args.flap_seconds:g} s each quiet and beside {FLAPPER} flapping its status "
          f"({flap['changes']} changes in {flap['flap_seconds']:.1f} s, "
          f"{result['d_flap_changes_per_s']}/s, {asked})")
    for who in ("quiet", "flapping"):
        f = flap["figures"][who]
        print(f"{'':<28} {who:<8} {f.p50_ms:>7.3f} {f.p99_ms:>7.3f} {f.rps:>7.0f} "
              f"{f.sent:>6} {f.lost:>4} {f.errors:>6} {f.max_lag_ms:>6.1f}")
    for name in ("edge", "broker", "flapper"):
        print(f"{'':<28} {name} CPU {flap['cpu_pct']['quiet'][name]:.0f}% quiet, "
              f"{flap['cpu_pct']['flapping'][name]:.0f}% flapping (of one core)")
    print(f"{'':<28} device.status events the flap added to the outbox: "
          f"{flap['status_events']} (documented bound over {flap['span_s']:.0f} s: "
          f"{flap['status_events_allowed']})")
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
              f"{verdict(met[f'{key}_p99_le_2x_echo'])}")
    print(f"  (c) edge {out['loads']['c']['figures']['edge'].rps:.0f} requests/s >= "
          f"{C_RPS_TARGET:.0f}: {verdict(met['c_rps_ge_1000'])}")
    print(f"  edge VmRSS after start {out['rss_start']:.1f} MiB <= {RSS_TARGET_MB:.0f}: "
          f"{verdict(met['rss_le_120mb'])}")
    quiet, flapping = flap["figures"]["quiet"], flap["figures"]["flapping"]
    print(f"  (d) txn.complete p99 flapping {flapping.p99_ms:.3f} ms <= {FLAP_P99_FACTOR:g} x "
          f"quiet {quiet.p99_ms:.3f} ms = {FLAP_P99_FACTOR * quiet.p99_ms:.3f}: "
          f"{verdict(met['d_flap_p99_le_2x_quiet'])}")
    print(f"  (d) outbox growth {flap['status_events']} <= {flap['status_events_allowed']}: "
          f"{verdict(met['d_flap_outbox_within_bound'])}; {flap['changes']} >= {args.flaps} "
          f"changes made: {verdict(met['d_flap_changes_made'])}")
    print(f"  no lost replies, error replies or disconnects: {verdict(met['no_lost_or_errors'])}")


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
    parser.add_argument("--sale-rate", type=float, default=2.0,
                        help="sales/s per lane in (d), quiet and beside the flapping printer")
    parser.add_argument("--flap-seconds", type=float, default=30.0,
                        help="measured seconds, quiet and flapping each, in (d)")
    parser.add_argument("--flap-rate", type=float, default=1000.0,
                        help="status changes/s of the flapping printer in (d); 0: as fast as "
                             "the broker takes them")
    parser.add_argument("--flaps", type=int, default=10000,
                        help="status changes the flapping printer must make at least in (d)")
    args = parser.parse_args(argv)
    if min(args.lanes, args.procs, args.rounds) < 1 or args.seconds <= 0 or args.rate <= 0 \
            or args.sale_rate <= 0 or args.flap_seconds <= 0:
        parser.error("--lanes, --procs, --rounds, --seconds, --flap-seconds, --rate and "
                     "--sale-rate must be positive")
    if args.flap_rate < 0:
        parser.error("--flap-rate must be 0 (as fast as it goes) or positive")
    args.procs = min(args.procs, args.lanes)
    signal.signal(signal.SIGTERM, exit_on_sigterm)  # so the broker and edge are stopped too
    out = run(args)
    result = figures_of(args, out)
    print_human(args, out, result)
    report(result, {"": out["edge_log"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
