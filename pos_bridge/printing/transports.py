"""How bytes reach a printer: one `PrinterTransport` class per connection kind.

    transport = transport_for("tcp://10.0.0.21:9100", profile="TM-T20II")
    transport.open(); transport.write(data); transport.read(3, timeout=1.0); transport.close()

A printer's URL names its kind once (docs/receipts.md §5): `tcp://HOST:9100`, `usb://VID:PID`,
`serial:///dev/ttyUSB0?baudrate=19200` or `file:///dev/usb/lp0`. `parse_connection()` checks
it, and `transport_for()`, the one factory, picks the class for it from `TRANSPORTS`. The
printer service's `PrinterLink` (`pos_bridge.printer`) then only speaks to the interface:
open, write, drain, read, close, and whether the printer answers status queries at all.
Like python-escpos (one printer class per connection), each class wraps python-escpos'
own connection class (`Network`, `Usb`, `Serial`, `File`) for opening and closing, and adds
what the printer service needs beyond it: timeouts on every call, reading the status
answers, keeping a TCP connection open between jobs, a file only inside the spool folder.
`MemoryTransport` is a printer in memory for tests: it keeps what was written and answers
DLE EOT from the status bytes a test sets.

**A new connection kind** goes here: a `PrinterTransport` subclass (wrap the python-escpos
class if there is one), its URL form in `Connection` and `parse_connection()`, its class in
`TRANSPORTS`, a test in tests/test_printer_transports.py and a row in docs/receipts.md §5.
Nothing else changes: `PrinterLink` never looks at the scheme.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, urlsplit

SERIAL_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
DLE_EOT = b"\x10\x04"
STATUS_OK = 0x12  # every DLE EOT answer has bits 1 and 4 set


class PrinterUnreachable(OSError):
    """The printer did not take the bytes or did not answer (cable, power, network)."""


# ---------------------------------------------------------------- connection URLs


@dataclass(frozen=True, slots=True)
class Connection:
    """Where a printer is: one of `tcp://host:9100`, `usb://VID:PID`,
    `serial:///dev/ttyUSB0?baudrate=19200`, `file:///dev/usb/lp0` (and `memory://NAME`,
    which only tests make: no URL parses to it)."""

    scheme: Literal["tcp", "usb", "serial", "file", "memory"]
    host: str = ""
    port: int = 9100
    vendor: int = 0
    product: int = 0
    in_ep: int = 0x82
    out_ep: int = 0x01
    path: str = ""
    baudrate: int = 9600

    def __str__(self) -> str:
        if self.scheme == "tcp":
            return f"tcp://{self.host}:{self.port}"
        if self.scheme == "usb":
            return f"usb://{self.vendor:04x}:{self.product:04x}"
        if self.scheme == "serial":
            return f"serial://{self.path}?baudrate={self.baudrate}"
        return f"{self.scheme}://{self.path}"


def _hex_id(text: str, what: str, url: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise ValueError(f"printer connection {url!r}: the USB {what} id {text!r} is not "
                         "hexadecimal (e.g. usb://04b8:0202)") from None
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"printer connection {url!r}: the USB {what} id must be 4 hex digits")
    return value


def _query(url: str, query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    params = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key not in allowed:
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            raise ValueError(f"printer connection {url!r}: unknown option {key!r}{hint}")
        params[key] = values[-1]
    return params


def parse_connection(url: str) -> Connection:
    """Parse a printer connection URL; raises ValueError saying what is wrong and how it
    should look."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"printer connection {url!r}: expected a URL such as "
                         "tcp://192.168.1.50:9100, usb://04b8:0202, "
                         "serial:///dev/ttyUSB0?baudrate=19200 or file:///dev/usb/lp0")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "tcp":
        _query(url, parts.query, ())
        try:
            port = parts.port or 9100
        except ValueError:
            raise ValueError(f"printer connection {url!r}: the port must be a number from 1 "
                             "to 65535") from None
        if not parts.hostname:
            raise ValueError(f"printer connection {url!r}: no host (e.g. tcp://10.0.0.5:9100)")
        if parts.path not in ("", "/"):
            raise ValueError(f"printer connection {url!r}: a tcp:// printer has no path")
        return Connection("tcp", host=parts.hostname, port=port)
    if scheme == "usb":
        params = _query(url, parts.query, ("in_ep", "out_ep"))
        ids = parts.netloc.split(":")
        if len(ids) != 2 or not all(ids) or parts.path not in ("", "/"):
            raise ValueError(f"printer connection {url!r}: expected usb://VID:PID with "
                             "hexadecimal ids, e.g. usb://04b8:0202")
        try:
            endpoints = {k: int(v, 0) for k, v in params.items()}
        except ValueError:
            raise ValueError(f"printer connection {url!r}: endpoints are numbers, "
                             "e.g. in_ep=0x82") from None
        return Connection("usb", vendor=_hex_id(ids[0], "vendor", url),
                          product=_hex_id(ids[1], "product", url),
                          in_ep=endpoints.get("in_ep", 0x82), out_ep=endpoints.get("out_ep", 0x01))
    if scheme == "serial":
        params = _query(url, parts.query, ("baudrate",))
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"printer connection {url!r}: expected serial:///dev/ttyUSB0 "
                             "(three slashes, then the device path)")
        raw = params.get("baudrate", "9600")
        if not raw.isdigit() or int(raw) not in SERIAL_BAUDRATES:
            raise ValueError(f"printer connection {url!r}: baudrate must be one of "
                             f"{', '.join(map(str, SERIAL_BAUDRATES))}")
        return Connection("serial", path=parts.path, baudrate=int(raw))
    if scheme == "file":
        _query(url, parts.query, ())
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"printer connection {url!r}: expected file:///dev/usb/lp0 "
                             "(three slashes, then an absolute path)")
        return Connection("file", path=parts.path)
    raise ValueError(f"printer connection {url!r}: unknown scheme {parts.scheme!r} "
                     "(use tcp://, usb://, serial:// or file://)")


