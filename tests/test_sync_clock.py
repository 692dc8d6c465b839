"""Clock trouble does not lose events: an edge whose clock stepped back keeps syncing.

The edge is a real `edge serve` whose clock libfaketime sets 2 hours back (LD_PRELOAD; the
Mosquitto broker and the hub keep the real clock). Its outbox holds events queued while its
clock was 2 hours ahead and events queued on the real clock, so from where it stands they
were all queued in the future: negative queue ages, `occurred_at` ahead of its clock. The
hub is a real `edge-hub serve`; a rogue-free, plain HTTP client plays an edge whose report is
odd in every way a report can be.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.schema import events as hub_events
from cloud_sync.hub.schema import stores as hub_stores
from cloud_sync.hub.settings import HubSettings
from edge.broker import BrokerProcess
from edge.settings import Settings
from edge.store import Store
from edge.supervise import stop_process
from store_contract.protocol import format_ts
from tests.conftest import REPO, EdgeProc, edge_log, start_edge, wait_until
from tests.hubfix import HubServer, event, start_hub, stop_hub
from tests.test_sync import add_store, edge_for, hub_rows, outbox_depth, produce

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def faked(offset: str) -> dict[str, str]:
    """Environment that sets a process's wall clock `offset` from the real one ("-2h")."""
    if not LIBFAKETIME.exists():
        pytest.fail("libfaketime is not installed: run scripts/test.sh, which installs it")
    # Timers (backoff, MQTT keep-alive) run on the monotonic clock, which a stepped wall
    # clock does not move either.
    return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": offset,
            "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_DONT_RESET": "1"}


def start_faked_edge(settings: Settings, offset: str) -> EdgeProc:
    """`edge serve` (tests.conftest.start_edge) with its wall clock at `offset`."""
    return start_edge(settings, faked(offset))


QUEUE_AHEAD = """
import sys, time
from edge.outbox import queue_data
from edge.store import Store
store = Store(__import__("pathlib").Path(sys.argv[1]))
ids = []
with store.transaction() as db:
    for i in range(int(sys.argv[2])):
        ids.append(queue_data(db.conn, "device.status", {"state": "online", "n": i},
                              device_id="lane-1"))
store.close()
print(time.time())
print("\\n".join(ids))
"""


@pytest.fixture
def faked_edge_stop() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        stop_process(proc)


def test_an_edge_whose_clock_stepped_back_two_hours_sends_its_queue_and_loses_nothing(
        settings: Settings, store: Store, hub_sqlite: HubSettings, broker: BrokerProcess,
        faked_edge_stop: list[subprocess.Popen[bytes]]) -> None:
    hub = start_hub(hub_sqlite)
    try:
        token = add_store(hub_sqlite, settings.store_id)
        edge_settings = edge_for(settings, hub.url, token, http_port=0)  # the edge picks it
        database = store.path
        # Queued while the box's clock was 2 hours ahead (another process, faked +2h) ...
        done = subprocess.run([sys.executable, "-c", QUEUE_AHEAD, str(database), "40"],
                              env={**settings.environ(), **faked("+2h")}, cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        ahead_clock, *ahead = done.stdout.split()
        assert float(ahead_clock) - time.time() > 7000  # the faked clock really was ahead
        # ... and on the real clock, just before it stepped 2 hours back.
        made = produce(store, 300)

        edge = start_faked_edge(edge_settings, "-2h")
        faked_edge_stop.append(edge)
        assert wait_until(lambda: outbox_depth(store) == 0, 60, interval=0.2), \
            edge_log(settings).read_text()[-3000:]
        dead = store.query("SELECT event_id, error FROM dead_letters")
        last_sent = store.query_one("SELECT value FROM sync_state WHERE key = 'last_sent'")
        assert dead == []
        assert last_sent is not None
        assert time.time() - float(last_sent["value"]) > 7000  # its clock was 2 hours back
        at_hub = hub_rows(hub_sqlite, settings.store_id)
        assert set(at_hub) == set(made) | set(ahead)
        assert all(at_hub[eid] == data for eid, data in made.items())
        health = requests.get(f"http://127.0.0.1:{edge.http_port}/healthz",
                              timeout=5).json()
        assert health["queue"]["depth"] == 0 and health["queue"]["dead_letters"] == 0
        # What the edge reported of its queue is a usable figure, never a negative age.
        db = HubDB(hub_sqlite.db_url)
        try:
            with db.read() as conn:
                row = conn.execute(select(hub_stores.c.oldest_age_s, hub_stores.c.queue_depth)
                                   .where(hub_stores.c.id == settings.store_id)).one()
        finally:
            db.dispose()
        assert row.oldest_age_s is None or row.oldest_age_s >= 0
    finally:
        stop_hub(hub)


# ---------------------------------------------------------------- the hub on its own


def post(server: HubServer, store: str, token: str, body: Any) -> requests.Response:
    return requests.post(f"{server.url}/api/v1/stores/{store}/events", data=json.dumps(body),
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/json"}, timeout=30)


@pytest.mark.parametrize("report", [
    {"queue_depth": 3, "oldest_age_s": -7200, "dead_letters": 0},
    {"queue_depth": -1, "oldest_age_s": "soon", "dead_letters": 1.5},
    {"queue_depth": 2**40, "oldest_age_s": 1e300, "dead_letters": True},
    "a report", [1, 2, 3], None,
])
def test_the_hub_stores_a_batch_whatever_its_queue_report_says(
        hub_server: HubServer, hub_store: Callable[..., str], report: Any) -> None:
    token = hub_store("s1")
    future = format_ts(datetime.now(UTC) + timedelta(hours=2))
    ahead = event("s1", occurred_at=future, data={"state": "online"})
    now = event("s1")
    resp = post(hub_server, "s1", token, {"batch_id": "b-clock", "events": [ahead, now],
                                          "edge": report})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"accepted": [ahead["event_id"], now["event_id"]],
                           "duplicates": [], "rejected": []}
    db = HubDB(hub_server.settings.db_url)
    try:
        with db.read() as conn:
            stored = {r.event_id: r for r in conn.execute(
                select(hub_events).where(hub_events.c.store_id == "s1"))}
            store = conn.execute(select(hub_stores).where(hub_stores.c.id == "s1")).one()
    finally:
        db.dispose()
    assert stored[ahead["event_id"]].occurred_at == future  # as the edge said, in the future
    assert stored[ahead["event_id"]].occurred_ts > stored[ahead["event_id"]].received_ts
    # Usable figures are kept, a negative age is 0, the rest is left out.
    if isinstance(report, dict) and report["queue_depth"] == 3:
        assert (store.queue_depth, store.oldest_age_s, store.dead_letters) == (3, 0.0, 0)
    else:
        assert (store.queue_depth, store.oldest_age_s, store.dead_letters) == (None, None, None)
