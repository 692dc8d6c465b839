"""Power-cut faults: the edge process is SIGKILLed in the middle of a checkout.

The edge runs as `edge serve` (its own process) against a real Mosquitto. After each kill a
new edge starts on the same data dir and the lane repeats what it was doing, as a real POS
does when it gets no answer. Nothing may be redeemed twice and nothing committed may be lost.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edge.settings import Settings
from edge.supervise import stop_process
from pos_bridge.device import DeviceClient
from store_contract.protocol import new_envelope
from tests.conftest import Issuer, start_edge, wait_until

BASKET = {"currency": "EUR", "total_minor": 1000, "lines": [
    {"sku": "wine", "qty": 1, "unit_minor": 1000, "categories": ["wine"]}]}


class Edge:
    """The running `edge serve`, killed and restarted by the test."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.with_overrides(http_port=0)  # the edge picks its HTTP port
        self.proc: subprocess.Popen[bytes] = start_edge(self.settings)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> None:
        self.proc = start_edge(self.settings)

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def edge_proc(settings: Settings, broker: Any) -> Iterator[Edge]:
    edge = Edge(settings)
    yield edge
    edge.stop()


@pytest.fixture
def lane(device: Callable[..., DeviceClient], edge_proc: Edge) -> DeviceClient:
    return device("pos", "lane-1")


def db(settings: Settings) -> sqlite3.Connection:
    conn = sqlite3.connect(settings.data_path / "edge.db", timeout=10, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def redemptions(settings: Settings, txn: str) -> list[str]:
    with db(settings) as conn:
        return [r["id"] for r in conn.execute(
            "SELECT id FROM redemptions WHERE txn = ? AND reversed_at IS NULL", (txn,))]


def outbox_count(settings: Settings, type_: str) -> int:
    with db(settings) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE type = ?",
                                (type_,)).fetchone()[0])


def complete_data(txn: str) -> dict[str, Any]:
    return {"txn": txn, "basket": BASKET, "total_minor": 900, "currency": "EUR",
            "tenders": [{"kind": "cash", "amount_minor": 900}]}


