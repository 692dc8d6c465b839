"""USB keyboard-wedge scanners (pos_bridge.scanner.hid, layouts): key event streams decoded
into codes, and the reader that grabs the device and survives unplugs.

The key strokes a scanner sends for each character are not taken from the layout tables
under test: they are worked out here from the XKB layouts Linux itself uses (Debian's
xkb-data: /usr/share/X11/xkb/symbols/{pc,latin,us,de,fr,gb}), XKB key names are turned into
Linux key codes with XKB's own evdev keycode table, keysym names into characters with X11's
keysymdef.h, and the modifier key codes come from python-evdev. So a wrong table entry, a
wrong key code or a wrong level in `layouts.py` fails these tests.

The streams are shaped like what the kernel delivers from a real scanner: EV_MSC scan codes,
EV_KEY down/up (and repeat), an EV_SYN report after each, with timestamps a few ms apart.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import evdev.ecodes as ec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pos_bridge.scanner import layouts
from pos_bridge.scanner.hid import HidScanner, KeyDecoder
from pos_bridge.scanner.spec import hid_scanner
from store_contract.scans import Scan
from tests.test_scanner_serial import Scans

XKB = Path("/usr/share/X11/xkb")
KEYSYMDEF = Path("/usr/include/X11/keysymdef.h")
XKB_NAMES = {"us": "us", "de": "de", "fr": "fr", "uk": "gb"}
ASCII = [chr(c) for c in range(0x20, 0x7F)]
# The bare accent a dead key followed by space types (Unicode's spacing forms; for ^ ` ~
# the same as X11's Compose table for en_US.UTF-8).
DEAD_BARE = {"dead_circumflex": "^", "dead_grave": "`", "dead_tilde": "~", "dead_acute": "´",
             "dead_diaeresis": "¨", "dead_cedilla": "¸", "dead_abovering": "˚"}


# ---------------------------------------------------------------- XKB, read independently
@cache
def keysyms() -> dict[str, str]:
    """keysym name → character, from keysymdef.h's "U+XXXX" comments."""
    out: dict[str, str] = {}
    pattern = re.compile(r"#define XK_(\w+)\s+0x[0-9a-fA-F]+\s*/\*\s*\(?U\+([0-9A-Fa-f]{4,6})")
    for line in KEYSYMDEF.read_text().splitlines():
        m = pattern.match(line)
        if m:
            out.setdefault(m.group(1), chr(int(m.group(2), 16)))
    return out


def keysym_char(name: str) -> str | None:
    if name in DEAD_BARE:
        return DEAD_BARE[name]
    if re.fullmatch(r"U[0-9A-Fa-f]{4,6}", name):
        return chr(int(name[1:], 16))
    if re.fullmatch(r"0x100[0-9A-Fa-f]{4,5}", name):
        return chr(int(name, 16) - 0x1000000)
    return keysyms().get(name)


@cache
def linux_codes() -> dict[str, int]:
    """XKB key name (<AE01>) → Linux key code: XKB's evdev keycodes are the kernel's + 8."""
    text = (XKB / "keycodes" / "evdev").read_text()
    names = {m.group(1): int(m.group(2)) - 8
             for m in re.finditer(r"^\s*<(\w+)>\s*=\s*(\d+)\s*;", text, re.M)}
    for m in re.finditer(r"alias\s+<(\w+)>\s*=\s*<(\w+)>", text):
        if m.group(2) in names:
            names[m.group(1)] = names[m.group(2)]
    return names


def _block(file: str, variant: str | None) -> str:
    text = re.sub(r"//[^\n]*", "", (XKB / "symbols" / file).read_text())
    if variant is None:
        m = re.search(r"default\b[^{]*?xkb_symbols\s+\"(\w+)\"", text)
        assert m, file
        variant = m.group(1)
    start = text.index(f'xkb_symbols "{variant}"')
    body = text[text.index("{", start) + 1:]
    depth, i = 1, 0
    while depth:
        depth += {"{": 1, "}": -1}.get(body[i], 0)
        i += 1
    return body[:i - 1]


