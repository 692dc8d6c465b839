"""The scanner service: one scanner device on the store's bus, fed by its readers
(docs/scanners.md).

Each reader (a USB keyboard-wedge scanner, a serial scanner, a camera) calls `publish` with
the scans it reads. The service numbers them for the device (`seq`, from 1 at each start,
whichever reader read them) and sends each as `evt/scan`; the edge forwards it to the lane
or kiosk the scanner is assigned to.

A scan read while the device is not connected to the broker is dropped and counted, not
queued: sent minutes later it would land in some later sale at the lane.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from pos_bridge.device import DeviceClient
from store_contract.scans import Scan

log = logging.getLogger(__name__)


class Reader(Protocol):
    """What the service runs: started once, stopped at the end, scans to its callback."""

    def start(self) -> object: ...

    def stop(self, timeout: float = 5.0) -> None: ...


ReaderFactory = Callable[[Callable[[Scan], None]], Reader]


class ScannerService:
    """Runs the readers made by `factories` and sends what they read as this device's scans."""

    def __init__(self, device: DeviceClient, factories: Sequence[ReaderFactory]) -> None:
        if not factories:
            raise ValueError("a scanner service needs at least one --hid, --serial or --camera")
        self.device = device
        self._lock = threading.Lock()
        self._seq = 0
        self.sent = 0
        self.dropped = 0
        # Built here, so a bad reader setting stops the service before it joins the bus.
        self.readers = [make(self.publish) for make in factories]

    def publish(self, scan: Scan) -> None:
        """Send one scan (called from the readers' threads)."""
        with self._lock:
            if not self.device.connected.is_set():
                self.dropped += 1
                log.warning("scanner: a %s scan (%d characters) read while the bus is away "
                            "was dropped (%d so far)", scan.source, len(scan.code), self.dropped)
                return
            self._seq += 1
            numbered = dataclasses.replace(scan, seq=self._seq)
            self.device.event("scan", numbered.to_data())
            self.sent += 1
        log.info("scanner: scan %d sent (%s, %s, %d characters)", numbered.seq, scan.source,
                 scan.symbology or "symbology unknown", len(scan.code))

    def start(self) -> ScannerService:
        for reader in self.readers:
            reader.start()
        return self

    def stop(self) -> None:
        for reader in self.readers:
            try:
                reader.stop()
            except Exception:  # noqa: BLE001 - one reader failing to stop must not keep the others
                log.exception("scanner: a reader did not stop cleanly")
