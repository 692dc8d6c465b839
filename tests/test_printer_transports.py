"""One `PrinterTransport` class per connection kind, chosen once from the printer's URL
(pos_bridge.printing.transports): each kind over the real thing where a test can have it
(TCP sockets, a pseudo-terminal for serial, temporary files) and its error paths, the
in-memory one, and `PrinterLink` speaking to all of them without knowing which it has."""

from __future__ import annotations

import gc
import inspect
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pos_bridge.printer import PrinterLink, PrinterService
from pos_bridge.printing.interpreter import interpret
from pos_bridge.printing.transports import (
    TRANSPORTS,
    Connection,
    FileTransport,
    MemoryTransport,
    PrinterTransport,
    PrinterUnreachable,
    SerialTransport,
    TcpTransport,
    Timeouts,
    UsbTransport,
    parse_connection,
    transport_for,
)
from tests.conftest import free_port, wait_until

QUICK = Timeouts(connect=1.0, read=0.5, write=2.0)
STATUS_QUERY = b"\x10\x04\x01\x10\x04\x02\x10\x04\x04"


# ---------------------------------------------------------------- the factory


@pytest.mark.parametrize(("url", "kind"), [
    ("tcp://10.0.0.5:9100", TcpTransport),
    ("usb://04b8:0202", UsbTransport),
    ("serial:///dev/ttyUSB0?baudrate=19200", SerialTransport),
    ("file:///dev/usb/lp0", FileTransport),
])
def test_the_factory_picks_one_class_per_kind_without_opening(url: str, kind: type) -> None:
    transport = transport_for(url, profile="TM-T88V", timeouts=QUICK)
    assert type(transport) is kind
    assert transport.connection == parse_connection(url)
    assert str(transport) == str(parse_connection(url))
    assert (transport.profile, transport.timeouts) == ("TM-T88V", QUICK)
    assert not transport.is_open
    assert set(TRANSPORTS) == {"tcp", "usb", "serial", "file"}


@pytest.mark.parametrize("url", ["lpd://10.0.0.5/queue", "http://10.0.0.5", "memory://x"])
def test_an_unknown_scheme_is_a_clear_error(url: str) -> None:
    expected = r"unknown scheme .* \(use tcp://, usb://, serial:// or file://\)"
    with pytest.raises(ValueError, match=expected):
        transport_for(url)
    with pytest.raises(ValueError, match=expected):
        PrinterLink(url)


def test_a_connection_without_a_transport_class_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"no transport for memory:// \(known: tcp://, usb://"):
        transport_for(Connection("memory", path="x"))


def test_printer_link_has_no_per_kind_code() -> None:
    source = inspect.getsource(PrinterLink)
    assert "scheme" not in source
    assert all(f'"{kind}"' not in source for kind in ("tcp", "usb", "serial", "file"))


def test_every_transport_implements_the_interface() -> None:
    kinds: list[type[PrinterTransport]] = [*TRANSPORTS.values(), MemoryTransport]
    for kind in kinds:
        assert issubclass(kind, PrinterTransport)
        assert not inspect.isabstract(kind), kind


# ---------------------------------------------------------------- tcp


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    yield server
    server.close()


def test_tcp_writes_reads_and_drains_over_a_real_socket(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    transport = transport_for(f"tcp://127.0.0.1:{port}", timeouts=QUICK)
    transport.open()
    peer, _ = listener.accept()
    try:
        assert transport.is_open
        transport.write(b"\x1b@hello\n")
        assert peer.recv(100) == b"\x1b@hello\n"
        assert transport.read(3, 0.1) == b""  # nothing sent: b"" after the timeout
        peer.sendall(b"\x12\x16")
        assert wait_until(lambda: _readable(transport), 2)
        assert transport.read(3, 1.0) == b"\x12\x16"
        peer.sendall(b"late")  # an answer nobody waits for any more
        time.sleep(0.1)
        transport.drain()
        assert transport.read(3, 0.1) == b""
        peer.close()
        time.sleep(0.1)
        with pytest.raises(ConnectionResetError, match="closed the connection"):
            transport.drain()
    finally:
        transport.close()
        peer.close()
    assert not transport.is_open
    transport.close()  # idempotent


def _readable(transport: PrinterTransport) -> bool:
    sock = transport._driver.device  # type: ignore[attr-defined]
    return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))


