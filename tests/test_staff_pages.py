"""Staff pages in a real headless Chromium: sign-in, and the live device table.

The edge runs as its own process (`edge serve`) with a real Mosquitto; the browser is
Debian's Chromium driven by Playwright (never a downloaded browser).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from edge.accounts import add_user
from edge.settings import Settings
from edge.store import Store
from pos_bridge.device import DeviceClient
from tests import browser as chromium
from tests.browser import TIMEOUT_MS, share_of_colour
from tests.conftest import EdgeProc, wait_until

# The shared browser fixtures, bound here so pytest finds them for this module.
playwright, browser, page = chromium.playwright, chromium.browser, chromium.page

MANAGER = "mia"
MANAGER_PW = "manager-password-1"


@pytest.fixture
def staff_edge(settings: Settings, store: Store,
               edge_process: EdgeProc) -> str:
    """A running `edge serve` connected to its broker, with a manager account; its base URL."""
    add_user(store, MANAGER, MANAGER_PW, "manager")
    base = f"http://127.0.0.1:{edge_process.http_port}"
    assert wait_until(
        lambda: requests.get(f"{base}/healthz", timeout=2).json()["broker"]["connected"], 15), \
        "the edge process did not connect to the test broker"
    return base


def sign_in(page: Page, base: str, password: str) -> None:
    page.goto(f"{base}/staff/devices")
    expect(page).to_have_url(f"{base}/staff/login?next=/staff/devices")
    page.get_by_label("Username").fill(MANAGER)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_devices_page_shows_devices_live(staff_edge: str, page: Page, tmp_path: Path,
                                         device: Callable[..., DeviceClient]) -> None:
    script_errors: list[str] = []
    page.on("pageerror", lambda err: script_errors.append(str(err)))
    printer = device("printer", "printer-1")
    sign_in(page, staff_edge, MANAGER_PW)
    expect(page).to_have_url(f"{staff_edge}/staff/devices")
    expect(page.locator("header")).to_contain_text(f"{MANAGER} (manager)")

    row = page.locator('tr[data-device="printer/printer-1"]')
    state = row.locator("span.state")
    expect(state).to_have_text("online", timeout=TIMEOUT_MS)
    expect(state).to_have_class("state online")
    expect(page.locator("#summary")).to_have_text("1 of 1 devices online")

    printer.close()
    # No reload: the page's own polling must pick the change up.
    expect(state).to_have_text("offline", timeout=TIMEOUT_MS)
    expect(state).to_have_class("state offline")
    expect(page.locator("#summary")).to_have_text("0 of 1 devices online")
    assert page.url == f"{staff_edge}/staff/devices"
    assert script_errors == []

    shot = tmp_path / "devices.png"
    page.screenshot(path=str(shot), full_page=True)
    # The picture shows the device as offline: its badge is drawn in the "bad" colour.
    badge = 'tr[data-device="printer/printer-1"] span.state'
    assert share_of_colour(shot, page, badge, "background-color") > 0.3


def test_wrong_password_shows_a_readable_error(staff_edge: str, page: Page) -> None:
    sign_in(page, staff_edge, "not-the-password")
    alert = page.get_by_role("alert")
    expect(alert).to_have_text(
        "Wrong username or password (after 5 wrong tries, this account cannot sign in from "
        "this device for 5 minutes).")
    expect(alert).to_be_visible()
    assert page.url.startswith(f"{staff_edge}/staff/login")
    expect(page.get_by_role("heading", name="Staff sign-in")).to_be_visible()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.locator("table#devices")).to_have_count(0)
