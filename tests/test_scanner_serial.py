"""Serial scanners (pos_bridge.scanner.serial_port) on real pseudo-terminals.

Each test opens a pty pair: the test writes to the master as the scanner would, the reader
opens the slave through pyserial by a /dev/serial/by-id-like symlink in tmp_path. Unplugging
is closing the master (the reader then gets EIO); plugging back is a new pty with the
symlink pointed at it, as udev does for a by-id name.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.datadir import DataDir
from edge.settings import Settings
from pos_bridge.device import DeviceClient
from pos_bridge.scanner.emit import split_aim
from pos_bridge.scanner.serial_port import Framer, SerialScanner
from pos_bridge.scanner.service import ScannerService
from pos_bridge.scanner.spec import serial_scanner
from store_contract.mqtt import make_client, parse_mqtt_url, stop_loop
from store_contract.protocol import event_topic
from store_contract.scans import MAX_CODE_CHARS, Scan, parse_scan

NAME = "usb-Datalogic_Gryphon_GD4500-if00"


class Pty:
    """A scanner's end of a serial line: the master of a pty, its slave behind a symlink."""

    def __init__(self, by_id: Path) -> None:
        self.link = by_id / NAME
        self.master, slave = os.openpty()
        self.slave_path = os.ttyname(slave)
        os.close(slave)  # the pty lives on while the master is open
        tmp = by_id / ".new"
        tmp.symlink_to(self.slave_path)
        os.replace(tmp, self.link)

    def write(self, *chunks: bytes, pause: float = 0.02) -> None:
        for chunk in chunks:
            os.write(self.master, chunk)
            time.sleep(pause)

    def unplug(self) -> None:
        os.close(self.master)
        self.link.unlink()


class Scans:
    """A reader's `on_scan`: the scans it was given, in order, to wait for."""

    def __init__(self) -> None:
        self.items: list[Scan] = []
        self.cond = threading.Condition()

    def __call__(self, scan: Scan) -> None:
        with self.cond:
            self.items.append(scan)
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 10.0) -> list[Scan]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.items) >= n, timeout)
            return list(self.items)

    def codes(self, n: int) -> list[str]:
        return [s.code for s in self.wait(n)]


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def by_id(tmp_path: Path) -> Path:
    path = tmp_path / "serial" / "by-id"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def line(by_id: Path) -> Iterator[Pty]:
    pty = Pty(by_id)
    yield pty
    if pty.link.exists():
        os.close(pty.master)


def reader(pty: Pty, scans: Scans, **kw: object) -> SerialScanner:
    scanner = SerialScanner(str(pty.link), scans, retry=0.05, **kw)  # type: ignore[arg-type]
    scanner.start()
    assert scanner.connected.wait(10)
    return scanner


# ---------------------------------------------------------------- framing on a real pty
@pytest.mark.parametrize(("terminator", "end"), [("cr", b"\r"), ("lf", b"\n"),
                                                  ("crlf", b"\r\n")])
def test_terminators(line: Pty, terminator: str, end: bytes) -> None:
    scans = Scans()
    scanner = reader(line, scans, terminator=terminator)
    try:
        line.write(b"4006381333931" + end + b"]Q1member:42" + end)
        assert scans.codes(2) == ["4006381333931", "]Q1member:42"]
        assert [s.seq for s in scans.items] == [1, 2]
        assert all(s.source == "serial" and s.raw is None for s in scans.items)
    finally:
        scanner.stop()


def test_codes_split_across_writes_are_never_cut(line: Pty) -> None:
    scans = Scans()
    scanner = reader(line, scans, terminator="crlf", baudrate=115200)
    try:
        line.write(b"40063", b"8133", b"3931\r", b"\nCOUPON-", b"7\r\nX\r", b"\n")
        line.write(*[bytes([b]) for b in b"ONE-BYTE-AT-A-TIME\r\n"], pause=0.002)
        assert scans.codes(4) == ["4006381333931", "COUPON-7", "X", "ONE-BYTE-AT-A-TIME"]
    finally:
        scanner.stop()


def test_garbage_is_dropped_and_the_next_code_read(line: Pty) -> None:
    scans = Scans()
    scanner = reader(line, scans, stale=0.3)
    try:
        line.write(b"\xff\xfe\x80\xc3\r")  # not UTF-8
        line.write(b"GOOD1\r")
        line.write(b"\x00\x00GO\x00OD2\x00\r\x00")  # NULs: line noise
        line.write(b"Z" * (MAX_CODE_CHARS + 500) + b"more of the same\r")  # no end in sight
        line.write(b"GOOD3\r")
        line.write(b"\x1b\x9b")  # noise with no terminator, then quiet
        time.sleep(0.6)
        line.write(b"GOOD4\r")
        assert scans.codes(4) == ["GOOD1", "GOOD2", "GOOD3", "GOOD4"]
        assert scanner.garbage == 1
        assert scanner.framer.dropped == 2
        assert scanner.connected.is_set()
    finally:
        scanner.stop()