@cache
def xkb_layout(file: str, variant: str | None = None) -> tuple[dict[int, list[str]], bool]:
    """Linux key code → keysym names by level, and whether RightAlt is AltGr (level 3)."""
    keys: dict[int, list[str]] = {}
    level3 = False
    body = _block(file, variant)
    statement = re.compile(r'include\s+"([^"]+)"|key\s+<(\w+)>\s*\{(.*?)\}\s*;', re.S)
    for m in statement.finditer(body):
        if m.group(1):
            for part in m.group(1).split("+"):
                name = re.fullmatch(r"(\w+)(?:\((\w+)\))?", part)
                assert name, part
                if name.group(1) == "level3" and name.group(2) == "ralt_switch":
                    level3 = True
                    continue
                if not (XKB / "symbols" / name.group(1)).exists():
                    continue
                sub, sub_level3 = xkb_layout(name.group(1), name.group(2))
                level3 |= sub_level3
                for sub_code, sub_syms in sub.items():
                    keys[sub_code] = _merge(keys.get(sub_code, []), sub_syms)
            continue
        code = linux_codes().get(m.group(2))
        spec = re.sub(r"(type|symbols|actions)\[\w+\]\s*=\s*(\"[^\"]*\")?", "", m.group(3))
        groups = re.findall(r"\[([^\]]*)\]", spec)
        if code is None or not groups:
            continue
        syms = [s.strip() for s in groups[0].split(",")]
        keys[code] = _merge(keys.get(code, []), syms)
    return keys, level3


def _merge(old: list[str], new: list[str]) -> list[str]:
    """XKB's override merge: the new levels replace the old ones they cover."""
    return new + old[len(new):]


@cache
def xkb(layout: str) -> tuple[dict[int, list[str | None]], bool]:
    """What a pc105 keyboard with XKB layout `layout` types: key code → char per level."""
    base, _ = xkb_layout("pc", "pc105")
    own, level3 = xkb_layout(XKB_NAMES[layout], "basic")
    merged = dict(base)
    for code, syms in own.items():
        merged[code] = _merge(base.get(code, []), syms)
    chars: dict[int, list[str | None]] = {}
    for code, syms in merged.items():
        levels = syms[:4] if level3 else syms[:2]
        chars[code] = [None if s == "NoSymbol" else keysym_char(s) for s in levels]
    return chars, level3


def dead_in_xkb(layout: str, code: int, level: int) -> bool:
    base, _ = xkb_layout("pc", "pc105")
    own, _ = xkb_layout(XKB_NAMES[layout], "basic")
    syms = _merge(base.get(code, []), own.get(code, []))
    return level < len(syms) and syms[level].startswith("dead_")


def ways_to_type(layout: str, char: str) -> list[tuple[int, int, bool]]:
    """Every (key code, level, dead) that types `char` in XKB's `layout`."""
    table, _ = xkb(layout)
    out = []
    for code, levels in sorted(table.items()):
        for level, typed in enumerate(levels):
            if typed == char and len(levels) > 0:
                out.append((code, level, dead_in_xkb(layout, code, level)))
    return out


# ---------------------------------------------------------------- key event streams
class Stream:
    """Builds a kernel-like key event stream: (type, code, value, timestamp)."""

    def __init__(self, start: float = 1_700_000_000.0, step: float = 0.002) -> None:
        self.t = start
        self.step = step
        self.events: list[tuple[int, int, int, float]] = []

    def key(self, code: int, value: int) -> Stream:
        self.t += self.step
        self.events += [(ec.EV_MSC, ec.MSC_SCAN, 0x70000 + code, self.t),
                        (ec.EV_KEY, code, value, self.t), (ec.EV_SYN, ec.SYN_REPORT, 0, self.t)]
        return self

    def tap(self, code: int, *mods: int) -> Stream:
        for mod in mods:
            self.key(mod, 1)
        self.key(code, 1).key(code, 0)
        for mod in reversed(mods):
            self.key(mod, 0)
        return self

    def stroke(self, code: int, level: int, dead: bool, shift: int = ec.KEY_LEFTSHIFT) -> Stream:
        mods = [[], [shift], [ec.KEY_RIGHTALT], [shift, ec.KEY_RIGHTALT]][level]
        self.tap(code, *mods)
        if dead:
            self.tap(ec.KEY_SPACE)
        return self

    def text(self, layout: str, text: str) -> Stream:
        """`text` typed the first way XKB's layout offers for each character."""
        for char in text:
            ways = ways_to_type(layout, char)
            assert ways, f"XKB {layout} cannot type {char!r}"
            self.stroke(*ways[0])
        return self

    def enter(self) -> Stream:
        return self.tap(ec.KEY_ENTER)

    def pause(self, seconds: float) -> Stream:
        self.t += seconds
        return self


