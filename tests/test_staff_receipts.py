"""The staff receipts page in a real headless Chromium: recent receipts, the preview drawn
from the same document the printer got, a failed receipt and its Reprint button.

The edge runs as `edge serve` with a virtual network printer (real TCP, real ESC/POS).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import requests
import zxingcpp
from PIL import Image
from playwright.sync_api import Page, expect

from edge.accounts import add_user
from edge.app.printers import add_printer
from edge.datadir import DataDir
from edge.settings import Settings
from edge.store import Store
from edge.supervise import stop_process
from pos_bridge.device import DeviceClient
from pos_bridge.virtual_printer import VirtualPrinter
from tests import browser as chromium
from tests.conftest import start_edge_on_bus, wait_until

playwright, browser, page = chromium.playwright, chromium.browser, chromium.page

CASHIER, CASHIER_PW = "carla", "cashier-password-1"
MANAGER, MANAGER_PW = "mia", "manager-password-1"
BASKET = {"currency": "EUR", "total_minor": 1298, "lines": [
    {"sku": "cheese", "qty": 2, "unit_minor": 649, "categories": ["dairy"],
     "name": "Queso manchego añejo"}]}


@pytest.fixture
def printer(virtual_printer: Callable[[str], VirtualPrinter]) -> VirtualPrinter:
    return virtual_printer("TM-T20II")


@pytest.fixture
def base(settings: Settings, datadir: DataDir, store: Store, broker: Any,
         printer: VirtualPrinter) -> Iterator[str]:
    """`edge serve` with lane-1's printer, giving up on it at once when it is unreachable."""
    add_printer(settings, datadir, store, "printer-1", lanes=["lane-1"],
                connection=printer.address, profile="TM-T20II")
    add_user(store, CASHIER, CASHIER_PW, "cashier")
    add_user(store, MANAGER, MANAGER_PW, "manager")
    proc = start_edge_on_bus(settings.with_overrides(print_retries=0, http_port=0))
    yield f"http://127.0.0.1:{proc.http_port}"
    stop_process(proc)


def complete(lane: DeviceClient, txn: str) -> str:
    reply = lane.request("txn.complete", {"txn": txn, "basket": BASKET, "total_minor": 1298,
                                          "currency": "EUR",
                                          "tenders": [{"kind": "cash", "amount_minor": 1500}]})
    assert reply["ok"], reply
    job: str = reply["data"]["receipt"]["job"]
    return job


def printed_then_failed(lane: DeviceClient, printer: VirtualPrinter,
                        settings: Settings) -> tuple[str, str]:
    """Two sales' receipts: s-1 printed, then the printer's cable pulled and s-2 failed."""
    printed = complete(lane, "s-1")
    printer.wait_printouts(1)
    # Pull the cable only once the printer service has confirmed s-1 (it reads the status
    # after the last byte; a printer gone at that moment leaves the receipt `interrupted`).
    assert wait_until(lambda: job_state(settings, printed) == "printed", 10)
    printer.set_reachable(False)
    failed = complete(lane, "s-2")
    assert wait_until(lambda: job_state(settings, failed) == "failed", 15)
    return printed, failed


def job_state(settings: Settings, job: str) -> str | None:
    conn = sqlite3.connect(settings.data_path / "edge.db", timeout=10)
    try:
        row = conn.execute("SELECT state FROM print_jobs WHERE job = ?", (job,)).fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def manager_approves(page: Page) -> None:
    """A manager types their name and password into the approval dialog."""
    dialog = page.get_by_role("dialog", name="Manager approval")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Manager user name").fill(MANAGER)
    dialog.get_by_label("Manager password").fill(MANAGER_PW)
    dialog.get_by_role("button", name="Approve").click()


def test_receipts_page_previews_a_receipt_and_reprints_a_failed_one(
        base: str, settings: Settings, page: Page, printer: VirtualPrinter,
        device: Callable[..., DeviceClient], tmp_path: Path) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    lane = device("pos", "lane-1")
    printed, failed = printed_then_failed(lane, printer, settings)

    page.goto(f"{base}/staff/receipts")
    page.get_by_label("Username").fill(CASHIER)
    page.get_by_label("Password").fill(CASHIER_PW)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/staff/receipts/")
    # The failure is there for staff without looking for it (the page may need a reload
    # while the printer service is still answering).
    assert wait_until(lambda: page.reload() is not None and page.locator(
        "#failed-banner").count() == 1, 15)
    expect(page.locator("#failed-banner")).to_contain_text("1 receipt did not print")
    expect(page.locator(f'tr[data-job="{failed}"]')).to_contain_text("failed")
    expect(page.locator(f'tr[data-job="{printed}"]')).to_contain_text("printed")

    # The preview is the receipt as the printer prints it, drawn from the stored document.
    page.locator(f'tr[data-job="{printed}"]').get_by_role("link", name="Preview").click()
    expect(page.locator("#job-state")).to_have_text("printed")
    preview = page.locator("#preview")
    expect(preview).to_be_visible()
    assert page.evaluate("document.getElementById('preview').naturalWidth") == 576
    png = page.request.get(f"{base}/staff/receipts/{printed}.png")
    assert png.headers["content-type"] == "image/png"
    shot = tmp_path / "preview.png"
    shot.write_bytes(png.body())
    with Image.open(shot) as image:
        assert image.width == 576 and image.height > 300
    page.screenshot(path=str(tmp_path / "receipt-page.png"), full_page=True)

    # The failed one says why, and Reprint prints it once the printer is back.
    page.goto(f"{base}/staff/receipts/{failed}")
    expect(page.locator("#job-state")).to_have_text("failed")
    expect(page.locator("#job-reason")).to_contain_text("could not be reached")
    printer.set_reachable(True)
    page.get_by_role("button", name="Reprint").click()
    manager_approves(page)
    expect(page.locator(".flash")).to_contain_text("Sent to the printer again")
    papers = printer.wait_printouts(2)
    assert sum(p.find_text(failed) for p in papers) == 1
    assert wait_until(lambda: page.reload() is not None and
                      page.locator("#job-state").inner_text() == "printed", 10)
    # "Print a copy" of a printed receipt: a new job, marked as a copy on the paper.
    # Each reprint needs its own approval.
    page.get_by_role("button", name="Print a copy").click()
    manager_approves(page)
    copies = printer.wait_printouts(3)
    assert copies[-1].find_text("*** COPY ***") and copies[-1].find_text(failed)
    # A form post without the CSRF token is refused.
    denied = page.request.post(f"{base}/staff/receipts/{failed}/reprint")
    assert denied.status == 400
    assert len(printer.wait_printouts(3)) == 3
    assert errors == []


def test_plain_receipt_preview_has_text_but_no_qr_and_unknown_jobs_are_404(
        base: str, device: Callable[..., DeviceClient]) -> None:
    """A guest's receipt is plain: its preview (HTTP Basic, as store IT scripts it) shows
    the printed lines and no QR code."""
    lane = device("pos", "lane-1")
    job = complete(lane, "s-9")
    session = requests.Session()
    session.auth = (CASHIER, CASHIER_PW)
    response = session.get(f"{base}/staff/receipts/{job}.png", timeout=10)
    assert response.status_code == 200
    with Image.open(BytesIO(response.content)) as image:
        assert zxingcpp.read_barcodes(image.convert("L")) == []
        dark = sum(image.convert("L").histogram()[:128])
        assert dark > 1000  # text was drawn
    assert session.get(f"{base}/staff/receipts/not-a-job.png", timeout=10).status_code == 404
