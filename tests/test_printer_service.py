"""The printer service against a virtual network printer over real TCP (docs/receipts.md §2).

The virtual printer answers DLE EOT like an Epson, runs out of paper, opens its cover and
vanishes from the network when told to; what it printed is read back as text. The service
answers through the `publish` callable here, and over the real broker in the MQTT tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.broker import BrokerProcess
from edge.datadir import DataDir
from edge.devices import Enrolment
from edge.settings import Settings
from pos_bridge.device import DeviceClient
from pos_bridge.printer import PrinterLink, PrinterService, PrintJournal
from pos_bridge.printing.interpreter import interpret
from pos_bridge.printing.transports import parse_connection
from pos_bridge.virtual_printer import VirtualPrinter
from store_contract.mqtt import make_client, parse_mqtt_url, stop_loop
from store_contract.protocol import command_topic, event_topic, new_envelope, status_topic
from tests.conftest import REPO, free_port, wait_until

PROFILE = "TM-T88V"


def document(job: str, lines: int = 12) -> dict[str, Any]:
    """A receipt whose footer names its job, so a printout can be matched to its job."""
    return {"v": 1, "kind": "receipt", "job": job, "blocks": [
        {"type": "header", "title": "Demo Store", "lines": ["Hauptstraße 1"]},
        {"type": "lines", "items": [{"name": f"Product {i} Äpfel", "amount": f"€{i}.99"}
                                    for i in range(lines)]},
        {"type": "totals", "rows": [{"label": "Total", "amount": "€99.00", "strong": True}]},
        {"type": "qr", "data": f"https://survey.example/r?t={job}", "caption": "How did we do?"},
        {"type": "footer", "lines": [f"Receipt {job}"]},
    ]}


def receipts(printer: VirtualPrinter, *, complete: bool = True) -> list[str]:
    """The job of every printout (complete ones by default), in paper order."""
    jobs: list[str] = []
    for out in printer.printouts:
        if out.complete == complete:
            jobs.extend(line.split()[1] for line in out.text if line.startswith("Receipt "))
    return jobs


class Answers:
    """The service's `evt/job` answers, in order, with waiting."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.statuses: list[dict[str, str]] = []
        self._cond = threading.Condition()

    def job(self, body: dict[str, Any]) -> None:
        with self._cond:
            self.items.append(body)
            self._cond.notify_all()

    def status(self, fields: dict[str, str]) -> None:
        with self._cond:
            self.statuses.append(fields)
            self._cond.notify_all()

    def of(self, job: str) -> list[tuple[str, str | None]]:
        with self._cond:
            return [(a["state"], a.get("reason")) for a in self.items if a["job"] == job]

    def wait(self, job: str, state: str, count: int = 1,
             timeout: float = 8.0) -> list[tuple[str, str | None]]:
        """Wait for the `count`-th answer `state` for `job`; returns all answers for `job`."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: sum(1 for s, _ in self.of(job) if s == state) >= count, timeout)
        assert ok, f"no {state!r} #{count} for {job}; answers: {self.items}"
        return self.of(job)

    def wait_status(self, timeout: float = 8.0, **fields: str) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: any(
                all(s.get(k) == v for k, v in fields.items()) for s in self.statuses), timeout)
        assert ok, f"no status with {fields}; seen {self.statuses}"


@pytest.fixture
def printer() -> Iterator[VirtualPrinter]:
    vp = VirtualPrinter(profile=PROFILE).start()
    yield vp
    vp.stop()


@pytest.fixture
def answers() -> Answers:
    return Answers()


ServiceFactory = Callable[..., PrinterService]


@pytest.fixture
def service(tmp_path: Path, printer: VirtualPrinter,
            answers: Answers) -> Iterator[ServiceFactory]:
    """Factory: a started PrinterService answering into `answers` (stopped after the test)."""
    made: list[PrinterService] = []

    def _service(connection: str | None = None, poll_s: float = 0.1) -> PrinterService:
        svc = PrinterService(None, connection or printer.address, PROFILE,
                             tmp_path / "journal.db", publish=answers.job,
                             on_status=answers.status, poll_s=poll_s)
        made.append(svc)
        return svc.start()

    yield _service
    for svc in made:
        svc.stop()


def test_a_job_prints_on_a_network_printer_and_is_answered_printed(
        printer: VirtualPrinter, answers: Answers, service: ServiceFactory) -> None:
    svc = service()
    svc.submit("j-1", document("j-1"))
    assert answers.wait("j-1", "printed") == [("printed", None)]
    (out,) = printer.wait_printouts(1)
    assert out.find_text("Receipt j-1") and out.find_text("Product 11 Äpfel")
    assert out.unknown == [] and len(out.images) == 1


def test_the_same_job_twice_prints_once_and_is_answered_printed_both_times(
        tmp_path: Path, printer: VirtualPrinter, answers: Answers,
        service: ServiceFactory) -> None:
    svc = service()
    svc.submit("j-1", document("j-1"))
    svc.submit("j-1", document("j-1"))
    assert answers.wait("j-1", "printed", count=2) == [("printed", None)] * 2
    # After a restart the journal still knows it.
    svc.stop()
    service().submit("j-1", document("j-1"))
    answers.wait("j-1", "printed", count=3)
    assert receipts(printer) == ["j-1"] and len(printer.printouts) == 1


@pytest.mark.parametrize(("stop", "reason", "status", "clear"), [
    (lambda p: p.set_paper("empty"), "paper_empty", {"paper": "empty"},
     lambda p: p.set_paper("ok")),
    (lambda p: p.set_cover("open"), "cover_open", {"cover": "open", "printer": "offline"},
     lambda p: p.set_cover("closed")),
], ids=["no paper", "cover open"])
def test_a_held_job_prints_by_itself_once_the_printer_is_ready_again(
        printer: VirtualPrinter, answers: Answers, service: ServiceFactory,
        stop: Callable[[VirtualPrinter], None], reason: str, status: dict[str, str],
        clear: Callable[[VirtualPrinter], None]) -> None:
    stop(printer)
    svc = service()
    svc.submit("j-1", document("j-1"))
    answers.wait("j-1", "held")
    answers.wait_status(**status)
    assert answers.of("j-1") == [("held", reason)] and printer.printouts == []
    clear(printer)
    assert answers.wait("j-1", "printed") == [("held", reason), ("printed", None)]
    assert receipts(printer) == ["j-1"] and len(printer.printouts) == 1


def test_paper_running_out_mid_job_reprints_the_whole_receipt_exactly_once(
        printer: VirtualPrinter, answers: Answers, service: ServiceFactory) -> None:
    svc = service()
    printer.run_out_after(2500)  # mid-way through the text, before the QR code
    svc.submit("j-1", document("j-1", lines=40))
    answers.wait("j-1", "held")
    (torn,) = printer.printouts
    assert not torn.complete and torn.find_text("Demo Store")
    assert not torn.find_text("Receipt j-1")
    printer.set_paper("ok")
    answers.wait("j-1", "printed")
    assert answers.of("j-1") == [("held", "paper_empty"), ("printed", None)]
    whole = printer.wait_printouts(1)
    assert len(whole) == 1 and whole[0].find_text("Product 39 Äpfel")
    assert whole[0].find_text("Demo Store") and receipts(printer) == ["j-1"]
    svc.submit("j-1", document("j-1", lines=40))  # the edge resending it changes nothing
    answers.wait("j-1", "printed", count=2)
    assert receipts(printer) == ["j-1"]


def test_an_offline_printer_holds_jobs_and_they_print_in_arrival_order(
        printer: VirtualPrinter, answers: Answers, service: ServiceFactory) -> None:
    printer.set_online(False)
    svc = service()
    jobs = [f"j-{n}" for n in range(1, 5)]
    for job in jobs:
        svc.submit(job, document(job))
    for job in jobs:
        assert answers.wait(job, "held") == [("held", "offline")]
    printer.set_online(True)
    for job in jobs:
        answers.wait(job, "printed")
    assert receipts(printer) == jobs


def test_an_unreachable_printer_fails_fast_and_the_next_job_prints(
        printer: VirtualPrinter, answers: Answers, service: ServiceFactory) -> None:
    svc = service()
    svc.submit("j-1", document("j-1"))
    answers.wait("j-1", "printed")
    printer.set_reachable(False)
    started = time.monotonic()
    svc.submit("j-2", document("j-2"))
    assert answers.wait("j-2", "failed") == [("failed", "unreachable")]
    assert time.monotonic() - started < 3
    answers.wait_status(printer="unreachable")
    printer.set_reachable(True)
    svc.submit("j-3", document("j-3"))
    answers.wait("j-3", "printed")
    svc.submit("j-2", document("j-2"))  # the edge retries the failed one
    answers.wait("j-2", "printed")
    assert receipts(printer) == ["j-1", "j-3", "j-2"]


def test_a_connection_the_printer_dropped_between_jobs_is_replaced(
        printer: VirtualPrinter, answers: Answers, service: ServiceFactory) -> None:
    svc = service(poll_s=30)  # no status poll in between: the job finds the dead connection
    svc.submit("j-1", document("j-1"))
    svc.submit("j-2", document("j-2"))
    answers.wait("j-2", "printed")
    assert printer.connections == 1  # one connection kept open across jobs
    printer.set_reachable(False)
    printer.set_reachable(True)
    svc.submit("j-3", document("j-3"))
    assert answers.wait("j-3", "printed") == [("printed", None)]
    assert receipts(printer) == ["j-1", "j-2", "j-3"] and printer.connections == 2


def test_nothing_listening_is_unreachable(answers: Answers, service: ServiceFactory) -> None:
    svc = service(connection=f"tcp://127.0.0.1:{free_port()}")
    svc.submit("j-1", document("j-1"))
    assert answers.wait("j-1", "failed") == [("failed", "unreachable")]
    answers.wait_status(printer="unreachable")


def test_a_device_file_printer_gets_the_receipt_and_a_missing_one_is_unreachable(
        tmp_path: Path, answers: Answers, service: ServiceFactory) -> None:
    lp = tmp_path / "lp0"
    service(connection=f"file://{lp}").submit("j-1", document("j-1"))
    assert answers.wait("j-1", "printed") == [("printed", None)]
    (out,) = interpret(lp.read_bytes(), PROFILE)
    assert out.complete and out.find_text("Receipt j-1")
    service(connection=f"file://{tmp_path}/unplugged/lp0").submit("j-2", document("j-2"))
    assert answers.wait("j-2", "failed") == [("failed", "unreachable")]


def test_a_job_cut_off_by_a_crash_is_answered_interrupted_and_never_reprinted(
        tmp_path: Path, printer: VirtualPrinter, answers: Answers,
        service: ServiceFactory) -> None:
    journal = PrintJournal(tmp_path / "journal.db")
    journal.begin("j-1")  # the service died after its first byte went out
    journal.close()
    svc = service()
    svc.submit("j-1", document("j-1"))
    svc.submit("j-1", document("j-1"))
    assert answers.wait("j-1", "failed", count=2) == [("failed", "interrupted")] * 2
    svc.submit("j-2", document("j-2"))
    answers.wait("j-2", "printed")
    assert receipts(printer) == ["j-2"]


def test_a_bad_document_fails_and_the_printer_goes_on(
        printer: VirtualPrinter, answers: Answers, service: ServiceFactory) -> None:
    svc = service()
    svc.submit("j-1", {"blocks": "not a list"})
    svc.submit("j-2", None)
    svc.submit("j-3", document("j-3"))
    assert answers.wait("j-1", "failed") == [("failed", "bad_document")]
    assert answers.wait("j-2", "failed") == [("failed", "bad_document")]
    answers.wait("j-3", "printed")
    assert receipts(printer) == ["j-3"]


def test_status_is_published_at_start_and_when_the_printer_changes(
        printer: VirtualPrinter, answers: Answers, service: ServiceFactory) -> None:
    svc = service()
    answers.wait_status(paper="ok", cover="closed", printer="ready", profile=PROFILE)
    printer.set_paper("near_end")
    answers.wait_status(paper="near_end", printer="ready")  # seen by the idle poll
    svc.submit("j-1", document("j-1"))
    assert answers.wait("j-1", "printed") == [("printed", None)]  # near end still prints
    printer.set_paper("empty")
    answers.wait_status(paper="empty", printer="offline")
    assert svc.status is not None and svc.status.hold_reason == "paper_empty"


def test_printer_link_reads_status_like_python_escpos(printer: VirtualPrinter) -> None:
    link = PrinterLink(printer.address, read_timeout=0.5)
    try:
        assert link.status().ready
        printer.set_paper("near_end")
        assert link.status().paper == "near_end" and link.status().ready
        printer.set_cover("open")
        status = link.status()
        assert (status.cover, status.printer, status.ready) == ("open", "offline", False)
        printer.set_cover("closed")
        link.send(b"\x1b@hello\n\x1dV\x00")
        (out,) = printer.wait_printouts(1)
        assert out.text == ["hello"]
    finally:
        link.close()


def test_journal_forgets_jobs_after_a_week(tmp_path: Path) -> None:
    journal = PrintJournal(tmp_path / "j.db")
    try:
        journal.begin("old")
        journal.done("old")
        journal.begin("new")
        assert (journal.state("old"), journal.state("new"), journal.state("x")) == \
            ("printed", "printing", None)
        assert journal.prune(now=time.time() + 8 * 86400) == 2
        assert journal.state("old") is None
    finally:
        journal.close()


@pytest.mark.parametrize(("url", "expected"), [
    ("tcp://10.0.0.5:9100", "tcp://10.0.0.5:9100"),
    ("tcp://printer-1.local", "tcp://printer-1.local:9100"),
    ("usb://04b8:0202", "usb://04b8:0202"),
    ("serial:///dev/ttyUSB0?baudrate=19200", "serial:///dev/ttyUSB0?baudrate=19200"),
    ("serial:///dev/ttyS0", "serial:///dev/ttyS0?baudrate=9600"),
    ("file:///dev/usb/lp0", "file:///dev/usb/lp0"),
])
def test_connection_urls_choose_the_driver(url: str, expected: str) -> None:
    assert str(parse_connection(url)) == expected


@pytest.mark.parametrize(("url", "message"), [
    ("10.0.0.5:9100", "expected a URL"),
    ("http://10.0.0.5", "unknown scheme"),
    ("tcp://:9100", "no host"),
    ("tcp://host:99999", "port"),
    ("usb://04b8", "usb://VID:PID"),
    ("usb://zz:0202", "hexadecimal"),
    ("serial://dev/ttyUSB0", "three slashes"),
    ("serial:///dev/ttyUSB0?baudrate=12345", "baudrate"),
    ("serial:///dev/ttyUSB0?speed=9600", "unknown option"),
    ("file://lp0", "three slashes"),
])
def test_bad_connection_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_connection(url)


# ---------------------------------------------------------------- over the store broker


class EdgeSide:
    """The edge's end of the bus, standing in for an edge that is not running in these tests:
    sends cmd/print, reads evt/job and the printer's retained status. Only the edge's login
    may do that, and the broker makes the username the client id, so this must be the one
    connection with that login: never use it beside a running edge (it would take the
    edge's connection over)."""

    def __init__(self, settings: Settings, device_id: str) -> None:
        creds = DataDir(settings.data_path).edge_mqtt_credentials()
        self.store = settings.store_id
        self.device_id = device_id
        self.jobs: list[dict[str, Any]] = []
        self.status: dict[str, Any] = {}
        self.client = make_client(f"edge-test-{os.getpid()}", parse_mqtt_url(settings.mqtt_url),
                                  username=creds["username"], password=creds["password"])
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.ready = threading.Event()
        address = parse_mqtt_url(settings.mqtt_url)
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        assert self.ready.wait(10)

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([(event_topic(self.store, "printer", self.device_id, "job"), 1),
                          (status_topic(self.store, "printer", self.device_id), 1)],
                         )
        self.ready.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        if msg.topic.endswith("/evt/job"):
            self.jobs.append(body["data"])
        else:
            self.status = body

    def print(self, job: str, doc: Any) -> None:
        envelope = new_envelope("print", {"job": job, "document": doc})
        self.client.publish(command_topic(self.store, "printer", self.device_id, "print"),
                            envelope.to_json(), qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        stop_loop(self.client)


def test_print_command_over_the_broker_is_answered_on_evt_job(
        settings: Settings, broker: BrokerProcess, device: Callable[..., DeviceClient],
        printer: VirtualPrinter, tmp_path: Path) -> None:
    client = device("printer", "printer-1")
    svc = PrinterService(client, printer.address, PROFILE, tmp_path / "journal.db", poll_s=0.1)
    edge = EdgeSide(settings, "printer-1")
    try:
        svc.start()
        assert wait_until(lambda: edge.status.get("printer") == "ready", 10), edge.status
        assert (edge.status["paper"], edge.status["cover"], edge.status["profile"]) == \
            ("ok", "closed", PROFILE)
        edge.print("j-1", document("j-1"))
        edge.print("j-1", document("j-1"))
        edge.print("j-2", {"blocks": 7})
        assert wait_until(lambda: len(edge.jobs) == 3, 10), edge.jobs
        assert edge.jobs == [{"job": "j-1", "state": "printed"},
                             {"job": "j-1", "state": "printed"},
                             {"job": "j-2", "state": "failed", "reason": "bad_document"}]
        assert receipts(printer) == ["j-1"]
        printer.set_paper("near_end")
        assert wait_until(lambda: edge.status.get("paper") == "near_end", 10), edge.status
    finally:
        svc.stop()
        edge.close()


def test_standalone_printer_process_prints_and_stops_on_sigterm(
        settings: Settings, broker: BrokerProcess, enrolled: Callable[[str, str], Enrolment],
        printer: VirtualPrinter, tmp_path: Path) -> None:
    cred = enrolled("printer", "printer-2")
    edge = EdgeSide(settings, "printer-2")
    env = {**os.environ, "PRINTER_MQTT_PASSWORD": cred.password, "PYTHONPATH": str(REPO)}
    log = (tmp_path / "printer.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pos_bridge.printer", "--store", settings.store_id,
         "--device", "printer-2", "--mqtt-url", settings.mqtt_url, "--username", cred.username,
         "--connect", printer.address, "--profile", PROFILE,
         "--journal", str(tmp_path / "standalone.db"), "--poll", "0.2"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: edge.status.get("printer") == "ready", 15), \
            (tmp_path / "printer.log").read_text()
        edge.print("j-9", document("j-9"))
        assert wait_until(lambda: edge.jobs == [{"job": "j-9", "state": "printed"}], 10), \
            (edge.jobs, (tmp_path / "printer.log").read_text())
        assert receipts(printer) == ["j-9"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert wait_until(lambda: edge.status.get("state") == "offline", 5), edge.status
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        edge.close()
