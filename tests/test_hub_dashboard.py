"""The hub's regional dashboard in a real headless Chromium against a real `edge-hub serve`:
sign-in, a region's figures equal to what its stores sent, nothing of other regions, the
conflicts list, inline SVG charts and no request to any other origin, the CSV export, CSRF,
404 for another region, and the numbers refreshing by themselves.

Events reach the hub through its real ingest path (`cloud_sync.hub.ingest.ingest`) on the
same database the served hub reads.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Page, expect

from cloud_sync.hub.dashboard import safe_cell
from cloud_sync.hub.db import HubDB
from cloud_sync.hub.feed import import_campaigns, import_customers
from cloud_sync.hub.ingest import ingest
from cloud_sync.hub.managers import add_manager, authenticate
from cloud_sync.hub.settings import HubSettings, load_hub_settings
from cloud_sync.hub.stores import add_store
from store_contract.errors import BadRequest, Conflict
from store_contract.jws import SigningKey
from tests import browser as chromium
from tests.conftest import free_port
from tests.hubfix import serving
from tests.test_web_safety import sign_in_with_each_next

pytestmark = pytest.mark.app

playwright, browser, page = chromium.playwright, chromium.browser, chromium.page

NORTH, NORTH_PW = "nina", "north-password-1"
WEST, WEST_PW = "wes", "west-password-1"
WIDE_NAME = "Westhafen Einkaufszentrum am Kanal"
ADMIN, ADMIN_PW = "ada", "all-regions-pw-1"
N1_NAME = "Nordstadt & Co <Markt>"  # escaped everywhere it is shown


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def ev(store: str, type_: str, data: dict[str, Any], ago_s: float = 60) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "type": type_, "store_id": store,
            "occurred_at": rfc3339(time.time() - ago_s), "device_id": "lane-1", "data": data}


def sale(store: str, total_minor: int, customer: str | None = None, txn: str = "",
         **more: Any) -> dict[str, Any]:
    return ev(store, "transaction.completed", {"txn": txn or uuid.uuid4().hex[:10],
                                               "customer_id": customer,
                                               "total_minor": total_minor,
                                               "currency": "EUR", "redemptions": [], **more})


def redeemed(store: str, redemption: str, coupon: str, discount_minor: int, txn: str = ""
             ) -> dict[str, Any]:
    """A use of a coupon the hub signed (so the hub believes it and counts it chain-wide)."""
    token = HUB_KEY.sign({"jti": coupon, "cmp": "autumn-10", "exp": int(time.time()) + 3600},
                         "coupon+jwt")
    return ev(store, "coupon.redeemed", {"redemption": redemption, "coupon": coupon,
                                         "campaign": "autumn-10", "discount_minor":
                                         discount_minor, "currency": "EUR", "token": token,
                                         "customer_id": "cust-1", "max_uses": 1,
                                         "txn": txn or uuid.uuid4().hex[:10]})


# The hub's signing key, made before the hub starts (it uses the one in its data dir).
HUB_KEY = SigningKey("hub-1", Ed25519PrivateKey.generate())


@dataclass
class Hub:
    url: str
    settings: HubSettings
    db: HubDB

    def send(self, store: str, *events: dict[str, Any], **edge: Any) -> None:
        body: dict[str, Any] = {"batch_id": uuid.uuid4().hex, "events": list(events)}
        if edge:
            body["edge"] = edge
        answer = ingest(self.db, self.settings, store, body, HUB_KEY)
        assert len(answer["accepted"]) == len(events), answer


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """`edge-hub serve` with three north stores (one never synced), one south store and
    their events, a north manager and an all-regions manager."""
    data_dir = tmp_path_factory.mktemp("hub") / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(HUB_DATA_DIR=str(data_dir), HUB_HTTP_HOST="127.0.0.1", HUB_HTTP_PORT=str(port),
               HUB_TZ="Europe/Berlin", HUB_THREADS="4")
    settings = load_hub_settings(env)
    db = HubDB(settings.db_url)
    add_store(db, "north-1", "north", N1_NAME)
    add_store(db, "north-2", "north", "Hafen")
    add_store(db, "north-3", "north", "=Altstadt")  # never synced; a formula-like name
    add_store(db, "south-1", "south", "Südstadt")
    add_store(db, "west-1", "west", WIDE_NAME)  # big figures, for the narrow screen
    add_manager(db, NORTH, NORTH_PW, "north")
    add_manager(db, ADMIN, ADMIN_PW, None)
    add_manager(db, WEST, WEST_PW, "west")
    hub = Hub(f"http://127.0.0.1:{port}", settings, db)
    import_campaigns(db, [json.dumps(
        {"id": "autumn-10", "name": "Autumn ten", "description": "€5 off in autumn",
         "disc": {"kind": "amount", "value_minor": 500, "currency": "EUR"}})])
    import_customers(db, [json.dumps({"id": "cust-1", "display_name": "Karla K.",
                                      "region": "north"})])
    hub.send("north-1", sale("north-1", 1000, "cust-1", txn="n1-first", basket_total_minor=1500,
                             discount_minor=500, lines=[
                                 {"sku": "4006381333931", "name": "Kaffee <Bio>", "qty": 2,
                                  "unit_minor": 750, "total_minor": 1500}]),
             sale("north-1", 2000, "cust-2"),
             sale("north-1", 550), redeemed("north-1", "red-1", "cpn-single", 500, "n1-first"),
             redeemed("north-1", "red-2", "cpn-other", 300),
             ev("north-1", "kiosk.session", {"session": "k1"}),
             ev("north-1", "kiosk.session", {"session": "k2"}),
             ev("north-1", "receipt.printed", {"job": "job-1", "txn": "t"}),
             queue_depth=4, oldest_age_s=30.0, dead_letters=1)
    hub.send("north-1", ev("north-1", "coupon.redemption_reversed",
                           {"redemption": "red-2", "coupon": "cpn-other"}, ago_s=30))
    hub.send("north-2", sale("north-2", 700), redeemed("north-2", "red-3", "cpn-single", 500))
    hub.send("south-1", sale("south-1", 99900), sale("south-1", 99900))
    hub.send("west-1", sale("west-1", 987654321, "cust-w"), sale("west-1", 123456789),
             redeemed("west-1", "red-w", "cpn-west", 1234567),
             queue_depth=123456, oldest_age_s=86400.0 * 3, dead_letters=9876)
    try:
        with serving(env, hub.url, data_dir.parent / "serve.log"):
            yield hub
    finally:
        db.dispose()


def sign_in(page: Page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/login?next=/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_be_visible()


def cell(page: Page, table: str, store: str, column: str) -> Any:
    return page.locator(f"table.{table} tr[data-store='{store}'] .{column}")


def test_wrong_password_gets_a_clear_message(hub: Hub, page: Page) -> None:
    page.goto(f"{hub.url}/login")
    page.get_by_label("Username").fill(NORTH)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
    expect(page).to_have_url(f"{hub.url}/login")


def test_north_manager_sees_north_figures_conflict_and_charts_only(
        hub: Hub, page: Page, tmp_path: Path) -> None:
    requests_seen: list[str] = []
    errors: list[str] = []
    page.on("request", lambda req: requests_seen.append(req.url))
    page.on("pageerror", lambda err: errors.append(str(err)))
    sign_in(page, hub.url, NORTH, NORTH_PW)
    expect(page.get_by_role("heading", level=1)).to_have_text("Region north")

    # What north-1 sent: 3 sales (2 identified), 35.50 €, 1 live redemption of 5 € (the other
    # was reversed), 2 kiosk sessions, 1 receipt.
    expected = {"transactions": "3", "sales": "€35.50", "identified": "66.7 %",
                "redemptions": "1", "discount": "€5.00", "kiosk": "2", "receipts": "1"}
    for column, text in expected.items():
        expect(cell(page, "kpis", "north-1", column)).to_have_text(text)
    expect(page.locator("table.kpis tr[data-store='north-1'] th")).to_contain_text(N1_NAME)
    expect(cell(page, "kpis", "north-2", "sales")).to_have_text("€7.00")
    for column, text in {"transactions": "4", "sales": "€42.50", "identified": "50.0 %",
                         "redemptions": "2", "discount": "€10.00"}.items():
        expect(cell(page, "kpis", "total", column)).to_have_text(text)
    body = page.locator("body").inner_text()
    assert "Südstadt" not in body and "south-1" not in body and "999" not in body

    # Sync health: north-1's own report; north-3 never called in.
    expect(cell(page, "health", "north-1", "queue")).to_have_text("4")
    expect(cell(page, "health", "north-1", "dead")).to_have_text("1")
    expect(cell(page, "health", "north-1", "state-cell")).to_have_text("Syncing")
    expect(cell(page, "health", "north-3", "state-cell")).to_have_text("Stopped syncing")
    expect(cell(page, "health", "north-3", "contact")).to_have_text("never")
    expect(page.locator("#stale-alert")).to_contain_text("=Altstadt")

    # One conflict: the single-use coupon redeemed at north-1 and north-2.
    rows = page.locator("table.conflicts.open tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("cpn-single")
    expect(rows.first.locator(".campaign")).to_have_text("Autumn ten autumn-10")
    expect(rows.first.locator(".uses")).to_have_text("2 / 1")
    expect(rows.first.locator(".given")).to_have_text("€10.00")
    expect(rows.first.locator(".customer")).to_have_text("Karla K.")
    expect(rows.first.locator(".stores")).to_have_text(f"{N1_NAME}, lane-1, Hafen, lane-1")

    # Charts: inline, accessible SVG with the store names escaped.
    charts = page.locator("svg.chart")
    expect(charts).to_have_count(2)
    expect(page.locator("#chart-sales")).to_have_attribute("role", "img")
    expect(page.locator("#chart-sales > title")).to_have_text("Completed sales per day, "
                                                              "region north")
    expect(page.locator("#chart-sales text", has_text=N1_NAME)).to_have_count(1)
    assert "<Markt>" not in page.locator("#chart-sales").inner_html()

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    # The picture shows the chart: its legend swatch is drawn in the series' colour.
    assert chromium.share_of_colour(shot, page, "#chart-sales rect[fill]", "fill") > 0.5
    assert [u for u in requests_seen
            if not u.startswith(hub.url + "/") and not u.startswith("data:")] == []
    assert errors == []


def test_today_is_drawn_per_hour_up_to_this_hour(hub: Hub, page: Page) -> None:
    sign_in(page, hub.url, NORTH, NORTH_PW)
    page.goto(f"{hub.url}/?period=today")
    expect(page.locator("#chart-sales > title")).to_have_text("Completed sales per hour, "
                                                              "region north")
    now = datetime.now(ZoneInfo("Europe/Berlin"))
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    begun = int((now.timestamp() - midnight.timestamp()) // 3600) + 1
    points = page.locator("#chart-sales circle > title").all_text_contents()
    mine = [t for t in points if t.startswith(f"{N1_NAME}, ")]
    assert len(mine) == begun, points   # one point per hour so far, none for hours to come
    assert mine[0].startswith(f"{N1_NAME}, 00:00: ")
    # north-1's three sales were sent a minute ago: today's, unless midnight was just now.
    sold_today = 3 if now.timestamp() - 60 >= midnight.timestamp() else 0
    assert sum(int(t.rsplit(": ", 1)[1].split()[0]) for t in mine) == sold_today, mine


def test_the_dashboard_fits_an_800_pixel_wide_screen(hub: Hub, page: Page) -> None:
    page.set_viewport_size({"width": 800, "height": 900})
    sign_in(page, hub.url, WEST, WEST_PW)  # a store of long name and millions in sales
    expect(cell(page, "kpis", "west-1", "sales")).to_have_text("€11,111,111.10")
    for query in ("/", "/?period=today", "/stores/west-1"):
        page.goto(f"{hub.url}{query}")
        expect(page.locator("table.kpis")).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 800, f"{query} is {width} px wide"


def test_a_conflicts_sale_opens_with_what_the_store_reported(hub: Hub, page: Page) -> None:
    sign_in(page, hub.url, NORTH, NORTH_PW)
    row = page.locator("table.conflicts.open tbody tr").first
    row.get_by_role("link", name=f"{N1_NAME}, lane-1").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Sale n1-first")
    expect(page.locator(".sale-facts .customer")).to_have_text("Karla K. cust-1")
    for column, text in {"basket": "€15.00", "discount": "€5.00", "total": "€10.00"}.items():
        expect(page.locator(f".sale-facts .{column}")).to_have_text(text)
    expect(page.locator("table.lines tbody td")).to_have_text(["Kaffee <Bio>", "2", "€15.00"])
    expect(page.locator("table.redeemed tr.this")).to_contain_text("cpn-single")
    expect(page.locator("table.redeemed tr.this")).to_contain_text("Autumn ten")
    # Another region's store, or a redemption of another store, is not found.
    for path in ("/stores/south-1/redemptions/red-1", "/stores/north-2/redemptions/red-1",
                 "/stores/north-1/redemptions/no-such"):
        assert page.request.get(hub.url + path).status == 404, path


def test_csv_export_holds_the_table_and_neutralises_formulas(hub: Hub, page: Page,
                                                             tmp_path: Path) -> None:
    sign_in(page, hub.url, NORTH, NORTH_PW)
    with page.expect_download() as info:
        page.get_by_role("link", name="Download CSV").click()
    download = info.value
    assert download.suggested_filename.startswith("dashboard-north-")
    path = tmp_path / "export.csv"
    download.save_as(path)
    rows = {r["store_id"]: r for r in csv.DictReader(io.StringIO(path.read_text()))}
    assert set(rows) == {"north-1", "north-2", "north-3", ""}
    n1 = rows["north-1"]
    assert (n1["store"], n1["transactions"], n1["identified_pct"], n1["sales_EUR"],
            n1["redemptions"], n1["discount_EUR"], n1["kiosk_sessions"],
            n1["receipts_printed"]) == (N1_NAME, "3", "66.7", "35.50", "1", "5.00", "2", "1")
    assert rows["north-3"]["store"] == "'=Altstadt"
    assert rows[""]["store"] == "Total" and rows[""]["sales_EUR"] == "42.50"
    response = page.request.get(f"{hub.url}/dashboard.csv?period=today")
    assert response.headers["content-disposition"].startswith("attachment;")


def test_forms_without_a_csrf_token_are_refused(hub: Hub) -> None:
    login = requests.post(f"{hub.url}/login", data={"username": NORTH, "password": NORTH_PW},
                          timeout=5, allow_redirects=False)
    assert login.status_code == 400
    logout = requests.post(f"{hub.url}/logout", timeout=5, allow_redirects=False)
    assert logout.status_code == 400


def test_another_regions_store_or_region_is_not_found(hub: Hub, page: Page) -> None:
    sign_in(page, hub.url, NORTH, NORTH_PW)
    for path in ("/stores/south-1", "/?region=south", "/dashboard.csv?region=south",
                 "/dashboard.json?store=south-1", "/stores/no-such-store"):
        assert page.request.get(hub.url + path).status == 404, path
    own = page.goto(f"{hub.url}/stores/north-2")
    assert own is not None and own.status == 200
    expect(page.get_by_role("heading", level=1)).to_contain_text("Hafen")
    data = page.request.get(f"{hub.url}/dashboard.json").json()
    assert {s["store_id"] for s in data["stores"]} == {"north-1", "north-2", "north-3"}


def test_all_regions_manager_picks_a_region(hub: Hub, page: Page) -> None:
    sign_in(page, hub.url, ADMIN, ADMIN_PW)
    expect(page.get_by_role("heading", level=1)).to_have_text("All regions")
    expect(cell(page, "kpis", "total", "transactions")).to_have_text("8")
    page.get_by_label("Region", exact=True).select_option("south")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Region south")
    expect(cell(page, "kpis", "south-1", "sales")).to_have_text("€1,998.00")
    expect(page.locator("table.kpis tr[data-store='north-1']")).to_have_count(0)


def test_bad_custom_dates_say_so_and_show_seven_days(hub: Hub, page: Page) -> None:
    sign_in(page, hub.url, NORTH, NORTH_PW)
    page.goto(f"{hub.url}/?period=custom&from=2026-02-30&to=2026-03-01")
    # In the hub's locale (en_IE by default), as the date fields show dates.
    expect(page.locator("#period-error")).to_contain_text("Dates must look like 24/11/2026")
    expect(page.locator("input[value='7d']")).to_be_checked()
    expect(cell(page, "kpis", "north-1", "transactions")).to_have_text("3")


def test_the_page_refreshes_itself_when_a_sale_arrives(hub: Hub, page: Page) -> None:
    sign_in(page, hub.url, NORTH, NORTH_PW)
    count = cell(page, "kpis", "north-2", "transactions")
    before = int(count.inner_text())
    hub.send("north-2", sale("north-2", 1250, "cust-7"))
    expect(count).to_have_text(str(before + 1), timeout=25_000)
    expect(cell(page, "kpis", "north-2", "identified")).not_to_have_text("–")


def test_signed_out_requests_get_the_login_or_401(hub: Hub) -> None:
    page_reply = requests.get(f"{hub.url}/", timeout=5, allow_redirects=False)
    assert page_reply.status_code == 302 and "/login" in page_reply.headers["Location"]
    for path in ("/dashboard.json", "/dashboard.csv", "/dashboard/live"):
        assert requests.get(hub.url + path, timeout=5).status_code == 401, path


def test_chromium_stays_on_the_hub_after_signing_in_with_any_next(hub: Hub,
                                                                  page: Page) -> None:
    """The same guard as the edge's (edge/websafe.py), through the hub's own sign-in."""
    sign_in_with_each_next(page, f"{hub.url}/login", NORTH, NORTH_PW, "/", "/dashboard.json")
    reply = requests.get(f"{hub.url}/login", timeout=5)
    assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
    assert reply.headers["Cache-Control"] == "no-store"


def test_a_removed_managers_open_session_ends_at_once(hub: Hub) -> None:
    import re

    from cloud_sync.hub.managers import remove_manager

    add_manager(hub.db, "leaver", "leaver-password-1", "north")
    with requests.Session() as s:
        form = s.get(f"{hub.url}/login", timeout=5).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token is not None
        signed = s.post(f"{hub.url}/login", data={"csrf_token": token[1], "username": "leaver",
                                                  "password": "leaver-password-1"}, timeout=10)
        assert signed.ok
        assert s.get(f"{hub.url}/dashboard.json", timeout=5).status_code == 200
        remove_manager(hub.db, "leaver")
        assert s.get(f"{hub.url}/dashboard.json", timeout=5).status_code == 401


def test_csv_cells_that_a_spreadsheet_would_run_get_a_quote() -> None:
    assert [safe_cell(v) for v in ("=SUM(A1)", "+1", "-2", "@x", "\tx", "Hafen", 3, -2)] == \
        ["'=SUM(A1)", "'+1", "'-2", "'@x", "'\tx", "Hafen", 3, -2]


def test_manager_accounts_check_names_passwords_and_lock_after_five_failures(
        tmp_path: Path) -> None:
    db = HubDB(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        for name, password in (("Bad Name", "long-enough-pw"), ("ok", "short")):
            with pytest.raises(BadRequest):
                add_manager(db, name, password, "north")
        add_manager(db, "mia", "first-password", "north")
        with pytest.raises(Conflict):
            add_manager(db, "mia", "other-password", "north")
        add_manager(db, "mia", "second-password", "west", replace=True)
        mia = authenticate(db, "mia", "second-password")
        assert mia is not None and mia.sees("west") and not mia.sees("north")
        assert authenticate(db, "nobody", "second-password") is None
        for _ in range(5):
            assert authenticate(db, "mia", "wrong-password") is None
        assert authenticate(db, "mia", "second-password") is None  # locked for 5 minutes
        boss = add_manager(db, "boss", "boss-password", None)
        assert boss.sees("north") and boss.sees("south")
    finally:
        db.dispose()
