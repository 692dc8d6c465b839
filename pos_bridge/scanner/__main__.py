"""`python -m pos_bridge.scanner`: the scanner service's command (docs/scanners.md).

`decode IMAGE...` is for operators and tests: what the camera scanner would read in each
image, one JSON line per image, so a label or a camera's picture can be checked without
the bus. `run` is the scanner service itself: the given HID, serial and camera scanners
reading into one scanner device on the store's bus.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np

from .decode import Decoder


@click.group()
def cli() -> None:
    """The scanner service: HID, serial and camera scanners on the store's bus."""


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--budget-ms", type=click.FloatRange(min=0), default=None,
              help="Time for the second looks at an image that the first finds nothing in.")
def decode(images: tuple[str, ...], budget_ms: float | None) -> None:
    """Prints the codes in each IMAGE as one JSON line: {"image", "codes": [{"text",
    "symbology", "format", "raw_b64" when the bytes are not the text's UTF-8}], "ms"}.
    An image that cannot be read gives a line with "error" and exit status 1 at the end."""
    decoder = Decoder() if budget_ms is None else Decoder(budget_ms=budget_ms)
    failed = False
    for name in images:
        line: dict[str, Any] = {"image": name}
        image, error = _load(name)
        if image is None:
            line["error"] = error
            failed = True
        else:
            started = time.perf_counter()
            try:
                codes = decoder.decode(image)
            except ValueError as exc:
                line["error"] = str(exc)
                failed = True
            else:
                line["codes"] = [_code(code.to_scan().to_data()) for code in codes]
                line["ms"] = round((time.perf_counter() - started) * 1000, 2)
        # ASCII only: U+0085 or U+2028 in a code would split the line for some readers.
        click.echo(json.dumps(line))
    sys.exit(1 if failed else 0)


def _load(name: str) -> tuple[Any, str]:
    """(the image, "") or (None, why it cannot be read)."""
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        return None, f"cannot read the file: {exc.strerror or exc}"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        return None, "not an image OpenCV can read"
    if image.dtype != np.uint8:
        return None, "not an 8-bit image"
    return image, ""


def _code(data: dict[str, Any]) -> dict[str, Any]:
    out = {"text": data["code"], "symbology": data["symbology"], "format": data.get("format")}
    if "raw_b64" in data:
        out["raw_b64"] = data["raw_b64"]
    return out


@cli.command()
@click.option("--store", required=True, help="The store id.")
@click.option("--device", "device_id", required=True,
              help="This scanner's device id, as enrolled with `edge scanners add`.")
@click.option("--mqtt-url", required=True,
              help="The store broker, e.g. mqtts://edge.local:8883 (TLS, as the lanes use it).")
@click.option("--username", required=True, help="This scanner's MQTT login (scanner-ID).")
@click.option("--hid", "hids", multiple=True, metavar="NAME[,option=value...]",
              help="A USB keyboard-wedge scanner by its /dev/input/by-id name or a path, "
                   "e.g. usb-Honeywell_1900-event-kbd,layout=de,terminator=tab.")
@click.option("--serial", "serials", multiple=True, metavar="NAME[,option=value...]",
              help="A serial scanner by its /dev/serial/by-id name or a path, e.g. "
                   "/dev/ttyACM0,baudrate=115200,terminator=crlf.")
@click.option("--camera", "cameras", multiple=True, metavar="SOURCE[,option=value...]",
              help="A camera: a V4L2 index or /dev/video path, a video file, an image "
                   "sequence, or watch:DIR; options hold_off (s) and fps.")
@click.option("--log-level", default="INFO", show_default=True)
def run(store: str, device_id: str, mqtt_url: str, username: str, hids: tuple[str, ...],
        serials: tuple[str, ...], cameras: tuple[str, ...], log_level: str) -> None:
    """Runs the scanner service: every scanner given reads into this one scanner device,
    whose scans the edge forwards to its lane or kiosk. The MQTT password is read from
    SCANNER_MQTT_PASSWORD. Stops cleanly on SIGTERM or SIGINT."""
    from functools import partial

    from pos_bridge.device import DeviceClient, DeviceError, connect_until
    from pos_bridge.scanner.service import ScannerService
    from pos_bridge.scanner.spec import camera_scanner, hid_scanner, serial_scanner
    from store_contract import logsafe

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s scanner %(levelname)s: %(message)s")
    logsafe.stamp()
    password = os.environ.get("SCANNER_MQTT_PASSWORD")
    if not password:
        raise click.UsageError("SCANNER_MQTT_PASSWORD is not set")
    factories = ([partial(hid_scanner, spec) for spec in hids]
                 + [partial(serial_scanner, spec) for spec in serials]
                 + [partial(camera_scanner, spec) for spec in cameras])
    try:
        device = DeviceClient(store, "scanner", device_id, mqtt_url, username, password)
        service = ScannerService(device, factories)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service.start()
    try:
        if connect_until(device, stop):
            click.echo(json.dumps({"scanner": device_id, "readers": len(service.readers)}))
            sys.stdout.flush()
        stop.wait()
    except DeviceError as exc:  # the broker refused the login
        click.echo(f"scanner: {exc}", err=True)
        sys.exit(3)
    finally:
        service.stop()
        device.close()


if __name__ == "__main__":
    cli()
