"""USB keyboard-wedge (HID) scanners read through evdev (docs/scanners.md).

A wedge scanner is a keyboard to the kernel. Reading it through a focused text field would
depend on the desktop's layout and on focus, and its keystrokes would reach whatever window
has focus (the kiosk browser). So the service opens the scanner's event device, grabs it
exclusively (no other reader, the desktop included, sees its keys), and decodes the key
codes itself with the layout the scanner is set to (`layouts.py`).

Two parts: `KeyDecoder`, pure and fed (type, code, value, timestamp) events, which turns key
strokes into whole codes; and `HidScanner`, the reader thread around a device that comes and
goes (an unplugged device raises OSError ENODEV; its /dev/input/by-id name comes back when it
is plugged in again).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import time
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from pos_bridge.scanner.emit import DeviceReader, ScanMaker
from pos_bridge.scanner.layouts import DEAD_ACCENTS, KEY_CODES, KEYPAD, Layout, get_layout
from store_contract.scans import MAX_CODE_CHARS, Scan

log = logging.getLogger(__name__)

EV_SYN, EV_KEY = 0, 1
SYN_DROPPED = 3  # the kernel's buffer overflowed: events were lost
KEY_UP, KEY_DOWN, KEY_REPEAT = 0, 1, 2
LED_NUML, LED_CAPSL = 0, 1
BY_ID = "/dev/input/by-id"
TERMINATORS = ("enter", "tab", "none")

_K = KEY_CODES
_SHIFTS = {_K["LEFTSHIFT"], _K["RIGHTSHIFT"]}
_CTRLS = {_K["LEFTCTRL"], _K["RIGHTCTRL"]}
_ALTGR = _K["RIGHTALT"]
_LEFTALT = _K["LEFTALT"]
_IGNORED = {_K["LEFTMETA"], _K["RIGHTMETA"]}
_ENTERS = {_K["ENTER"], _K["KPENTER"]}
_TAB = _K["TAB"]


class KeyDecoder:
    """Key events in, whole codes out.

    `terminator`: "enter" or "tab" (the key the scanner sends after each code), or "none"
    (the scanner sends nothing after a code: a pause of `gap` seconds between keys ends it).
    With a terminator, a code whose keys stop for `stale` seconds without it was cut off
    (the stream broke, the scanner was unplugged): it is dropped, never sent as half a code.
    A code that had a key the layout cannot type (or lost events) is dropped whole as well.

    Feed every event to `feed`; call `expire(now)` when nothing arrives (before `deadline()`
    passes) so a "none" code is ended and a cut one forgotten; `reset()` when the device is
    gone. Timestamps are seconds on one clock (evdev's event times are wall-clock time).
    """

    def __init__(self, layout: Layout | str, terminator: str = "enter", *, gap: float = 0.05,
                 stale: float = 0.5, capslock: bool = False, numlock: bool = True) -> None:
        if terminator not in TERMINATORS:
            raise ValueError(f"terminator must be one of {', '.join(TERMINATORS)}")
        if gap <= 0 or stale <= 0:
            raise ValueError("gap and stale must be positive seconds")
        self.layout = get_layout(layout) if isinstance(layout, str) else layout
        self.terminator = terminator
        self.gap = gap
        self.stale = stale
        self.capslock = capslock
        self.numlock = numlock
        self.dropped = 0  # codes dropped (cut off, untypeable keys, lost events)
        self._held: set[int] = set()
        self._buf: list[str] = []
        self._bad: str | None = None  # why the code being read is invalid
        self._dead: str | None = None  # a dead key's accent waiting for the next key
        self._alt_digits: str | None = None  # Alt + keypad digits being typed
        self._last: float | None = None  # time of the last key event of the code being read

    # -- state -------------------------------------------------------------------------
    def _started(self) -> bool:
        return bool(self._buf or self._bad or self._dead or self._alt_digits)

    def _drop(self, why: str) -> None:
        if self._started():
            self.dropped += 1
            log.warning("HID scanner: dropped a code of %d characters: %s",
                        len(self._buf), why)
        self._clear()

    def _clear(self) -> None:
        self._buf.clear()
        self._bad = self._dead = self._alt_digits = None

    def _finish(self) -> list[str]:
        if self._dead is not None:
            self._buf.append(self._dead)
            self._dead = None
        if self._bad is not None:
            self._drop(self._bad)
            return []
        code = "".join(self._buf)
        self._clear()
        return [code] if code else []

    def reset(self) -> None:
        """The device is gone (or reopened): forget a code half read and the held keys."""
        self._drop("the device went away in the middle of it")
        self._held.clear()
        self._last = None

    def deadline(self) -> float | None:
        """When `expire` has work to do (None: nothing pending)."""
        if self._last is None or not self._started():
            return None
        return self._last + (self.gap if self.terminator == "none" else self.stale)

    def expire(self, now: float) -> list[str]:
        """End a code after its gap ("none"), or drop one cut off before its terminator."""
        due = self.deadline()
        if due is None or now < due:
            return []
        if self.terminator == "none":
            return self._finish()
        self._drop(f"no {self.terminator} after it")
        return []

    # -- events ------------------------------------------------------------------------
    def feed(self, etype: int, code: int, value: int, timestamp: float) -> list[str]:
        """One input event; the codes it completed (usually none, at most two)."""
        if etype == EV_SYN and code == SYN_DROPPED:
            # The lost events may be the first keys of the code now coming in, or the middle
            # of one being read: either way what follows up to the next terminator is not a
            # whole code. (Nothing following within `stale`: the state is clean again.)
            self._bad = "the kernel dropped key events in it"
            self._last = timestamp
            self._held.clear()  # the key state is unknown until the next keys
            return []
        if etype != EV_KEY:
            return []
        out = self.expire(timestamp)  # a pause before this key ended or cut the code
        self._last = timestamp
        if value == KEY_UP:
            self._held.discard(code)
            if code == _LEFTALT and self._alt_digits is not None:
                self._alt_code()
            return out
        if value not in (KEY_DOWN, KEY_REPEAT):
            return out
        if value == KEY_DOWN:
            self._held.add(code)
        out += self._key(code, value)
        return out

    def _key(self, code: int, value: int) -> list[str]:
        if code in _SHIFTS or code in _CTRLS or code == _ALTGR or code in _IGNORED:
            return []
        if code == _LEFTALT:
            if value == KEY_DOWN:
                self._alt_digits = ""
            return []
        if code == _K["CAPSLOCK"]:
            if value == KEY_DOWN:
                self.capslock = not self.capslock
            return []
        if code == _K["NUMLOCK"]:
            if value == KEY_DOWN:
                self.numlock = not self.numlock
            return []
        if (code in _ENTERS and self.terminator == "enter") or \
                (code == _TAB and self.terminator == "tab"):
            return self._finish()
        if code in _ENTERS or code == _TAB:
            self._put("\n" if code in _ENTERS else "\t")
            return []
        if code in KEYPAD:
            self._keypad(code)
            return []
        self._typed(code)
        return []

    def _level(self) -> int:
        shift = bool(self._held & _SHIFTS)
        return (2 if _ALTGR in self._held else 0) + (1 if shift else 0)

    def _typed(self, code: int) -> None:
        level = self._level()
        layout = self.layout
        if self.capslock and level < 2 and layout.caps_applies(code):
            level = 1 - level
        char = layout.char(code, level)
        if char is None:
            self._bad = f"key {code} on level {level} types nothing in layout {layout.name}"
            return
        if self._held & _CTRLS:
            control = char.upper()
            if len(control) == 1 and "@" <= control <= "_":
                self._put(chr(ord(control) & 0x1F))
            else:
                self._bad = f"Ctrl with key {code} is no control character"
            return
        if layout.is_dead(code, level):
            if self._dead is not None:  # two dead keys: the first stands alone
                self._buf.append(self._dead)
                self._dead = None if self._dead == char else char
            else:
                self._dead = char
            return
        self._put(char)

    def _put(self, char: str) -> None:
        """Add a character, composing it with a waiting dead key (dead + space: the accent)."""
        if self._dead is not None:
            accent, self._dead = self._dead, None
            if char == " ":
                char = accent
            else:
                composed = unicodedata.normalize("NFC", char + DEAD_ACCENTS[accent])
                char = composed if len(composed) == 1 else accent + char
        if len(self._buf) >= MAX_CODE_CHARS:
            self._bad = f"longer than {MAX_CODE_CHARS} characters"
            return
        self._buf.append(char)

    def _keypad(self, code: int) -> None:
        char = KEYPAD[code]
        if self._alt_digits is not None and _LEFTALT in self._held:
            if char.isdigit():
                self._alt_digits += char
            else:
                self._bad = "Alt with a keypad key that is no digit"
            return
        if not self.numlock:
            self._bad = f"keypad key {code} with NumLock off types no character"
            return
        self._put(char)

    def _alt_code(self) -> None:
        """Alt held while typing a number on the keypad types that character (as scanners
        set to "Alt mode" send characters their layout lacks): a leading 0 means Windows-1252,
        otherwise code page 437, as on the PCs scanners are made for."""
        digits, self._alt_digits = self._alt_digits or "", None
        if not digits:
            return
        number = int(digits)
        if number > 255:
            self._bad = "Alt code above 255"
            return
        encoding = "cp1252" if digits.startswith("0") else "cp437"
        char = bytes([number]).decode(encoding, errors="replace") if number >= 32 \
            else chr(number)
        if char == "\ufffd":
            self._bad = f"Alt code {digits} is no character"
            return
        self._put(char)

    def feed_all(self, events: Iterable[tuple[int, int, int, float]]) -> list[str]:
        """Every event of a recorded stream, then `expire` after the last: its codes."""
        out: list[str] = []
        last = 0.0
        for etype, code, value, ts in events:
            out += self.feed(etype, code, value, ts)
            last = ts
        return out + self.expire(last + max(self.gap, self.stale) + 1)


class InputDevice(Protocol):
    """What the reader uses of `evdev.InputDevice`."""

    def fileno(self) -> int: ...
    def read(self) -> Iterable[Any]: ...
    def grab(self) -> None: ...
    def ungrab(self) -> None: ...
    def close(self) -> None: ...
    def leds(self) -> list[int]: ...


def _open_evdev(path: str) -> InputDevice:
    import evdev

    device: InputDevice = evdev.InputDevice(path)
    return device


def device_path(name: str) -> str:
    """A path as given; a bare name is one of /dev/input/by-id (stable across replugs)."""
    return name if "/" in name else os.path.join(BY_ID, name)


class HidScanner(DeviceReader):
    """Reads one keyboard-wedge scanner until `stop()`, calling `on_scan` for each code.

    Opens the device by path (a /dev/input/by-id name: the same after an unplug), grabs it,
    and when it goes away (ENODEV) or cannot be opened, tries again every `retry` seconds,
    so a scanner plugged back in is read again within a second. `open_device` opens the
    kernel device (python-evdev's `InputDevice`; the tests give a stand-in).
    """

    what = "HID scanner"

    def __init__(self, device: str, on_scan: Callable[[Scan], None], *, layout: str = "us",
                 terminator: str = "enter", gap: float = 0.05, stale: float = 0.5,
                 aim: bool = False, grab: bool = True, retry: float = 0.25,
                 open_device: Callable[[str], InputDevice] = _open_evdev) -> None:
        super().__init__(device_path(device), on_scan, retry)
        self.decoder = KeyDecoder(layout, terminator, gap=gap, stale=stale)
        self.maker = ScanMaker("hid", aim=aim)
        self.grab = grab
        self.open_device = open_device

    def run(self) -> None:
        while not self._stop.is_set():
            device = self._open()
            if device is None:
                self._stop.wait(self.retry)
                continue
            try:
                self._read(device)
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    log.warning("HID scanner %s unplugged; waiting for it", self.path)
                else:
                    log.warning("HID scanner %s: read failed (%s); reopening", self.path,
                                exc.strerror or exc)
            finally:
                self.connected.clear()
                self.decoder.reset()
                self._close(device)

    def _open(self) -> InputDevice | None:
        try:
            device = self.open_device(self.path)
        except OSError as exc:
            hint = "; see the udev rules in docs/scanners.md" \
                if exc.errno == errno.EACCES else ""
            self._complain(f"cannot open it ({exc.strerror or exc}{hint})")
            return None
        try:
            if self.grab:
                device.grab()  # EBUSY: another program holds it
            leds = set(device.leds())
        except OSError as exc:
            self._complain(f"cannot grab it ({exc.strerror or exc})")
            self._close(device)
            return None
        self.decoder.reset()
        self.decoder.capslock = LED_CAPSL in leds
        self.decoder.numlock = LED_NUML in leds or not leds
        self._opened()
        log.info("HID scanner %s open%s", self.path, " and grabbed" if self.grab else "")
        return device

    def _close(self, device: InputDevice) -> None:
        steps: list[Callable[[], None]] = [device.ungrab] if self.grab else []
        for step in [*steps, device.close]:
            with contextlib.suppress(OSError):
                step()

    def _read(self, device: InputDevice) -> None:
        while not self._stop.is_set():
            due = self.decoder.deadline()
            wait = 0.1 if due is None else min(0.1, max(0.0, due - time.time()))
            ready, _, _ = select.select([device.fileno()], [], [], wait)
            if ready:
                try:
                    events = list(device.read())
                except BlockingIOError:
                    events = []
                for event in events:
                    stamp = event.sec + event.usec / 1e6
                    for text in self.decoder.feed(event.type, event.code, event.value, stamp):
                        self._emit(text)
            for text in self.decoder.expire(time.time()):
                self._emit(text)

    def _emit(self, text: str) -> None:
        self._send(self.maker.make(text))
