"""Headless Chromium for the staff-page tests: Debian's /usr/bin/chromium driven by Playwright
(never a downloaded browser). Test modules import the fixtures they use."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium tries outside connections that this machine refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                         args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) per test."""
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


def share_of_colour(shot: Path, page: Page, selector: str, prop: str) -> float:
    """In the full-page screenshot `shot`, the share of the pixels inside `selector`'s box
    that have its computed colour `prop` (e.g. "fill", "background-color"): what was really
    drawn there, not what the DOM says."""
    import re

    from PIL import Image

    element = page.locator(selector).first
    box = element.bounding_box()
    assert box is not None, f"{selector} is not shown"
    css = element.evaluate(f"e => getComputedStyle(e).getPropertyValue('{prop}')")
    found = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, [\d.]+)?\)", css)
    assert found, f"{selector} has no plain {prop}: {css!r}"
    want = tuple(int(v) for v in found.groups())
    sx, sy = page.evaluate("[window.scrollX, window.scrollY]")
    left, top = int(box["x"] + sx), int(box["y"] + sy)
    with Image.open(shot) as image:
        crop = image.convert("RGB").crop((left, top, left + max(1, int(box["width"])),
                                          top + max(1, int(box["height"]))))
        width, height = crop.size
        pixels = [crop.getpixel((x, y)) for y in range(height) for x in range(width)]
    close = sum(1 for p in pixels if max(abs(a - b) for a, b in zip(p, want, strict=True)) <= 8)
    return close / len(pixels)


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        """Requests are not logged: the test's own output stays readable."""


@contextlib.contextmanager
def serve_files(folder: Path) -> Iterator[str]:
    """The files in `folder` served over real HTTP on a free port of 127.0.0.1, for a page
    the browser must load from a server rather than from a string; yields the base URL
    (ending in "/")."""
    handler = functools.partial(_QuietFiles, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
