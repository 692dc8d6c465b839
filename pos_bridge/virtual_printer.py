"""A virtual network receipt printer: ESC/POS over TCP, real-time status, text and PNG out.

    python -m pos_bridge.virtual_printer --port 9100 --profile TM-T20II --out DIR

It behaves like an Epson on port 9100 as far as the store needs one: it accepts print data on
any number of connections, answers the real-time status queries (DLE EOT n, GS r n) the printer
service uses to decide between `printed` and `held`, stops printing when it is out of paper,
its cover is open or it is offline (print data that arrives then is lost, as on a real printer),
and it can vanish from the network and come back on the same port. The demo store prints to it
and the tests talk to it over real sockets, so the printer service is tested against the same
bytes a real printer would get.

What it received is split into `Printout`s at every cut and can be read back as text lines
and raster images (QR codes decode from them) or drawn as a PNG. `interpret()` is the same
interpreter without the network; the staff pages use it to preview receipts, so paper and
screen come from one set of bytes.

Interpretation is deliberately literal and never raises: anything it does not model is
recorded in `Printout.unknown` (hex of the command prefix) and skipped conservatively, so a
renderer test can assert that everything it emits is understood. Choices worth knowing:

- `text` has one entry per line feed (LF, each line of ESC d n, a line the printer wraps
  because it is wider than the paper); trailing spaces are stripped.
- Native 2D codes (GS ( k) print as a text line such as `[QR:payload]`; the receipts renderer
  prints QR codes as raster images instead, which land in `images`.
- Barcodes (GS k), NV/downloaded images, page mode and user-defined characters are `unknown`.
- International character sets (ESC R) are accepted but not applied (USA is assumed).

On the network: every connection has its own parser, so a command cut off when its connection
drops is discarded instead of swallowing the next job; all connections print onto one paper
(printouts are split by cuts, not connections). Print data that arrives while the printer
cannot print is counted in `discarded_bytes`; status queries are answered regardless:

    DLE EOT 1  0x12, +0x08 offline (set offline, cover open or paper empty)
    DLE EOT 2  0x12, +0x04 cover open, +0x20 stopped by paper end
    DLE EOT 3  0x12 (no errors are simulated)
    DLE EOT 4  0x12, +0x0C near end, +0x60 paper end (0x72: python-escpos' RT_MASK_NOPAPER)
    GS r 1     0x00, 0x03 near end, 0x0C paper end
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import logging
import re
import selectors
import signal
import socket
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal

from escpos.capabilities import get_profile
from escpos.codepages import CodePages
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

PaperState = Literal["ok", "near_end", "empty"]
CoverState = Literal["closed", "open"]

DEFAULT_PAPER_DOTS = 512  # 80 mm paper at 180 dpi, for profiles that do not say
DEFAULT_LINE_SPACING = 30  # dots: Epson's default 1/6 inch at 180 dpi
MAX_COMMAND_BYTES = 4 * 1024 * 1024  # a declared length beyond this is garbage, not an image
MAX_BARCODE_BYTES = 255
RECV_BYTES = 65536
JOIN_TIMEOUT_S = 2.0

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10
NUL, EOT, ENQ, HT, LF, FF, CR, DC4, CAN = 0x00, 0x04, 0x05, 0x09, 0x0A, 0x0C, 0x0D, 0x14, 0x18

# Real-time status bytes (Epson DLE EOT n): bits 1 and 4 are always set.
STATUS_FIXED = 0x12
STATUS_OFFLINE = 0x08  # n=1
STATUS_COVER_OPEN = 0x04  # n=2
STATUS_PAPER_END_STOP = 0x20  # n=2
STATUS_NEAR_END = 0x0C  # n=4, both near-end bits
STATUS_PAPER_END = 0x60  # n=4, both paper-end bits

# Token kinds from the tokenizer.
_TEXT, _CMD, _REALTIME, _REPLY, _UNKNOWN = range(5)
_Token = tuple[int, bytes, str]

_CONTROL = re.compile(rb"[\x00-\x1f]")
_INVERT = bytes(255 - i for i in range(256))  # ESC/POS 1 = black dot; PIL "1" 1 = white
_SYMBOLS = {48: "PDF417", 49: "QR", 50: "MaxiCode", 51: "DataBar", 52: "Composite",
            53: "Aztec", 54: "DataMatrix"}

# Fixed-length commands: second byte -> (total length, understood). Not understood means the
# length is known (so the stream stays in step) but the effect is not modelled.
_ESC_FIXED: dict[int, tuple[int, bool]] = {
    0x20: (3, True), 0x21: (3, True), 0x24: (4, True), 0x25: (3, False), 0x2B: (3, True),
    0x2D: (3, True), 0x32: (2, True), 0x33: (3, True), 0x3C: (2, True), 0x3D: (3, True),
    0x3F: (3, True), 0x40: (2, True), 0x41: (3, True), 0x42: (4, True), 0x45: (3, True),
    0x47: (3, True), 0x4A: (3, True), 0x4B: (3, False), 0x4C: (2, False), 0x4D: (3, True),
    0x52: (3, True), 0x53: (2, True), 0x54: (3, True), 0x55: (3, True), 0x56: (3, False),
    0x57: (10, True), 0x5C: (4, True), 0x61: (3, True), 0x63: (4, True), 0x64: (3, True),
    0x65: (3, True), 0x66: (4, False), 0x69: (2, True), 0x6D: (2, True), 0x70: (5, True),
    0x72: (3, True), 0x74: (3, True), 0x75: (3, False), 0x76: (2, False), 0x7B: (3, True),
}
_GS_FIXED: dict[int, tuple[int, bool]] = {
    0x21: (3, True), 0x24: (4, True), 0x2F: (3, False), 0x3A: (2, False), 0x42: (3, True),
    0x45: (3, False), 0x48: (3, True), 0x49: (3, False), 0x4C: (4, True), 0x50: (4, True),
    0x54: (3, True), 0x57: (4, True), 0x5C: (4, True), 0x5E: (5, False), 0x61: (3, True),
    0x62: (3, True), 0x63: (2, False), 0x66: (3, True), 0x67: (5, False), 0x68: (3, True),
    0x6A: (3, True), 0x77: (3, True), 0x7A: (5, False), 0x7C: (3, True),
}
_FS_FIXED: dict[int, tuple[int, bool]] = {
    0x21: (3, True), 0x26: (2, True), 0x2D: (3, True), 0x2E: (2, True), 0x32: (76, False),
    0x3F: (4, False), 0x43: (3, True), 0x53: (4, True), 0x57: (3, True), 0x70: (4, False),
}
_DC4_LENGTHS = {1: 5, 2: 5, 3: 5, 7: 4, 8: 10}


def _hex(data: bytes | bytearray) -> str:
    return " ".join(f"{b:02x}" for b in data)


# ---------------------------------------------------------------- printer model


@dataclass(frozen=True, slots=True)
class _Model:
    """What the interpreter needs from a python-escpos profile."""

    code_pages: dict[int, str]  # ESC t n -> code page name
    paper_dots: int
    cells: tuple[tuple[int, int], tuple[int, int]]  # (width, height) of font A and font B


@functools.lru_cache(maxsize=32)
def _model(profile: str) -> _Model:
    data = get_profile(profile)
    pages: dict[int, str] = {}
    for name, number in data.get_code_pages().items():
        try:
            pages.setdefault(int(number), name)
        except (TypeError, ValueError):
            continue
    pixels = data.profile_data.get("media", {}).get("width", {}).get("pixels")
    paper = pixels if isinstance(pixels, int) and pixels > 0 else DEFAULT_PAPER_DOTS
    fonts = data.profile_data.get("fonts", {})

    def cell(key: str, width: int, height: int) -> tuple[int, int]:
        columns = fonts.get(key, {}).get("columns") if isinstance(fonts, dict) else None
        if isinstance(columns, int) and columns > 0:
            width = max(1, paper // columns)
        return width, height

    return _Model(pages, paper, (cell("0", 12, 24), cell("1", 9, 17)))


@functools.lru_cache(maxsize=64)
def _decode_table(name: str) -> dict[int, int]:
    """A `str.translate` table from Latin-1 to code page `name`, the inverse of python-escpos'
    encoder: its own character list where the capability database has one, else the Python
    codec; a byte with no printable character is '?'."""
    low = "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in range(128))
    try:
        info: dict[str, Any] = CodePages.get_encoding(name)
    except KeyError:
        info = {}
    data = info.get("data")
    if isinstance(data, list) and len("".join(data)) == 128:
        high = list("".join(data))
    else:
        codec = info.get("python_encode") or name
        high = []
        for b in range(128, 256):
            try:
                high.append(bytes([b]).decode(codec))
            except (LookupError, UnicodeDecodeError):
                high.append("?")
    high = [c if len(c) == 1 and unicodedata.category(c)[0] != "C" else "?" for c in high]
    chars = low + "".join(high)
    return {b: ord(c) for b, c in enumerate(chars) if b != ord(c)}


# ---------------------------------------------------------------- tokenizer


def _measure(buf: bytearray, i: int, n: int) -> tuple[int, int, str] | None:
    """(length, kind, unknown label) of the command at buf[i] (a control byte), or None when
    more bytes are needed to know. Unknown commands skip only their prefix."""
    avail = n - i
    b = buf[i]
    if b in (LF, HT, CR, FF, CAN, NUL):
        return 1, _CMD, ""
    if b not in (ESC, GS, FS, DLE):
        return 1, _UNKNOWN, f"{b:02x}"
    if avail < 2:
        return None
    c = buf[i + 1]
    prefix = f"{b:02x} {c:02x}"
    if b == DLE:
        return _measure_dle(buf, i, avail, c)
    table = _ESC_FIXED if b == ESC else _GS_FIXED if b == GS else _FS_FIXED
    fixed = table.get(c)
    if fixed is not None:
        length, known = fixed
        if avail < length:
            return None
        return length, _CMD if known else _UNKNOWN, "" if known else prefix
    if c == 0x28:  # ESC ( / GS ( / FS ( x pL pH data: length-prefixed families
        if avail < 5:
            return None
        fn = buf[i + 2]
        length = 5 + buf[i + 3] + 256 * buf[i + 4]
        known = (b == ESC and fn == 0x41) or (b == GS and fn in (0x4B, 0x4C, 0x6B))
        return _sized(length, avail, _CMD if known else _UNKNOWN, f"{prefix} {fn:02x}")
    if b == ESC:
        return _measure_esc(buf, i, n, c, prefix)
    if b == GS:
        return _measure_gs(buf, i, n, c, prefix)
    if c == 0x71:  # FS q n [xL xH yL yH d...]...: define NV bit images
        if avail < 3:
            return None
        j = i + 3
        for _ in range(buf[i + 2]):
            if j + 4 > n:
                return None
            j += 4 + (buf[j] + 256 * buf[j + 1]) * (buf[j + 2] + 256 * buf[j + 3]) * 8
            if j - i > MAX_COMMAND_BYTES:
                return 2, _UNKNOWN, prefix + " (too long)"
        return _sized(j - i, avail, _UNKNOWN, prefix)
    return 2, _UNKNOWN, prefix


def _sized(length: int, avail: int, kind: int, label: str) -> tuple[int, int, str] | None:
    if length > MAX_COMMAND_BYTES:
        return 2, _UNKNOWN, label + " (too long)"
    if avail < length:
        return None
    return length, kind, label if kind == _UNKNOWN else ""


def _measure_dle(buf: bytearray, i: int, avail: int, c: int) -> tuple[int, int, str] | None:
    if c not in (EOT, ENQ, DC4):
        return 1, _UNKNOWN, "10"
    if avail < 3:
        return None
    fn = buf[i + 2]
    if c == EOT and fn in (7, 8):
        return (4, _UNKNOWN, f"10 04 {fn:02x}") if avail >= 4 else None
    if c == EOT:
        return 3, _REALTIME if 1 <= fn <= 4 else _UNKNOWN, f"10 04 {fn:02x}"
    if c == ENQ:
        return 3, _REALTIME, ""
    length = _DC4_LENGTHS.get(fn)
    if length is None:
        return 3, _UNKNOWN, f"10 14 {fn:02x}"
    return (length, _REALTIME, "") if avail >= length else None


def _measure_esc(buf: bytearray, i: int, n: int, c: int,
                 prefix: str) -> tuple[int, int, str] | None:
    avail = n - i
    if c == 0x2A:  # ESC * m nL nH d...: column bit image
        if avail < 5:
            return None
        m = buf[i + 2]
        if m not in (0, 1, 32, 33):
            return 2, _UNKNOWN, prefix
        columns = buf[i + 3] + 256 * buf[i + 4]
        return _sized(5 + columns * (3 if m >= 32 else 1), avail, _CMD, prefix)
    if c == 0x44:  # ESC D n1..nk NUL: tab positions, ascending, at most 32
        j, previous = i + 2, 0
        while j < n:
            value = buf[j]
            if value == 0:
                return j + 1 - i, _CMD, ""
            if value <= previous or j - i - 2 == 32:
                return j - i, _CMD, ""
            previous = value
            j += 1
        return None
    if c == 0x26:  # ESC & y c1 c2 [x d1..d(y*x)]...: user-defined characters
        if avail < 5:
            return None
        y, c1, c2 = buf[i + 2], buf[i + 3], buf[i + 4]
        if not (1 <= y <= 3 and 32 <= c1 <= c2 <= 126):
            return 2, _UNKNOWN, prefix
        j = i + 5
        for _ in range(c2 - c1 + 1):
            if j >= n:
                return None
            j += 1 + y * buf[j]
        return (j - i, _UNKNOWN, prefix) if j <= n else None
    return 2, _UNKNOWN, prefix


def _measure_gs(buf: bytearray, i: int, n: int, c: int,
                prefix: str) -> tuple[int, int, str] | None:
    avail = n - i
    if c == 0x72:  # GS r n: transmit status, answered in stream
        return (3, _REPLY, "") if avail >= 3 else None
    if c == 0x56:  # GS V m [n]: cut
        if avail < 3:
            return None
        m = buf[i + 2]
        if m in (0, 1, 48, 49):
            return 3, _CMD, ""
        if m in (65, 66, 97, 98, 103, 104):
            return (4, _CMD, "") if avail >= 4 else None
        return 2, _UNKNOWN, prefix
    if c == 0x76:  # GS v 0 m xL xH yL yH d...: raster bit image
        if avail < 8:
            return None
        if buf[i + 2] not in (0, 0x30):
            return 2, _UNKNOWN, prefix
        size = (buf[i + 4] + 256 * buf[i + 5]) * (buf[i + 6] + 256 * buf[i + 7])
        return _sized(8 + size, avail, _CMD, prefix)
    if c == 0x38:  # GS 8 L p1 p2 p3 p4 m fn ...: graphics with a 32-bit length
        if avail < 3:
            return None
        if buf[i + 2] != 0x4C:
            return 2, _UNKNOWN, prefix
        if avail < 7:
            return None
        length = 7 + int.from_bytes(buf[i + 3:i + 7], "little")
        return _sized(length, avail, _CMD, prefix + " 4c")
    if c == 0x6B:  # GS k m ...: barcode (not rendered)
        if avail < 3:
            return None
        m = buf[i + 2]
        if m <= 6:  # function A: data up to NUL
            end = buf.find(b"\x00", i + 3, min(n, i + 4 + MAX_BARCODE_BYTES))
            if end >= 0:
                return end + 1 - i, _UNKNOWN, prefix
            return (2, _UNKNOWN, prefix) if avail > 4 + MAX_BARCODE_BYTES else None
        if 65 <= m <= 79:  # function B: length byte
            if avail < 4:
                return None
            return _sized(4 + buf[i + 3], avail, _UNKNOWN, prefix)
        return 2, _UNKNOWN, prefix
    if c == 0x2A:  # GS * x y d...: define downloaded bit image
        if avail < 4:
            return None
        return _sized(4 + buf[i + 2] * buf[i + 3] * 8, avail, _UNKNOWN, prefix)
    return 2, _UNKNOWN, prefix


class _Tokenizer:
    """Splits an ESC/POS byte stream into text runs and whole commands.

    Bytes arrive in arbitrary TCP reads, so a command cut in half is kept until the rest
    arrives; text is passed on at once (it needs no completion).
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[_Token]:
        buf = self._buf
        buf += data
        n = len(buf)
        tokens: list[_Token] = []
        i = 0
        while i < n:
            if buf[i] >= 0x20:
                match = _CONTROL.search(buf, i)
                j = match.start() if match else n
                tokens.append((_TEXT, bytes(buf[i:j]), ""))
                i = j
                continue
            measured = _measure(buf, i, n)
            if measured is None:
                break
            length, kind, label = measured
            tokens.append((kind, bytes(buf[i:i + length]), label))
            i += length
        del buf[:i]
        return tokens

    def close(self) -> list[_Token]:
        """The end of the stream: a command still waiting for bytes is unknown."""
        if not self._buf:
            return []
        rest = bytes(self._buf)
        self._buf.clear()
        return [(_UNKNOWN, rest, _hex(rest[:3]) + " (truncated)")]