def inside_spool_dir(path: str, spool_dir: str | Path) -> str:
    """`path` with symlinks and `..` resolved, if that lies inside `spool_dir` (itself
    resolved); else ValueError in one line. A `file://` printer may write there only."""
    folder = os.path.realpath(spool_dir)
    real = os.path.realpath(path)
    if os.path.commonpath([folder, real]) != folder or real == folder:
        shown = path if real == path else f"{path} (really {real})"
        raise ValueError(f"printer connection file://{path}: {shown} is outside the printer "
                         f"spool folder {folder}; put the device or file there (a symlink to "
                         "/dev/usb/lp0 does not count), or set printer_spool_dir")
    return real


# ---------------------------------------------------------------- the interface


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds a transport may take: to connect, for a status answer, to take a write."""

    connect: float = 2.0
    read: float = 1.0
    write: float = 5.0


class PrinterTransport(ABC):
    """One connection to one printer. Not thread-safe: `PrinterLink` holds a lock around it.

    `open()` is called only when `is_open` is False; any method may raise (OSError, a
    python-escpos or pyusb error): the caller closes the transport and opens it afresh.
    """

    #: False for a connection the printer cannot answer through (a device file): the
    #: caller then takes "it opened" for "ready" instead of asking DLE EOT.
    answers_status: ClassVar[bool] = True

    def __init__(self, connection: Connection, *, profile: str = "default",
                 timeouts: Timeouts = Timeouts()) -> None:
        self.connection = connection
        self.profile = profile
        self.timeouts = timeouts

    def __str__(self) -> str:
        return str(self.connection)

    @property
    @abstractmethod
    def is_open(self) -> bool:
        """Whether a connection is open (it may still have been dropped by the printer)."""

    @abstractmethod
    def open(self) -> None:
        """Connect, within the connect timeout; raises when the printer is not there."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Hand all of `data` to the printer, within the write timeout, or raise."""

    def drain(self) -> None:  # noqa: B027 (a hook: USB and files have nothing to drain)
        """Throw away bytes nobody asked for (a late status answer) and, where the
        connection can tell, raise if the printer has closed it. Nothing to do by default."""

    @abstractmethod
    def read(self, count: int, timeout: float) -> bytes:
        """Bytes the printer sent, waiting at most `timeout` seconds for the first; b"" when
        none came. At most `count`, except that USB reads a whole packet (up to 16)."""

    @abstractmethod
    def close(self) -> None:
        """Drop the connection (idempotent); may raise on a broken one, it is gone anyway."""


