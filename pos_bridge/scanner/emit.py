"""From a code a hardware scanner sent to the `Scan` the service publishes (docs/protocol.md,
"Scans"): the per-scanner sequence number, the AIM symbology identifier a scanner set to send
it puts in front of the code, and the product read from a GTIN or GS1 code.

Shared by the HID and the serial reader, so both number and split codes the same way.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from collections.abc import Callable
from typing import Self

from store_contract.scans import Scan

from .codes import product_of

log = logging.getLogger(__name__)

# ISO/IEC 15424: "]", a symbology letter, a modifier character ("]E0" EAN-13, "]C1" GS1-128).
_AIM_PREFIX = re.compile(r"\][A-Za-z][0-9A-Za-z]")


def split_aim(text: str) -> tuple[str | None, str]:
    """(AIM id, code) when `text` starts with an AIM identifier and has a code after it;
    else (None, text) unchanged."""
    if len(text) > 3 and _AIM_PREFIX.match(text):
        return text[:3], text[3:]
    return None, text


class ScanMaker:
    """Builds the scans of one scanner: numbered from 1, AIM prefix split off if asked."""

    def __init__(self, source: str, *, aim: bool = False) -> None:
        self.source = source
        self.aim = aim
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def make(self, text: str, raw: bytes | None = None) -> Scan:
        symbology: str | None = None
        if self.aim:
            symbology, text = split_aim(text)
            if symbology is not None and raw is not None:
                raw = raw[len(symbology):]  # the identifier is ASCII: one byte a character
        with self._lock:
            seq = next(self._seq)
        product = product_of(text, symbology)  # as the camera reads products
        return Scan(code=text, source=self.source, symbology=symbology, raw=raw, seq=seq,
                    product=product)


class DeviceReader:
    """What the HID and the serial reader share: a thread of their own that keeps a device
    (named by `path`) open until `stop()`, retrying every `retry` seconds while it cannot
    be opened, and one warning per kind of failure instead of one per retry."""

    what = "scanner"  # "HID scanner", "serial scanner": how the log names the kind

    def __init__(self, path: str, on_scan: Callable[[Scan], None], retry: float) -> None:
        self.path = path
        self.on_scan = on_scan
        self.retry = retry
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._complained: str | None = None

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.run, name=f"{self.what} {self.path}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        raise NotImplementedError

    def _send(self, scan: Scan) -> None:
        """Hand one scan to `on_scan` (logged by its shape, never its text); a handler that
        fails is logged and the reader goes on."""
        log.info("%s %s: scan %d, %d characters, symbology %s", self.what, self.path,
                 scan.seq, len(scan.code), scan.symbology or "unknown")
        try:
            self.on_scan(scan)
        except Exception:
            log.exception("%s %s: the scan handler failed", self.what, self.path)

    def _opened(self) -> None:
        """The device is open: the next failure is worth a warning again."""
        self._complained = None
        self.connected.set()

    def _complain(self, what: str) -> None:
        """Log a failure to open once, not every retry."""
        if what != self._complained:
            log.warning("%s %s: %s; retrying every %.2f s", self.what, self.path, what,
                        self.retry)
            self._complained = what
