"""A hardware scanner named on the command line or in a config file, with its settings:
`NAME[,option=value...]`, e.g. `usb-Honeywell_1900-event-kbd,layout=de,terminator=tab` or
`/dev/ttyACM0,baudrate=115200,terminator=crlf` (docs/scanners.md).

One line a scanner keeps a store's setup readable; every option is checked here, so a typo
stops the service at start with a message naming it instead of misreading codes later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pos_bridge.scanner.hid import TERMINATORS as HID_TERMINATORS
from pos_bridge.scanner.hid import HidScanner
from pos_bridge.scanner.layouts import get_layout
from pos_bridge.scanner.serial_port import TERMINATORS as SERIAL_TERMINATORS
from pos_bridge.scanner.serial_port import SerialScanner
from store_contract.scans import Scan


def _flag(value: str) -> bool:
    if value.lower() in ("1", "yes", "true", "on"):
        return True
    if value.lower() in ("0", "no", "false", "off"):
        return False
    raise ValueError("not yes or no")


def _within(convert: Callable[[str], float], low: float, high: float, what: str, *,
            low_too: bool = True) -> Callable[[str], Any]:
    """A check: a number from `low` (or above it, without `low_too`) to `high`."""

    def check(value: str) -> Any:
        number = convert(value)
        if not (low <= number if low_too else low < number) or number > high:
            raise ValueError(what)
        return number

    return check


_seconds = _within(float, 0, 10, "not between 0 and 10 seconds", low_too=False)
_baudrate = _within(int, 300, 4_000_000, "not a baud rate")
_hold_off = _within(float, 0, 60, "not between 0 and 60 seconds")
_fps = _within(float, 0, 1000, "not a frame rate above 0", low_too=False)


def _choice(choices: Any) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"not one of {', '.join(choices)}")
        return value.lower()
    return check


def _layout(value: str) -> str:
    get_layout(value)
    return value.lower()


def _encoding(value: str) -> str:
    "".encode(value)
    return value


HID_OPTIONS: dict[str, Callable[[str], Any]] = {
    "layout": _layout, "terminator": _choice(HID_TERMINATORS), "gap": _seconds,
    "stale": _seconds, "aim": _flag, "grab": _flag}
SERIAL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "baudrate": _baudrate, "terminator": _choice(SERIAL_TERMINATORS), "encoding": _encoding,
    "stale": _seconds, "aim": _flag}


def parse_spec(spec: str, options: dict[str, Callable[[str], Any]]) -> tuple[str, dict[str, Any]]:
    """(device, settings) of `NAME[,option=value...]`; ValueError naming what is wrong."""
    name, *pairs = [part.strip() for part in spec.split(",")]
    if not name:
        raise ValueError(f"scanner {spec!r}: no device name or path")
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lower()
        if not sep or key not in options:
            raise ValueError(f"scanner {name}: unknown setting {pair!r} (settings: "
                             f"{', '.join(options)})")
        try:
            settings[key] = options[key](value.strip())
        except (ValueError, LookupError) as exc:
            raise ValueError(f"scanner {name}: {key}={value.strip()!r}: {exc}") from None
    return name, settings


CAMERA_OPTIONS: dict[str, Callable[[str], Any]] = {"hold_off": _hold_off, "fps": _fps}


def hid_scanner(spec: str, on_scan: Callable[[Scan], None]) -> HidScanner:
    """A (not yet started) HID scanner reader from `NAME[,layout=..,terminator=..,...]`."""
    name, settings = parse_spec(spec, HID_OPTIONS)
    return HidScanner(name, on_scan, **settings)


def serial_scanner(spec: str, on_scan: Callable[[Scan], None]) -> SerialScanner:
    """A (not yet started) serial scanner reader from `NAME[,baudrate=..,terminator=..]`."""
    name, settings = parse_spec(spec, SERIAL_OPTIONS)
    return SerialScanner(name, on_scan, **settings)


def camera_scanner(spec: str, on_scan: Callable[[Scan], None]) -> Any:
    """A (not yet started) camera reader from `SOURCE[,hold_off=..,fps=..]`: a V4L2 index or
    /dev path, a video file, an image sequence, or `watch:DIR` (docs/scanners.md)."""
    from pos_bridge.scanner.camera import CameraReader

    source, settings = parse_spec(spec, CAMERA_OPTIONS)
    return CameraReader(source, on_scan, **settings)
