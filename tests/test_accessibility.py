"""Every staff page and every page of the hub's dashboard, in the states staff meet them
(empty and filled, with an error said, a dialog open), has no serious or critical WCAG 2.0,
2.1 or 2.2 A/AA violation that axe-core (the pinned version, tests/axe.py) finds in Chromium.

The staff pages run on a real `edge serve` with a real Mosquitto, a lane on the bus and a
virtual network printer; the dashboard on the real `edge-hub serve` with its region data
that tests/test_hub_dashboard.py sends through the hub's ingest. Each test visits all its
pages and then fails once, naming every page that has a violation and what it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from edge.app.printers import add_printer
from edge.datadir import DataDir
from edge.settings import Settings
from edge.store import Store
from edge.supervise import stop_process
from pos_bridge.device import DeviceClient
from pos_bridge.virtual_printer import VirtualPrinter
from tests import axe
from tests import browser as chromium
from tests.axe import Findings
from tests.conftest import Issuer, start_edge_on_bus
from tests.test_hub_dashboard import ADMIN, ADMIN_PW, NORTH, NORTH_PW, Hub
from tests.test_hub_dashboard import hub as dashboard_hub  # noqa: F401 (fixture)
from tests.test_hub_dashboard import sign_in as hub_sign_in
from tests.test_staff_checkout import (  # noqa: F401 (fixture)
    CARD,
    CASHIER,
    CASHIER_PW,
    COFFEE,
    MANAGER,
    MANAGER_PW,
    cashier_cannot_approve_undo,
    edge_command,
    scanner,
    seeded,
)
from tests.test_staff_receipts import printed_then_failed

pytestmark = pytest.mark.app

playwright, browser, axe_page = chromium.playwright, chromium.browser, axe.axe_page


@pytest.fixture
def staff_edge(settings: Settings, datadir: DataDir, store: Store, seeded: None,  # noqa: F811
               broker: Any, virtual_printer: Callable[[str], VirtualPrinter]
               ) -> Iterator[tuple[str, VirtualPrinter]]:
    """`edge serve` with the checkout test's customers, products and staff, and lane-1's
    virtual network printer (given up on at once when unreachable); its base URL and the
    printer."""
    printer = virtual_printer("TM-T20II")
    edge_command(settings, "kiosks", "add", "entrance", "--lang", "de,en")
    add_printer(settings, datadir, store, "printer-1", lanes=["lane-1"],
                connection=printer.address, profile="TM-T20II")
    proc = start_edge_on_bus(settings.with_overrides(print_retries=0, http_port=0))
    yield f"http://127.0.0.1:{proc.http_port}", printer
    stop_process(proc)


def staff_sign_in(page: Page, base: str, user: str, password: str, path: str) -> None:
    page.goto(f"{base}{path}")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def sign_in_page_and_wrong_password(findings: Findings, url: str, user: str) -> None:
    """The sign-in page (staff and dashboard alike) checked empty, then saying that the
    password was wrong."""
    page = findings.page
    page.goto(url)
    findings.check("sign-in")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
    findings.check("sign-in, wrong password")


def test_staff_pages_have_no_serious_or_critical_violation(
        staff_edge: tuple[str, VirtualPrinter], settings: Settings, axe_page: Page,
        device: Callable[..., DeviceClient], issuer: Issuer) -> None:
    base, printer = staff_edge
    page = axe_page
    findings = Findings(page)
    lane = device("pos", "lane-1")
    printed, failed = printed_then_failed(lane, printer, settings)

    sign_in_page_and_wrong_password(findings, f"{base}/staff/login", CASHIER)

    # Checkout as the cashier: a new sale, then a shopper, an item, a coupon and a refusal,
    # then the manager's approval dialog for undoing the sale.
    staff_sign_in(page, base, CASHIER, CASHIER_PW, "/staff/checkout")
    findings.check("checkout, new sale")
    scanner(page, CARD)
    expect(page.locator("#customer")).to_contain_text("Anna")
    page.get_by_label("Product code").fill(COFFEE)
    page.get_by_role("button", name="Add item", exact=True).click()
    expect(page.locator("#lines tbody tr")).to_have_count(1)
    scanner(page, issuer.coupon())
    expect(page.locator("#coupons li")).to_have_count(1)
    scanner(page, "no-such-code")
    expect(page.get_by_role("alert")).to_be_visible()
    findings.check("checkout, a sale with shopper, item, coupon and a refusal")
    page.get_by_role("button", name="Redeem").click()
    expect(page.locator("#sale-state")).to_have_text("redeemed")
    dialog = cashier_cannot_approve_undo(page)
    findings.check("checkout, manager approval dialog with an error")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Sign out").click()

    # The rest as the manager: devices (lane and printer on the bus), receipts with a failed
    # one, a receipt's preview, a reprint (which the audit trail then shows), sync, audit.
    staff_sign_in(page, base, MANAGER, MANAGER_PW, "/staff/devices")
    expect(page.locator('tr[data-device="pos/lane-1"] span.state')).to_have_text("online")
    findings.check("devices")
    page.goto(f"{base}/staff/receipts/")
    expect(page.locator("#failed-banner")).to_contain_text("did not print")
    findings.check("receipts, one failed")
    page.goto(f"{base}/staff/receipts/{printed}")
    expect(page.locator("#job-state")).to_have_text("printed")
    findings.check("receipt preview")
    printer.set_reachable(True)
    page.goto(f"{base}/staff/receipts/{failed}")
    expect(page.locator("#job-state")).to_have_text("failed")
    findings.check("failed receipt")
    page.get_by_role("button", name="Reprint").click()
    expect(page.locator("#job-state")).to_have_text("printed")
    page.goto(f"{base}/staff/sync/")
    findings.check("sync")
    page.goto(f"{base}/staff/kiosks/")
    row = page.locator('tr[data-kiosk="entrance"]')
    row.get_by_label("Code for entrance").fill("1111 2222")
    row.get_by_role("button", name="Pair").click()
    expect(page.get_by_role("alert")).to_contain_text("No kiosk shows this pairing code")
    findings.check("kiosks, a wrong pairing code")
    page.goto(f"{base}/staff/audit")
    expect(page.locator("table")).to_contain_text("copy of a receipt")
    findings.check("audit")
    missing = page.goto(f"{base}/staff/receipts/no-such-receipt")
    assert missing is not None and missing.status == 404
    findings.check("not found")
    findings.assert_none()


def test_hub_dashboard_pages_have_no_serious_or_critical_violation(
        dashboard_hub: Hub, axe_page: Page) -> None:  # noqa: F811
    hub, page = dashboard_hub, axe_page
    findings = Findings(page)
    sign_in_page_and_wrong_password(findings, f"{hub.url}/login", NORTH)

    hub_sign_in(page, hub.url, NORTH, NORTH_PW)
    expect(page.locator("table.conflicts.open tbody tr")).to_have_count(1)
    findings.check("region dashboard, 7 days, a conflict")
    page.goto(f"{hub.url}/?period=today")
    findings.check("region dashboard, today")
    page.goto(f"{hub.url}/?period=custom&from=2026-02-30&to=2026-03-01")
    expect(page.locator("#period-error")).to_be_visible()
    findings.check("region dashboard, bad dates")
    page.goto(f"{hub.url}/stores/north-1")
    findings.check("store page")
    page.goto(f"{hub.url}/stores/north-1/redemptions/red-1")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Sale n1-first")
    findings.check("sale page")
    page.get_by_role("button", name="Sign out").click()

    hub_sign_in(page, hub.url, ADMIN, ADMIN_PW)
    expect(page.get_by_role("heading", level=1)).to_have_text("All regions")
    findings.check("all regions")
    findings.assert_none()
