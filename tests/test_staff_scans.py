"""Scans from a lane's scanner on the staff checkout page, in real headless Chromium.

The edge is `edge serve` on Mosquitto; the scanner is a `DeviceClient` of kind `scanner`
with the login `edge scanners add` printed, sending `evt/scan` as the scanner service does.
Nothing is typed for a pushed scan: the page must enter it by itself, exactly as if it had
been typed into the scan field with Enter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from edge.settings import Settings
from pos_bridge.device import DeviceClient
from store_contract.scans import Scan
from tests import browser as chromium
from tests.conftest import Issuer
from tests.test_staff_checkout import (
    CARD,
    COFFEE,
    MANAGER,
    MANAGER_PW,
    MILK,
    checkout_edge,
    edge_command,
    seeded,
    sign_in,
)

# The shared fixtures, bound here so pytest finds them for this module.
playwright, browser, page = chromium.playwright, chromium.browser, chromium.page
__all__ = ["checkout_edge", "seeded"]


def edge_json(settings: Settings, *args: str) -> dict[str, str]:
    import subprocess

    from tests.conftest import edge_cli, edge_env

    done = subprocess.run([*edge_cli(), *args], env=edge_env(settings), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, f"edge {' '.join(args)} failed:\n{done.stderr}"
    out: dict[str, str] = json.loads(done.stdout)
    return out


@pytest.fixture
def lane_scanner(settings: Settings, seeded: None) -> Iterator[DeviceClient]:
    """Lane lane-1 enrolled, and scanner scan-1 assigned to it (before the edge starts)."""
    edge_command(settings, "devices", "add", "pos", "lane-1")
    added = edge_json(settings, "scanners", "add", "scan-1", "--lane", "lane-1")
    client = DeviceClient(settings.store_id, "scanner", "scan-1", settings.mqtt_url,
                          added["username"], added["password"])
    yield client
    client.close()


@pytest.fixture
def lane1(page: Page, lane_scanner: DeviceClient, checkout_edge: str) -> Iterator[Page]:
    """The checkout page for lane-1, signed in as the cashier, listening for scans; fails
    the test on any script error."""
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    sign_in(page, checkout_edge, path="/staff/checkout?lane=lane-1")
    expect(page.locator("#checkout")).to_have_attribute("data-live", "on")
    lane_scanner.connect()
    yield page
    assert errors == []


def scan(scanner: DeviceClient, code: str, seq: int, source: str = "hid") -> None:
    scanner.event("scan", Scan(code, source, seq=seq).to_data())


def test_a_scan_from_the_lanes_scanner_is_applied_without_a_key_press_and_follows_assign(
        lane1: Page, lane_scanner: DeviceClient, settings: Settings, checkout_edge: str,
        issuer: Issuer, browser: Browser) -> None:
    customer = lane1.locator("#customer")
    scan(lane_scanner, CARD, 1)
    expect(customer).to_contain_text("Anna")
    expect(customer).to_contain_text("gold")
    expect(lane1.locator("#scanned")).to_have_text(f"Scanned by scan-1: {CARD}")

    scan(lane_scanner, COFFEE, 2, "camera")
    expect(lane1.locator("#lines tbody tr")).to_have_count(1)
    expect(lane1.locator("#lines tbody tr").first).to_contain_text("Coffee beans")

    scan(lane_scanner, issuer.coupon(), 3, "camera")
    coupons = lane1.locator("#coupons li")
    expect(coupons).to_have_count(1)
    expect(lane1.locator("#to-pay")).not_to_have_text(lane1.locator("#basket-total")
                                                      .inner_text())
    expect(lane1.get_by_role("alert")).to_be_hidden()
    expect(lane1.locator("#scan")).to_be_focused()

    # Moved to lane-2: the next scan shows on lane-2's page, and not on lane-1's.
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    context.set_default_timeout(chromium.TIMEOUT_MS)
    lane2 = context.new_page()
    try:
        sign_in(lane2, checkout_edge, MANAGER, MANAGER_PW, "/staff/checkout?lane=lane-2")
        expect(lane2.locator("#checkout")).to_have_attribute("data-live", "on")
        edge_json(settings, "scanners", "assign", "scan-1", "--lane", "lane-2")
        scan(lane_scanner, MILK, 4)
        expect(lane2.locator("#lines tbody tr")).to_have_count(1)
        expect(lane2.locator("#lines tbody tr").first).to_contain_text("Milk")
        expect(lane2.locator("#scanned")).to_have_text(f"Scanned by scan-1: {MILK}")
        # lane-1's page is as it was: the coffee, the coupon, the coupon's scan line.
        expect(lane1.locator("#lines tbody tr")).to_have_count(1)
        expect(lane1.locator("#lines tbody tr").first).not_to_contain_text("Milk")
        expect(coupons).to_have_count(1)
        expect(lane1.locator("#scanned")).not_to_contain_text(MILK)
    finally:
        context.close()

    # The devices page: lane-1, a till on this page and never on the bus, says so; the
    # scanners table follows a reassignment without a reload.
    lane1.goto(checkout_edge + "/staff/devices")
    till = lane1.locator('#devices tr[data-device="pos/lane-1"]')
    expect(till).to_contain_text("web till")
    expect(till).not_to_contain_text("never")
    row = lane1.locator('#scanners tr[data-scanner="scan-1"]')
    expect(row).to_contain_text("lane-2")
    edge_json(settings, "scanners", "assign", "scan-1", "--lane", "lane-1")
    expect(row.locator("td").nth(1)).to_have_text("lane-1")
    expect(lane1.locator("#scanners")).not_to_contain_text("lane lane")


def test_awkward_codes_are_shown_as_text_escaped_and_cut(lane1: Page,
                                                         lane_scanner: DeviceClient) -> None:
    shown = lane1.locator("#scanned")
    markup = "<img src=x onerror=\"window.pwned=1\">\x1b[2J\x00\u202eA"
    scan(lane_scanner, markup, 1, "camera")
    expect(shown).to_have_text(
        'Scanned by scan-1: <img src=x onerror="window.pwned=1">\\u{1b}[2J\\u{0}\\u{202e}A')
    expect(lane1.get_by_role("alert")).to_be_visible()  # not a coupon: refused as usual
    assert lane1.locator("#scanned *").count() == 0
    assert lane1.evaluate("window.pwned") is None

    long = "".join(chr(0x41 + i % 26) for i in range(4096))
    scan(lane_scanner, long, 2, "camera")
    expect(shown).to_have_text(f"Scanned by scan-1: {long[:64]}… (4096 characters)")

    binary = bytes(range(1, 256)).decode("latin-1")
    lane_scanner.event("scan", Scan(binary, "camera", "]Q1", raw=bytes(range(1, 256)),
                                    seq=3).to_data())
    expect(shown).to_contain_text("Scanned by scan-1: \\u{1}\\u{2}\\u{3}")
    expect(shown).to_contain_text("… (255 characters)")
    assert lane1.locator("#scanned *").count() == 0
    # The page still takes the next code.
    scan(lane_scanner, CARD, 4)
    expect(lane1.locator("#customer")).to_contain_text("Anna")
