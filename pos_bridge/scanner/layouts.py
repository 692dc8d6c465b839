"""Keyboard layouts a keyboard-wedge scanner can be set to (docs/scanners.md).

A USB HID scanner does not send characters: it sends the key presses that would type the
code on a keyboard of the layout it is configured for. A scanner set to German types `Z` as
the key the kernel calls KEY_Y, and `@` as AltGr+Q. So the scanner service must decode key
codes with the scanner's layout, never with the layout of the box (a German store with a
scanner left at its US factory setting is common; configure `us` for it).

Each layout maps a Linux key code (the numbers of `linux/input-event-codes.h`, the same as
`evdev.ecodes.KEY_*`; they are kernel ABI, so they are written here and this module needs no
evdev) to the character on each level: plain, Shift, AltGr, Shift+AltGr. A dead key is
marked: its character is the bare accent it gives when followed by a space, which is how a
scanner types `^` on a German layout (a dead acute, diaeresis or cedilla and a space give
the spacing accent ´ ¨ ¸, as on the PCs scanners are made for; no layout here needs them
for an ASCII character). CapsLock affects the keys whose plain and Shift levels are a lower-
and upper-case letter pair, as on a real keyboard.

The tables follow the XKB layouts `us`, `de`, `fr` and `gb` (basic variants, pc105
keyboard). Levels that give arrows and other symbols no scanner sends are left out: a key
pressed on such a level makes the code it is part of invalid rather than silently wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Linux key codes (linux/input-event-codes.h).
KEY_CODES: dict[str, int] = {
    "ESC": 1, "1": 2, "2": 3, "3": 4, "4": 5, "5": 6, "6": 7, "7": 8, "8": 9, "9": 10, "0": 11,
    "MINUS": 12, "EQUAL": 13, "BACKSPACE": 14, "TAB": 15,
    "Q": 16, "W": 17, "E": 18, "R": 19, "T": 20, "Y": 21, "U": 22, "I": 23, "O": 24, "P": 25,
    "LEFTBRACE": 26, "RIGHTBRACE": 27, "ENTER": 28, "LEFTCTRL": 29,
    "A": 30, "S": 31, "D": 32, "F": 33, "G": 34, "H": 35, "J": 36, "K": 37, "L": 38,
    "SEMICOLON": 39, "APOSTROPHE": 40, "GRAVE": 41, "LEFTSHIFT": 42, "BACKSLASH": 43,
    "Z": 44, "X": 45, "C": 46, "V": 47, "B": 48, "N": 49, "M": 50,
    "COMMA": 51, "DOT": 52, "SLASH": 53, "RIGHTSHIFT": 54, "KPASTERISK": 55, "LEFTALT": 56,
    "SPACE": 57, "CAPSLOCK": 58, "NUMLOCK": 69,
    "KP7": 71, "KP8": 72, "KP9": 73, "KPMINUS": 74, "KP4": 75, "KP5": 76, "KP6": 77,
    "KPPLUS": 78, "KP1": 79, "KP2": 80, "KP3": 81, "KP0": 82, "KPDOT": 83, "102ND": 86,
    "KPENTER": 96, "RIGHTCTRL": 97, "KPSLASH": 98, "RIGHTALT": 100,
    "LEFTMETA": 125, "RIGHTMETA": 126,
}

# The keypad (with NumLock on) types the same on every layout.
KEYPAD: dict[int, str] = {
    KEY_CODES[f"KP{d}"]: str(d) for d in range(10)
} | {KEY_CODES["KPASTERISK"]: "*", KEY_CODES["KPMINUS"]: "-", KEY_CODES["KPPLUS"]: "+",
     KEY_CODES["KPDOT"]: ".", KEY_CODES["KPSLASH"]: "/"}

# A dead key's bare character → the combining mark it puts on the next letter.
DEAD_ACCENTS: dict[str, str] = {
    "^": "\u0302", "`": "\u0300", "´": "\u0301", "~": "\u0303", "¨": "\u0308",
    "¸": "\u0327", "˚": "\u030a",
}

NONE = "--"  # no character on this level (in the tables below)


@dataclass(frozen=True)
class Layout:
    """One keyboard layout: key code → characters by level, and which of them are dead."""

    name: str
    keys: Mapping[int, tuple[str | None, str | None, str | None, str | None]]
    dead: frozenset[tuple[int, int]]  # (key code, level) pairs that are dead keys

    def char(self, code: int, level: int) -> str | None:
        """The character of key `code` on `level` (0 plain, 1 Shift, 2 AltGr, 3 both)."""
        levels = self.keys.get(code)
        return None if levels is None else levels[level]

    def is_dead(self, code: int, level: int) -> bool:
        return (code, level) in self.dead

    def caps_applies(self, code: int) -> bool:
        """CapsLock swaps the plain and Shift levels of letter keys only."""
        levels = self.keys.get(code)
        if levels is None or levels[0] is None or levels[1] is None:
            return False
        plain, shifted = levels[0], levels[1]
        return plain.islower() and plain.upper() == shifted


def _layout(name: str, table: str) -> Layout:
    """A layout from its table: one key a line, `KEY plain shift altgr shift+altgr`, each
    level a single character, `--` for none, `dead` and the accent for a dead key."""
    keys: dict[int, tuple[str | None, str | None, str | None, str | None]] = {}
    dead: set[tuple[int, int]] = set()
    for line in filter(str.strip, table.splitlines()):
        key, *cells = line.split()
        code = KEY_CODES[key]
        chars: list[str | None] = []
        for level, cell in enumerate((cells + [NONE] * 4)[:4]):
            if cell == NONE:
                chars.append(None)
            elif cell.startswith("dead") and len(cell) == 5:
                dead.add((code, level))
                chars.append(cell[4])
            elif len(cell) == 1:
                chars.append(cell)
            else:
                raise ValueError(f"layout {name}, key {key}: bad cell {cell!r}")
        keys[code] = (chars[0], chars[1], chars[2], chars[3])
    # The space bar is the same on every level of every layout here.
    keys[KEY_CODES["SPACE"]] = (" ", " ", " ", " ")
    return Layout(name, keys, frozenset(dead))


# The letters that sit where US has them, on every layout below unless overridden.
_LETTERS = "".join(f"{k} {k.lower()} {k}\n" for k in "QWERTYUIOPASDFGHJKLZXCVBNM")

US = _layout("us", _LETTERS + """
GRAVE      `  ~
1          1  !
2          2  @
3          3  #
4          4  $
5          5  %
6          6  ^
7          7  &
8          8  *
9          9  (
0          0  )
MINUS      -  _
EQUAL      =  +
LEFTBRACE  [  {
RIGHTBRACE ]  }
SEMICOLON  ;  :
APOSTROPHE '  "
BACKSLASH  \\  |
COMMA      ,  <
DOT        .  >
SLASH      /  ?
102ND      <  >
""")

# XKB latin, levels three and four of the letter keys (shared by de, fr and gb).
_LATIN_LETTERS = """
Q          q  Q  @  Ω
W          w  W  ſ  §
E          e  E  e  E
R          r  R  ¶  ®
T          t  T  ŧ  Ŧ
Y          y  Y  ←  ¥
U          u  U  ↓  ↑
I          i  I  →  ı
O          o  O  ø  Ø
P          p  P  þ  Þ
A          a  A  æ  Æ
S          s  S  ß  ẞ
D          d  D  ð  Ð
F          f  F  đ  ª
G          g  G  ŋ  Ŋ
H          h  H  ħ  Ħ
J          j  J
K          k  K  ĸ  &
L          l  L  ł  Ł
Z          z  Z  «  <
X          x  X  »  >
C          c  C  ¢  ©
V          v  V  „  ‚
B          b  B  “  ‘
N          n  N  ”  ’
M          m  M  µ  º
"""


def _merge(*tables: str) -> str:
    """Later lines for a key replace earlier ones (as XKB's include does)."""
    rows: dict[str, str] = {}
    for table in tables:
        for line in filter(str.strip, table.splitlines()):
            rows[line.split()[0]] = line
    return "\n".join(rows.values())


DE = _layout("de", _merge(_LATIN_LETTERS, """
GRAVE      dead^  °  ′  ″
1          1  !  ¹  ¡
2          2  "  ²  ⅛
3          3  §  ³  £
4          4  $  ¼  ¤
5          5  %  ½  ⅜
6          6  &  ¬  ⅝
7          7  /  {  ⅞
8          8  (  [  ™
9          9  )  ]  ±
0          0  =  }  °
MINUS      ß  ?  \\  ¿
EQUAL      dead´  dead`  dead¸  --
E          e  E  €  €
Y          z  Z  ←  ¥
LEFTBRACE  ü  Ü  dead¨  dead˚
RIGHTBRACE +  *  ~  ¯
S          s  S  ſ  ẞ
SEMICOLON  ö  Ö
APOSTROPHE ä  Ä  dead^  --
BACKSLASH  #  '  ’  --
Z          y  Y  »  ›
X          x  X  «  ‹
COMMA      ,  ;  ·  ×
DOT        .  :  …  ÷
SLASH      -  _  –  —
102ND      <  >  |  --
"""))

FR = _layout("fr", _merge(_LATIN_LETTERS, """
GRAVE      ²  ~  ¬  ¬
1          &  1  ¹  ¡
2          é  2  ~  ⅛
3          "  3  #  £
4          '  4  {  $
5          (  5  [  ⅜
6          -  6  |  ⅝
7          è  7  `  ⅞
8          _  8  \\  ™
9          ç  9  ^  ±
0          à  0  @  °
MINUS      )  °  ]  ¿
EQUAL      =  +  }  --
Q          a  A  æ  Æ
W          z  Z  «  <
E          e  E  €  ¢
LEFTBRACE  dead^  dead¨  dead¨  dead˚
RIGHTBRACE $  £  ¤  --
A          q  Q  @  Ω
SEMICOLON  m  M  µ  º
APOSTROPHE ù  %  dead^  --
BACKSLASH  *  µ  dead`  --
Z          w  W  ł  Ł
M          ,  ?  dead´  --
COMMA      ;  .  •  ×
DOT        :  /  ·  ÷
SLASH      !  §
102ND      <  >  |  ¦
"""))

UK = _layout("uk", _merge(_LATIN_LETTERS, """
GRAVE      `  ¬  |  |
1          1  !  ¹  ¡
2          2  "  ²  ⅛
3          3  £  ³  £
4          4  $  €  ¼
5          5  %  ½  ⅜
6          6  ^  ¾  ⅝
7          7  &  {  ⅞
8          8  *  [  ™
9          9  (  ]  ±
0          0  )  }  °
MINUS      -  _  \\  ¿
EQUAL      =  +  dead¸  --
LEFTBRACE  [  {  dead¨  dead˚
RIGHTBRACE ]  }  dead~  --
SEMICOLON  ;  :  dead´  --
APOSTROPHE '  @  dead^  --
BACKSLASH  #  ~  dead`  --
COMMA      ,  <  •  ×
DOT        .  >  ·  ÷
SLASH      /  ?
102ND      \\  |  |  ¦
"""))

LAYOUTS: dict[str, Layout] = {"us": US, "de": DE, "fr": FR, "uk": UK, "gb": UK}


def get_layout(name: str) -> Layout:
    """The layout called `name` (us, de, fr, uk or its XKB name gb); ValueError if unknown."""
    try:
        return LAYOUTS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown keyboard layout {name!r}: choose one of "
                         f"{', '.join(sorted(set(LAYOUTS) - {'gb'}))}") from None
