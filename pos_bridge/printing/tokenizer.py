"""The ESC/POS tokenizer: a printer's byte stream split into text runs and whole commands.

    tokens = Tokenizer().feed(data) + tokenizer.close()

The first of the three steps from bytes to paper (tokenizer -> `interpreter` -> `raster`).
It knows every command's length, not its meaning: bytes arrive in arbitrary TCP reads, so a
command cut in half is kept until the rest arrives, and a command it does not know skips only
its prefix, so the stream stays in step. Each token is `(kind, raw bytes, label)`:

- `TEXT`: printable bytes, still in the printer's code page;
- `CMD`: a command the interpreter models (LF, ESC a n, GS v 0 ...);
- `REALTIME`: DLE EOT / DLE ENQ / DLE DC4, answered or acted on at once, never printed;
- `REPLY`: GS r n, a status the printer sends back in stream;
- `UNKNOWN`: anything not modelled; `label` is the hex of its prefix.

A command the printer service or the receipts renderer starts to send goes in the length
tables here first, then in `pos_bridge.printing.interpreter` if it changes the paper.
"""

from __future__ import annotations

import re

MAX_COMMAND_BYTES = 4 * 1024 * 1024  # a declared length beyond this is garbage, not an image
MAX_BARCODE_BYTES = 255

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10
NUL, EOT, ENQ, HT, LF, FF, CR, DC4, CAN = 0x00, 0x04, 0x05, 0x09, 0x0A, 0x0C, 0x0D, 0x14, 0x18

# Token kinds from the tokenizer.
TEXT, CMD, REALTIME, REPLY, UNKNOWN = range(5)
Token = tuple[int, bytes, str]

_CONTROL = re.compile(rb"[\x00-\x1f]")


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


# ---------------------------------------------------------------- tokenizer


def _measure(buf: bytearray, i: int, n: int) -> tuple[int, int, str] | None:
    """(length, kind, unknown label) of the command at buf[i] (a control byte), or None when
    more bytes are needed to know. Unknown commands skip only their prefix."""
    avail = n - i
    b = buf[i]
    if b in (LF, HT, CR, FF, CAN, NUL):
        return 1, CMD, ""
    if b not in (ESC, GS, FS, DLE):
        return 1, UNKNOWN, f"{b:02x}"
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
        return length, CMD if known else UNKNOWN, "" if known else prefix
    if c == 0x28:  # ESC ( / GS ( / FS ( x pL pH data: length-prefixed families
        if avail < 5:
            return None
        fn = buf[i + 2]
        length = 5 + buf[i + 3] + 256 * buf[i + 4]
        known = (b == ESC and fn == 0x41) or (b == GS and fn in (0x4B, 0x4C, 0x6B))
        return _sized(length, avail, CMD if known else UNKNOWN, f"{prefix} {fn:02x}")
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
                return 2, UNKNOWN, prefix + " (too long)"
        return _sized(j - i, avail, UNKNOWN, prefix)
    return 2, UNKNOWN, prefix


def _sized(length: int, avail: int, kind: int, label: str) -> tuple[int, int, str] | None:
    if length > MAX_COMMAND_BYTES:
        return 2, UNKNOWN, label + " (too long)"
    if avail < length:
        return None
    return length, kind, label if kind == UNKNOWN else ""


def _measure_dle(buf: bytearray, i: int, avail: int, c: int) -> tuple[int, int, str] | None:
    if c not in (EOT, ENQ, DC4):
        return 1, UNKNOWN, "10"
    if avail < 3:
        return None
    fn = buf[i + 2]
    if c == EOT and fn in (7, 8):
        return (4, UNKNOWN, f"10 04 {fn:02x}") if avail >= 4 else None
    if c == EOT:
        return 3, REALTIME if 1 <= fn <= 4 else UNKNOWN, f"10 04 {fn:02x}"
    if c == ENQ:
        return 3, REALTIME, ""
    length = _DC4_LENGTHS.get(fn)
    if length is None:
        return 3, UNKNOWN, f"10 14 {fn:02x}"
    return (length, REALTIME, "") if avail >= length else None


