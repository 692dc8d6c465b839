"""Receipt documents (docs/receipts.md §1) to ESC/POS bytes, and to a PNG preview.

    data = render_escpos(document, "TM-T88V", logo=logo)   # what the printer gets
    png = render_png(document, "TM-T88V")                   # what the staff page shows

Everything a shopper reads arrives already worded by the edge; this module only lays it out
for one printer model (python-escpos' capability database: characters per line, paper width
in dots, code pages) and keeps two promises:

- **No printer commands from data.** Every text field is cleaned first (control, format and
  private-use characters removed), so a product name cannot cut, reset, open the drawer or
  change the code page. Only this module writes commands.
- **Fast enough for the checkout.** A receipt is rendered while the shopper waits (target:
  p99 <= 20 ms with two QR codes on a 2-core store box). python-escpos' own `qr()` spends
  ~25 ms on one coupon QR, in `qrcode`'s pure-Python scoring of all eight masks and its
  list-based Reed-Solomon division; here `qrcode` still lays out the symbol, but at a fixed
  mask, with the version and codewords computed up front (`qr_codewords`, held equal to
  `qrcode`'s by a test), and python-escpos prints it as a raster image: ~1 ms per code.
  The profile, its code page tables and a Dummy printer are kept per thread.
"""

from __future__ import annotations

import copy
import functools
import logging
import textwrap
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import qrcode
from escpos.capabilities import get_profile_class
from escpos.constants import HW_INIT
from escpos.printer import Dummy
from PIL import Image
from qrcode import LUT as qr_LUT
from qrcode import base as qr_base
from qrcode import util as qr_util

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 500  # per field; longer text is cut, not refused (not worth a lost receipt)
MAX_QR_BYTES = 2000  # a QR payload is data: a longer one is refused, never cut
MAX_BLOCKS = 1000
MAX_ITEMS = 2000
DEFAULT_PAPER_DOTS = 512  # 80 mm paper at 180 dpi, for profiles that do not say
QR_MAX_MODULE_DOTS = 5  # ~0.7 mm at 180 dpi: large enough for any till scanner, no larger
QR_BORDER_MODULES = 4  # the quiet zone the QR standard asks for
QR_MASK = 2  # any mask decodes; a fixed one skips qrcode's pure-Python scoring of all eight
QR_EC_SWITCH_BYTES = 256  # longer payloads use level L so the modules stay large on 80 mm paper
QR_CACHE_SIZE = 64
ALIGNMENTS = ("left", "center", "right")


class DocumentError(ValueError):
    """The document cannot be printed (not an object with a `blocks` list, wrong field types,
    a QR payload too long). Answered `failed`/`bad_document` and never retried."""

    code = "bad_document"


# ---------------------------------------------------------------- cleaning text