def decode(layout: str, events: list[tuple[int, int, int, float]], **kw: object) -> list[str]:
    return KeyDecoder(layout, **kw).feed_all(events)  # type: ignore[arg-type]


# ---------------------------------------------------------------- every ASCII character
@pytest.mark.parametrize("layout", XKB_NAMES)
def test_xkb_types_every_printable_ascii_character(layout: str) -> None:
    """The independent source is complete (else the tests below would prove less)."""
    missing = [c for c in ASCII if not ways_to_type(layout, c)]
    assert missing == []


@pytest.mark.parametrize("layout", XKB_NAMES)
def test_every_printable_ascii_character_decodes_every_way_it_can_be_typed(
        layout: str) -> None:
    wrong = {}
    for char in ASCII:
        for way in ways_to_type(layout, char):
            for shift in (ec.KEY_LEFTSHIFT, ec.KEY_RIGHTSHIFT):
                codes = decode(layout, Stream().stroke(*way, shift=shift).enter().events)
                if codes != [char]:
                    wrong[(char, way, shift)] = codes
    assert wrong == {}


@pytest.mark.parametrize("layout", XKB_NAMES)
def test_all_printable_ascii_in_one_code(layout: str) -> None:
    text = "".join(ASCII)
    assert decode(layout, Stream().text(layout, text).enter().events) == [text]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_ascii_code_typed_any_way_decodes_exactly(data: st.DataObject) -> None:
    layout = data.draw(st.sampled_from(list(XKB_NAMES)))
    text = data.draw(st.text(st.sampled_from(ASCII), min_size=1, max_size=40))
    terminator = data.draw(st.sampled_from(["enter", "tab", "none"]))
    s = Stream(step=data.draw(st.floats(0.0005, 0.008)))
    for char in text:
        way = data.draw(st.sampled_from(ways_to_type(layout, char)))
        s.stroke(*way, shift=data.draw(st.sampled_from([ec.KEY_LEFTSHIFT, ec.KEY_RIGHTSHIFT])))
    if terminator != "none":
        s.tap(ec.KEY_ENTER if terminator == "enter" else ec.KEY_TAB)
    assert decode(layout, s.events, terminator=terminator, gap=0.05) == [text]


@pytest.mark.parametrize("layout", XKB_NAMES)
def test_every_table_entry_is_what_xkb_types(layout: str) -> None:
    """Beyond ASCII: each character (and dead key) in the table is XKB's, on the same key
    and level; a level XKB cannot reach is not in the table."""
    table = layouts.get_layout(layout)
    truth, _ = xkb(layout)
    wrong = {}
    for code, levels in table.keys.items():
        for level, char in enumerate(levels):
            if char is None:
                continue
            xkb_levels = truth.get(code, [])
            expected = xkb_levels[0] if len(xkb_levels) == 1 else (
                xkb_levels[level] if level < len(xkb_levels) else None)
            dead = dead_in_xkb(layout, code, level) if len(xkb_levels) > 1 else False
            if (char, table.is_dead(code, level)) != (expected, dead):
                wrong[(code, level)] = (char, expected)
    assert wrong == {}


def test_key_codes_are_the_kernels() -> None:
    assert {name: getattr(ec, f"KEY_{name}") for name in layouts.KEY_CODES} == \
        layouts.KEY_CODES


def test_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown keyboard layout 'dvorak'"):
        KeyDecoder("dvorak")
    with pytest.raises(ValueError, match="terminator"):
        KeyDecoder("us", "space")


# ---------------------------------------------------------------- layouts in a store
def test_german_store_scanner_set_to_us_reads_right_when_configured_us() -> None:
    text = "ZY-/@zy"
    stream = Stream().text("us", text).enter().events
    assert decode("us", stream) == [text]
    # The same keys read as German come out wrong: the setting matters.
    assert decode("de", stream) != [text]