def test_tcp_refused_connection_fails_within_the_timeouts() -> None:
    url = f"tcp://127.0.0.1:{free_port()}"  # nobody listens there
    transport = transport_for(url, timeouts=QUICK)
    with pytest.raises(ConnectionRefusedError):
        transport.open()
    assert not transport.is_open
    link = PrinterLink(url, connect_timeout=1.0, read_timeout=0.5)
    started = time.monotonic()
    assert link.status().printer == "unreachable"
    with pytest.raises(PrinterUnreachable, match=rf"printer {url}: .*refused"):
        link.send(b"receipt\n")
    assert time.monotonic() - started < 3


def test_tcp_printer_link_reads_status_from_a_real_socket(listener: socket.socket) -> None:
    """A printer that answers DLE EOT 1, 2 and 4 (cover open) on a plain socket."""
    port = listener.getsockname()[1]
    received = bytearray()

    def printer() -> None:
        peer, _ = listener.accept()
        with peer:
            while data := peer.recv(100):
                received.extend(data)
                if data.endswith(STATUS_QUERY):
                    peer.sendall(bytes((0x1A, 0x16, 0x12)))

    thread = threading.Thread(target=printer, daemon=True)
    thread.start()
    link = PrinterLink(f"tcp://127.0.0.1:{port}", read_timeout=1.0)
    try:
        status = link.status()
        assert (status.paper, status.cover, status.printer) == ("ok", "open", "offline")
        link.send(b"hello\n")
        assert wait_until(lambda: received.endswith(b"hello\n"), 2)
    finally:
        link.close()
    thread.join(2)


# ---------------------------------------------------------------- serial


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    """A pseudo-terminal: the master end is the printer, the slave's path the device.
    python-escpos drives serial printers through pyserial, which its `serial` extra
    installs; without it these tests skip (the error path below still runs)."""
    pytest.importorskip("serial")
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(slave)
    os.close(master)


