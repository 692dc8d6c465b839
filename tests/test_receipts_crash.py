"""Power cuts and receipts: `edge serve` is SIGKILLed with receipts not yet printed.

The edge serves a virtual network printer (real TCP, real ESC/POS). After the kill a new
edge starts on the same data dir; every receipt of a committed sale must come out, and
none twice.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edge.app.printers import add_printer
from edge.datadir import DataDir
from edge.settings import Settings
from edge.store import Store
from edge.supervise import stop_process
from pos_bridge.device import DeviceClient
from pos_bridge.virtual_printer import VirtualPrinter
from tests.conftest import start_edge_on_bus, wait_until

BASKET = {"currency": "EUR", "total_minor": 450, "lines": [
    {"sku": "bread", "qty": 1, "unit_minor": 450, "categories": ["bakery"],
     "name": "Roggenbrot"}]}


@pytest.fixture
def printer(virtual_printer: Callable[[str], VirtualPrinter]) -> VirtualPrinter:
    return virtual_printer("TM-T88V")


@pytest.fixture
def edge_with_printer(settings: Settings, datadir: DataDir, store: Store, broker: Any,
                      printer: VirtualPrinter) -> Iterator[list[subprocess.Popen[bytes]]]:
    add_printer(settings, datadir, store, "printer-1", lanes=["lane-1"],
                connection=printer.address, profile="TM-T88V")
    procs = [start_edge_on_bus(on_port_0(settings))]
    yield procs
    stop_process(procs[-1])


def on_port_0(settings: Settings) -> Settings:
    """The edge binds an HTTP port of its own choosing (and reports it)."""
    return settings.with_overrides(http_port=0)


def jobs(settings: Settings) -> dict[str, str]:
    conn = sqlite3.connect(settings.data_path / "edge.db", timeout=10)
    try:
        return dict(conn.execute("SELECT job, state FROM print_jobs").fetchall())
    finally:
        conn.close()


def complete(lane: DeviceClient, txn: str) -> str:
    reply = lane.request("txn.complete", {
        "txn": txn, "basket": BASKET, "total_minor": 450, "currency": "EUR",
        "tenders": [{"kind": "cash", "amount_minor": 500}]}, timeout=10)
    assert reply["ok"], reply
    job: str = reply["data"]["receipt"]["job"]
    return job


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def test_receipts_queued_at_a_kill_print_exactly_once_after_restart(
        settings: Settings, printer: VirtualPrinter, device: Callable[..., DeviceClient],
        edge_with_printer: list[subprocess.Popen[bytes]]) -> None:
    lane = device("pos", "lane-1")
    printer.set_paper("empty")
    queued = [complete(lane, f"s-{i}") for i in range(5)]
    assert wait_until(lambda: set(jobs(settings).values()) == {"held"}, 15), jobs(settings)
    kill(edge_with_printer[-1])
    # The printer service died with the edge: once its connection is gone nobody can print.
    assert wait_until(lambda: printer.open_connections == 0, 10)
    printer.set_paper("ok")
    assert printer.printouts == []  # nobody prints while the edge is down
    edge_with_printer.append(start_edge_on_bus(on_port_0(settings)))
    papers = printer.wait_printouts(5, timeout=20)
    assert wait_until(lambda: set(jobs(settings).values()) == {"printed"}, 15), jobs(settings)
    assert sorted(sum(p.find_text(j) for p in papers) for j in queued) == [1] * 5
    # A barrier instead of a wait: the printer prints in arrival order, so a receipt sent
    # now comes out after anything a second resend round had sent before it.
    marker = complete(lane, "s-marker")
    after = printer.wait_printouts(6, timeout=20)
    assert after[-1].find_text(marker)
    assert len([p for p in printer.printouts if p.complete]) == 6
    assert sorted(sum(p.find_text(j) for p in after) for j in queued) == [1] * 5


def test_kill_while_printing_a_burst_never_prints_a_receipt_twice(
        settings: Settings, printer: VirtualPrinter, device: Callable[..., DeviceClient],
        edge_with_printer: list[subprocess.Popen[bytes]]) -> None:
    lane = device("pos", "lane-1")
    burst = [complete(lane, f"b-{i}") for i in range(12)]
    kill(edge_with_printer[-1])  # some printed, some on their way, some still queued
    edge_with_printer.append(start_edge_on_bus(on_port_0(settings)))
    assert wait_until(lambda: all(s in ("printed", "failed") for s in jobs(settings).values()),
                      30), jobs(settings)
    # A barrier instead of a wait: a receipt sent now prints after anything resent before.
    marker = complete(lane, "b-marker")
    assert wait_until(lambda: jobs(settings)[marker] == "printed", 20), jobs(settings)
    states = jobs(settings)
    complete_papers = [p for p in printer.printouts if p.complete]
    assert complete_papers[-1].find_text(marker)
    assert sum(p.find_text(marker) for p in complete_papers) == 1
    counts = {j: sum(p.find_text(j) for p in complete_papers) for j in burst}
    assert all(n <= 1 for n in counts.values()), counts
    for j in burst:
        if states[j] == "printed":
            assert counts[j] == 1, (j, counts[j])
    # Only a job cut off in the very moment of the kill may need a person (interrupted).
    assert sum(1 for s in states.values() if s == "failed") <= 1, states