def test_uk_quote_and_at_are_swapped_from_us() -> None:
    stream = Stream().tap(ec.KEY_2, ec.KEY_LEFTSHIFT).tap(
        ec.KEY_APOSTROPHE, ec.KEY_LEFTSHIFT).enter().events
    assert decode("uk", stream) == ['"@']
    assert decode("us", stream) == ["@\""]


def test_azerty_digits_need_shift() -> None:
    stream = Stream().text("fr", "HA112").enter().events
    assert decode("fr", stream) == ["HA112"]
    assert decode("us", stream) != ["HA112"]


# ---------------------------------------------------------------- modifiers
def test_capslock_inverts_letters_only() -> None:
    s = Stream().tap(ec.KEY_CAPSLOCK).tap(ec.KEY_A).tap(ec.KEY_A, ec.KEY_LEFTSHIFT)
    s.tap(ec.KEY_1).tap(ec.KEY_1, ec.KEY_RIGHTSHIFT).tap(ec.KEY_CAPSLOCK).tap(ec.KEY_A)
    assert decode("us", s.enter().events) == ["Aa1!a"]


def test_capslock_state_at_start_comes_from_the_caller() -> None:
    events = Stream().tap(ec.KEY_B).tap(ec.KEY_SEMICOLON).enter().events
    assert KeyDecoder("de", capslock=True).feed_all(events) == ["BÖ"]


def test_altgr_and_shift_altgr() -> None:
    s = Stream().tap(ec.KEY_A, ec.KEY_RIGHTALT).tap(ec.KEY_E, ec.KEY_RIGHTALT)
    s.tap(ec.KEY_7, ec.KEY_RIGHTALT).tap(ec.KEY_6, ec.KEY_RIGHTALT)
    s.tap(ec.KEY_102ND, ec.KEY_RIGHTALT).tap(ec.KEY_102ND, ec.KEY_LEFTSHIFT, ec.KEY_RIGHTALT)
    assert decode("fr", s.enter().events) == ["@€`||¦"]


def test_capslock_leaves_altgr_alone() -> None:
    s = Stream().tap(ec.KEY_CAPSLOCK).tap(ec.KEY_Q, ec.KEY_RIGHTALT).tap(ec.KEY_Q)
    assert decode("de", s.enter().events) == ["@Q"]


def test_dead_keys_compose_or_stand_alone_before_space() -> None:
    s = Stream().tap(ec.KEY_GRAVE).tap(ec.KEY_E).tap(ec.KEY_GRAVE).tap(ec.KEY_SPACE)
    s.tap(ec.KEY_EQUAL, ec.KEY_LEFTSHIFT).tap(ec.KEY_A)
    assert decode("de", s.enter().events) == ["ê^à"]
    s = Stream().tap(ec.KEY_LEFTBRACE, ec.KEY_LEFTSHIFT).tap(ec.KEY_SPACE)
    s.tap(ec.KEY_LEFTBRACE).tap(ec.KEY_LEFTBRACE)
    assert decode("fr", s.enter().events) == ["¨^"]


def test_control_characters_through_ctrl_and_alt_keypad() -> None:
    """GS1 codes carry GS (0x1D) between fields: Ctrl+] or Alt+029 on the keypad."""
    s = Stream().text("us", "01").tap(ec.KEY_RIGHTBRACE, ec.KEY_LEFTCTRL).text("us", "10")
    s.key(ec.KEY_LEFTALT, 1).tap(ec.KEY_KP0).tap(ec.KEY_KP2).tap(ec.KEY_KP9)
    s.key(ec.KEY_LEFTALT, 0).text("us", "2")
    s.key(ec.KEY_LEFTALT, 1).tap(ec.KEY_KP0).tap(ec.KEY_KP2).tap(ec.KEY_KP2).tap(ec.KEY_KP8)
    s.key(ec.KEY_LEFTALT, 0)
    assert decode("us", s.enter().events) == ["01\x1d10\x1d2ä"]


def test_keypad_digits_with_numlock_only() -> None:
    s = Stream().tap(ec.KEY_KP4).tap(ec.KEY_KPDOT).tap(ec.KEY_KP2).enter()
    assert decode("de", s.events) == ["4.2"]
    s.tap(ec.KEY_NUMLOCK).tap(ec.KEY_KP4).enter().tap(ec.KEY_NUMLOCK).tap(ec.KEY_KP7).enter()
    decoder = KeyDecoder("de")
    assert decoder.feed_all(s.events) == ["4.2", "7"]
    assert decoder.dropped == 1