def _measure_esc(buf: bytearray, i: int, n: int, c: int,
                 prefix: str) -> tuple[int, int, str] | None:
    avail = n - i
    if c == 0x2A:  # ESC * m nL nH d...: column bit image
        if avail < 5:
            return None
        m = buf[i + 2]
        if m not in (0, 1, 32, 33):
            return 2, UNKNOWN, prefix
        columns = buf[i + 3] + 256 * buf[i + 4]
        return _sized(5 + columns * (3 if m >= 32 else 1), avail, CMD, prefix)
    if c == 0x44:  # ESC D n1..nk NUL: tab positions, ascending, at most 32
        j, previous = i + 2, 0
        while j < n:
            value = buf[j]
            if value == 0:
                return j + 1 - i, CMD, ""
            if value <= previous or j - i - 2 == 32:
                return j - i, CMD, ""
            previous = value
            j += 1
        return None
    if c == 0x26:  # ESC & y c1 c2 [x d1..d(y*x)]...: user-defined characters
        if avail < 5:
            return None
        y, c1, c2 = buf[i + 2], buf[i + 3], buf[i + 4]
        if not (1 <= y <= 3 and 32 <= c1 <= c2 <= 126):
            return 2, UNKNOWN, prefix
        j = i + 5
        for _ in range(c2 - c1 + 1):
            if j >= n:
                return None
            j += 1 + y * buf[j]
        return (j - i, UNKNOWN, prefix) if j <= n else None
    return 2, UNKNOWN, prefix


def _measure_gs(buf: bytearray, i: int, n: int, c: int,
                prefix: str) -> tuple[int, int, str] | None:
    avail = n - i
    if c == 0x72:  # GS r n: transmit status, answered in stream
        return (3, REPLY, "") if avail >= 3 else None
    if c == 0x56:  # GS V m [n]: cut
        if avail < 3:
            return None
        m = buf[i + 2]
        if m in (0, 1, 48, 49):
            return 3, CMD, ""
        if m in (65, 66, 97, 98, 103, 104):
            return (4, CMD, "") if avail >= 4 else None
        return 2, UNKNOWN, prefix
    if c == 0x76:  # GS v 0 m xL xH yL yH d...: raster bit image
        if avail < 8:
            return None
        if buf[i + 2] not in (0, 0x30):
            return 2, UNKNOWN, prefix
        size = (buf[i + 4] + 256 * buf[i + 5]) * (buf[i + 6] + 256 * buf[i + 7])
        return _sized(8 + size, avail, CMD, prefix)
    if c == 0x38:  # GS 8 L p1 p2 p3 p4 m fn ...: graphics with a 32-bit length
        if avail < 3:
            return None
        if buf[i + 2] != 0x4C:
            return 2, UNKNOWN, prefix
        if avail < 7:
            return None
        length = 7 + int.from_bytes(buf[i + 3:i + 7], "little")
        return _sized(length, avail, CMD, prefix + " 4c")
    if c == 0x6B:  # GS k m ...: barcode (not rendered)
        if avail < 3:
            return None
        m = buf[i + 2]
        if m <= 6:  # function A: data up to NUL
            end = buf.find(b"\x00", i + 3, min(n, i + 4 + MAX_BARCODE_BYTES))
            if end >= 0:
                return end + 1 - i, UNKNOWN, prefix
            return (2, UNKNOWN, prefix) if avail > 4 + MAX_BARCODE_BYTES else None
        if 65 <= m <= 79:  # function B: length byte
            if avail < 4:
                return None
            return _sized(4 + buf[i + 3], avail, UNKNOWN, prefix)
        return 2, UNKNOWN, prefix
    if c == 0x2A:  # GS * x y d...: define downloaded bit image
        if avail < 4:
            return None
        return _sized(4 + buf[i + 2] * buf[i + 3] * 8, avail, UNKNOWN, prefix)
    return 2, UNKNOWN, prefix


class Tokenizer:
    """Splits an ESC/POS byte stream into text runs and whole commands.

    Bytes arrive in arbitrary TCP reads, so a command cut in half is kept until the rest
    arrives; text is passed on at once (it needs no completion).
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Token]:
        buf = self._buf
        buf += data
        n = len(buf)
        tokens: list[Token] = []
        i = 0
        while i < n:
            if buf[i] >= 0x20:
                match = _CONTROL.search(buf, i)
                j = match.start() if match else n
                tokens.append((TEXT, bytes(buf[i:j]), ""))
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

    def close(self) -> list[Token]:
        """The end of the stream: a command still waiting for bytes is unknown."""
        if not self._buf:
            return []
        rest = bytes(self._buf)
        self._buf.clear()
        return [(UNKNOWN, rest, _hex(rest[:3]) + " (truncated)")]