# ---------------------------------------------------------------- printouts


@dataclass(frozen=True, slots=True)
class _Style:
    font: int = 0
    bold: bool = False
    underline: int = 0
    width: int = 1
    height: int = 1
    invert: bool = False
    upside_down: bool = False
    right_spacing: int = 0


@dataclass(slots=True)
class _Line:
    """One printed line: styled runs laid out between the margins."""

    align: int
    left: int
    right: int
    cells: tuple[tuple[int, int], tuple[int, int]]
    runs: list[tuple[str, _Style]] = field(default_factory=list)
    used: int = 0  # dots taken by the runs
    advance: int = DEFAULT_LINE_SPACING

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.runs).rstrip(" ")


@dataclass(frozen=True, slots=True)
class _Graphic:
    index: int
    align: int
    left: int
    right: int


@dataclass(frozen=True, slots=True)
class _Feed:
    dots: int


_Item = _Line | _Graphic | _Feed


@dataclass(eq=False)
class Printout:
    """One piece of paper: what was printed between two cuts.

    `text`, `images` and `unknown` are filled while the bytes are interpreted; the drawing
    (`picture()`, `png()`) is made only when asked for, because the receive path must stay
    fast enough to measure printing latency.
    """

    text: list[str] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    complete: bool = False
    unknown: list[str] = field(default_factory=list)
    raw: bytes = b""
    codepages: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # not printed: "drawer pin 2", "buzzer"
    paper_width: int = DEFAULT_PAPER_DOTS
    # time.monotonic() when the bytes that ended it arrived (received over TCP only): what
    # bench/receipt.py measures printing latency to.
    ended_at: float | None = None
    _layout: list[_Item] = field(default_factory=list, repr=False)
    _picture: Image.Image | None = field(default=None, repr=False)

    def find_text(self, needle: str) -> bool:
        """Whether `needle` was printed (it may span lines, joined by a newline)."""
        return needle in "\n".join(self.text)

    def picture(self) -> Image.Image:
        """The printout drawn on paper of the profile's width, mode "L"."""
        if self._picture is None:
            self._picture = _draw(self)
        return self._picture.copy()

    def png(self) -> bytes:
        """`picture()` as PNG bytes."""
        out = io.BytesIO()
        self.picture().save(out, format="PNG")
        return out.getvalue()


