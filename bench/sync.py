"""Sync to the CRM hub: one edge draining a 100,000-event outbox, and 50 stores sending at once.

What runs, all on 127.0.0.1 under one temporary directory removed at the end (`--tmpdir`
chooses where; its file system is printed, since a tmpfs would make every durable commit
free), once on SQLite and once on PostgreSQL, in turn:

* the hub: `edge-hub serve` (`python -m cloud_sync.hub.cli serve`, waitress with
  `--hub-threads` threads) as its own process, started fresh for each measurement on a fresh
  database. On SQLite the hub's own file in its data dir (WAL, `synchronous = FULL`); on
  PostgreSQL a private cluster of the newest installed release
  (`tests.hubfix.PostgresCluster`, started here with `fsync = on` and
  `synchronous_commit = on`, i.e. durable commits, unlike the tests).
  Stores are registered before the hub starts with `cloud_sync.hub.stores.add_store`, the
  function `edge-hub stores add` calls;
* the events: a store's day in the proportions of a real one, mostly `transaction.completed`
  (3-8 lines, tenders, a customer for about 40 % of sales), with `customer.identified` for
  those customers, `coupon.redeemed` (single-use coupons signed with the hub's key, carried
  as `token` so the hub checks each one: three in four recorded as issued by the hub, as
  `edge-hub coupons issue` records them, the others checked by signature; and a shared
  `code:` coupon), so the hub's redemption ledger, token check, conflict check and change
  feed all run, `receipt.printed` and
  now and then `device.status`; ids are `store_contract.protocol.uuid7`.

Measurements, per database:

1. drain: an edge data dir (`edge.store.Store`) with `--events` events queued by
   `edge.outbox.queue_event` in transactions of 250 (before the clock starts; one copy of the
   dir per database). `cloud_sync.sender.Sender.run()` in this process, over real HTTP to the
   hub, is timed until the outbox is empty; the batch round trips are timed by wrapping the
   sender's `client.post_events` (no library code changed), and its `queue_report` likewise,
   since it runs once per batch. Afterwards the hub's `events` table is read with SQLAlchemy:
   exactly the queued event ids must be there (`missing`, `extra`).
2. `--stores` stores at once: each store has `--events-per-store` events pre-built as batches
   of `--batch` (the JSON bodies the edge sends), in `--procs` sender processes; each process
   runs one thread per store with its own `requests` session, one batch in flight per store,
   in order. Hub ingest events/s = events stored / (last answer - first send). The senders'
   CPU time is reported beside it: on a 2-core box they take CPU from the hub.
3. beside them, in the same run: the HTTP floor, i.e. the same batches posted to a trivial
   waitress app (same thread count) that reads the body and answers `{}`, from one sender in
   sequence (the drain's floor) and from all stores at once (the 50-store floor); the hub's
   `ingest()` called in this process on the drain's bodies (JSON, validation, database, no
   HTTP); and the raw insert speed of the same events into a fresh hub `events` table with
   SQLAlchemy executemany, one transaction per batch, no HTTP and no validation. Also the
   in-process cost per batch of `json.loads` and of the hub's `validate_batch`.

Also printed: the hub's CPU time and VmRSS (and PostgreSQL's CPU time), and the machine's CPU
steal over each measurement.

Targets: the drain of 100,000 events takes <= 60 s (scaled with `--events`) and `--stores`
stores at once are ingested at >= 5,000 events/s, on both databases, with nothing missing.
The figures are printed for people, then the last line is the same figures as one JSON object.

    .venv/bin/python bench/sync.py [--events 100000] [--stores 50] [--events-per-store 4000]
        [--batch 500] [--procs 5] [--hub-threads 8] [--skip-pg] [--tmpdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from jwt.algorithms import OKPAlgorithm  # noqa: E402
from rig import (  # noqa: E402
    Child,
    child,
    cpu_seconds,
    cpu_steal,
    exit_on_sigterm,
    filesystem_of,
    percentile,
    rss_mb,
    steal_pct,
    verdict,
)
from sqlalchemy import func, select  # noqa: E402

from cloud_sync.hub.db import HubDB  # noqa: E402
from cloud_sync.hub.keys import HUB_KID  # noqa: E402
from cloud_sync.hub.schema import events as hub_events  # noqa: E402
from cloud_sync.hub.schema import issued_coupons  # noqa: E402
from cloud_sync.hub.settings import HubSettings, load_hub_settings  # noqa: E402
from cloud_sync.hub.stores import add_store  # noqa: E402
from cloud_sync.sender import Sender  # noqa: E402
from edge.datadir import DataDir, write_private  # noqa: E402
from edge.hublink import HubLink  # noqa: E402
from edge.metrics import Metrics  # noqa: E402
from edge.outbox import queue_data  # noqa: E402
from edge.settings import load_settings  # noqa: E402
from edge.store import Store  # noqa: E402
from edge.supervise import stop_process  # noqa: E402
from edge.tokens import SigningKey  # noqa: E402
from store_contract.jws import COUPON_TYP
from store_contract.protocol import format_ts, uuid7  # noqa: E402
from tests.hubfix import PG_BIN, PostgresCluster  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DRAIN_TARGET_S_PER_100K = 60.0
INGEST_TARGET_EPS = 5000.0
DRAIN_STORE = "drain"
VOLATILE_FS = ("tmpfs", "ramfs")
SKUS = [("4011", 129), ("4131", 299), ("5000169", 149), ("5011038", 449), ("5010029", 349),
        ("8000070", 799), ("8076809", 139), ("7622210", 289), ("5449000", 199),
        ("5410228", 699), ("4002359", 89), ("5000112", 1099)]
CAMPAIGNS = ("cmp-fruit", "cmp-dairy", "cmp-gold", "cmp-coffee")
SHARED_COUPON = "code:SAVE10"
# The hub's signing key in every hub of this run (written into its data dir before it
# starts), so the redemptions carry coupons the hub believes and verifies.
# Made from a fixed seed: the sender processes (spawned, so they import this module afresh)
# must sign with the same key as the hub of this run holds.
BENCH_HUB_KEY = SigningKey(HUB_KID, Ed25519PrivateKey.from_private_bytes(
    hashlib.sha256(b"bench/sync.py hub key").digest()))


# Three in four of those coupons were issued through the hub (`edge-hub coupons issue`
# records each with its token's hash, so the hub believes a redemption of exactly that token
# at once); the others (older coupons, the app's own) are checked by their signature.
BENCH_ISSUED: list[tuple[str, str, str]] = []


def give_bench_hub_key(settings: Any, db: HubDB) -> None:
    """Put BENCH_HUB_KEY where the hub keeps its signing key (`hub_signing_key` reads it),
    and record the coupons it issued as `issue_coupon` does."""
    datadir = DataDir(settings.data_dir).ensure()
    jwk = {**json.loads(OKPAlgorithm.to_jwk(BENCH_HUB_KEY.private)), "kid": HUB_KID}
    write_private(datadir.secrets / "signing-key.json", json.dumps(jwk), replace=True)
    if BENCH_ISSUED:
        now = time.time()
        with db.write() as conn:
            conn.execute(issued_coupons.insert(), [
                {"id": jti, "campaign_id": cmp, "customer_id": None, "max_uses": 1,
                 "expires_ts": now + 86400, "issued_ts": now,
                 "token_sha256": hashlib.sha256(token.encode()).hexdigest()}
                for jti, cmp, token in BENCH_ISSUED])


# ---------------------------------------------------------------- a store's day of events


Ev = tuple[str, str, str, dict[str, Any]]  # type, occurred_at, device_id, data


def store_day(rng: random.Random, store_id: str, n: int) -> list[Ev]:
    """`n` events of one store's day in order: (type, occurred_at, device_id, data)."""
    out: list[Ev] = []
    t = datetime.now(UTC).replace(hour=7, minute=0, second=0, microsecond=0) - timedelta(days=1)
    sale = 0
    while len(out) < n:
        sale += 1
        t += timedelta(seconds=rng.uniform(0.5, 6.0))
        lane = rng.randint(1, 12)
        device = f"pos-{lane:02d}"
        txn = f"{store_id}-{lane:02d}-{sale}"
        cust = f"c-{rng.randrange(50_000):05d}" if rng.random() < 0.4 else None
        if cust:
            out.append(("customer.identified", format_ts(t), device,
                        {"txn": txn, "customer_id": cust,
                         "method": rng.choice(("card", "card", "qr", "phone"))}))
        lines = [{"sku": sku, "qty": rng.choice((1, 1, 1, 2, 3)), "unit_minor": price}
                 for sku, price in rng.sample(SKUS, rng.randint(3, 8))]
        gross = sum(ln["qty"] * ln["unit_minor"] for ln in lines)
        done = t + timedelta(seconds=rng.uniform(20, 90))
        discount = 0
        if (cust and rng.random() < 0.2) or rng.random() < 0.02:
            shared = rng.random() < 0.25
            discount = max(1, min(gross // 10, 500))
            coupon = SHARED_COUPON if shared else f"cpn-{uuid7()}"
            campaign = rng.choice(CAMPAIGNS)
            # What the edge sends: the coupon as scanned, so the hub verifies it (a plain code
            # as it is; an app coupon signed with the hub's key).
            token = "SAVE10" if shared else BENCH_HUB_KEY.sign(
                {"jti": coupon, "cmp": campaign, "exp": int(done.timestamp()) + 86400},
                COUPON_TYP)
            if not shared and rng.random() < 0.75:
                BENCH_ISSUED.append((coupon, campaign, token))
            out.append(("coupon.redeemed", format_ts(done), device, {
                "redemption": uuid7(), "coupon": coupon, "campaign": campaign,
                "discount_minor": discount, "currency": "EUR", "customer_id": cust,
                "txn": txn, "store_id": store_id, "redeemed_at": format_ts(done),
                "max_uses": None if shared else 1, "token": token}))
        total = gross - discount
        tenders = ([{"kind": "card", "amount_minor": total}] if rng.random() < 0.8 else
                   [{"kind": "cash", "amount_minor": total, "tendered_minor": total + 100}])
        out.append(("transaction.completed", format_ts(done), device, {
            "txn": txn, "customer_id": cust, "total_minor": total, "discount_minor": discount,
            "currency": "EUR", "lines": lines, "tenders": tenders,
            "completed_at": format_ts(done)}))
        if rng.random() < (0.5 if cust else 0.1):
            out.append(("receipt.printed", format_ts(done + timedelta(seconds=1)),
                        f"printer-{lane:02d}", {
                            "job": uuid7(), "txn": txn, "printer": f"printer-{lane:02d}",
                            "customer_id": cust, "personalised": cust is not None,
                            "offer": rng.choice(CAMPAIGNS) if cust else None}))
        if sale % 80 == 0:
            out.append(("device.status", format_ts(t), device, {
                "kind": "pos", "state": "online", "uptime_s": sale * 3,
                "version": "2.4.1", "spool": rng.randint(0, 3)}))
    return out[:n]


def batch_bodies(store_id: str, n: int, size: int, seed: int) -> list[tuple[int, bytes]]:
    """`n` events of `store_id` as the request bodies the edge sends: (events, body)."""
    evs = store_day(random.Random(seed), store_id, n)
    bodies = []
    for i in range(0, n, size):
        chunk = [{"event_id": uuid7(), "type": type_, "occurred_at": at, "store_id": store_id,
                  "device_id": dev, "data": data} for type_, at, dev, data in evs[i:i + size]]
        body = {"batch_id": uuid7(), "events": chunk,
                "edge": {"queue_depth": n - i, "oldest_age_s": 1.0, "dead_letters": 0}}
        bodies.append((len(chunk), json.dumps(body, separators=(",", ":")).encode()))
    return bodies


def seed_outbox(data_dir: Path, n: int) -> tuple[set[str], dict[str, int]]:
    """An edge data dir with `n` events queued in transactions of 250; their ids and types."""
    settings = load_settings({}, store_id=DRAIN_STORE, data_dir=str(data_dir))
    store = Store(DataDir(settings.data_path).ensure().database)
    ids: set[str] = set()
    types: dict[str, int] = {}
    evs = store_day(random.Random(1), DRAIN_STORE, n)
    try:
        for i in range(0, n, 250):
            with store.transaction() as db:
                for type_, at, dev, data in evs[i:i + 250]:
                    ids.add(queue_data(db.conn, type_, data, device_id=dev, occurred_at=at))
                    types[type_] = types.get(type_, 0) + 1
        store.checkpoint()
    finally:
        store.close()
    return ids, types


# ---------------------------------------------------------------- processes: hub, floor, postgres


class DurablePostgres(PostgresCluster):
    """The tests' throw-away cluster, but with durable commits (fsync and synchronous_commit
    on), under `parent` when given (it must be enterable by the postgres user)."""

    def __init__(self, parent: str | None) -> None:
        super().__init__()
        os.rmdir(self.root)
        self.root = Path(tempfile.mkdtemp(prefix="bench-sync-pg-", dir=parent))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"

    def start(self, *, durable: bool = True) -> DurablePostgres:
        super().start(durable=durable)
        return self

    def settings_shown(self) -> dict[str, str]:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            return {k: str(conn.execute(f"SHOW {k}").fetchone()[0])  # type: ignore[index]
                    for k in ("fsync", "synchronous_commit", "wal_sync_method", "server_version")}

    def cpu_seconds(self) -> float:
        """CPU time of the postmaster, its live backends and its reaped children so far."""
        try:
            pm = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (proc / "stat").read_text()
                f = stat[stat.rindex(")") + 2:].split()
                if int(proc.name) == pm:
                    total += sum(int(x) for x in f[11:15]) / tick
                elif int(f[1]) == pm:
                    total += (int(f[11]) + int(f[12])) / tick
        return total


@dataclass
class Hub:
    proc: subprocess.Popen[bytes]
    url: str
    settings: HubSettings
    log: Path


def hub_vars(data_dir: Path, db_url: str, threads: int = 8) -> dict[str, str]:
    """The `HUB_*` settings of a hub on this data dir and database, on a port it picks."""
    return {"HUB_DATA_DIR": str(data_dir), "HUB_DATABASE_URL": db_url,
            "HUB_HTTP_HOST": "127.0.0.1", "HUB_HTTP_PORT": "0", "HUB_THREADS": str(threads)}


@contextlib.contextmanager
def hub_process(data_dir: Path, db_url: str, threads: int,
                stores: list[str]) -> Iterator[tuple[Hub, dict[str, str]]]:
    """A fresh `edge-hub serve` with `stores` registered first; the hub and their tokens.

    The hub picks its own port (HUB_HTTP_PORT=0) and says which on its first stdout line."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    env_vars = hub_vars(data_dir, db_url, threads)
    settings = load_hub_settings(env_vars)
    db = HubDB(settings.db_url)
    try:
        give_bench_hub_key(settings, db)
        tokens = {s: add_store(db, s, "bench") for s in stores}
    finally:
        db.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(env_vars)
    out_path = data_dir.parent / f"{data_dir.name}.out"
    log = data_dir.parent / f"{data_dir.name}.log"
    with out_path.open("wb") as out, log.open("ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "cloud_sync.hub.cli", "serve"], env=env,
                                stdout=out, stderr=err, cwd=REPO)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None:
            with contextlib.suppress(ValueError, KeyError, IndexError):
                port = int(json.loads(out_path.read_text().splitlines()[0])["port"])
            if port is None and (proc.poll() is not None or time.monotonic() > deadline):
                raise RuntimeError(f"edge-hub serve did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield Hub(proc, f"http://127.0.0.1:{port}", settings, log), tokens
    finally:
        stop_process(proc)


def floor_main(conn: Connection, threads: int) -> None:
    """The HTTP floor: waitress with a WSGI app that reads the body and answers `{}`."""
    import logging

    import waitress

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("waitress").setLevel(logging.ERROR)  # no "Task queue depth" notes

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", "2")])
        return [b"{}"]

    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=threads)
    conn.send(("port", server.effective_port))

    def control() -> None:
        with contextlib.suppress(EOFError, OSError):
            conn.recv()
        os._exit(0)

    threading.Thread(target=control, daemon=True).start()
    server.run()


# ---------------------------------------------------------------- sender processes (many stores)


def senders_main(conn: Connection, stores: list[tuple[int, str]], per_store: int,
                 batch: int) -> None:
    """Pre-build each store's batches, say ("ready", events), then on each ("run", spec) send
    them all (one thread per store, in order, one in flight) and answer ("done", figures)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    bodies = {s: batch_bodies(s, per_store, batch, 1000 + i) for i, s in stores}
    # The coupons this process's stores redeem that the hub issued: the hub records them.
    conn.send(("ready", (sum(n for b in bodies.values() for n, _ in b), BENCH_ISSUED)))
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            return
        conn.send(("done", send_all(bodies, msg[1])))


def send_store(store: str, batches: list[tuple[int, bytes]], url: str, token: str,
               start_at: float) -> dict[str, Any]:
    session = requests.Session()
    session.trust_env = False  # never through a proxy
    session.headers.update({"Authorization": f"Bearer {token}",
                            "Content-Type": "application/json"})
    r: dict[str, Any] = {"rtts": [], "stored": 0, "answered": 0, "retries": 0, "errors": [],
                         "first": None, "last": None}
    time.sleep(max(0.0, start_at - time.monotonic()))
    for n, body in batches:
        for _ in range(60):
            sent = time.monotonic()
            if r["first"] is None:
                r["first"] = sent
            try:
                resp = session.post(url, data=body, timeout=(5, 300))
            except requests.RequestException as exc:
                r["retries"] += 1
                r["errors"].append(f"{exc.__class__.__name__}")
                time.sleep(0.5)
                continue
            r["last"] = time.monotonic()
            if resp.status_code == 200:
                r["rtts"].append(r["last"] - sent)
                answer = resp.json()
                r["answered"] += n
                r["stored"] += len(answer.get("accepted", ())) + len(answer.get("duplicates", ()))
                break
            if resp.status_code in (408, 429) or resp.status_code >= 500:
                r["retries"] += 1
                r["errors"].append(f"HTTP {resp.status_code}")
                time.sleep(float(resp.headers.get("Retry-After") or 0.5))
                continue
            r["errors"].append(f"HTTP {resp.status_code}: {resp.text[:200]}")
            break
    session.close()
    return r


def send_all(bodies: dict[str, list[tuple[int, bytes]]], spec: dict[str, Any]) -> dict[str, Any]:
    cpu0 = time.process_time()
    results: dict[str, dict[str, Any]] = {}

    def one(store: str) -> None:
        results[store] = send_store(store, bodies[store],
                                    f"{spec['url']}/api/v1/stores/{store}/events",
                                    spec["tokens"].get(store, "floor"), spec["start_at"])

    threads = [threading.Thread(target=one, args=(s,), daemon=True) for s in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    firsts = [r["first"] for r in results.values() if r["first"] is not None]
    lasts = [r["last"] for r in results.values() if r["last"] is not None]
    return {"first": min(firsts, default=None), "last": max(lasts, default=None),
            "rtts": [x for r in results.values() for x in r["rtts"]],
            "stored": sum(r["stored"] for r in results.values()),
            "answered": sum(r["answered"] for r in results.values()),
            "retries": sum(r["retries"] for r in results.values()),
            "errors": [e for r in results.values() for e in r["errors"]][:5],
            "cpu_s": time.process_time() - cpu0}


def fan_out(senders: list[Child], url: str, tokens: dict[str, str]) -> dict[str, Any]:
    """All sender processes at once against `url`; their figures together."""
    start_at = time.monotonic() + 0.3
    for s in senders:
        s.conn.send(("run", {"url": url, "tokens": tokens, "start_at": start_at}))
    outs = [s.expect("done", 3600) for s in senders]
    firsts = [o["first"] for o in outs if o["first"] is not None]
    lasts = [o["last"] for o in outs if o["last"] is not None]
    wall = (max(lasts) - min(firsts)) if firsts and lasts else float("nan")
    rtts = sorted(x for o in outs for x in o["rtts"])
    return {"wall_s": wall, "rtt_p50_ms": percentile(rtts, 50) * 1000,
            "rtt_p99_ms": percentile(rtts, 99) * 1000, "batches": len(rtts),
            "stored": sum(o["stored"] for o in outs),
            "answered": sum(o["answered"] for o in outs),
            "retries": sum(o["retries"] for o in outs),
            "errors": [e for o in outs for e in o["errors"]][:5],
            "senders_cpu_s": sum(o["cpu_s"] for o in outs)}


# ---------------------------------------------------------------- measurements


def count_at_hub(db_url: str, expected: dict[str, int] | None = None,
                 ids: set[str] | None = None, store: str | None = None) -> dict[str, int]:
    """What the hub stored: per-store counts against `expected`, or exact ids of `store`."""
    db = HubDB(db_url)
    try:
        with db.read() as conn:
            if ids is not None:
                got = {r[0] for r in conn.execute(select(hub_events.c.event_id)
                                                  .where(hub_events.c.store_id == store))}
                return {"stored": len(got), "missing": len(ids - got), "extra": len(got - ids)}
            counts = dict(conn.execute(select(hub_events.c.store_id, func.count())
                                       .group_by(hub_events.c.store_id)).all())
    finally:
        db.dispose()
    assert expected is not None
    return {"stored": sum(counts.values()),
            "missing": sum(max(0, n - counts.get(s, 0)) for s, n in expected.items()),
            "extra": sum(max(0, counts.get(s, 0) - expected.get(s, 0)) for s in counts)}


def drain(template: Path, work: Path, db_url: str, ids: set[str], threads: int,
          limit_s: float, pg: DurablePostgres | None) -> dict[str, Any]:
    """One edge's full outbox to a fresh hub through `Sender.run()`."""
    edge_dir = work / "edge"
    shutil.copytree(template, edge_dir)
    with hub_process(work / "hub", db_url, threads, [DRAIN_STORE]) as (hub, tokens):
        settings = load_settings({}, store_id=DRAIN_STORE, data_dir=str(edge_dir),
                                 hub_url=hub.url, hub_token=tokens[DRAIN_STORE])
        store = Store(DataDir(settings.data_path).ensure().database)
        sender = Sender(settings, store, HubLink(settings), Metrics())
        assert sender.client is not None
        rtts: list[float] = []
        report_s = [0.0]
        post, report = sender.client.post_events, sender.queue_report

        def timed_post(body: bytes) -> requests.Response:
            t = time.perf_counter()
            try:
                return post(body)
            finally:
                rtts.append(time.perf_counter() - t)

        def timed_report() -> dict[str, Any]:
            t = time.perf_counter()
            try:
                return report()
            finally:
                report_s[0] += time.perf_counter() - t

        sender.client.post_events = timed_post  # type: ignore[method-assign]
        sender.queue_report = timed_report  # type: ignore[method-assign]
        hub_cpu0, pg_cpu0 = cpu_seconds(hub.proc.pid), pg.cpu_seconds() if pg else 0.0
        steal0, cpu0 = cpu_steal(), time.process_time()
        t0 = time.perf_counter()
        depth = len(ids)
        while depth:
            sender.run()
            depth = int(store.query_one("SELECT COUNT(*) AS n FROM outbox")["n"])  # type: ignore[index]
            if not depth or time.perf_counter() - t0 > limit_s:
                break
            time.sleep(max(sender.backoff.remaining(), 0.05))
        elapsed = time.perf_counter() - t0
        out = {"s": elapsed, "left": depth, "batches": len(rtts),
               "sender_cpu_s": time.process_time() - cpu0,
               "steal_pct": steal_pct(steal0, cpu_steal()),
               "hub_cpu_s": cpu_seconds(hub.proc.pid) - hub_cpu0,
               "pg_cpu_s": (pg.cpu_seconds() - pg_cpu0) if pg else None,
               "queue_report_s": report_s[0], "hub_rss_mb": rss_mb(hub.proc.pid),
               "hub_hwm_mb": rss_mb(hub.proc.pid, "VmHWM"),
               "failures": int(sender.metrics.registry.get_sample_value(
                   "edge_sync_failures_total") or 0),
               "last_error": sender.last_error,
               "dead_letters": int(store.query_one(
                   "SELECT COUNT(*) AS n FROM dead_letters")["n"])}  # type: ignore[index]
        rtts.sort()
        out.update(rtt_p50_ms=percentile(rtts, 50) * 1000, rtt_p99_ms=percentile(rtts, 99) * 1000,
                   eps=(len(ids) - depth) / elapsed)
        sender.close()
        store.close()
        out.update(count_at_hub(hub.settings.db_url, ids=ids, store=DRAIN_STORE))
    return out


def many_stores(work: Path, db_url: str, threads: int, senders: list[Child],
                expected: dict[str, int], pg: DurablePostgres | None) -> dict[str, Any]:
    """All stores' batches at once to a fresh hub."""
    with hub_process(work / "hub", db_url, threads, sorted(expected)) as (hub, tokens):
        hub_cpu0, pg_cpu0 = cpu_seconds(hub.proc.pid), pg.cpu_seconds() if pg else 0.0
        steal0 = cpu_steal()
        out = fan_out(senders, hub.url, tokens)
        out.update(steal_pct=steal_pct(steal0, cpu_steal()),
                   hub_cpu_s=cpu_seconds(hub.proc.pid) - hub_cpu0,
                   pg_cpu_s=(pg.cpu_seconds() - pg_cpu0) if pg else None,
                   hub_rss_mb=rss_mb(hub.proc.pid), hub_hwm_mb=rss_mb(hub.proc.pid, "VmHWM"))
        out.update(count_at_hub(hub.settings.db_url, expected=expected))
    out["eps"] = out["stored"] / out["wall_s"]
    return out


def ingest_direct(work: Path, db_url: str, bodies: list[tuple[int, bytes]]) -> float:
    """events/s of the hub's `ingest()` in this process (JSON, validation, database)."""
    from cloud_sync.hub.ingest import ingest

    settings = load_hub_settings(hub_vars(work / "hub", db_url))
    db = HubDB(settings.db_url)
    try:
        give_bench_hub_key(settings, db)
        add_store(db, DRAIN_STORE, "bench")
        t0 = time.perf_counter()
        n = 0
        for _, body in bodies:
            answer = ingest(db, settings, DRAIN_STORE, json.loads(body), BENCH_HUB_KEY)
            n += len(answer["accepted"])
        return n / (time.perf_counter() - t0)
    finally:
        db.dispose()


def insert_rows(bodies: list[tuple[int, bytes]]) -> list[list[dict[str, Any]]]:
    """The hub's `events` rows of each body, as `ingest()` makes them (made off the clock)."""
    from cloud_sync.hub.ingest import validate_batch

    settings = load_hub_settings({"HUB_DATA_DIR": "/nonexistent"})
    out = []
    now = time.time()
    for _, body in bodies:
        batch_id, parsed, _ = validate_batch(settings, DRAIN_STORE, json.loads(body))
        out.append([{"event_id": ev.event_id, "store_id": DRAIN_STORE, "type": ev.type,
                     "occurred_at": ev.occurred_at, "occurred_ts": ev.occurred_ts,
                     "device_id": ev.device_id, "customer_id": ev.customer_id,
                     "total_minor": ev.total_minor, "discount_minor": ev.discount_minor,
                     "currency": ev.currency, "coupon_id": ev.coupon_id,
                     "data": json.dumps(ev.data, separators=(",", ":"), ensure_ascii=False),
                     "batch_id": batch_id, "received_ts": now} for ev in parsed])
    return out


def raw_insert(db_url: str, rows: list[list[dict[str, Any]]]) -> float:
    """events/s of plain executemany INSERTs into a fresh `events` table, a transaction each."""
    db = HubDB(db_url)
    try:
        t0 = time.perf_counter()
        for chunk in rows:
            with db.write() as conn:
                conn.execute(hub_events.insert(), chunk)
        return sum(len(c) for c in rows) / (time.perf_counter() - t0)
    finally:
        db.dispose()


def cpu_per_batch(bodies: list[tuple[int, bytes]]) -> dict[str, float]:
    """ms per batch of `json.loads` and of the hub's `validate_batch`, in this process."""
    from cloud_sync.hub.ingest import validate_batch

    settings = load_hub_settings({"HUB_DATA_DIR": "/nonexistent"})
    sample = bodies[:40]
    t0 = time.perf_counter()
    decoded = [json.loads(b) for _, b in sample]
    t1 = time.perf_counter()
    for d in decoded:
        validate_batch(settings, DRAIN_STORE, d)
    t2 = time.perf_counter()
    return {"json_ms": (t1 - t0) * 1000 / len(sample),
            "validate_ms": (t2 - t1) * 1000 / len(sample),
            "bytes": sum(len(b) for _, b in sample) / len(sample)}


def floor_sequential(url: str, bodies: list[tuple[int, bytes]]) -> dict[str, Any]:
    """The drain's floor: the bodies posted one after another by one session."""
    session = requests.Session()
    session.trust_env = False
    rtts = []
    t0 = time.perf_counter()
    for _, body in bodies:
        t = time.perf_counter()
        resp = session.post(f"{url}/api/v1/stores/{DRAIN_STORE}/events", data=body,
                            headers={"Content-Type": "application/json"}, timeout=(5, 60))
        resp.raise_for_status()
        rtts.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t0
    session.close()
    rtts.sort()
    return {"eps": sum(n for n, _ in bodies) / elapsed, "rtt_p50_ms": percentile(rtts, 50) * 1000,
            "rtt_p99_ms": percentile(rtts, 99) * 1000}


# ---------------------------------------------------------------- the run


def db_url_for(root: Path, kind: str, name: str, pg: DurablePostgres | None) -> str:
    """A fresh database: a new PostgreSQL database, or for SQLite the hub's default file in
    its data dir ("hub") or a file of its own (anything else)."""
    if kind == "sqlite" or pg is None:
        return "" if name == "hub" else f"sqlite:///{root / kind / name / 'hub.db'}"
    return pg.url(pg.create_database())


def say(text: str) -> None:
    print(text, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    r: dict[str, Any] = {"db": {}}
    steal_all = cpu_steal()
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-sync-",
                                                                    dir=args.tmpdir)))
        r["fs"] = filesystem_of(root)
        volatile = ", NOT DURABLE: figures are too good" if r["fs"] in VOLATILE_FS else ""
        say(f"Working in {root} ({r['fs']}{volatile}); {os.cpu_count()} CPUs")
        stores = [f"s{i:03d}" for i in range(1, args.stores + 1)]
        procs = max(1, min(args.procs, len(stores)))
        senders = [stack.enter_context(child(senders_main, f"senders-{p}",
                                             list(enumerate(stores))[p::procs],
                                             args.events_per_store, args.batch))
                   for p in range(procs)]
        t = time.perf_counter()
        ids, types = seed_outbox(root / "edge-template", args.events)
        r["types"] = types
        bodies = batch_bodies(DRAIN_STORE, args.events, args.batch, 1)
        built = 0
        for sender in senders:
            events, issued = sender.expect("ready", 600)
            built += events
            BENCH_ISSUED.extend(tuple(row) for row in issued)
        expected = {s: args.events_per_store for s in stores}
        assert built == sum(expected.values())
        say(f"Built in {time.perf_counter() - t:.1f} s: {args.events:,} events queued in the edge "
            f"outbox ({', '.join(f'{k} {v:,}' for k, v in sorted(types.items()))}); "
            f"{built:,} events for {len(stores)} stores in {procs} sender processes")
        r["cpu"] = cpu_per_batch(bodies)

        # The HTTP floor.
        with child(floor_main, "floor", args.hub_threads) as floor:
            url = f"http://127.0.0.1:{floor.expect('port', 30)}"
            r["floor_seq"] = floor_sequential(url, bodies)
            steal0 = cpu_steal()
            r["floor_many"] = fan_out(senders, url, {})
            r["floor_many"]["steal_pct"] = steal_pct(steal0, cpu_steal())
            r["floor_many"]["eps"] = r["floor_many"]["answered"] / r["floor_many"]["wall_s"]
        say("Floor done.")
        rows = insert_rows(bodies)

        kinds = ["sqlite"] if args.skip_pg else ["sqlite", "pg"]
        pg: DurablePostgres | None = None
        for kind in kinds:
            if kind == "pg":
                if PG_BIN is None:
                    raise SystemExit("PostgreSQL is not installed (or use --skip-pg)")
                pg = DurablePostgres(args.tmpdir).start()
                stack.callback(pg.stop)
                r["pg_settings"] = pg.settings_shown()

            d: dict[str, Any] = {}
            work = root / kind
            d["drain"] = drain(root / "edge-template", work / "drain",
                               db_url_for(root, kind, "hub", pg), ids, args.hub_threads,
                               args.drain_limit_s, pg)
            say(f"{kind}: drain done.")
            d["many"] = many_stores(work / "many", db_url_for(root, kind, "hub", pg),
                                    args.hub_threads, senders, expected, pg)
            say(f"{kind}: {len(stores)} stores done.")
            d["direct_eps"] = ingest_direct(work / "direct", db_url_for(root, kind, "hub", pg),
                                            bodies)
            d["insert_eps"] = raw_insert(db_url_for(root, kind, "insert", pg), rows)
            r["db"][kind] = d
    r["steal_pct"] = steal_pct(steal_all, cpu_steal())
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=100_000, help="events in the drained outbox")
    p.add_argument("--stores", type=int, default=50, help="stores sending at once")
    p.add_argument("--events-per-store", type=int, default=4000)
    p.add_argument("--batch", type=int, default=500, help="events per batch (the edge's "
                   "sync_batch_events) for the pre-built batches")
    p.add_argument("--procs", type=int, default=5, help="sender processes for the many stores")
    p.add_argument("--hub-threads", type=int, default=8, help="HUB_THREADS (waitress)")
    p.add_argument("--drain-limit-s", type=float, default=900.0,
                   help="give up a drain after this long")
    p.add_argument("--skip-pg", action="store_true", help="SQLite only")
    p.add_argument("--tmpdir", default=None, help="where the data dirs go (default: $TMPDIR)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    r = run(args)

    drain_target = DRAIN_TARGET_S_PER_100K * args.events / 100_000
    c, fs, fm = r["cpu"], r["floor_seq"], r["floor_many"]
    total_many = args.stores * args.events_per_store
    say(f"\nSync to the hub: {args.events:,} events drained by one edge; {args.stores} stores x "
        f"{args.events_per_store:,} events at once from {min(args.procs, args.stores)} sender "
        f"processes; batches of {args.batch} (~{c['bytes'] / 1024:.0f} KiB); hub with "
        f"{args.hub_threads} waitress threads; data on {r['fs']}; {os.cpu_count()} CPUs, "
        f"CPU steal {r['steal_pct']:.1f} %")
    say("\nFloor (HTTP + JSON bodies, no hub): a waitress app that reads the body and answers {}")
    say(f"  one sender, batches in sequence:  {fs['eps']:9,.0f} events/s  (round trip p50 "
        f"{fs['rtt_p50_ms']:.1f} ms, p99 {fs['rtt_p99_ms']:.1f} ms)")
    say(f"  {args.stores} stores at once:              {fm['eps']:9,.0f} events/s  "
        f"({fm['answered']:,} events in {fm['wall_s']:.1f} s; senders' CPU "
        f"{fm['senders_cpu_s']:.1f} s)")
    say(f"  in process, per batch: json.loads {c['json_ms']:.1f} ms, the hub's validate_batch "
        f"{c['validate_ms']:.1f} ms")
    names = {"sqlite": "SQLite (WAL, synchronous = FULL)",
             "pg": "PostgreSQL {server_version} (fsync = {fsync}, synchronous_commit = "
                   "{synchronous_commit}, wal_sync_method = {wal_sync_method})"}
    ok = True
    missing = extra = 0
    figures: dict[str, Any] = {}
    for kind, d in r["db"].items():
        dr, m = d["drain"], d["many"]
        say(f"\n{names[kind].format(**r.get('pg_settings', {}))}")
        drain_ok = dr["left"] == 0 and dr["s"] <= drain_target
        many_ok = m["eps"] >= INGEST_TARGET_EPS
        say(f"  drain: {args.events - dr['left']:,} events in {dr['s']:.1f} s = "
            f"{dr['eps']:,.0f} events/s, {dr['batches']} batches, round trip p50 "
            f"{dr['rtt_p50_ms']:.0f} ms, p99 {dr['rtt_p99_ms']:.0f} ms   target <= "
            f"{drain_target:.0f} s: {verdict(drain_ok)}")
        pg_cpu = f", PostgreSQL {dr['pg_cpu_s']:.1f} s" if dr["pg_cpu_s"] is not None else ""
        say(f"    CPU: hub {dr['hub_cpu_s']:.1f} s{pg_cpu}, sender (this process) "
            f"{dr['sender_cpu_s']:.1f} s of which queue_report {dr['queue_report_s']:.1f} s wall; "
            f"hub VmRSS {dr['hub_rss_mb']:.0f} MiB (peak {dr['hub_hwm_mb']:.0f}); steal "
            f"{dr['steal_pct']:.1f} %")
        say(f"    at the hub: {dr['stored']:,} (missing {dr['missing']}, extra {dr['extra']}); "
            f"left in the outbox {dr['left']}, dead letters {dr['dead_letters']}, failed sends "
            f"{dr['failures']}{' (' + dr['last_error'] + ')' if dr['last_error'] else ''}")
        say(f"  {args.stores} stores at once: {m['stored']:,} of {total_many:,} events in "
            f"{m['wall_s']:.1f} s = {m['eps']:,.0f} events/s, round trip p50 "
            f"{m['rtt_p50_ms']:.0f} ms, p99 {m['rtt_p99_ms']:.0f} ms   target >= "
            f"{INGEST_TARGET_EPS:,.0f}/s: {verdict(many_ok)}")
        pg_cpu = f", PostgreSQL {m['pg_cpu_s']:.1f} s" if m["pg_cpu_s"] is not None else ""
        say(f"    CPU: hub {m['hub_cpu_s']:.1f} s{pg_cpu}, senders {m['senders_cpu_s']:.1f} s "
            f"(same 2 cores as the hub); hub VmRSS {m['hub_rss_mb']:.0f} MiB (peak "
            f"{m['hub_hwm_mb']:.0f}); steal {m['steal_pct']:.1f} %")
        say(f"    at the hub: {m['stored']:,} (missing {m['missing']}, extra {m['extra']}); "
            f"retries {m['retries']}{', e.g. ' + '; '.join(m['errors']) if m['errors'] else ''}")
        say(f"  beside them: ingest() in this process, no HTTP: {d['direct_eps']:,.0f} events/s; "
            f"plain executemany INSERT into events, a transaction per {args.batch}: "
            f"{d['insert_eps']:,.0f} events/s")
        ok = ok and drain_ok and many_ok and not dr["missing"] and not m["missing"] \
            and not dr["extra"] and not m["extra"]
        missing += dr["missing"] + m["missing"]
        extra += dr["extra"] + m["extra"]
        figures[kind] = {"drain_ok": drain_ok, "many_ok": many_ok}

    def fig(kind: str, part: str, key: str, digits: int = 0) -> float | None:
        d = r["db"].get(kind)
        if d is None:
            return None
        value = d[part][key] if part else d[key]
        return round(value, digits) if digits else round(value)

    out = {"bench": "sync", "drain_events": args.events, "stores": args.stores,
           "events_per_store": args.events_per_store, "batch": args.batch,
           "drain_sqlite_s": fig("sqlite", "drain", "s", 2),
           "drain_sqlite_eps": fig("sqlite", "drain", "eps"),
           "drain_pg_s": fig("pg", "drain", "s", 2), "drain_pg_eps": fig("pg", "drain", "eps"),
           "drain_sqlite_rtt_p99_ms": fig("sqlite", "drain", "rtt_p99_ms", 1),
           "drain_pg_rtt_p99_ms": fig("pg", "drain", "rtt_p99_ms", 1),
           "ingest_50_sqlite_eps": fig("sqlite", "many", "eps"),
           "ingest_50_pg_eps": fig("pg", "many", "eps"),
           "ingest_direct_sqlite_eps": fig("sqlite", "", "direct_eps"),
           "ingest_direct_pg_eps": fig("pg", "", "direct_eps"),
           "baseline_http_eps": round(fm["eps"]), "baseline_http_seq_eps": round(fs["eps"]),
           "baseline_insert_sqlite_eps": fig("sqlite", "", "insert_eps"),
           "baseline_insert_pg_eps": fig("pg", "", "insert_eps"),
           "hub_rss_peak_mb": max(round(d[p]["hub_hwm_mb"], 1) for d in r["db"].values()
                                  for p in ("drain", "many")),
           "missing": missing, "extra": extra, "cpu_steal_pct": round(r["steal_pct"], 1),
           "targets": {"drain_max_s": drain_target, "ingest_50_min_eps": INGEST_TARGET_EPS,
                       **{f"{name}_{k}_met": v[f"{p}_ok"] for k, v in figures.items()
                          for p, name in (("drain", "drain"), ("many", "ingest_50"))}},
           "all_targets_met": ok}
    say(f"\nAll targets {'met' if ok else 'NOT met'}"
        f"{' (PostgreSQL skipped)' if args.skip_pg else ''}.")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