def test_key_repeat_types_the_character_again() -> None:
    s = Stream().key(ec.KEY_LEFTSHIFT, 1).key(ec.KEY_LEFTSHIFT, 2).key(ec.KEY_A, 1)
    s.key(ec.KEY_A, 2).key(ec.KEY_A, 2).key(ec.KEY_A, 0).key(ec.KEY_LEFTSHIFT, 0)
    s.key(ec.KEY_A, 1).key(ec.KEY_A, 0)
    assert decode("us", s.enter().events) == ["AAAa"]


# ---------------------------------------------------------------- terminators and faults
def test_tab_terminator() -> None:
    s = Stream().text("us", "A1").tap(ec.KEY_TAB).text("us", "B2").tap(ec.KEY_TAB)
    assert decode("us", s.events, terminator="tab") == ["A1", "B2"]
    # With Enter as terminator, a Tab is a character of the code.
    assert decode("us", s.enter().events) == ["A1\tB2\t"]


def test_no_terminator_a_gap_ends_each_code() -> None:
    s = Stream().text("de", "4006381333931").pause(0.2).text("de", "Z-9").pause(0.2)
    s.text("de", "last")
    assert decode("de", s.events, terminator="none", gap=0.05) == \
        ["4006381333931", "Z-9", "last"]


def test_no_terminator_expire_ends_the_last_code_only_after_the_gap() -> None:
    s = Stream().text("us", "ABC")
    decoder = KeyDecoder("us", "none", gap=0.05)
    assert [c for e in s.events for c in decoder.feed(*e)] == []
    assert decoder.expire(s.t + 0.01) == []
    assert decoder.expire(s.t + 0.06) == ["ABC"]
    assert decoder.deadline() is None


@pytest.mark.parametrize("terminator", ["enter", "tab"])
def test_a_stream_cut_mid_code_gives_no_half_code(terminator: str) -> None:
    end = ec.KEY_ENTER if terminator == "enter" else ec.KEY_TAB
    s = Stream().text("fr", "]C1012345").pause(2.0).text("fr", "OK-42").tap(end)
    s.text("fr", "cut")  # and the stream ends here
    decoder = KeyDecoder("fr", terminator)
    assert decoder.feed_all(s.events) == ["OK-42"]
    assert decoder.dropped == 2


def test_a_device_removed_mid_code_gives_no_half_code() -> None:
    for terminator in ("enter", "none"):
        decoder = KeyDecoder("uk", terminator)
        s = Stream().text("uk", "ABC123")
        assert [c for e in s.events for c in decoder.feed(*e)] == []
        decoder.reset()
        s2 = Stream(start=s.t + 0.001).text("uk", "xyz")
        if terminator == "enter":
            s2.enter()
        assert decoder.feed_all(s2.events) == ["xyz"]


def test_lost_events_and_keys_the_layout_cannot_type_drop_the_code() -> None:
    s = Stream().text("us", "AB")
    s.events.append((ec.EV_SYN, ec.SYN_DROPPED, 0, s.t))
    s.text("us", "C").enter().text("us", "D").tap(ec.KEY_F1).text("us", "E").enter()
    s.text("us", "X").tap(ec.KEY_A, ec.KEY_RIGHTALT).enter().text("us", "GOOD").enter()
    # Events lost before the rest of a code: what arrives is its tail, not a code.
    s.events.append((ec.EV_SYN, ec.SYN_DROPPED, 0, s.t))
    s.text("us", "TAIL").enter().pause(1.0).text("us", "NEXT").enter()
    # Lost events and then nothing for a while: the next code is whole again.
    s.events.append((ec.EV_SYN, ec.SYN_DROPPED, 0, s.t))
    s.pause(1.0).text("us", "LAST").enter()
    decoder = KeyDecoder("us")
    assert decoder.feed_all(s.events) == ["GOOD", "NEXT", "LAST"]
    assert decoder.dropped == 5