def retry(lane: DeviceClient, method: str, data: dict[str, Any],
          request_id: str | None = None) -> dict[str, Any]:
    """What a POS does without an answer: send the same request again until one comes."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return lane.request(method, data, timeout=2, request_id=request_id)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def test_killed_between_apply_and_complete_the_hold_survives_and_redeems_once(
        settings: Settings, edge_proc: Edge, lane: DeviceClient, issuer: Issuer) -> None:
    code = issuer.coupon(jti="cpn-kill-1")
    applied = retry(lane, "coupon.apply", {"txn": "s-1", "code": code, "basket": BASKET})
    assert applied["ok"], applied
    edge_proc.kill()
    edge_proc.restart()
    # The lane re-sends its apply (it never trusted the first answer) and then completes.
    again = retry(lane, "coupon.apply", {"txn": "s-1", "code": code, "basket": BASKET})
    assert again["data"]["reservation"] == applied["data"]["reservation"]
    done = retry(lane, "txn.complete", complete_data("s-1"))
    assert done["ok"], done
    assert redemptions(settings, "s-1") == [done["data"]["redemptions"][0]["redemption"]]
    # Another lane still cannot take the coupon.
    other = retry(lane, "coupon.apply", {"txn": "s-2", "code": code, "basket": BASKET})
    assert other["error"]["code"] == "coupon_used"


def test_killed_while_complete_waits_to_commit_nothing_is_half_done(
        settings: Settings, edge_proc: Edge, lane: DeviceClient, issuer: Issuer) -> None:
    code = issuer.coupon(jti="cpn-kill-2")
    assert retry(lane, "coupon.apply", {"txn": "s-1", "code": code, "basket": BASKET})["ok"]
    # Hold the database's write lock, so the edge's txn.complete is stuck inside its handler.
    blocker = db(settings)
    blocker.execute("BEGIN IMMEDIATE")
    request_id = "01890a5d-ac96-774b-bcce-b302099a80aa"
    with pytest.raises(TimeoutError):
        lane.request("txn.complete", complete_data("s-1"), timeout=1.5, request_id=request_id)
    edge_proc.kill()
    blocker.execute("ROLLBACK")
    blocker.close()
    assert redemptions(settings, "s-1") == []
    assert outbox_count(settings, "coupon.redeemed") == 0
    edge_proc.restart()
    done = retry(lane, "txn.complete", complete_data("s-1"), request_id=request_id)
    assert done["ok"], done
    assert len(redemptions(settings, "s-1")) == 1
    assert outbox_count(settings, "coupon.redeemed") == 1
    assert outbox_count(settings, "transaction.completed") == 1


def timed_complete(lane: DeviceClient, issuer: Issuer, txn: str) -> float:
    """Seconds from sending a txn.complete (of a sale with a held coupon) to its answer."""
    code = issuer.coupon()
    assert retry(lane, "coupon.apply", {"txn": txn, "code": code, "basket": BASKET})["ok"]
    started = time.perf_counter()
    done = lane.request("txn.complete", complete_data(txn), timeout=10)
    took = time.perf_counter() - started
    assert done["ok"], done
    return took


def test_killed_at_any_moment_of_complete_redeems_exactly_once(
        settings: Settings, edge_proc: Edge, lane: DeviceClient, issuer: Issuer) -> None:
    # How long a complete takes here, from publishing it to its answer (the commit comes
    # before the answer). The kill points are spread over that time and beyond it, so
    # some land before the edge commits and some after; both outcomes must be seen.
    duration = max(timed_complete(lane, issuer, f"warm-{i}") for i in range(3))
    fractions = [0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.5, 2.0, 4.0]
    outcomes: dict[float, bool] = {}
    for n, fraction in enumerate(fractions):
        txn = f"s-{n}"
        code = issuer.coupon(jti=f"cpn-kill-3-{n}")
        assert retry(lane, "coupon.apply", {"txn": txn, "code": code, "basket": BASKET})["ok"]
        # Published without waiting for the answer, so the kill can land at any point of it.
        envelope = new_envelope("txn.complete", complete_data(txn))
        lane.client.publish(f"store/{settings.store_id}/pos/lane-1/req/txn.complete",
                            envelope.to_json(), qos=1)
        time.sleep(duration * fraction)
        edge_proc.kill()
        before = redemptions(settings, txn)
        assert len(before) <= 1  # committed in full, or not at all
        with db(settings) as conn:
            queued = conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE type = 'coupon.redeemed' "
                "AND json_extract(data, '$.txn') = ?", (txn,)).fetchone()[0]
        assert queued == len(before)  # the event is queued in the same commit, or not at all
        outcomes[fraction] = bool(before)
        edge_proc.restart()
        done = retry(lane, "txn.complete", complete_data(txn))
        assert done["ok"], done
        after = redemptions(settings, txn)
        assert len(after) == 1
        assert [r["redemption"] for r in done["data"]["redemptions"]] == after
        if before:
            assert after == before  # what was committed before the kill is what counts
        # Another sale cannot take the coupon again.
        again = retry(lane, "coupon.apply", {"txn": f"other-{n}", "code": code,
                                             "basket": BASKET})
        assert again["error"]["code"] == "coupon_used", again
    assert outbox_count(settings, "coupon.redeemed") == 3 + len(fractions)
    # Both branches ran: some kills came before the commit, some after it.
    assert False in outcomes.values(), f"no kill landed before the commit: {outcomes}"
    assert True in outcomes.values(), f"no kill landed after the commit: {outcomes}"


def test_committed_sale_survives_a_kill_right_after_the_reply(
        settings: Settings, edge_proc: Edge, lane: DeviceClient, issuer: Issuer) -> None:
    code = issuer.coupon(jti="cpn-kill-4")
    assert retry(lane, "coupon.apply", {"txn": "s-1", "code": code, "basket": BASKET})["ok"]
    done = retry(lane, "txn.complete", complete_data("s-1"))
    edge_proc.kill()
    assert redemptions(settings, "s-1") == [done["data"]["redemptions"][0]["redemption"]]
    edge_proc.restart()
    assert wait_until(lambda: retry(lane, "ping", {})["ok"], timeout=10)
    assert retry(lane, "txn.complete", complete_data("s-1"))["data"] == done["data"]
    assert outbox_count(settings, "transaction.completed") == 1
