"""Serial scanners (RS-232, or USB ones that show up as ttyACM/ttyUSB) read through pyserial
(docs/scanners.md).

A serial scanner sends each code followed by a terminator (CR, LF or CRLF, set on the
scanner). The bytes arrive in reads of any size: one code in two reads, two codes in one.
pyserial's `readline` only splits on LF, so framing is done here (`Framer`), and a code is
sent only once its terminator has arrived: never cut in two.

What a serial line also delivers, and how it is handled without losing the next code:
NUL bytes (line noise, a scanner powering up) are removed; a line that is not text in the
configured encoding is dropped (logged with its length, never its content); a line longer
than any code, without a terminator, is dropped up to the next terminator; bytes that sit
without a terminator for `stale` seconds (noise, a code cut off by an unplug) are dropped,
so they are never glued in front of the next code. When the port goes away (unplug: EIO or
a SerialException) the reader closes it and opens the same path again until it is back
(a /dev/serial/by-id name stays the same across replugs).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from pos_bridge.scanner.emit import DeviceReader, ScanMaker
from store_contract.scans import MAX_CODE_CHARS, MAX_RAW_BYTES, Scan

log = logging.getLogger(__name__)

BY_ID = "/dev/serial/by-id"
TERMINATORS: dict[str, bytes] = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n"}


class Framer:
    """Bytes in, whole lines out (without their terminator), as the bytes arrive."""

    def __init__(self, terminator: str = "cr", *, max_len: int = MAX_CODE_CHARS,
                 stale: float = 0.5) -> None:
        if terminator not in TERMINATORS:
            raise ValueError(f"terminator must be one of {', '.join(TERMINATORS)}")
        self.terminator = TERMINATORS[terminator]
        self.max_len = max_len
        self.stale = stale
        self.dropped = 0  # lines dropped: over-long, stale
        self._buf = bytearray()
        self._skipping = False  # inside an over-long line: drop up to its terminator
        self._last = 0.0

    def feed(self, data: bytes, now: float) -> list[bytes]:
        """The lines `data` (received at `now`, in seconds) completed."""
        self.expire(now)
        lines: list[bytes] = []
        if data:
            self._last = now
        self._buf += data.replace(b"\x00", b"")
        while True:
            end = self._buf.find(self.terminator)
            if end < 0:
                break
            line = bytes(self._buf[:end])
            del self._buf[:end + len(self.terminator)]
            if self._skipping:
                self._skipping = False
            elif len(line) > self.max_len:
                self.dropped += 1
                log.warning("serial scanner: dropped %d bytes: longer than any code",
                            len(line))
            elif line:
                lines.append(line)
        if len(self._buf) > self.max_len:
            self._drop("longer than any code, no terminator")
            self._skipping = True
        return lines

    def expire(self, now: float) -> None:
        """Forget bytes that have waited `stale` seconds for their terminator."""
        if self._buf and now - self._last >= self.stale:
            self._drop("no terminator after it")

    def reset(self) -> None:
        """The port went away: what was half received will never be finished."""
        self._drop("the port went away in the middle of it")
        self._skipping = False

    def _drop(self, why: str) -> None:
        if self._buf:
            self.dropped += 1
            log.warning("serial scanner: dropped %d bytes: %s", len(self._buf), why)
            self._buf.clear()


def port_path(name: str) -> str:
    """A path as given; a bare name is one of /dev/serial/by-id (stable across replugs)."""
    return name if "/" in name else os.path.join(BY_ID, name)


def _open_serial(path: str, baudrate: int) -> Any:
    import serial

    return serial.Serial(path, baudrate=baudrate, timeout=0.1, exclusive=True)


class SerialScanner(DeviceReader):
    """Reads one serial scanner until `stop()`, calling `on_scan` for each code.

    `encoding`: what the scanner sends (utf-8 by default; latin-1 for scanners that send
    8-bit codes: every byte is a character then, and the bytes travel in the scan's `raw`
    when they are not UTF-8). `retry`: seconds between attempts to (re)open the port.
    """

    what = "serial scanner"

    def __init__(self, port: str, on_scan: Callable[[Scan], None], *, baudrate: int = 9600,
                 terminator: str = "cr", encoding: str = "utf-8", aim: bool = False,
                 stale: float = 0.5, retry: float = 0.25,
                 open_port: Callable[[str, int], Any] = _open_serial) -> None:
        "".encode(encoding)  # LookupError now, not in the reader thread
        super().__init__(port_path(port), on_scan, retry)
        self.baudrate = baudrate
        self.encoding = encoding
        self.framer = Framer(terminator, stale=stale)
        self.maker = ScanMaker("serial", aim=aim)
        self.open_port = open_port
        self.garbage = 0  # lines dropped as not text

    def run(self) -> None:
        import serial

        while not self._stop.is_set():
            try:
                port = self.open_port(self.path, self.baudrate)
            except (OSError, serial.SerialException, ValueError) as exc:
                hint = "; see the udev rules in docs/scanners.md" \
                    if getattr(exc, "errno", None) == errno.EACCES else ""
                self._complain(f"cannot open it ({exc}{hint})")
                self._stop.wait(self.retry)
                continue
            self._opened()
            log.info("serial scanner %s open at %d baud", self.path, self.baudrate)
            try:
                self._read(port)
            except (OSError, serial.SerialException) as exc:
                log.warning("serial scanner %s went away (%s); waiting for it", self.path,
                            exc)
            finally:
                self.connected.clear()
                self.framer.reset()
                with contextlib.suppress(OSError, serial.SerialException):
                    port.close()

    def _read(self, port: Any) -> None:
        while not self._stop.is_set():
            data = port.read(max(1, port.in_waiting))  # waits up to the port's timeout
            for line in self.framer.feed(data, time.monotonic()):
                self._line(line)

    def _line(self, line: bytes) -> None:
        try:
            text = line.decode(self.encoding)
        except UnicodeDecodeError:
            self.garbage += 1
            log.warning("serial scanner %s: dropped %d bytes that are not %s text",
                        self.path, len(line), self.encoding)
            return
        raw = None if line == text.encode("utf-8", "surrogatepass") else line
        if raw is not None and len(raw) > MAX_RAW_BYTES:
            log.warning("serial scanner %s: dropped a %d-byte code that is not UTF-8: more "
                        "than a scan carries", self.path, len(raw))
            return
        self._send(self.maker.make(text, raw=raw))
