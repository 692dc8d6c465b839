"""Simulated store devices for the demo: lanes, a printer, a scanner and a kiosk on the real bus.

    python -m pos_bridge.simulator DEVICES.json

DEVICES.json: {"store": ..., "mqtt_url": ..., "devices": [{"kind","id","username","password"}]}
(written by `edge demo`). Runs until SIGTERM/SIGINT, then every device says goodbye.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from pos_bridge.device import DeviceClient, DeviceError

log = logging.getLogger("pos_bridge.simulator")
MODELS = {"pos": "Simulated lane", "printer": "Simulated TM-T88", "scanner": "Simulated 2D imager",
          "kiosk": "Simulated kiosk", "display": "Simulated display"}
EXTRA_STATUS: dict[str, dict[str, Any]] = {"printer": {"paper": "ok", "cover": "closed"}}


class Simulator:
    """Keeps the simulated devices connected and lets the lanes check the edge now and then."""

    def __init__(self, spec: dict[str, Any], ping_every: float = 10.0) -> None:
        self.spec = spec
        self.ping_every = ping_every
        self.stop = threading.Event()
        self.devices: list[DeviceClient] = []

    def start(self) -> None:
        for d in self.spec["devices"]:
            client = DeviceClient(self.spec["store"], d["kind"], d["id"], self.spec["mqtt_url"],
                                  d["username"], d["password"], keepalive=10,
                                  model=MODELS.get(d["kind"]))
            client.status.update(EXTRA_STATUS.get(d["kind"], {}))
            while not self.stop.is_set():
                try:
                    client.connect(timeout=5)
                    break
                except DeviceError as exc:
                    log.warning("%s; retrying", exc)
            self.devices.append(client)
            log.info("%s %s online", d["kind"], d["id"])

    def run(self) -> None:
        while not self.stop.wait(self.ping_every):
            for lane in (d for d in self.devices if d.kind == "pos"):
                try:
                    reply = lane.request("ping", timeout=3)
                    if not reply["ok"]:
                        log.warning("lane %s: edge said %s", lane.device_id, reply["error"])
                except TimeoutError:
                    log.warning("lane %s: the edge did not answer a ping", lane.device_id)

    def close(self) -> None:
        for client in self.devices:
            client.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pos_bridge.simulator DEVICES.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s simulator: %(message)s")
    sim = Simulator(json.loads(Path(args[0]).read_text()))
    signal.signal(signal.SIGTERM, lambda *_: sim.stop.set())
    signal.signal(signal.SIGINT, lambda *_: sim.stop.set())
    try:
        sim.start()
        sim.run()
    finally:
        sim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