def test_an_over_long_code_is_dropped() -> None:
    decoder = KeyDecoder("us", stale=60)
    s = Stream(step=0.0001)
    for _ in range(8200):
        s.tap(ec.KEY_1)
    s.enter().text("us", "OK").enter()
    assert decoder.feed_all(s.events) == ["OK"]


# ---------------------------------------------------------------- the reader
class KernelDevice:
    """Stands in for the kernel's event device only (no evdev node on this machine): a
    readable fd, events to read, ENODEV once unplugged, grab state."""

    class Event:
        def __init__(self, etype: int, code: int, value: int, ts: float) -> None:
            self.type, self.code, self.value = etype, code, value
            self.sec, self.usec = int(ts), int(round((ts - int(ts)) * 1e6))

    def __init__(self, busy: bool = False) -> None:
        self._r, self._w = os.pipe()
        self._events: list[KernelDevice.Event] = []
        self._lock = threading.Lock()
        self.gone = False
        self.busy = busy
        self.grabbed = False
        self.closed = False

    def send(self, events: list[tuple[int, int, int, float]]) -> None:
        with self._lock:
            self._events += [self.Event(*e) for e in events]
        os.write(self._w, b"x")

    def unplug(self) -> None:
        self.gone = True
        os.write(self._w, b"x")

    def fileno(self) -> int:
        return self._r

    def read(self) -> Iterator[KernelDevice.Event]:
        os.read(self._r, 4096)
        if self.gone:
            raise OSError(errno.ENODEV, "No such device")
        with self._lock:
            events, self._events = self._events, []
        yield from events

    def grab(self) -> None:
        if self.busy:
            raise OSError(errno.EBUSY, "Device or resource busy")
        self.grabbed = True

    def ungrab(self) -> None:
        if self.gone:
            raise OSError(errno.ENODEV, "No such device")
        self.grabbed = False

    def leds(self) -> list[int]:
        return [ec.LED_NUML]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        os.close(self._r)
        os.close(self._w)


