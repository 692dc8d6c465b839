"""The hub's dashboard in the hub's own zone and locale (HUB_TZ, HUB_LOCALE), in a real
headless Chromium against a real `edge-hub serve`: the period's date fields read as the
locale writes dates (de_DE: 24.11.2026, not the browser's 11/24/2026), a date typed that way
filters the figures, and the URL keeps ISO dates.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.managers import add_manager
from cloud_sync.hub.settings import load_hub_settings
from cloud_sync.hub.stores import add_store
from tests import browser as chromium
from tests.conftest import free_port
from tests.hubfix import serving
from tests.test_hub_dashboard import Hub, ev, sign_in

playwright, browser, page = chromium.playwright, chromium.browser, chromium.page

ZONE = "Europe/Helsinki"
MANAGER, MANAGER_PW = "nina", "north-password-1"
DAY = 86400


def german(day: date) -> str:
    """How de_DE writes a date in a form (independent of the code under test)."""
    return f"{day.day:02d}.{day.month:02d}.{day.year:04d}"


def helsinki_day(ago_s: float) -> date:
    return datetime.fromtimestamp(time.time() - ago_s, ZoneInfo(ZONE)).date()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    data_dir = tmp_path_factory.mktemp("hub-de") / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(HUB_DATA_DIR=str(data_dir), HUB_HTTP_HOST="127.0.0.1", HUB_HTTP_PORT=str(port),
               HUB_TZ=ZONE, HUB_LOCALE="de_DE", HUB_THREADS="2")
    settings = load_hub_settings(env)
    db = HubDB(settings.db_url)
    add_store(db, "north-1", "north", "Nordstadt")
    add_manager(db, MANAGER, MANAGER_PW, "north")
    hub = Hub(f"http://127.0.0.1:{port}", settings, db)
    # One sale 3 days ago (noon-ish), one 10 days ago: a custom period around the first
    # counts one.
    for ago, total in ((3 * DAY, 1000), (10 * DAY, 2000)):
        hub.send("north-1", ev("north-1", "transaction.completed", {
            "txn": f"t-{ago}", "customer_id": None, "total_minor": total, "currency": "EUR",
            "redemptions": []}, ago_s=ago))
    try:
        with serving(env, hub.url, data_dir.parent / "serve.log"):
            yield hub
    finally:
        db.dispose()


def test_date_fields_follow_the_hubs_locale_and_filter(hub: Hub, page: Page) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    sign_in(page, hub.url, MANAGER, MANAGER_PW)
    today = helsinki_day(0)
    first, last = page.locator("input[name='from']"), page.locator("input[name='to']")
    # The last 7 days, written as de_DE writes dates: what a person reads is what they type.
    expect(first).to_have_value(german(today - timedelta(days=6)))
    expect(last).to_have_value(german(today))
    assert first.get_attribute("type") == "text"
    expect(page.locator("#date-hint")).to_have_text(f"e.g. {german(date(2026, 11, 24))}")

    # Typing a German date picks the custom period; the URL gets ISO dates.
    sold = helsinki_day(3 * DAY)
    first.fill(german(sold - timedelta(days=1)))
    last.fill(german(sold + timedelta(days=1)))
    expect(page.locator("input[value='custom']")).to_be_checked()
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(f"{hub.url}/?period=custom&from="
                             f"{(sold - timedelta(days=1)).isoformat()}"
                             f"&to={(sold + timedelta(days=1)).isoformat()}")
    row = page.locator("table.kpis tr[data-store='north-1']")
    expect(row.locator(".transactions")).to_have_text("1")
    expect(row.locator(".sales")).to_have_text("10,00\u00a0€")
    expect(first).to_have_value(german(sold - timedelta(days=1)))
    # The period's words in the live part are German too ("24. Nov." style month names).
    expect(page.locator("#live .updated")).to_contain_text(str(sold.year))

    # An ISO link (bookmarks from before) still works; a date that is none says how to write one.
    page.goto(f"{hub.url}/?period=custom&from={(sold - timedelta(days=8)).isoformat()}"
              f"&to={today.isoformat()}")
    expect(row.locator(".transactions")).to_have_text("2")
    page.goto(f"{hub.url}/?period=custom&from=31.02.2026&to=01.03.2026")
    expect(page.locator("#period-error")).to_contain_text("24.11.2026")
    assert errors == []