def _read_pty(master: int, count: int, timeout: float = 2.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    os.set_blocking(master, False)
    while len(got) < count and time.monotonic() < deadline:
        try:
            got += os.read(master, count - len(got))
        except BlockingIOError:
            time.sleep(0.01)
    return got


def test_serial_writes_reads_and_drains_over_a_pseudo_terminal(
        pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    transport = transport_for(f"serial://{path}?baudrate=19200", timeouts=QUICK)
    assert isinstance(transport, SerialTransport)
    transport.open()
    try:
        assert transport._driver.device.baudrate == 19200  # type: ignore[attr-defined]
        transport.write(b"\x1b@hello\n")
        assert _read_pty(master, 8) == b"\x1b@hello\n"
        assert transport.read(3, 0.1) == b""
        os.write(master, b"stale")
        time.sleep(0.1)
        transport.drain()
        os.write(master, b"\x12\x12\x72")
        assert _read_all(transport, 3) == b"\x12\x12\x72"
    finally:
        transport.close()
    assert not transport.is_open


def _read_all(transport: PrinterTransport, count: int) -> bytes:
    got = b""
    deadline = time.monotonic() + 2
    while len(got) < count and time.monotonic() < deadline:
        got += transport.read(count - len(got), 0.5)
    return got


def test_serial_printer_link_reads_status_over_a_pseudo_terminal(
        pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    stop = threading.Event()

    def printer() -> None:  # out of paper: DLE EOT 1 offline, 2 stopped by paper end, 4 end
        buffer = b""
        while not stop.is_set():
            buffer += _read_pty(master, 9, 0.1)
            if buffer.endswith(STATUS_QUERY):
                os.write(master, bytes((0x1A, 0x32, 0x72)))
                buffer = b""

    thread = threading.Thread(target=printer, daemon=True)
    thread.start()
    link = PrinterLink(f"serial://{path}", read_timeout=1.0)
    try:
        status = link.status()
        assert (status.paper, status.printer, status.hold_reason) == \
            ("empty", "offline", "paper_empty")
    finally:
        stop.set()
        link.close()
        thread.join(2)


def test_serial_missing_device_is_unreachable(tmp_path: Path) -> None:
    url = f"serial://{tmp_path}/ttyUSB9"
    transport = transport_for(url, timeouts=QUICK)
    # python-escpos' DeviceNotFoundError naming the device (its RuntimeError without pyserial)
    with pytest.raises(Exception, match="ttyUSB9|pyserial"):
        transport.open()
    assert not transport.is_open
    link = PrinterLink(url)
    assert link.status().printer == "unreachable"
    with pytest.raises(PrinterUnreachable, match=f"printer serial://{tmp_path}/ttyUSB9"):
        link.send(b"receipt\n")


# ---------------------------------------------------------------- file


def test_file_writes_the_bytes_and_cannot_answer(tmp_path: Path) -> None:
    path = tmp_path / "lp0"
    transport = transport_for(f"file://{path}")
    assert isinstance(transport, FileTransport) and not transport.answers_status
    transport.open()
    transport.write(b"\x1b@receipt\n")
    with pytest.raises(OSError, match="cannot answer"):
        transport.read(3, 0.1)
    transport.close()
    assert path.read_bytes() == b"\x1b@receipt\n"
    link = PrinterLink(f"file://{path}")
    assert link.status().ready  # it opens: taken for ready
    link.send(b"second\n")
    link.close()
    assert path.read_bytes() == b"second\n"  # each open starts the file afresh


def test_file_missing_device_is_unreachable(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/no-such-folder/lp0"
    with pytest.raises(FileNotFoundError):
        transport_for(url).open()
    link = PrinterLink(url)
    assert link.status().printer == "unreachable"
    with pytest.raises(PrinterUnreachable, match="No such file"):
        link.send(b"receipt\n")


def test_file_outside_the_spool_folder_is_refused_by_the_factory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside the printer spool folder"):
        transport_for(f"file://{tmp_path}/lp0", spool_dir=tmp_path / "spool")


# ---------------------------------------------------------------- usb


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_usb_printer_that_is_not_plugged_in_is_unreachable() -> None:
    _usb_not_plugged_in()
    # python-escpos' Usb closes itself when collected, which raises without pyusb (its `usb`
    # extra): collected here, so the ignored error stays in this test.
    gc.collect()


def _usb_not_plugged_in() -> None:
    url = "usb://ffff:fffe"  # no such device on any test machine
    transport = transport_for(url, timeouts=QUICK)
    assert isinstance(transport, UsbTransport)
    with pytest.raises(Exception):  # noqa: B017 (pyusb's or python-escpos' own error)
        transport.open()
    assert not transport.is_open
    link = PrinterLink(url)
    assert link.status().printer == "unreachable"
    with pytest.raises(PrinterUnreachable, match="usb://ffff:fffe"):
        link.send(b"receipt\n")


# ---------------------------------------------------------------- in memory


def test_memory_transport_keeps_the_bytes_and_answers_status() -> None:
    memory = MemoryTransport("till-3")
    assert str(memory) == "memory://till-3"
    link = PrinterLink(memory)
    assert link.connection == memory.connection
    assert link.status().ready
    memory.status[4] = 0x1E  # paper near its end
    assert link.status().paper == "near_end" and link.status().ready
    memory.status[2] = 0x16  # cover open
    assert (link.status().cover, link.status().ready) == ("open", False)
    link.send(b"hello\n")
    assert memory.written.endswith(b"hello\n")
    assert memory.written.count(STATUS_QUERY) == 5  # one per status()
    assert memory.opened == 1  # the connection is kept between calls


def test_memory_transport_error_paths() -> None:
    memory = MemoryTransport()
    with pytest.raises(OSError, match="not open"):
        memory.write(b"x")
    link = PrinterLink(memory, read_timeout=0.2)
    memory.status[1] = 0x00  # not a status byte: the printer answers garbage
    assert link.status().printer == "unreachable"
    memory.status[1] = 0x12
    memory.reachable = False
    with pytest.raises(ConnectionRefusedError):
        memory.open()
    assert link.status().printer == "unreachable"
    with pytest.raises(PrinterUnreachable, match="memory://printer: .*unreachable"):
        link.send(b"receipt\n")
    memory.reachable = True
    assert link.status().ready  # back: a fresh connection
    assert memory.opened >= 2


def test_printer_service_prints_a_job_on_the_memory_transport(tmp_path: Path) -> None:
    memory = MemoryTransport()
    answers: list[dict[str, Any]] = []
    service = PrinterService(None, "memory", "default", tmp_path / "journal.db",
                             publish=answers.append, link=PrinterLink(memory), poll_s=0.1)
    service.start()
    try:
        service.submit("j-1", {"v": 1, "kind": "receipt", "job": "j-1", "blocks": [
            {"type": "footer", "lines": ["Receipt j-1"]}]})
        assert wait_until(lambda: {"job": "j-1", "state": "printed"} in answers, 5), answers
    finally:
        service.stop()
    (printout,) = interpret(bytes(memory.written))
    assert printout.complete and printout.find_text("Receipt j-1")