def test_control_characters_and_gs1_separators_are_kept(line: Pty) -> None:
    scans = Scans()
    scanner = reader(line, scans, aim=True)
    try:
        line.write(b"]C1010400638133393117250101\x1d10ABC\r")
        line.write(b"plain\tcode\x07\r")
        got = scans.wait(2)
        assert (got[0].symbology, got[0].code) == ("]C1", "010400638133393117250101\x1d10ABC")
        assert (got[1].symbology, got[1].code) == (None, "plain\tcode\x07")
        assert parse_scan(got[0].to_data()) == got[0]
    finally:
        scanner.stop()


def test_eight_bit_codes_keep_their_bytes(line: Pty) -> None:
    scans = Scans()
    scanner = reader(line, scans, encoding="latin-1", aim=True)
    try:
        line.write(b"]d1M\xfcller \xa7 5\r")
        scan = scans.wait(1)[0]
        assert (scan.symbology, scan.code, scan.raw) == ("]d1", "Müller § 5", b"M\xfcller \xa7 5")
        data = scan.to_data()
        assert base64.b64decode(data["raw_b64"]) == b"M\xfcller \xa7 5"
        assert parse_scan(data).payload == b"M\xfcller \xa7 5"
    finally:
        scanner.stop()


# ---------------------------------------------------------------- the port comes and goes
def test_port_vanishing_and_coming_back(by_id: Path) -> None:
    first = Pty(by_id)
    scans = Scans()
    scanner = reader(first, scans, terminator="lf")
    try:
        first.write(b"BEFORE\n")
        assert scans.codes(1) == ["BEFORE"]
        first.write(b"HALF-A-CO")  # and the cable is pulled
        first.unplug()
        assert eventually(lambda: not scanner.connected.is_set())
        second = Pty(by_id)
        try:
            assert scanner.connected.wait(10)
            second.write(b"AFTER\n")
            assert scans.codes(2) == ["BEFORE", "AFTER"]
            assert [s.seq for s in scans.items] == [1, 2]
            assert scanner.framer.dropped == 1  # the half code, never delivered
        finally:
            scanner.stop()
            os.close(second.master)
    finally:
        scanner.stop()
    assert scanner._thread is not None and not scanner._thread.is_alive()


def test_port_absent_at_start_is_waited_for(by_id: Path) -> None:
    scans = Scans()
    scanner = SerialScanner(NAME, scans, retry=0.05)
    assert scanner.path == f"/dev/serial/by-id/{NAME}"
    scanner = SerialScanner(str(by_id / NAME), scans, retry=0.05).start()
    try:
        time.sleep(0.2)
        assert not scanner.connected.is_set()
        pty = Pty(by_id)
        assert scanner.connected.wait(10)
        pty.write(b"LATE\r")
        assert scans.codes(1) == ["LATE"]
        os.close(pty.master)
    finally:
        scanner.stop()


def test_a_failing_handler_does_not_stop_the_reader(line: Pty) -> None:
    scans = Scans()
    seen: list[str] = []

    def handler(scan: Scan) -> None:
        seen.append(scan.code)
        if scan.code == "BOOM":
            raise RuntimeError("handler broke")
        scans(scan)

    scanner = reader(line, scans=handler)  # type: ignore[arg-type]
    try:
        line.write(b"BOOM\rNEXT\r")
        assert eventually(lambda: seen == ["BOOM", "NEXT"])
    finally:
        scanner.stop()


# ---------------------------------------------------------------- the framer alone
def test_framer_reassembles_and_expires() -> None:
    framer = Framer("crlf", stale=0.5)
    assert framer.feed(b"AB", 0.0) == []
    assert framer.feed(b"C\r", 0.1) == []
    assert framer.feed(b"\nDE\r\nF", 0.2) == [b"ABC", b"DE"]
    assert framer.feed(b"", 1.0) == []  # F waited too long: dropped
    assert framer.feed(b"G\r\n", 1.1) == [b"G"]
    assert framer.dropped == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=60).map(lambda b: b.replace(b"\x00", b"")
                                                       .replace(b"\r", b"").replace(b"\n", b""))
                .filter(bool), min_size=1, max_size=8),
       st.sampled_from(["cr", "lf", "crlf"]), st.data())
