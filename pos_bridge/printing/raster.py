"""Raster: the layout of a printout (lines, graphics, feeds) and drawing it as an image.

The last of the three steps from bytes to paper (`tokenizer` -> `interpreter` -> raster).
The interpreter fills a layout of `Line`, `Graphic` and `Feed` items and the bit images it
decoded (`raster_image`); `draw()` turns them into a greyscale picture of the paper, only
when someone asks for one (a PNG for the staff preview or the virtual printer's out folder).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

DEFAULT_LINE_SPACING = 30  # dots: Epson's default 1/6 inch at 180 dpi
INVERT = bytes(255 - i for i in range(256))  # ESC/POS 1 = black dot; PIL "1" 1 = white


@dataclass(frozen=True, slots=True)
class Style:
    font: int = 0
    bold: bool = False
    underline: int = 0
    width: int = 1
    height: int = 1
    invert: bool = False
    upside_down: bool = False
    right_spacing: int = 0


@dataclass(slots=True)
class Line:
    """One printed line: styled runs laid out between the margins."""

    align: int
    left: int
    right: int
    cells: tuple[tuple[int, int], tuple[int, int]]
    runs: list[tuple[str, Style]] = field(default_factory=list)
    used: int = 0  # dots taken by the runs
    advance: int = DEFAULT_LINE_SPACING

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.runs).rstrip(" ")


@dataclass(frozen=True, slots=True)
class Graphic:
    index: int
    align: int
    left: int
    right: int


@dataclass(frozen=True, slots=True)
class Feed:
    dots: int


Item = Line | Graphic | Feed


def raster_image(data: bytes, width_bytes: int, height: int, scale_x: int,
                  scale_y: int) -> Image.Image | None:
    """A raster bit image as printed: black where the data has a 1 bit."""
    size = width_bytes * height
    if size == 0 or len(data) < size:
        return None
    image = Image.frombytes("1", (width_bytes * 8, height), data[:size].translate(INVERT))
    scale_x, scale_y = max(1, min(scale_x, 2)), max(1, min(scale_y, 2))
    if scale_x > 1 or scale_y > 1:
        image = image.resize((image.width * scale_x, image.height * scale_y),
                             Image.Resampling.NEAREST)
    return image


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


def _draw_run(text: str, style: Style, cell: tuple[int, int]) -> Image.Image:
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


def _draw_line(line: Line, paper: int) -> Image.Image:
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


def draw(layout: list[Item], images: list[Image.Image], paper: int) -> Image.Image:
    """The printout laid out in `layout` on paper `paper` dots wide, mode "L"."""
    rows: list[Image.Image] = [Image.new("L", (paper, 8), 255)]
    for item in layout:
        if isinstance(item, Line):
            rows.append(_draw_line(item, paper))
        elif isinstance(item, Graphic):
            image = images[item.index]
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