class _Interpreter:
    """The printer's state: modes, the line being built and the printout being printed."""

    def __init__(self, model: _Model) -> None:
        self.model = model
        self._reset_modes()
        self._new_printout()
        self._esc: dict[int, Callable[[bytes], Printout | None]] = {
            0x20: self._right_spacing, 0x21: self._print_mode, 0x24: self._absolute,
            0x28: self._esc_paren, 0x2A: self._bit_image, 0x2B: self._spacing_360,
            0x2D: self._underline, 0x32: self._spacing_default, 0x33: self._spacing,
            0x40: self._initialise, 0x41: self._spacing_60, 0x42: self._buzzer,
            0x44: self._tabs, 0x45: self._bold, 0x47: self._bold, 0x4A: self._feed_dots,
            0x4D: self._font, 0x5C: self._relative, 0x61: self._align, 0x64: self._feed_lines,
            0x69: self._cut_old, 0x6D: self._cut_old, 0x70: self._drawer, 0x74: self._code_page,
            0x7B: self._upside_down,
        }
        self._gs: dict[int, Callable[[bytes], Printout | None]] = {
            0x21: self._size, 0x28: self._gs_paren, 0x38: self._gs_8, 0x42: self._invert,
            0x4C: self._left_margin, 0x56: self._cut, 0x57: self._area_width,
            0x76: self._raster,
        }

    # -- state

    def _reset_modes(self) -> None:
        self.style = _Style()
        self.align = 0
        self.spacing = DEFAULT_LINE_SPACING
        self.left = 0
        self.area = self.model.paper_dots
        self.tabs: list[int] | None = None
        self.table = _decode_table(self.model.code_pages.get(0, "CP437"))
        self.line: _Line | None = None
        self.bits: Image.Image | None = None  # ESC * image waiting for its line feed
        self.graphic: Image.Image | None = None  # GS ( L image waiting for its print command
        self.symbols: dict[int, bytes] = {}

    def _new_printout(self) -> None:
        self.layout: list[_Item] = []
        self.images: list[Image.Image] = []
        self.unknown: list[str] = []
        self.raw: list[bytes] = []
        self.codepages: list[str] = []
        self.events: list[str] = []
        self.content = False
        self.column: int | None = None  # index of the ESC * image still growing

    def _pending(self) -> bool:
        return self.bits is not None or (self.line is not None and self.line.used > 0)

    def has_content(self) -> bool:
        return self.content or self._pending()

    # -- entry points

    def apply(self, kind: int, raw: bytes, label: str) -> Printout | None:
        """Print one token; returns the finished printout when it was a cut."""
        if kind in (_REALTIME, _REPLY):
            if raw[:3] == b"\x10\x14\x01":
                self.events.append(f"drawer pin {5 if raw[3] & 1 else 2}")
            return None
        self.raw.append(raw)
        if kind == _TEXT:
            self._put(raw.decode("latin-1").translate(self.table))
            return None
        if kind == _UNKNOWN:
            self.unknown.append(label)
            log.debug("unknown ESC/POS command %s", label)
            return None
        first = raw[0]
        if first == LF:
            self._newline(self.spacing)
        elif first == HT:
            self._tab()
        elif len(raw) > 1:
            table = self._esc if first == ESC else self._gs if first == GS else {}
            handler = table.get(raw[1])
            if handler is not None:
                return handler(raw)
        return None

    def end(self) -> Printout | None:
        """Close the current printout without a cut, if anything was printed on it."""
        if not self.has_content():
            return None
        if self._pending():
            self._newline(self.spacing)
        return self._finish(False)

    def snapshot(self) -> Printout | None:
        """The printout being printed, as it stands (complete=False)."""
        if not self.has_content():
            return None
        layout = list(self.layout)
        if self.line is not None and self.line.used > 0:
            layout.append(self.line)
        return self._build(False, layout)

    def _build(self, complete: bool, layout: list[_Item]) -> Printout:
        return Printout(
            text=[item.text for item in layout if isinstance(item, _Line)],
            images=list(self.images), complete=complete, unknown=list(self.unknown),
            raw=b"".join(self.raw), codepages=list(self.codepages), events=list(self.events),
            paper_width=self.model.paper_dots, _layout=layout,
        )

    def _finish(self, complete: bool) -> Printout:
        printout = self._build(complete, self.layout)
        self._new_printout()
        return printout

    # -- layout

    def _blank_line(self) -> _Line:
        # Margins and alignment count where a line starts, as on Epson printers.
        right = min(self.model.paper_dots, self.left + self.area)
        return _Line(self.align, self.left, right, self.model.cells)

    def _line_now(self) -> _Line:
        if self.line is None:
            self.line = self._blank_line()
        return self.line

    def _put(self, text: str) -> None:
        """Add decoded text to the line, wrapping as the printer does when it is full."""
        while text:
            line = self._line_now()
            style = self.style
            step = (self.model.cells[style.font][0] + style.right_spacing) * style.width
            room = (line.right - line.left - line.used) // max(1, step)
            if room <= 0:
                if line.used:
                    self._newline(self.spacing)
                    continue
                room = 1  # one character wider than the paper still prints
            part, text = text[:room], text[room:]
            if line.runs and line.runs[-1][1] == style:
                line.runs[-1] = (line.runs[-1][0] + part, style)
            else:
                line.runs.append((part, style))
            line.used += len(part) * step

    def _newline(self, advance: int) -> None:
        """Print the line buffer and feed `advance` dots (LF, ESC d, ESC J, wrapping)."""
        line, bits = self.line, self.bits
        self.line, self.bits = None, None
        if bits is not None:
            if line is not None and line.used:
                self._add_line(line, advance)
            self._stripe(bits)
            return
        self._add_line(line or self._blank_line(), advance)

    def _add_line(self, line: _Line, advance: int) -> None:
        line.advance = advance
        self.column = None
        self.layout.append(line)
        if line.text.strip():
            self.content = True

    def _flush(self) -> None:
        if self._pending():
            self._newline(self.spacing)

    def _stripe(self, bits: Image.Image) -> None:
        """Stack an ESC * band under the previous one: python-escpos prints an image as
        24-dot bands, one per line feed, and they form one picture on paper."""
        if self.column is not None:
            above = self.images[self.column]
            joined = Image.new("1", (max(above.width, bits.width), above.height + bits.height), 1)
            joined.paste(above, (0, 0))
            joined.paste(bits, (0, above.height))
            self.images[self.column] = joined
            return
        self._add_image(bits)
        self.column = len(self.images) - 1

    def _add_image(self, image: Image.Image) -> None:
        self.column = None
        right = min(self.model.paper_dots, self.left + self.area)
        self.images.append(image)
        self.layout.append(_Graphic(len(self.images) - 1, self.align, self.left, right))
        self.content = True

    def _tab(self) -> None:
        line = self._line_now()
        width = self.model.cells[0][0]
        column = line.used // width
        stops = self.tabs if self.tabs is not None else range(8, 256, 8)
        stop = next((s for s in stops if s > column), None)
        if stop is not None and line.left + stop * width <= line.right:
            self._pad(stop * width - line.used)

    def _pad(self, dots: int) -> None:
        style = self.style
        step = (self.model.cells[style.font][0] + style.right_spacing) * style.width
        if dots > 0:
            self._put(" " * max(1, dots // max(1, step)))

    # -- ESC

    def _right_spacing(self, raw: bytes) -> None:
        self.style = replace(self.style, right_spacing=raw[2])

    def _print_mode(self, raw: bytes) -> None:
        n = raw[2]
        self.style = replace(self.style, font=n & 1, bold=bool(n & 0x08),
                             height=2 if n & 0x10 else 1, width=2 if n & 0x20 else 1,
                             underline=1 if n & 0x80 else 0)

    def _absolute(self, raw: bytes) -> None:
        used = self.line.used if self.line is not None else 0
        self._pad(raw[2] + 256 * raw[3] - used)

    def _relative(self, raw: bytes) -> None:
        offset = raw[2] + 256 * raw[3]
        if offset < 0x8000:  # backwards moves cannot be shown in text
            self._pad(offset)

    def _esc_paren(self, raw: bytes) -> None:
        if raw[2] == 0x41:
            self.events.append("buzzer")

    def _bit_image(self, raw: bytes) -> None:
        m, columns = raw[2], raw[3] + 256 * raw[4]
        if columns == 0:
            return
        dots = 24 if m >= 32 else 8
        band = Image.frombytes("1", (dots, columns), raw[5:].translate(_INVERT))
        band = band.transpose(Image.Transpose.TRANSPOSE)
        scale_x, scale_y = (1 if m & 1 else 2), (1 if m >= 32 else 3)
        if scale_x > 1 or scale_y > 1:
            band = band.resize((band.width * scale_x, band.height * scale_y),
                               Image.Resampling.NEAREST)
        self._line_now()
        if self.bits is None:
            self.bits = band
        else:
            wide = Image.new("1", (self.bits.width + band.width,
                                   max(self.bits.height, band.height)), 1)
            wide.paste(self.bits, (0, 0))
            wide.paste(band, (self.bits.width, 0))
            self.bits = wide

    def _spacing_360(self, raw: bytes) -> None:
        self.spacing = raw[2] // 2

    def _spacing_60(self, raw: bytes) -> None:
        self.spacing = raw[2] * 3

    def _spacing(self, raw: bytes) -> None:
        self.spacing = raw[2]

    def _spacing_default(self, raw: bytes) -> None:
        self.spacing = DEFAULT_LINE_SPACING

    def _underline(self, raw: bytes) -> None:
        n = raw[2]
        self.style = replace(self.style, underline=n - 48 if n in (49, 50) else min(n, 2))

    def _initialise(self, raw: bytes) -> None:
        # ESC @ also clears the print buffer: text not yet fed is lost, as on paper.
        self._reset_modes()

    def _buzzer(self, raw: bytes) -> None:
        self.events.append("buzzer")

    def _tabs(self, raw: bytes) -> None:
        self.tabs = [b for b in raw[2:] if b]

    def _bold(self, raw: bytes) -> None:
        self.style = replace(self.style, bold=bool(raw[2] & 1))

    def _feed_dots(self, raw: bytes) -> None:
        if self._pending():
            self._newline(raw[2])
        else:
            self.column = None
            self.layout.append(_Feed(raw[2]))

    def _font(self, raw: bytes) -> None:
        self.style = replace(self.style, font=1 if raw[2] in (1, 49) else 0)

    def _align(self, raw: bytes) -> None:
        n = raw[2] - 48 if raw[2] >= 48 else raw[2]
        if 0 <= n <= 2:
            self.align = n

    def _feed_lines(self, raw: bytes) -> None:
        if raw[2] == 0:
            self._flush()
        for _ in range(raw[2]):
            self._newline(self.spacing)

    def _drawer(self, raw: bytes) -> None:
        self.events.append(f"drawer pin {5 if raw[2] & 1 else 2}")

    def _code_page(self, raw: bytes) -> None:
        name = self.model.code_pages.get(raw[2], f"#{raw[2]}")
        self.codepages.append(name)
        self.table = _decode_table(name)

    def _upside_down(self, raw: bytes) -> None:
        self.style = replace(self.style, upside_down=bool(raw[2] & 1))

    def _cut_old(self, raw: bytes) -> Printout:
        self._flush()
        return self._finish(True)

    # -- GS

    def _size(self, raw: bytes) -> None:
        n = raw[2]
        self.style = replace(self.style, width=((n >> 4) & 7) + 1, height=(n & 7) + 1)

    def _invert(self, raw: bytes) -> None:
        self.style = replace(self.style, invert=bool(raw[2] & 1))

    def _left_margin(self, raw: bytes) -> None:
        self.left = raw[2] + 256 * raw[3]

    def _area_width(self, raw: bytes) -> None:
        self.area = raw[2] + 256 * raw[3]

    def _cut(self, raw: bytes) -> Printout:
        self._flush()
        if len(raw) == 4 and raw[3]:
            self.column = None
            self.layout.append(_Feed(raw[3]))
        return self._finish(True)

    def _raster(self, raw: bytes) -> None:
        m, width, height = raw[3], raw[4] + 256 * raw[5], raw[6] + 256 * raw[7]
        image = _raster_image(raw[8:], width, height, 1 + (m & 1), 1 + ((m >> 1) & 1))
        if image is not None:
            self._flush()
            self._add_image(image)

    def _gs_8(self, raw: bytes) -> None:
        self._graphics(raw, 7, "1d 38 4c")

    def _gs_paren(self, raw: bytes) -> None:
        if raw[2] == 0x4C:
            self._graphics(raw, 5, "1d 28 4c")
        elif raw[2] == 0x6B:
            self._symbol(raw)
        # GS ( K (print control: density, speed) changes nothing we can show

    def _graphics(self, raw: bytes, start: int, label: str) -> None:
        """GS ( L / GS 8 L: store raster graphics (fn 112), print them (fn 50)."""
        fn = raw[start + 1] if len(raw) > start + 1 else -1
        if fn in (50, 2):
            if self.graphic is not None:
                self._flush()
                self._add_image(self.graphic)
                self.graphic = None
            return
        if fn in (49, 1):  # reference dot density
            return
        params = raw[start + 2:]
        if fn == 112 and len(params) >= 8 and params[0] == 48:
            if params[3] != 49:  # further colours of a two-colour image: ink we do not show
                return
            width, height = params[4] + 256 * params[5], params[6] + 256 * params[7]
            image = _raster_image(params[8:], (width + 7) // 8, height, params[1], params[2])
            if image is not None:
                self.graphic = image.crop((0, 0, width * max(1, min(params[1], 2)),
                                           image.height))
                return
        self.unknown.append(f"{label} {fn & 0xFF:02x}")

    def _symbol(self, raw: bytes) -> None:
        """GS ( k: 2D codes the printer draws itself; printed as a `[QR:data]` text line."""
        cn, fn = (raw[5], raw[6]) if len(raw) >= 7 else (-1, -1)
        name = _SYMBOLS.get(cn)
        if name is not None and fn == 80 and len(raw) >= 8:
            self.symbols[cn] = raw[8:]
        elif name is not None and fn == 81:
            data = self.symbols.get(cn)
            if data:
                shown = "".join(c if c.isprintable() else "?"
                                for c in data.decode("utf-8", "replace"))
                self._flush()
                self._put(f"[{name}:{shown}]")
                self._newline(self.spacing)
        elif name is None or not 65 <= fn <= 79:
            self.unknown.append(f"1d 28 6b {cn & 0xFF:02x} {fn & 0xFF:02x}")


def _raster_image(data: bytes, width_bytes: int, height: int, scale_x: int,
                  scale_y: int) -> Image.Image | None:
    """A raster bit image as printed: black where the data has a 1 bit."""
    size = width_bytes * height
    if size == 0 or len(data) < size:
        return None
    image = Image.frombytes("1", (width_bytes * 8, height), data[:size].translate(_INVERT))
    scale_x, scale_y = max(1, min(scale_x, 2)), max(1, min(scale_y, 2))
    if scale_x > 1 or scale_y > 1:
        image = image.resize((image.width * scale_x, image.height * scale_y),
                             Image.Resampling.NEAREST)
    return image


def interpret(data: bytes, profile: str = "default") -> list[Printout]:
    """Interpret an ESC/POS stream as a printer of `profile` would print it.

    A new printout starts after each cut; a trailing part without a cut is a printout with
    complete=False if anything was printed on it. Real-time commands are not print data.
    Never raises on bad bytes (an unknown profile raises KeyError).
    """
    interpreter = _Interpreter(_model(profile))
    tokenizer = _Tokenizer()
    printouts: list[Printout] = []
    for kind, raw, label in tokenizer.feed(bytes(data)) + tokenizer.close():
        printout = interpreter.apply(kind, raw, label)
        if printout is not None:
            printouts.append(printout)
    last = interpreter.end()
    if last is not None:
        printouts.append(last)
    return printouts


# ---------------------------------------------------------------- drawing

_FONT_FILES = {
    False: ("DejaVuSansMono.ttf", "LiberationMono-Regular.ttf"),
    True: ("DejaVuSansMono-Bold.ttf", "LiberationMono-Bold.ttf"),
}
_FONT_DIRS = tuple(Path("/usr/share/fonts", folder) for folder in (
    "truetype/dejavu", "truetype/liberation", "dejavu", "TTF"))
_AnyFont = ImageFont.FreeTypeFont | ImageFont.ImageFont


@functools.lru_cache(maxsize=16)
def _font(bold: bool, size: int) -> _AnyFont:
    """A monospace TrueType font (DejaVu has € £ ä é ñ), else Pillow's own."""
    for name in _FONT_FILES[bold]:
        for candidate in [*(folder / name for folder in _FONT_DIRS), Path(name)]:
            try:
                return ImageFont.truetype(str(candidate), size)
            except OSError:
                continue
    return ImageFont.load_default(size)


@functools.lru_cache(maxsize=4096)
def _glyph(char: str, bold: bool, width: int, height: int) -> Image.Image:
    """The ink of one character cell, as a mask."""
    size = max(6, min(int(width / 0.602), int(height / 1.17)))  # DejaVu Mono's em proportions
    font = _font(bold, size)
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    if isinstance(font, ImageFont.FreeTypeFont):
        ascent, descent = font.getmetrics()
        draw.text((width / 2, (height - ascent - descent) // 2 + ascent), char, fill=255,
                  font=font, anchor="ms")
    else:
        draw.text((0, 0), char, fill=255, font=font)
    return mask


def _draw_run(text: str, style: _Style, cell: tuple[int, int]) -> Image.Image:
    width, height = cell
    step = width + style.right_spacing
    ink, paper = (255, 0) if style.invert else (0, 255)
    run = Image.new("L", (max(1, len(text) * step), height), paper)
    for i, char in enumerate(text):
        if char != " ":
            run.paste(ink, (i * step, 0, i * step + width, height),
                      _glyph(char, style.bold, width, height))
    if style.underline:
        ImageDraw.Draw(run).rectangle((0, height - 1 - style.underline, run.width - 1, height - 2),
                                      fill=ink)
    if style.width > 1 or style.height > 1:
        run = run.resize((run.width * style.width, height * style.height),
                         Image.Resampling.NEAREST)
    return run


def _x(align: int, left: int, right: int, width: int) -> int:
    if align == 1:
        return left + max(0, (right - left - width) // 2)
    if align == 2:
        return max(left, right - width)
    return left


def _draw_line(line: _Line, paper: int) -> Image.Image:
    heights = [line.cells[style.font][1] * style.height for _, style in line.runs]
    text_height = max(heights, default=0)
    row = Image.new("L", (paper, max(1, line.advance, text_height)), 255)
    x = _x(line.align, line.left, line.right, line.used)
    for text, style in line.runs:
        run = _draw_run(text, style, line.cells[style.font])
        row.paste(run, (x, text_height - run.height))
        x += run.width
    if any(style.upside_down for _, style in line.runs):
        row = row.rotate(180)
    return row


def _draw(printout: Printout) -> Image.Image:
    paper = printout.paper_width
    rows: list[Image.Image] = [Image.new("L", (paper, 8), 255)]
    for item in printout._layout:
        if isinstance(item, _Line):
            rows.append(_draw_line(item, paper))
        elif isinstance(item, _Graphic):
            image = printout.images[item.index]
            row = Image.new("L", (paper, image.height), 255)
            row.paste(image.convert("L"), (_x(item.align, item.left, item.right, image.width), 0))
            rows.append(row)
        elif item.dots:
            rows.append(Image.new("L", (paper, item.dots), 255))
    rows.append(Image.new("L", (paper, 8), 255))
    sheet = Image.new("L", (paper, sum(row.height for row in rows)), 255)
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    return sheet


# ---------------------------------------------------------------- the network printer

PrintoutCallback = Callable[[int, Printout, Path | None], None]


class VirtualPrinter:
    """A receipt printer on a TCP port (like an Epson on 9100), with a paper roll, a cover and
    an online switch the tests can flip.

    Each connection has its own thread and tokenizer (commands may be split across reads);
    all connections print onto one paper, as a real printer would. `on_printout(number,
    printout, png_path)` is called after each finished printout, outside the lock.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, profile: str = "default",
                 out_dir: Path | None = None, name: str = "virtual", *,
                 on_printout: PrintoutCallback | None = None) -> None:
        self.host = host
        self.port = port
        self.profile = profile
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.name = name
        self.on_printout = on_printout
        self._interpreter = _Interpreter(_model(profile))  # an unknown profile fails here
        self._cond = threading.Condition(threading.RLock())
        self._finished: list[Printout] = []
        self.paper: PaperState = "ok"
        self.cover: CoverState = "closed"
        self.online = True
        self.reachable = True
        self._budget: int | None = None
        self.bytes_received = 0
        self.discarded_bytes = 0
        self.last_byte_at = 0.0
        self.connections = 0
        self._started = False
        self._listener: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._acceptor: threading.Thread | None = None
        self._conns: dict[socket.socket, threading.Thread] = {}

    # -- lifecycle

    @property
    def address(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> VirtualPrinter:
        """Listen (unless set unreachable); returns self so `with VirtualPrinter().start()`
        and `vp = VirtualPrinter().start()` both read well."""
        with self._cond:
            if self._started:
                return self
            self._started = True
            if self.reachable:
                self._listen()
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection, and wait for their threads."""
        with self._cond:
            self._started = False
        self._unlisten()

    def __enter__(self) -> VirtualPrinter:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _listen(self) -> None:
        listener = socket.create_server((self.host, self.port), backlog=16)
        self.port = int(listener.getsockname()[1])
        wake = socket.socketpair()
        self._listener, self._wake = listener, wake
        self._acceptor = threading.Thread(target=self._accept_loop, args=(listener, wake[0]),
                                          name=f"{self.name}-accept", daemon=True)
        self._acceptor.start()
        log.info("virtual printer %s listening on %s", self.name, self.address)

    def _unlisten(self) -> None:
        with self._cond:
            listener, wake, acceptor = self._listener, self._wake, self._acceptor
            self._listener = self._wake = self._acceptor = None
        if wake is not None:
            wake[1].send(b"x")
        if acceptor is not None:
            acceptor.join(JOIN_TIMEOUT_S)
        for sock in (listener, *(wake or ())):
            if sock is not None:
                sock.close()
        with self._cond:
            conns = list(self._conns.items())
        for conn, _ in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recv()
        for conn, thread in conns:
            if thread is not threading.current_thread():
                thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                conn.close()

    def _accept_loop(self, listener: socket.socket, wake: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is wake:
                        return
                    try:
                        conn, _ = listener.accept()
                    except OSError:
                        continue
                    conn.setblocking(True)
                    with self._cond:
                        self.connections += 1
                        thread = threading.Thread(
                            target=self._serve, args=(conn,), daemon=True,
                            name=f"{self.name}-conn-{self.connections}")
                        self._conns[conn] = thread
                    thread.start()

    def _serve(self, conn: socket.socket) -> None:
        tokenizer = _Tokenizer()
        try:
            while True:
                try:
                    data = conn.recv(RECV_BYTES)
                except OSError:
                    break
                if not data:
                    break
                reply = self._receive(data, tokenizer)
                if reply:
                    try:
                        conn.sendall(reply)
                    except OSError:
                        break
        finally:
            with self._cond:
                self._conns.pop(conn, None)
            conn.close()

    # -- printing

    def _receive(self, data: bytes, tokenizer: _Tokenizer) -> bytes:
        arrived = time.monotonic()
        finished: list[Printout] = []
        reply = bytearray()
        with self._cond:
            self.bytes_received += len(data)
            self.last_byte_at = arrived
            for kind, raw, label in tokenizer.feed(data):
                if kind == _REALTIME:
                    if raw[1] == EOT:
                        reply.append(self._status(raw[2]))
                    self._interpreter.apply(kind, raw, label)
                elif kind == _REPLY:
                    answer = self._sensor(raw[2])
                    if answer is not None:
                        reply.append(answer)
                else:
                    finished += self._print(kind, raw, label)
            for printout in finished:
                printout.ended_at = arrived
            numbered = self._publish(finished)
        self._announce(numbered)
        return bytes(reply)

    def _ready(self) -> bool:
        return self.paper != "empty" and self.cover == "closed" and self.online

    def _print(self, kind: int, raw: bytes, label: str) -> list[Printout]:
        if not self._ready():
            self.discarded_bytes += len(raw)
            return []
        done: list[Printout] = []
        if self._budget is not None and len(raw) > self._budget:
            kept = self._budget if kind == _TEXT else 0
            if kept:
                self._interpreter.apply(kind, raw[:kept], label)
            self.discarded_bytes += len(raw) - kept
            return self._run_out()
        if self._budget is not None:
            self._budget -= len(raw)
        printout = self._interpreter.apply(kind, raw, label)
        if printout is not None:
            done.append(printout)
        if self._budget == 0:
            done += self._run_out()
        return done

    def _run_out(self) -> list[Printout]:
        self._budget = None
        self.paper = "empty"
        log.info("virtual printer %s: out of paper", self.name)
        return self._stopped()

    def _stopped(self) -> list[Printout]:
        # Printing stopped half way: what is on the paper is a printout of its own.
        printout = self._interpreter.end()
        return [printout] if printout is not None else []

    def _publish(self, printouts: list[Printout]) -> list[tuple[int, Printout, Path | None]]:
        """Record finished printouts (and their files) under the lock, so a waiter that
        wakes up finds the files written."""
        numbered = []
        for printout in printouts:
            self._finished.append(printout)
            number = len(self._finished)
            png_path = None
            if self.out_dir is not None:
                try:
                    self.out_dir.mkdir(parents=True, exist_ok=True)
                    png_path = self.out_dir / f"{number:04d}.png"
                    png_path.write_bytes(printout.png())
                    (self.out_dir / f"{number:04d}.txt").write_text(
                        "".join(line + "\n" for line in printout.text), encoding="utf-8")
                except OSError:
                    log.exception("virtual printer %s: cannot write printout %d", self.name,
                                  number)
            numbered.append((number, printout, png_path))
        if printouts:
            self._cond.notify_all()
        return numbered

    def _announce(self, numbered: list[tuple[int, Printout, Path | None]]) -> None:
        if self.on_printout is None:
            return
        for number, printout, png_path in numbered:
            try:
                self.on_printout(number, printout, png_path)
            except Exception:
                log.exception("virtual printer %s: on_printout failed", self.name)

    # -- status

    def _status(self, n: int) -> int:
        """The DLE EOT n byte, Epson bit layout (what python-escpos' is_online() and
        paper_status() decode)."""
        status = STATUS_FIXED
        if n == 1 and not self._ready():
            status |= STATUS_OFFLINE
        elif n == 2:
            if self.cover == "open":
                status |= STATUS_COVER_OPEN
            if self.paper == "empty":
                status |= STATUS_PAPER_END_STOP
        elif n == 4:
            # Only the end bits when empty: 0x72 is exactly python-escpos' RT_MASK_NOPAPER.
            if self.paper == "empty":
                status |= STATUS_PAPER_END
            elif self.paper == "near_end":
                status |= STATUS_NEAR_END
        return status

    def _sensor(self, n: int) -> int | None:
        """GS r n: 1/49 paper sensors (near end 0x03, end 0x0C), 2/50 drawer, 4/52 ink."""
        if n in (1, 49):
            return {"ok": 0x00, "near_end": 0x03, "empty": 0x0C}[self.paper]
        if n in (2, 50, 4, 52):
            return 0x00
        return None

    # -- switches for tests and the demo

    def _set(self, change: Callable[[], None]) -> None:
        with self._cond:
            was_ready = self._ready()
            change()
            finished = self._stopped() if was_ready and not self._ready() else []
            numbered = self._publish(finished)
        self._announce(numbered)

    def set_paper(self, state: PaperState) -> None:
        """Load paper ("ok"), reach the near-end mark, or run out. Cancels a pending
        `run_out_after`. Running out ends the printout being printed (complete=False)."""
        if state not in ("ok", "near_end", "empty"):
            raise ValueError(f"paper state must be ok, near_end or empty, not {state!r}")

        def change() -> None:
            self.paper = state
            self._budget = None

        self._set(change)

    def set_cover(self, state: CoverState) -> None:
        """Open or close the cover. Opening it ends the printout being printed
        (complete=False); print data sent while it is open is lost."""
        if state not in ("closed", "open"):
            raise ValueError(f"cover state must be closed or open, not {state!r}")

        def change() -> None:
            self.cover = state

        self._set(change)

    def set_online(self, online: bool) -> None:
        """Take the printer offline (as when the feed button is held) or back online. Going
        offline ends the printout being printed (complete=False); data sent meanwhile is lost."""

        def change() -> None:
            self.online = online

        self._set(change)

    def run_out_after(self, nbytes: int) -> None:
        """Let the paper run out after `nbytes` more bytes of print data (real-time status
        queries do not count): the printout ends there incomplete, paper becomes "empty" and
        later print data is discarded until `set_paper("ok")`."""
        with self._cond:
            self._budget = max(0, nbytes)
            finished = self._run_out() if self._budget == 0 and self._ready() else []
            numbered = self._publish(finished)
        self._announce(numbered)

    def set_reachable(self, reachable: bool) -> None:
        """False: the printer vanished (cable pulled): stop listening and drop every
        connection, so connects are refused. True: listen again on the same port."""
        with self._cond:
            changed = reachable != self.reachable
            self.reachable = reachable
            started = self._started
        if not (changed and started):
            return
        if reachable:
            with self._cond:
                self._listen()
        else:
            self._unlisten()

    # -- reading back

    @property
    def open_connections(self) -> int:
        """Connections open right now (the printer service should not keep one idle)."""
        with self._cond:
            return len(self._conns)

    @property
    def printouts(self) -> list[Printout]:
        """Every printout so far in order, the one being printed last (complete=False)."""
        with self._cond:
            printouts = list(self._finished)
            current = self._interpreter.snapshot()
        return printouts + ([current] if current is not None else [])

    def wait_printouts(self, n: int, timeout: float = 10.0) -> list[Printout]:
        """Wait until at least `n` complete (cut) printouts exist; returns all complete ones."""
        def complete() -> list[Printout]:
            return [p for p in self._finished if p.complete]

        with self._cond:
            if self._cond.wait_for(lambda: len(complete()) >= n, timeout):
                return complete()
            raise TimeoutError(
                f"virtual printer {self.name} at {self.address}: {len(complete())} of {n} "
                f"complete printouts after {timeout:g} s ({len(self._finished)} finished in "
                f"all, {self.bytes_received} bytes received, {self.discarded_bytes} discarded, "
                f"{self.connections} connections; paper {self.paper}, cover {self.cover}, "
                f"{'online' if self.online else 'offline'})")


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """Run a virtual printer until SIGTERM/SIGINT, one line per printout on stdout."""
    parser = argparse.ArgumentParser(prog="python -m pos_bridge.virtual_printer",
                                     description="A virtual ESC/POS network receipt printer.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9100, help="TCP port (0: any free port)")
    parser.add_argument("--profile", default="default", help="python-escpos printer profile")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for NNNN.png and NNNN.txt of every printout")
    parser.add_argument("--name", default="virtual", help="printer name for the log")
    args = parser.parse_args(argv)
    try:
        _model(args.profile)
    except KeyError:
        parser.error(f"unknown printer profile {args.profile!r}")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def on_printout(number: int, printout: Printout, png_path: Path | None) -> None:
        line = (f"printout {number}: {len(printout.text)} lines, {len(printout.images)} images"
                + (f" -> {png_path}" if png_path else "")
                + ("" if printout.complete else " (incomplete)"))
        print(line, flush=True)

    printer = VirtualPrinter(args.host, args.port, args.profile, args.out, args.name,
                             on_printout=on_printout)
    with printer:
        print(f"virtual printer {args.name} listening on {printer.address} "
              f"(profile {args.profile})", flush=True)
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