def test_framer_gives_the_same_lines_however_the_bytes_are_cut(
        codes: list[bytes], terminator: str, data: st.DataObject) -> None:
    end = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n"}[terminator]
    stream = b"".join(code + end for code in codes)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=20)))
    framer = Framer(terminator)
    lines: list[bytes] = []
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        lines += framer.feed(stream[start:stop], 0.0)
    assert lines == codes


def test_framer_drops_an_over_long_line_up_to_its_terminator() -> None:
    framer = Framer("lf", max_len=10)
    assert framer.feed(b"0123456789ABC", 0.0) == []
    assert framer.feed(b"DEF\nOK\n", 0.1) == [b"OK"]
    assert framer.feed(b"0123456789ABC\nOK2\n", 0.2) == [b"OK2"]  # in one read
    assert framer.feed(b"0123456789\n", 0.3) == [b"0123456789"]  # just fits
    assert framer.dropped == 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="terminator"):
        Framer("nul")
    with pytest.raises(LookupError):
        SerialScanner("x", lambda s: None, encoding="no-such-encoding")


def test_scanner_spec_sets_up_the_reader() -> None:
    scanner = serial_scanner("/dev/ttyACM0,baudrate=115200,terminator=CRLF,encoding=latin-1",
                             print)
    assert (scanner.path, scanner.baudrate, scanner.framer.terminator, scanner.encoding) == \
        ("/dev/ttyACM0", 115200, b"\r\n", "latin-1")
    assert serial_scanner(NAME, print).path == f"/dev/serial/by-id/{NAME}"


@pytest.mark.parametrize(("spec", "why"), [
    ("x,baudrate=fast", "baudrate='fast'"), ("x,baudrate=12", "not a baud rate"),
    ("x,encoding=klingon", "encoding"), ("x,terminator=nul", "not one of"),
    ("x,layout=de", "unknown setting")])
def test_bad_scanner_spec_is_refused_naming_the_setting(spec: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        serial_scanner(spec, print)


@pytest.mark.parametrize(("text", "expected"), [
    ("]E04006381333931", ("]E0", "4006381333931")), ("]Q1{\"m\":1}", ("]Q1", "{\"m\":1}")),
    ("]E0", (None, "]E0")), ("]E", (None, "]E")), ("]!0abc", (None, "]!0abc")),
    ("E04006381333931", (None, "E04006381333931")), ("]e0x", ("]e0", "x"))])
def test_aim_prefix_split_only_when_it_is_one(text: str, expected: tuple[str | None, str]) -> None:
    assert split_aim(text) == expected


# ---------------------------------------------------------------- on the store's bus
def test_serial_scans_reach_the_bus_through_the_scanner_service(
        line: Pty, settings: Settings, datadir: DataDir,
        device: Callable[..., DeviceClient]) -> None:
    """A serial scanner read by the scanner service lands on a real Mosquitto as `evt/scan`,
    code and bytes exact, as the edge reads it back."""
    creds = datadir.edge_mqtt_credentials()
    got: list[dict[str, object]] = []
    observer = make_client("scan-observer", parse_mqtt_url(settings.mqtt_url),
                           username=creds["username"], password=creds["password"])
    topic = event_topic(settings.store_id, "scanner", "scan-1", "scan")
    subscribed = threading.Event()
    observer.on_connect = lambda c, *_: c.subscribe(topic, 1)
    observer.on_subscribe = lambda *_: subscribed.set()
    observer.on_message = lambda _c, _u, m: got.append(json.loads(m.payload)["data"])
    observer.connect(parse_mqtt_url(settings.mqtt_url).host,
                     parse_mqtt_url(settings.mqtt_url).port)
    observer.loop_start()
    service = ScannerService(device("scanner", "scan-1"), [
        lambda cb: SerialScanner(str(line.link), cb, encoding="latin-1", aim=True,
                                 retry=0.05)])
    try:
        assert subscribed.wait(10)
        service.start()
        assert service.readers[0].connected.wait(10)  # type: ignore[attr-defined]
        line.write(b"]E04006381333931\r]Q1M\xfcller\x1d42\r")
        assert eventually(lambda: len(got) == 2)
        first, second = (parse_scan(data) for data in got)
        assert (first.code, first.symbology, first.source, first.seq) == \
            ("4006381333931", "]E0", "serial", 1)
        assert (second.code, second.payload, second.seq) == \
            ("Müller\x1d42", b"M\xfcller\x1d42", 2)
    finally:
        service.stop()
        observer.disconnect()
        stop_loop(observer)
