"""The staff receipts list in a real headless Chromium against `edge serve` with a virtual
network printer: each receipt with its time (the store's zone), lane, the shopper's name
(only with their consent to personalisation) and total; the search box finds receipts by
receipt number, by a loyalty-card number typed with spaces and by an app member code (none
of which goes into a URL); and a reprint's state follows on the page without a reload.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from edge.customers import local_bundle, upsert_customers
from edge.datadir import DataDir
from edge.settings import Settings
from edge.store import Store
from pos_bridge.device import DeviceClient
from pos_bridge.virtual_printer import VirtualPrinter
from store_contract.customers import Lookup, parse_customer
from tests import browser as chromium
from tests.conftest import Issuer
from tests.test_staff_receipts import (  # noqa: F401 (fixtures)
    MANAGER,
    MANAGER_PW,
    base,
    complete,
    job_state,
    printed_then_failed,
    printer,
)

playwright, browser, page = chromium.playwright, chromium.browser, chromium.page

ANNA = {"id": "c-1", "display_name": "Anna Berg", "tier": "gold", "points": 10,
        "card": "4000123412341234", "consent": {"personalised": True}}
BEN = {"id": "c-2", "display_name": "Ben Kowalski", "tier": "silver", "points": 5,
       "card": "4000999988887777", "consent": {"personalised": False}}


@pytest.fixture
def seeded(settings: Settings, datadir: DataDir, store: Store) -> None:
    """Anna (who agreed to personalised receipts) and Ben (who did not), before the edge
    starts."""
    lookup = Lookup(local_bundle(datadir), settings.country)
    records = [parse_customer(c, lookup) for c in (ANNA, BEN)]
    store.write(lambda db: upsert_customers(db, records, lambda _c, _t: None))


def sale(lane: DeviceClient, txn: str, card: str | None = None) -> str:
    if card is not None:
        reply = lane.request("identify", {"txn": txn, "code": card})
        assert reply["ok"], reply
    return complete(lane, txn)


def created_at(settings: Settings, job: str) -> float:
    conn = sqlite3.connect(settings.data_path / "edge.db", timeout=10)
    try:
        return float(conn.execute("SELECT created_at FROM print_jobs WHERE job = ?",
                                  (job,)).fetchone()[0])
    finally:
        conn.close()


def sign_in(page: Page, base: str) -> None:  # noqa: F811
    page.goto(f"{base}/staff/receipts")
    page.get_by_label("Username").fill(MANAGER)
    page.get_by_label("Password").fill(MANAGER_PW)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/staff/receipts/")


def search(page: Page, text: str) -> None:
    page.get_by_label("Find receipts by receipt number, loyalty card or member code").fill(text)
    page.get_by_role("button", name="Find").click()


def test_list_shows_time_lane_name_with_consent_and_total_and_finds_receipts(
        seeded: None, base: str, settings: Settings, page: Page,  # noqa: F811
        printer: VirtualPrinter, device: Callable[..., DeviceClient],  # noqa: F811
        issuer: Issuer) -> None:
    errors: list[str] = []
    requested: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("request", lambda req: requested.append(req.url))
    lane1, lane2 = device("pos", "lane-1"), device("pos", "lane-2")
    anna = sale(lane1, "s-1", ANNA["card"])
    ben = sale(lane2, "s-2", BEN["card"])
    guest = sale(lane1, "s-3")
    sign_in(page, base)

    rows = page.locator("#receipts tbody tr[data-job]")
    expect(rows).to_have_count(3)
    a, b, g = (page.locator(f'tr[data-job="{j}"]') for j in (anna, ben, guest))
    # Time: the store's zone (Europe/Berlin by default; the machine is on UTC).
    when = datetime.fromtimestamp(created_at(settings, anna), ZoneInfo(settings.tz))
    expect(a.locator("td.when")).to_have_text(
        f"{when.day} {when.strftime('%b')}, {when:%H:%M}")
    expect(a.locator("td.lane")).to_have_text("lane-1")
    expect(b.locator("td.lane")).to_have_text("lane-2")
    expect(a.locator("td.shopper")).to_have_text(ANNA["display_name"])
    # Ben did not agree to personalisation: the list does not name him.
    expect(b.locator("td.shopper")).not_to_contain_text("Ben")
    expect(b.locator("td.shopper")).to_contain_text("member")
    expect(g.locator("td.shopper")).to_have_text("—")
    for row in (a, b, g):
        expect(row.locator("td.total")).to_have_text("€12.98")
    assert "Kowalski" not in page.content()

    # By receipt number (as printed: "Receipt <job>"), whole or its last characters.
    search(page, ben)
    expect(rows).to_have_count(1)
    expect(page.locator(f'tr[data-job="{ben}"]')).to_be_visible()
    search(page, f"Receipt {guest}")
    expect(rows).to_have_count(1)
    expect(page.locator(f'tr[data-job="{guest}"]')).to_be_visible()
    search(page, anna[-8:].upper())
    expect(rows).to_have_count(1)
    expect(page.locator(f'tr[data-job="{anna}"]')).to_be_visible()
    # By the card number as it is printed on the card, with spaces.
    search(page, "4000 1234 1234 1234")
    expect(rows).to_have_count(1)
    expect(page.locator(f'tr[data-job="{anna}"] td.shopper')).to_have_text("Anna Berg")
    expect(page.locator("#search-result")).to_contain_text("…1234")
    # By the shopper's app member code.
    search(page, issuer.member("c-1"))
    expect(rows).to_have_count(1)
    expect(page.locator(f'tr[data-job="{anna}"]')).to_be_visible()
    search(page, "4000 0000 0000 0000")
    expect(rows).to_have_count(0)
    expect(page.locator("#receipts")).to_contain_text("No receipts found")
    # Nothing typed into the search went into a URL.
    assert not [u for u in requested if "4000" in u or "c-1" in u]
    assert errors == []


def test_a_reprints_state_follows_on_the_list_without_a_reload(
        base: str, settings: Settings, page: Page,  # noqa: F811
        printer: VirtualPrinter, device: Callable[..., DeviceClient]) -> None:  # noqa: F811
    printed, failed = printed_then_failed(device("pos", "lane-1"), printer, settings)
    sign_in(page, base)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    row = page.locator(f'tr[data-job="{failed}"]')
    expect(row.locator("span.job")).to_have_text("failed")

    # Reprinted from another screen (the receipt's own page in a second tab).
    printer.set_reachable(True)
    other = page.context.new_page()
    other.goto(f"{base}/staff/receipts/{failed}")
    other.get_by_role("button", name="Reprint").click()
    # The receipt's page follows too, after its one navigation (the form post).
    expect(other.locator("#job-state")).to_have_text("printed")

    # The list, untouched, shows it printed by itself.
    expect(row.locator("span.job")).to_have_text("printed")
    expect(row.locator("span.job")).to_have_class("job printed")
    expect(row.locator("td.reason")).to_have_text("")
    assert navigations == []