class _EscposTransport(PrinterTransport):
    """A transport around one python-escpos printer class, which opens and closes it."""

    def __init__(self, connection: Connection, *, profile: str = "default",
                 timeouts: Timeouts = Timeouts()) -> None:
        super().__init__(connection, profile=profile, timeouts=timeouts)
        self._driver: Any = None

    @property
    def is_open(self) -> bool:
        return self._driver is not None

    @abstractmethod
    def _connect(self) -> Any:
        """A python-escpos printer with its `device` open."""

    def open(self) -> None:
        driver = self._connect()
        if not driver.device:
            raise PrinterUnreachable(f"printer {self.connection} could not be opened")
        self._driver = driver

    def write(self, data: bytes) -> None:
        self._driver._raw(data)

    def close(self) -> None:
        driver, self._driver = self._driver, None
        if driver is not None:
            driver.close()


# ---------------------------------------------------------------- one class per kind


class TcpTransport(_EscposTransport):
    """`tcp://HOST:PORT`: a network printer (raw port 9100), through escpos' `Network`.

    The connection stays open between jobs (a new one per receipt costs a round trip the
    shopper waits for); `drain()` notices one the printer has dropped before writing to it.
    """

    def _connect(self) -> Any:
        from escpos.printer import Network

        c = self.connection
        driver = Network(c.host, c.port, timeout=self.timeouts.connect, profile=self.profile)
        # Connected here rather than by Network.open(), which leaks the socket when the
        # connect fails; the driver then writes to and closes this socket as its own.
        sock = socket.create_connection((c.host, c.port), timeout=self.timeouts.connect)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.timeouts.read)
        driver.device = sock
        return driver

    def write(self, data: bytes) -> None:
        sock: socket.socket = self._driver.device
        # A busy printer reads slowly: allow time for the bytes, not an endless wait.
        sock.settimeout(self.timeouts.write + len(data) / 16384)
        try:
            sock.sendall(data)
        finally:
            sock.settimeout(self.timeouts.read)

    def drain(self) -> None:
        sock: socket.socket = self._driver.device
        sock.setblocking(False)
        try:
            while True:
                chunk = sock.recv(256)
                if not chunk:
                    raise ConnectionResetError("the printer closed the connection")
        except BlockingIOError:
            pass
        finally:
            sock.settimeout(self.timeouts.read)

    def read(self, count: int, timeout: float) -> bytes:
        sock: socket.socket = self._driver.device
        sock.settimeout(timeout)
        try:
            chunk = sock.recv(count)
        except TimeoutError:
            return b""
        if not chunk:
            raise ConnectionResetError("the printer closed the connection")
        return chunk


class UsbTransport(_EscposTransport):
    """`usb://VID:PID`: a USB printer, through escpos' `Usb` (pyusb); status answers come
    from the IN endpoint."""

    def _connect(self) -> Any:
        from escpos.printer import Usb

        c = self.connection
        driver = Usb(c.vendor, c.product, timeout=int(self.timeouts.write * 1000),
                     in_ep=c.in_ep, out_ep=c.out_ep, profile=self.profile)
        driver.open()
        return driver

    def read(self, count: int, timeout: float) -> bytes:
        driver = self._driver
        return bytes(driver.device.read(driver.in_ep, 16, max(1, int(timeout * 1000))))


class SerialTransport(_EscposTransport):
    """`serial:///dev/ttyUSB0?baudrate=19200`: a serial printer, through escpos' `Serial`
    (pyserial)."""

    def _connect(self) -> Any:
        from escpos.printer import Serial

        c = self.connection
        driver = Serial(c.path, baudrate=c.baudrate, timeout=self.timeouts.read,
                        profile=self.profile)
        driver.open()
        driver.device.write_timeout = self.timeouts.write
        return driver

    def drain(self) -> None:
        self._driver.device.reset_input_buffer()

    def read(self, count: int, timeout: float) -> bytes:
        device = self._driver.device
        device.timeout = timeout
        return bytes(device.read(count))


