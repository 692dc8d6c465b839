"""The ESC/POS interpreter: what a printer of a given profile prints from a byte stream.

    printouts = interpret(data, "TM-T20II")   # one Printout per cut
    printouts[0].text, printouts[0].images, printouts[0].png()

The middle of the three steps from bytes to paper (`tokenizer` -> interpreter -> `raster`).
Both sides of the store's printing use it: the staff pages preview receipts with
`interpret()` (`pos_bridge.receipt_render.render_png`), and the virtual network printer
(`pos_bridge.virtual_printer`) feeds it what arrives over TCP, so paper and screen come from
one set of bytes.

Interpretation is deliberately literal and never raises: anything it does not model is
recorded in `Printout.unknown` (hex of the command prefix) and skipped conservatively, so a
renderer test can assert that everything it emits is understood. Choices worth knowing:

- `text` has one entry per line feed (LF, each line of ESC d n, a line the printer wraps
  because it is wider than the paper); trailing spaces are stripped.
- Native 2D codes (GS ( k) print as a text line such as `[QR:payload]`; the receipts renderer
  prints QR codes as raster images instead, which land in `images`.
- Barcodes (GS k), NV/downloaded images, page mode and user-defined characters are `unknown`.
- International character sets (ESC R) are accepted but not applied (USA is assumed).

Where the printer stands in this (paper, cover, the network) is the virtual printer's
business, not the interpreter's.
"""

from __future__ import annotations

import functools
import io
import logging
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from escpos.capabilities import get_profile
from escpos.codepages import CodePages
from PIL import Image

from pos_bridge.printing.raster import (
    DEFAULT_LINE_SPACING,
    INVERT,
    Feed,
    Graphic,
    Item,
    Line,
    Style,
    draw,
    raster_image,
)
from pos_bridge.printing.tokenizer import (
    ESC,
    GS,
    HT,
    LF,
    REALTIME,
    REPLY,
    TEXT,
    UNKNOWN,
    Tokenizer,
)

log = logging.getLogger(__name__)

DEFAULT_PAPER_DOTS = 512  # 80 mm paper at 180 dpi, for profiles that do not say
_SYMBOLS = {48: "PDF417", 49: "QR", 50: "MaxiCode", 51: "DataBar", 52: "Composite",
            53: "Aztec", 54: "DataMatrix"}


# ---------------------------------------------------------------- printer model


@dataclass(frozen=True, slots=True)
class PrinterModel:
    """What the interpreter needs from a python-escpos profile."""

    code_pages: dict[int, str]  # ESC t n -> code page name
    paper_dots: int
    cells: tuple[tuple[int, int], tuple[int, int]]  # (width, height) of font A and font B


@functools.lru_cache(maxsize=32)
def printer_model(profile: str) -> PrinterModel:
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

    return PrinterModel(pages, paper, (cell("0", 12, 24), cell("1", 9, 17)))


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
    _layout: list[Item] = field(default_factory=list, repr=False)
    _picture: Image.Image | None = field(default=None, repr=False)

    def find_text(self, needle: str) -> bool:
        """Whether `needle` was printed (it may span lines, joined by a newline)."""
        return needle in "\n".join(self.text)

    def picture(self) -> Image.Image:
        """The printout drawn on paper of the profile's width, mode "L"."""
        if self._picture is None:
            self._picture = draw(self._layout, self.images, self.paper_width)
        return self._picture.copy()

    def png(self) -> bytes:
        """`picture()` as PNG bytes."""
        out = io.BytesIO()
        self.picture().save(out, format="PNG")
        return out.getvalue()


class Interpreter:
    """The printer's state: modes, the line being built and the printout being printed."""

    def __init__(self, model: PrinterModel) -> None:
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
        self.style = Style()
        self.align = 0
        self.spacing = DEFAULT_LINE_SPACING
        self.left = 0
        self.area = self.model.paper_dots
        self.tabs: list[int] | None = None
        self.table = _decode_table(self.model.code_pages.get(0, "CP437"))
        self.line: Line | None = None
        self.bits: Image.Image | None = None  # ESC * image waiting for its line feed
        self.graphic: Image.Image | None = None  # GS ( L image waiting for its print command
        self.symbols: dict[int, bytes] = {}

    def _new_printout(self) -> None:
        self.layout: list[Item] = []
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
        if kind in (REALTIME, REPLY):
            if raw[:3] == b"\x10\x14\x01":
                self.events.append(f"drawer pin {5 if raw[3] & 1 else 2}")
            return None
        self.raw.append(raw)
        if kind == TEXT:
            self._put(raw.decode("latin-1").translate(self.table))
            return None
        if kind == UNKNOWN:
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

    def _build(self, complete: bool, layout: list[Item]) -> Printout:
        return Printout(
            text=[item.text for item in layout if isinstance(item, Line)],
            images=list(self.images), complete=complete, unknown=list(self.unknown),
            raw=b"".join(self.raw), codepages=list(self.codepages), events=list(self.events),
            paper_width=self.model.paper_dots, _layout=layout,
        )

    def _finish(self, complete: bool) -> Printout:
        printout = self._build(complete, self.layout)
        self._new_printout()
        return printout

    # -- layout

    def _blank_line(self) -> Line:
        # Margins and alignment count where a line starts, as on Epson printers.
        right = min(self.model.paper_dots, self.left + self.area)
        return Line(self.align, self.left, right, self.model.cells)

    def _line_now(self) -> Line:
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

    def _add_line(self, line: Line, advance: int) -> None:
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
        self.layout.append(Graphic(len(self.images) - 1, self.align, self.left, right))
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
        band = Image.frombytes("1", (dots, columns), raw[5:].translate(INVERT))
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
            self.layout.append(Feed(raw[2]))

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
            self.layout.append(Feed(raw[3]))
        return self._finish(True)

    def _raster(self, raw: bytes) -> None:
        m, width, height = raw[3], raw[4] + 256 * raw[5], raw[6] + 256 * raw[7]
        image = raster_image(raw[8:], width, height, 1 + (m & 1), 1 + ((m >> 1) & 1))
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
            image = raster_image(params[8:], (width + 7) // 8, height, params[1], params[2])
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


def interpret(data: bytes, profile: str = "default") -> list[Printout]:
    """Interpret an ESC/POS stream as a printer of `profile` would print it.

    A new printout starts after each cut; a trailing part without a cut is a printout with
    complete=False if anything was printed on it. Real-time commands are not print data.
    Never raises on bad bytes (an unknown profile raises KeyError).
    """
    interpreter = Interpreter(printer_model(profile))
    tokenizer = Tokenizer()
    printouts: list[Printout] = []
    for kind, raw, label in tokenizer.feed(bytes(data)) + tokenizer.close():
        printout = interpreter.apply(kind, raw, label)
        if printout is not None:
            printouts.append(printout)
    last = interpreter.end()
    if last is not None:
        printouts.append(last)
    return printouts

