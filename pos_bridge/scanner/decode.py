"""Codes in one image: zxing-cpp, then a few generic second looks when the first finds nothing.

A camera frame is decoded as it comes (BGR or gray numpy array). zxing-cpp is asked for the
formats a shop meets (QR, EAN-13/8, UPC-A/E, Code 128, DataMatrix), nothing else: fewer
formats are fewer false reads and less time. Its text is taken in `Plain` mode, so a GS1
code keeps its GS separators (not the "(01)..." of the human-readable form) and every byte
of a binary payload is in `raw`.

The first look is zxing-cpp's own (rotations, a downscaled pyramid, inverted symbols). Only
when it finds nothing does the decoder try the second looks in `FALLBACKS`, cheapest and
most often useful first, while the frame's time budget lasts: the image halved, contrast
evened out and edges sharpened, a threshold per neighbourhood, the image enlarged (the
dearest, last). None of them is tuned to a
particular picture; `bench/scan.py` measures what each one adds on the corpus and on the false
positives. A frame that runs out of budget is simply "nothing found": the camera sends the
next frame a moment later.

A UPC-A is an EAN-13 whose first digit is 0, and zxing-cpp reports it either way; here it
is always the 12-digit UPC-A (format `UPCA`, AIM `]E0`), so one product reads the same
whatever the decoder thought (its GTIN-13/14 forms are in the scan's `product`). A UPC-E
is reported as the 12-digit UPC-A it stands for (format `UPCE`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import zxingcpp

from store_contract.scans import AIM_RE, MAX_CODE_CHARS, MAX_RAW_BYTES, Scan

from .codes import product_of

FORMAT_NAMES = ("QRCode", "EAN13", "EAN8", "UPCA", "UPCE", "Code128", "DataMatrix")
FORMATS = zxingcpp.barcode_formats_from_str(",".join(FORMAT_NAMES))
DEFAULT_BUDGET_MS = 35.0

Image = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Decoded:
    """One code found in an image."""

    text: str  # the code as text (a binary payload: its bytes as ISO-8859-1)
    raw: bytes  # the symbol's bytes, exactly
    symbology: str | None  # AIM identifier ("]Q1", "]E0", "]C1", "]d2", ...)
    format: str  # zxing-cpp's name: "QRCode", "EAN13", "UPCA", ...

    def to_scan(self, source: str = "camera", seq: int | None = None) -> Scan:
        """The scan to send: raw bytes only when the text's UTF-8 is not them, and the
        product the code stands for (docs/protocol.md, "Scans")."""
        raw = None if self.raw == self.text.encode("utf-8") else self.raw
        return Scan(code=self.text, source=source, symbology=self.symbology,
                    format=self.format, raw=raw, seq=seq,
                    product=product_of(self.text, self.symbology))


def _read(image: Image, **options: Any) -> list[Any]:
    return list(zxingcpp.read_barcodes(image, formats=FORMATS,
                                       text_mode=zxingcpp.TextMode.Plain, **options))


def _gray(image: Image) -> Image:
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        return cv2.cvtColor(image, code)
    return image


# The second looks. They skip zxing-cpp's inverted pass (light codes on dark are found by
# the first look) and, but for the cheap halved one, its 90-degree turns (a sideways code is
# found by the first look when it is sharp enough): each halves what a look costs on a frame
# holding no code, which leaves time for more looks within the budget.
def _halved(gray: Image) -> list[Any]:
    """Half the size, averaged: noise and blur shrink, and a large symbol fits the detector."""
    small = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    return _read(small, try_downscale=False, try_invert=False,
                 binarizer=zxingcpp.Binarizer.GlobalHistogram)


def _unsharp(gray: Image, sigma: float, amount: float) -> Image:
    blurred = cv2.GaussianBlur(gray, (0, 0), sigma)
    return cv2.addWeighted(gray, 1 + amount, blurred, -amount, 0)


def _sharpened(gray: Image) -> list[Any]:
    """Contrast evened out locally (CLAHE), then edges sharpened (unsharp mask): bars that
    blur, shade or a glossy pack run together."""
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))  # one per call: it has state
    return _read(_unsharp(clahe.apply(gray), 2.0, 0.8), try_invert=False, try_rotate=False,
                 binarizer=zxingcpp.Binarizer.GlobalHistogram)


def _adaptive(gray: Image) -> list[Any]:
    """A threshold per neighbourhood (OpenCV's adaptive Gaussian): light falling unevenly
    across the symbol."""
    binary = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C,
                                   cv2.THRESH_BINARY, 31, 5)
    return _read(binary, try_invert=False, try_rotate=False,
                 binarizer=zxingcpp.Binarizer.FixedThreshold)


def _sharpened_only(gray: Image) -> list[Any]:
    """Edges sharpened without the contrast step, which can flatten faint bars."""
    return _read(_unsharp(gray, 2.0, 0.8), try_invert=False, try_rotate=False,
                 binarizer=zxingcpp.Binarizer.GlobalHistogram)


def _enlarged(gray: Image) -> list[Any]:
    """One and a half times the size (bicubic): a small or distant symbol's thin bars and
    modules each span more pixels than the detector's smallest."""
    large = cv2.resize(gray, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC)
    return _read(large, try_invert=False, try_rotate=False, try_downscale=False)


Look = Callable[[Image], list[Any]]
# Cheapest first, then by what each adds on the corpus (bench/scan.py, the whole corpus,
# not any one image); the enlarged one, dearest, last, so that it does not use up the
# budget of the others on a frame they read.
FALLBACKS: tuple[tuple[str, Look], ...] = (
    ("halved", _halved),
    ("sharpened", _sharpened),
    ("adaptive", _adaptive),
    ("sharpened-only", _sharpened_only),
    ("enlarged", _enlarged),
)


def _decoded(barcode: Any) -> Decoded | None:
    text = barcode.text
    raw = bytes(barcode.bytes)
    fmt = barcode.format.name
    symbology = barcode.symbology_identifier or None
    if symbology is not None and not AIM_RE.match(symbology):
        symbology = None
    if fmt in ("EAN13", "UPCA", "UPCE") and len(text) == 13 and text.startswith("0") \
            and text.isdigit():
        text = text[1:]  # the 12-digit UPC-A (a UPC-E: the UPC-A it stands for)
        fmt = "UPCA" if fmt == "EAN13" else fmt
        raw = text.encode("ascii")
    if not text or len(text) > MAX_CODE_CHARS or len(raw) > MAX_RAW_BYTES:
        return None
    return Decoded(text=text, raw=raw, symbology=symbology, format=fmt)


class Decoder:
    """Decodes frames: zxing-cpp's first look, then the second looks within `budget_ms`
    (milliseconds of this thread's CPU time since the frame came in).

    `fallbacks` names which second looks to use (all of `FALLBACKS` by default; an empty
    sequence is zxing-cpp alone). `last_look` says which look found the last frame's codes.
    """

    def __init__(self, *, budget_ms: float = DEFAULT_BUDGET_MS,
                 fallbacks: Sequence[str] | None = None) -> None:
        known = dict(FALLBACKS)
        names = [name for name, _ in FALLBACKS] if fallbacks is None else list(fallbacks)
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"unknown second looks: {', '.join(unknown)}")
        self.budget_ms = budget_ms
        self.looks: list[tuple[str, Look]] = [(name, known[name]) for name in names]
        self.last_look: str | None = None

    def decode(self, image: Image) -> list[Decoded]:
        """The codes in one image (none found: an empty list). ValueError for what is not
        an image (a numpy array of 2 dimensions, or 3 with 1, 3 or 4 channels, of bytes)."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 \
                or image.ndim not in (2, 3) or image.size == 0 \
                or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise ValueError("not an 8-bit gray, BGR or BGRA image")
        # The budget counts this thread's CPU time, not the clock: what a frame yields must
        # not depend on what else the machine is doing at that moment.
        started = time.thread_time()
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        gray = _gray(image)
        self.last_look = None
        found = _read(gray)
        look = "first"
        for name, fallback in self.looks:
            if found or (time.thread_time() - started) * 1000 >= self.budget_ms:
                break
            found, look = fallback(gray), name
        codes = _unique(found)
        if codes:
            self.last_look = look
        return codes


def _unique(barcodes: list[Any]) -> list[Decoded]:
    out: list[Decoded] = []
    for barcode in barcodes:
        decoded = _decoded(barcode)
        if decoded is not None and decoded not in out:
            out.append(decoded)
    return out


_default: Decoder | None = None


def decode_image(image: Image) -> list[Decoded]:
    """The codes in one image, with the default decoder."""
    global _default
    if _default is None:
        _default = Decoder()
    return _default.decode(image)