# C0 controls, DEL and C1 controls map to nothing; tab, newline and the other line breaks
# become a space so words do not run together.
_SPACES = "\t\n\r\x0b\x0c\x85\u2028\u2029"
_STRIP_TABLE: dict[int, str | None] = {c: None for c in (*range(0x20), *range(0x7F, 0xA0))}
_STRIP_TABLE.update({ord(c): " " for c in _SPACES})
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def clean_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Text safe to hand to the printer: no control, format (bidi overrides, zero-width),
    surrogate, private-use or unassigned characters, line breaks as spaces, composed (NFC) so
    "e" + combining accent prints as one "é", at most `limit` characters."""
    text = text[: limit * 4]  # bound the work before the character-by-character pass
    if text.isascii() and text.isprintable():
        return text[:limit]
    text = text.translate(_STRIP_TABLE)
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
        text = "".join(c for c in text
                       if c.isascii() or unicodedata.category(c) not in _REMOVED_CATEGORIES)
    return text[:limit]


# ---------------------------------------------------------------- the document


@dataclass(frozen=True, slots=True)
class _Row:
    left: str
    right: str
    strong: bool = False
    sub: str | None = None  # an indented second row (a line's quantity)


@dataclass(frozen=True, slots=True)
class _Block:
    """A validated, cleaned block: every string in it is safe to print."""

    type: str
    title: str = ""
    lines: tuple[str, ...] = ()
    rows: tuple[_Row, ...] = ()
    text: str = ""
    data: str = ""
    align: str = "left"
    strong: bool = False
    logo: bool = False


def _str(obj: Mapping[str, Any], name: str, where: str, *, required: bool = True) -> str:
    value = obj.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DocumentError(f"{where}.{name} must be a string")
    return clean_text(value)


def _bool(obj: Mapping[str, Any], name: str, where: str) -> bool:
    value = obj.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise DocumentError(f"{where}.{name} must be true or false")
    return value


def _list(obj: Mapping[str, Any], name: str, where: str, *, required: bool = True) -> list[Any]:
    value = obj.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise DocumentError(f"{where}.{name} must be a list")
    if len(value) > MAX_ITEMS:
        raise DocumentError(f"{where}.{name} has more than {MAX_ITEMS} entries")
    return value


def _strings(obj: Mapping[str, Any], name: str, where: str, *, required: bool = True
             ) -> tuple[str, ...]:
    out = []
    for i, value in enumerate(_list(obj, name, where, required=required)):
        if not isinstance(value, str):
            raise DocumentError(f"{where}.{name}[{i}] must be a string")
        out.append(clean_text(value))
    return tuple(out)


def _objects(obj: Mapping[str, Any], name: str, where: str, *, required: bool = True
             ) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i, value in enumerate(_list(obj, name, where, required=required)):
        if not isinstance(value, dict):
            raise DocumentError(f"{where}.{name}[{i}] must be an object")
        out.append((f"{where}.{name}[{i}]", value))
    return out


def _qr_data(obj: Mapping[str, Any], name: str, where: str, *, required: bool) -> str:
    """A QR payload is data, not text: refused when too long or not printable, never cut."""
    value = obj.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DocumentError(f"{where}.{name} must be a string")
    if len(value) > MAX_QR_BYTES or len(value.encode("utf-8", "replace")) > MAX_QR_BYTES:
        raise DocumentError(f"{where}.{name} is longer than {MAX_QR_BYTES} bytes")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DocumentError(f"{where}.{name} is not valid text") from exc
    return value


def _parse_block(index: int, raw: Mapping[str, Any], kind: str) -> _Block | None:
    where = f"blocks[{index}]"
    if kind == "header":
        return _Block(kind, title=_str(raw, "title", where),
                      lines=_strings(raw, "lines", where, required=False),
                      logo=_bool(raw, "logo", where))
    if kind in ("lines", "discounts"):
        rows = []
        for at, item in _objects(raw, "items", where):
            qty = _str(item, "qty", at, required=False)
            rows.append(_Row(_str(item, "name", at), _str(item, "amount", at), sub=qty or None))
        return _Block(kind, rows=tuple(rows))
    if kind == "totals":
        return _Block(kind, rows=tuple(
            _Row(_str(row, "label", at), _str(row, "amount", at), strong=_bool(row, "strong", at))
            for at, row in _objects(raw, "rows", where)))
    if kind == "savings":
        return _Block(kind, text=_str(raw, "text", where))
    if kind == "customer":
        return _Block(kind, title=_str(raw, "greeting", where, required=False), rows=tuple(
            _Row(_str(row, "label", at), _str(row, "value", at))
            for at, row in _objects(raw, "rows", where, required=False)))
    if kind == "offer":
        return _Block(kind, title=_str(raw, "title", where),
                      text=_str(raw, "text", where, required=False),
                      data=_qr_data(raw, "code", where, required=False))
    if kind == "qr":
        return _Block(kind, title=_str(raw, "caption", where, required=False),
                      data=_qr_data(raw, "data", where, required=True))
    if kind == "text":
        align = raw.get("align", "left")
        if align is None:
            align = "left"
        if align not in ALIGNMENTS:
            raise DocumentError(f"{where}.align must be one of {', '.join(ALIGNMENTS)}")
        return _Block(kind, text=_str(raw, "text", where), align=align,
                      strong=_bool(raw, "strong", where))
    if kind == "footer":
        return _Block(kind, lines=_strings(raw, "lines", where))
    # Newer edges may send blocks this service does not know yet: print the rest.
    log.info("receipt: skipping unknown block type %r", kind[:40])
    return None


def parse_document(document: object) -> list[_Block]:
    """Validate a receipt document and clean every text in it; raises DocumentError."""
    if not isinstance(document, dict):
        raise DocumentError("the receipt document must be an object")
    blocks = document.get("blocks")
    if not isinstance(blocks, list):
        raise DocumentError("the receipt document needs a `blocks` list")
    if len(blocks) > MAX_BLOCKS:
        raise DocumentError(f"the receipt document has more than {MAX_BLOCKS} blocks")
    parsed = []
    for index, raw in enumerate(blocks):
        if not isinstance(raw, dict):
            raise DocumentError(f"blocks[{index}] must be an object")
        kind = raw.get("type")
        if not isinstance(kind, str):
            raise DocumentError(f"blocks[{index}].type must be a string")
        block = _parse_block(index, raw, kind)
        if block is not None:
            parsed.append(block)
    return parsed


# ---------------------------------------------------------------- QR codes


def _qr_version(length: int, ec: int) -> int:
    """The smallest QR version that holds `length` bytes in byte mode at level `ec` (what
    qrcode's best_fit finds, without writing the data into a bit buffer twice)."""
    limits = qr_util.BIT_LIMIT_TABLE[ec]
    for version in range(1, 41):
        needed = 4 + qr_util.length_in_bits(qr_util.MODE_8BIT_BYTE, version) + 8 * length
        if needed <= limits[version]:
            return version
    raise DocumentError(f"a QR payload of {length} bytes does not fit in a QR code")


@functools.lru_cache(maxsize=32)
def _rs_table(ec_count: int) -> tuple[int, ...]:
    """For each byte f, f times the Reed-Solomon generator polynomial (without its leading 1)
    as one big integer, so the encoder below does one shift and one XOR per data byte instead
    of qrcode's list-building polynomial division (which is half of a receipt's time)."""
    if ec_count in qr_LUT.rsPoly_LUT:
        generator = list(qr_LUT.rsPoly_LUT[ec_count])
    else:  # not used by any QR version, kept for completeness
        generator = [1]
        for i in range(ec_count):
            generator = list(qr_base.Polynomial(generator, 0)
                             * qr_base.Polynomial([1, qr_base.gexp(i)], 0))
    exp, logs = qr_base.EXP_TABLE, qr_base.LOG_TABLE
    table = [0]
    for f in range(1, 256):
        product = bytes(exp[(logs[f] + logs[g]) % 255] if g else 0 for g in generator[1:])
        table.append(int.from_bytes(product, "big"))
    return tuple(table)


def _rs_remainder(data: bytes, ec_count: int) -> bytes:
    table = _rs_table(ec_count)
    shift = 8 * (ec_count - 1)
    mask = (1 << (8 * ec_count)) - 1
    rem = 0
    for byte in data:
        rem = ((rem << 8) & mask) ^ table[byte ^ (rem >> shift)]
    return rem.to_bytes(ec_count, "big")


def qr_codewords(payload: bytes, version: int, ec: int) -> list[int]:
    """The final codeword sequence of a byte-mode QR code: what qrcode's
    `util.create_data` returns (a test holds the two equal), computed with whole integers."""
    blocks = qr_base.rs_blocks(version, ec)
    capacity = sum(b.data_count for b in blocks)
    length_bits = qr_util.length_in_bits(qr_util.MODE_8BIT_BYTE, version)
    value = (qr_util.MODE_8BIT_BYTE << length_bits) | len(payload)
    value = (value << 8 * len(payload)) | int.from_bytes(payload, "big")
    used = 4 + length_bits + 8 * len(payload)
    # Up to four 0 bits end the data, then 0 bits to a whole byte, then the pad bytes.
    total = used + min(4, 8 * capacity - used)
    total += -total % 8
    value <<= total - used
    data = value.to_bytes(total // 8, "big") + bytes((qr_util.PAD0, qr_util.PAD1)) * capacity
    data = data[:capacity]
    data_blocks: list[bytes] = []
    ec_blocks: list[bytes] = []
    offset = 0
    for block in blocks:
        chunk = data[offset:offset + block.data_count]
        offset += block.data_count
        data_blocks.append(chunk)
        ec_blocks.append(_rs_remainder(chunk, block.total_count - block.data_count))
    out: list[int] = []
    for group in (data_blocks, ec_blocks):
        for i in range(max(len(b) for b in group)):
            out.extend(b[i] for b in group if i < len(b))
    return out


_BLACK_WHITE = bytes([255, 0]) + bytes(254)  # module on (1) -> black (0), off (0) -> white


def qr_image(data: str, max_width: int) -> Image.Image:
    """A QR code of `data` as a black-on-white image at most `max_width` dots wide, each module
    a whole number of dots (scaled with NEAREST so edges stay sharp for scanners).

    qrcode builds the symbol (function patterns, placement, masking, format information);
    the data and error-correction codewords are handed to it ready-made (`qr_codewords`) at
    a fixed mask, which together take a 450-character coupon from ~25 ms to ~1 ms.
    """
    payload = data.encode("utf-8")
    ec = (qrcode.constants.ERROR_CORRECT_M if len(payload) <= QR_EC_SWITCH_BYTES
          else qrcode.constants.ERROR_CORRECT_L)
    version = _qr_version(len(payload), ec)
    code = qrcode.QRCode(version=version, error_correction=ec, box_size=1,
                         border=QR_BORDER_MODULES, mask_pattern=QR_MASK)
    code.add_data(qr_util.QRData(payload, mode=qr_util.MODE_8BIT_BYTE))
    code.data_cache = qr_codewords(payload, version, ec)
    code.make(fit=False)
    matrix = code.get_matrix()
    size = len(matrix)
    box = min(QR_MAX_MODULE_DOTS, max_width // size)
    if box < 1:
        raise DocumentError(f"a QR payload of {len(payload)} bytes is too large for this paper")
    pixels = b"".join(bytes(row) for row in matrix).translate(_BLACK_WHITE)
    image = Image.frombytes("L", (size, size), pixels)
    return image.resize((size * box, size * box), Image.Resampling.NEAREST)


class _QrCache:
    """The last few QR images: a job printed again (held, reprinted, previewed) reuses them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, int], Image.Image] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, data: str, max_width: int) -> Image.Image:
        key = (data, max_width)
        with self._lock:
            image = self._items.get(key)
            if image is not None:
                self._items.move_to_end(key)
                return image
        image = qr_image(data, max_width)
        with self._lock:
            self._items[key] = image
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return image


_qr_cache = _QrCache(QR_CACHE_SIZE)


# ---------------------------------------------------------------- the printer model


class _Model:
    """One printer profile's facts, and a python-escpos Dummy to write into.

    Looking a profile up and building the encoder's character maps costs far more than a
    receipt, so each thread keeps one per profile and resets it between receipts.
    """

    def __init__(self, profile: str) -> None:
        try:
            profile_class = get_profile_class(profile)
        except KeyError:
            raise ValueError(f"unknown printer profile {profile!r} (python-escpos "
                             "capability database)") from None
        data = copy.deepcopy(profile_class.profile_data)
        width = data.get("media", {}).get("width", {}).get("pixels")
        if not isinstance(width, int) or width <= 0:
            # python-escpos prints a warning for unknown widths on every image; say 80 mm.
            data.setdefault("media", {}).setdefault("width", {})["pixels"] = DEFAULT_PAPER_DOTS
            width = DEFAULT_PAPER_DOTS
        self.printer = Dummy(profile=profile)
        self.printer.profile.profile_data = data  # this instance only, not the shared class
        self.name = profile
        self.width_dots: int = width
        fonts = data.get("fonts", {})
        self.columns: int = int(fonts.get("0", {}).get("columns", 42))
        self.small_font = "1" in fonts
        self.small_columns: int = int(fonts.get("1", {}).get("columns", self.columns))
        self.cuts = bool(data.get("features", {}).get("paperFullCut")
                         or data.get("features", {}).get("paperPartCut"))
        encoder = self.printer.magic.encoder
        # The profile's code pages in its own slot order, with the characters each can print.
        self.pages: list[tuple[str, frozenset[str]]] = []
        for encoding, _slot in sorted(encoder.codepages.items(), key=lambda kv: int(kv[1])):
            try:
                self.pages.append((encoding, frozenset(encoder._get_codepage_char_map(encoding))))
            except LookupError:  # a slot the database lists as "Unknown"
                continue
        self.printable = frozenset().union(*(chars for _, chars in self.pages))

    def page_for(self, chars: set[str]) -> str | None:
        """The first code page that prints the most of `chars` (the receipt's non-ASCII
        characters), so a typical receipt selects one code page once instead of switching
        back and forth between the first pages that happen to have each character."""
        best, best_count = None, 0
        for encoding, page in self.pages:
            count = len(chars & page)
            if count > best_count:
                best, best_count = encoding, count
                if count == len(chars):
                    break
        return best

    def printable_text(self, text: str) -> str:
        """`text` with every character no code page of this printer has replaced by "?"."""
        if text.isascii():
            return text
        printable = self.printable
        return "".join(c if c.isascii() or c in printable else "?" for c in text)

    def begin(self) -> Dummy:
        printer = self.printer
        printer.clear()
        # Each receipt starts from a reset printer and names its code page itself.
        printer.magic.encoding = None
        printer.magic.encoder.used_encodings.clear()
        return printer


_models = threading.local()


def _model(profile: str) -> _Model:
    cache: dict[str, _Model] | None = getattr(_models, "cache", None)
    if cache is None:
        cache = _models.cache = {}
    model = cache.get(profile)
    if model is None:
        model = cache[profile] = _Model(profile)
    return model


def check_profile(profile: str) -> None:
    """Raise ValueError unless python-escpos' capability database knows `profile`."""
    try:
        get_profile_class(profile)
    except KeyError:
        raise ValueError(f"unknown printer profile {profile!r} (python-escpos "
                         "capability database)") from None


def profile_columns(profile: str) -> int:
    """Characters per line of font A for `profile` (docs/receipts.md: widths from the profile)."""
    return _model(profile).columns


# ---------------------------------------------------------------- layout


def _wrap(text: str, width: int) -> list[str]:
    if len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def _two_columns(left: str, right: str, width: int) -> list[str]:
    """Left text and right-aligned text on one row; a long left side wraps onto further rows
    (the amount stays on the first), a very long right side gets its own row."""
    if len(left) + 1 + len(right) <= width:
        return [left + " " * (width - len(left) - len(right)) + right]
    room = width - len(right) - 1
    if room < width // 3:
        return [*_wrap(left, width), *(r.rjust(width) for r in _wrap(right, width))]
    first, *rest = _wrap(left, room)
    rest_text = " ".join(rest)
    lines = [first.ljust(room) + " " + right]
    if rest_text:
        lines.extend(_wrap(rest_text, width))
    return lines


class _Writer:
    """Writes laid-out lines into the model's Dummy; only this class emits commands."""

    def __init__(self, model: _Model) -> None:
        self.model = model
        self.p = model.begin()
        self.width = model.columns
        self.previous = ""  # the block type written last

    def raw(self, data: bytes) -> None:
        self.p._raw(data)

    def code_page(self, texts: list[str]) -> None:
        """Select the code page that suits the whole receipt before its first character."""
        chars = {c for text in texts if not text.isascii() for c in text if not c.isascii()}
        page = self.model.page_for(chars & self.model.printable)
        if page is not None:
            self.p.magic.write_with_encoding(page, None)

    def line(self, text: str = "") -> None:
        text = self.model.printable_text(text) + "\n"
        magic = self.p.magic
        if magic.encoding is not None:
            # ASCII is the same bytes in every code page, and a line the current code page
            # prints whole needs no search: both skip magic's per-character code page search.
            if text.isascii():
                self.p._raw(text.encode("ascii"))
                return
            unknown = set(text).difference(magic.encoder._get_codepage_char_map(magic.encoding))
            if "".join(unknown).isascii():
                magic.write_with_encoding(magic.encoding, text)
                return
        self.p.text(text)

    def style(self, **fields: Any) -> None:
        self.p.set(**fields)

    def centred(self, lines: list[str] | tuple[str, ...], width: int | None = None) -> None:
        width = width or self.width
        self.style(align="center")
        for text in lines:
            for part in _wrap(text, width):
                self.line(part)
        self.style(align="left")

    def rows(self, rows: tuple[_Row, ...]) -> None:
        for row in rows:
            if row.strong:
                self.style(bold=True, double_height=True)
            for text in _two_columns(row.left, row.right, self.width):
                self.line(text)
            if row.strong:
                self.style(bold=False, normal_textsize=True)
            if row.sub:
                for text in _wrap(row.sub, self.width - 2):
                    self.line("  " + text)

    def rule(self, char: str = "-") -> None:
        self.line(char * self.width)

    def image(self, image: Image.Image) -> None:
        self.style(align="left")
        self.p.image(image, center=True)

    def qr(self, data: str) -> None:
        self.image(_qr_cache.get(data, self.model.width_dots))
        self.line()

    def logo(self, logo: Image.Image) -> None:
        if logo.width > self.model.width_dots:
            logo = logo.copy()
            logo.thumbnail((self.model.width_dots, logo.height), Image.Resampling.LANCZOS)
        self.image(logo)


def _header(w: _Writer, b: _Block, logo: Image.Image | None) -> None:
    if b.logo and logo is not None:
        w.logo(logo)
    w.style(align="center", bold=True, double_width=True, double_height=True)
    for part in _wrap(b.title, max(1, w.width // 2)):
        w.line(part)
    w.style(bold=False, normal_textsize=True)
    w.centred(b.lines)
    w.line()


def _items(w: _Writer, b: _Block, _logo: Image.Image | None) -> None:
    if b.type == "discounts" and w.previous != "totals":
        w.rule()
    w.rows(b.rows)


def _totals(w: _Writer, b: _Block, _logo: Image.Image | None) -> None:
    # A subtotal's discounts follow right under it: the space comes after the last totals.
    w.rule()
    w.rows(b.rows)


def _savings(w: _Writer, b: _Block, _logo: Image.Image | None) -> None:
    w.style(bold=True)
    w.centred([b.text])
    w.style(bold=False)
    w.line()


def _customer(w: _Writer, b: _Block, _logo: Image.Image | None) -> None:
    if b.title:
        w.style(bold=True)
        w.centred([b.title])
        w.style(bold=False)
    w.rows(b.rows)
    w.line()


def _offer(w: _Writer, b: _Block, _logo: Image.Image | None) -> None:
    w.rule("=")
    w.style(bold=True)
    w.centred([b.title])
    w.style(bold=False)
    if b.text:
        w.centred([b.text])
    if b.data:
        w.qr(b.data)
    w.rule("=")
    w.line()


def _qr(w: _Writer, b: _Block, _logo: Image.Image | None) -> None:
    if b.title:
        w.centred([b.title])
    w.qr(b.data)


def _text(w: _Writer, b: _Block, _logo: Image.Image | None) -> None:
    if b.strong:
        w.style(bold=True)
    w.style(align=b.align)
    for part in _wrap(b.text, w.width):
        w.line(part)
    w.style(align="left", bold=False)


def _footer(w: _Writer, b: _Block, _logo: Image.Image | None) -> None:
    if w.model.small_font:
        w.style(font="b")
        w.centred(b.lines, w.model.small_columns)
        w.style(font="a")
    else:
        w.centred(b.lines)


def _texts(block: _Block) -> list[str]:
    return [block.title, block.text, *block.lines,
            *(t for row in block.rows for t in (row.left, row.right, row.sub or ""))]


_BLOCKS: dict[str, Callable[[_Writer, _Block, Image.Image | None], None]] = {
    "header": _header, "lines": _items, "discounts": _items, "totals": _totals,
    "savings": _savings, "customer": _customer, "offer": _offer, "qr": _qr, "text": _text,
    "footer": _footer,
}


def render_escpos(document: dict[str, Any], profile: str = "default", *,
                  logo: Image.Image | None = None) -> bytes:
    """The ESC/POS bytes that print `document` on a printer of `profile`, ending in a cut.

    Raises DocumentError for a document that cannot be printed, ValueError for an unknown
    profile. The logo is printed in the header when the document asks for it.
    """
    blocks = parse_document(document)
    w = _Writer(_model(profile))
    w.raw(HW_INIT)
    w.style(align="left", bold=False, normal_textsize=True, font="a")
    w.code_page([text for block in blocks for text in _texts(block)])
    for block in blocks:
        if w.previous == "totals" and block.type != "discounts":
            w.line()
        _BLOCKS[block.type](w, block, logo)
        w.previous = block.type
    if w.previous == "totals":
        w.line()
    if w.model.cuts:
        w.p.cut()
    else:
        w.p.print_and_feed(6)
    return w.p.output


def render_png(document: dict[str, Any], profile: str = "default") -> bytes:
    """The screen preview of `document`: the same ESC/POS bytes, printed by the interpreter
    the virtual printer uses, so paper and screen come from one rendering."""
    from pos_bridge.printing.interpreter import interpret

    printouts = interpret(render_escpos(document, profile), profile)
    if not printouts:
        raise DocumentError("the receipt printed nothing")
    return printouts[0].png()