class Kernel:
    """Device nodes in a tmp dir; opening a path follows its by-id symlink, as open() does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices: dict[str, KernelDevice] = {}
        self.by_id = root / "by-id"
        self.by_id.mkdir()

    def plug(self, node: str, name: str, busy: bool = False) -> KernelDevice:
        (self.root / node).touch()
        device = self.devices[str(self.root / node)] = KernelDevice(busy)
        link = self.by_id / name
        tmp = self.by_id / f".{name}.new"
        tmp.symlink_to(self.root / node)
        os.replace(tmp, link)
        return device

    def unplug(self, node: str, name: str) -> None:
        self.devices.pop(str(self.root / node)).unplug()
        (self.root / node).unlink()
        (self.by_id / name).unlink()

    def open(self, path: str) -> KernelDevice:
        real = os.path.realpath(path)
        if real not in self.devices:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return self.devices[real]


SCANNER = "usb-Honeywell_Imaging_1900-event-kbd"


def test_reader_grabs_decodes_and_survives_an_unplug(tmp_path: Path) -> None:
    kernel = Kernel(tmp_path)
    first = kernel.plug("event5", SCANNER)
    scans = Scans()
    reader = HidScanner(str(kernel.by_id / SCANNER), scans, layout="de",
                        open_device=kernel.open).start()
    try:
        assert reader.connected.wait(10)
        assert first.grabbed
        first.send(Stream(start=time.time()).text("de", "4006381333931").enter()
                   .text("de", "Zy@").enter().events)
        got = scans.wait(2)
        assert [(s.code, s.source, s.seq) for s in got] == \
            [("4006381333931", "hid", 1), ("Zy@", "hid", 2)]
        # Unplugged in the middle of a code: nothing half read comes out.
        first.send(Stream(start=time.time()).text("de", "HALF").events)
        time.sleep(0.05)
        kernel.unplug("event5", SCANNER)
        deadline = time.time() + 10
        while reader.connected.is_set() and time.time() < deadline:
            time.sleep(0.01)
        assert not reader.connected.is_set()
        assert first.closed
        # Plugged back in: a new event node behind the same by-id name.
        second = kernel.plug("event9", SCANNER)
        assert reader.connected.wait(10)
        assert second.grabbed
        second.send(Stream(start=time.time()).text("de", "AFTER").enter().events)
        got = scans.wait(3)
        assert [(s.code, s.seq) for s in got] == \
            [("4006381333931", 1), ("Zy@", 2), ("AFTER", 3)]
    finally:
        reader.stop()
    assert reader._thread is not None and not reader._thread.is_alive()


def test_reader_waits_for_a_device_busy_or_absent(tmp_path: Path) -> None:
    kernel = Kernel(tmp_path)
    scans = Scans()
    reader = HidScanner(str(kernel.by_id / SCANNER), scans, open_device=kernel.open,
                        retry=0.05).start()
    try:
        time.sleep(0.2)
        assert not reader.connected.is_set()
        busy = kernel.plug("event1", SCANNER, busy=True)
        time.sleep(0.2)
        assert not reader.connected.is_set() and busy.closed
        kernel.devices.clear()
        good = kernel.plug("event2", SCANNER)
        assert reader.connected.wait(10)
        good.send(Stream(start=time.time()).text("us", "OK").enter().events)
        assert [s.code for s in scans.wait(1)] == ["OK"]
    finally:
        reader.stop()


def test_reader_splits_the_aim_prefix_and_survives_a_failing_handler(tmp_path: Path) -> None:
    kernel = Kernel(tmp_path)
    device = kernel.plug("event3", SCANNER)
    scans = Scans()
    calls = []

    def handler(scan: Scan) -> None:
        calls.append(scan)
        if len(calls) == 1:
            raise RuntimeError("the handler broke")
        scans(scan)

    reader = HidScanner(SCANNER, handler, open_device=lambda _: kernel.open(
        str(kernel.by_id / SCANNER)), aim=True, terminator="tab").start()
    try:
        assert reader.path == f"/dev/input/by-id/{SCANNER}"
        assert reader.connected.wait(10)
        events = Stream(start=time.time()).text("us", "]E04006381333931").tap(ec.KEY_TAB)
        device.send(events.text("us", "]Q1MEMBER-7").tap(ec.KEY_TAB).events)
        got = scans.wait(1)
        assert [(s.symbology, s.code, s.seq) for s in got] == [("]Q1", "MEMBER-7", 2)]
        assert calls[0].symbology == "]E0" and calls[0].code == "4006381333931"
    finally:
        reader.stop()


@pytest.mark.skipif(not os.path.exists("/dev/uinput"),
                    reason="the kernel offers no /dev/uinput here: recorded streams only")
def test_real_uinput_keyboard_is_grabbed_and_decoded() -> None:
    from evdev import UInput

    keys = sorted(set(layouts.KEY_CODES.values()))
    with UInput({ec.EV_KEY: keys}, name="store-edge test scanner") as ui:
        scans = Scans()
        reader = HidScanner(str(ui.device.path), scans, layout="de").start()
        try:
            assert reader.connected.wait(10)
            text = "".join(ASCII)
            for etype, code, value, _ in Stream().text("de", text).enter().events:
                if etype == ec.EV_KEY:
                    ui.write(etype, code, value)
                    ui.syn()
            assert [s.code for s in scans.wait(1)] == [text]
        finally:
            reader.stop()


# ---------------------------------------------------------------- configuration
def test_scanner_spec_sets_up_the_reader() -> None:
    reader = hid_scanner("usb-X-event-kbd, layout=DE ,terminator=tab,gap=0.08,aim=yes",
                         print)
    assert reader.path == "/dev/input/by-id/usb-X-event-kbd"
    decoder = reader.decoder
    assert (decoder.layout.name, decoder.terminator, decoder.gap) == ("de", "tab", 0.08)
    assert reader.maker.aim and reader.grab
    assert hid_scanner("/dev/input/event7,grab=no", print).path == "/dev/input/event7"


@pytest.mark.parametrize(("spec", "why"), [
    ("x,layout=dvorak", "unknown keyboard layout"), ("x,terminator=space", "not one of"),
    ("x,colour=red", "unknown setting"), ("x,layout", "unknown setting"),
    ("x,gap=-1", "between"), ("x,gap=soon", "could not convert"), (",layout=us", "no device"),
    ("x,aim=maybe", "yes or no")])
def test_bad_scanner_spec_is_refused_naming_the_setting(spec: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        hid_scanner(spec, print)