class FileTransport(_EscposTransport):
    """`file:///dev/usb/lp0`: a device file (or any file), through escpos' `File`. It cannot
    answer status queries. With a spool folder (the edge's printers), the path must lie
    inside it, checked when the transport is made and again at every open, without
    following a symlink slipped in since."""

    answers_status = False

    def __init__(self, connection: Connection, *, profile: str = "default",
                 timeouts: Timeouts = Timeouts(), spool_dir: str | Path | None = None) -> None:
        super().__init__(connection, profile=profile, timeouts=timeouts)
        self.spool_dir = spool_dir
        if spool_dir is not None:
            inside_spool_dir(connection.path, spool_dir)

    def _connect(self) -> Any:
        from escpos.printer import File

        path = self.connection.path
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOCTTY
        if self.spool_dir is not None:
            path = inside_spool_dir(path, self.spool_dir)
            flags |= os.O_NOFOLLOW  # no symlink slipped in after the check
        driver = File(path, profile=self.profile)
        driver.device = os.fdopen(os.open(path, flags, 0o640), "wb")
        return driver

    def read(self, count: int, timeout: float) -> bytes:
        raise OSError(f"printer {self.connection}: a device file cannot answer")


class MemoryTransport(PrinterTransport):
    """A printer in memory, for tests: `written` keeps every byte, DLE EOT n is answered
    from `status` (n -> byte; all "ready" to begin with), `reachable = False` makes `open()`
    refuse and a write to an open connection fail, as when the cable is pulled."""

    def __init__(self, name: str = "printer", *, profile: str = "default",
                 timeouts: Timeouts = Timeouts()) -> None:
        super().__init__(Connection("memory", path=name), profile=profile, timeouts=timeouts)
        self.written = bytearray()
        self.status: dict[int, int] = {1: STATUS_OK, 2: STATUS_OK, 3: STATUS_OK, 4: STATUS_OK}
        self.reachable = True
        self.opened = 0
        self._open = False
        self._answers = bytearray()

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        if not self.reachable:
            raise ConnectionRefusedError(f"printer {self.connection} is unreachable")
        self._open = True
        self.opened += 1

    def _check(self) -> None:
        if not self._open:
            raise OSError(f"printer {self.connection} is not open")
        if not self.reachable:
            raise BrokenPipeError(f"printer {self.connection} went away")

    def write(self, data: bytes) -> None:
        self._check()
        self.written += data
        start = 0
        while (at := data.find(DLE_EOT, start)) >= 0 and at + 2 < len(data):
            answer = self.status.get(data[at + 2])
            if answer is not None:
                self._answers.append(answer)
            start = at + 3

    def drain(self) -> None:
        self._check()

    def read(self, count: int, timeout: float) -> bytes:
        self._check()
        chunk = bytes(self._answers[:count])
        del self._answers[:count]
        return chunk

    def close(self) -> None:
        self._open = False
        self._answers.clear()


# ---------------------------------------------------------------- the factory


#: The transport class of each URL scheme `parse_connection()` accepts.
TRANSPORTS: dict[str, type[PrinterTransport]] = {
    "tcp": TcpTransport,
    "usb": UsbTransport,
    "serial": SerialTransport,
    "file": FileTransport,
}


def transport_for(connection: str | Connection, *, profile: str = "default",
                  timeouts: Timeouts = Timeouts(),
                  spool_dir: str | Path | None = None) -> PrinterTransport:
    """The transport for a printer URL (or parsed `Connection`), not yet open. Raises
    ValueError for a URL that is wrong or of an unknown kind, saying which kinds there are;
    `spool_dir` confines a `file://` printer (ValueError when it lies outside)."""
    c = connection if isinstance(connection, Connection) else parse_connection(connection)
    kind = TRANSPORTS.get(c.scheme)
    if kind is None:
        raise ValueError(f"printer connection {c}: no transport for {c.scheme}:// "
                         f"(known: {', '.join(s + '://' for s in TRANSPORTS)})")
    if kind is FileTransport:
        return FileTransport(c, profile=profile, timeouts=timeouts, spool_dir=spool_dir)
    return kind(c, profile=profile, timeouts=timeouts)
