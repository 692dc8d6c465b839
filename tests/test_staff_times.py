"""Times staff read, in the store's zone and locale whatever the machine's and the browser's
(here Europe/Helsinki and de_DE on a UTC machine, a browser in en-US): the devices page's
"last seen" (24-hour, the store's zone, moving on while a lane keeps selling) and the log
lines' stamps (ISO 8601 with the offset). Real `edge serve`, Mosquitto and Chromium.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from edge.settings import Settings
from pos_bridge.device import DeviceClient
from tests import browser as chromium
from tests.conftest import edge_log, wait_until
from tests.test_staff_pages import MANAGER_PW, sign_in, staff_edge  # noqa: F401 (fixture)

playwright, browser, page = chromium.playwright, chromium.browser, chromium.page

ZONE = ZoneInfo("Europe/Helsinki")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test store is in Helsinki and speaks German; the machine runs on UTC."""
    return settings.with_overrides(tz="Europe/Helsinki", locale="de_DE")


def helsinki_clock(rfc3339: str) -> str:
    """What staff must read for a moment: Helsinki wall clock, 24-hour, with seconds."""
    when = datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    return when.astimezone(ZONE).strftime("%H:%M:%S")


def test_last_seen_is_store_time_and_moves_on_while_a_lane_sells(
        staff_edge: str, settings: Settings, page: Page,  # noqa: F811
        device: Callable[..., DeviceClient]) -> None:
    lane = device("pos", "lane-1")
    sign_in(page, staff_edge, MANAGER_PW)
    cell = page.locator('tr[data-device="pos/lane-1"] td').nth(3)
    expect(page.locator('tr[data-device="pos/lane-1"] span.state')).to_have_text("online")

    # The lane keeps working (requests, no status change): its last seen keeps moving.
    seen: set[str] = set()
    until = time.monotonic() + 6
    while time.monotonic() < until:
        assert lane.request("ping", {"echo": 1})["ok"]
        seen.add(cell.inner_text())
        time.sleep(0.5)
    assert len(seen - {"never"}) >= 2, seen

    # Once it stops, the page shows exactly its last message in Helsinki time, 24-hour.
    def settled() -> bool:
        api = page.request.get(f"{staff_edge}/api/v1/devices").json()
        row = next(d for d in api["devices"] if d["id"] == "lane-1")
        return cell.inner_text() == helsinki_clock(row["last_seen"])

    assert wait_until(settled, 10), cell.inner_text()
    assert re.fullmatch(r"\d\d:\d\d:\d\d", cell.inner_text())

    # Written to the database within a few seconds too (not once per message).
    def stored() -> bool:
        conn = sqlite3.connect(settings.data_path / "edge.db", timeout=10)
        try:
            row = conn.execute("SELECT last_seen FROM devices WHERE id = 'lane-1'").fetchone()
        finally:
            conn.close()
        return bool(row[0]) and helsinki_clock(row[0]) == cell.inner_text()

    assert wait_until(stored, 10)


def test_log_lines_carry_the_store_time_with_its_offset(
        staff_edge: str, settings: Settings,  # noqa: F811
        edge_process: subprocess.Popen[bytes]) -> None:
    lines = [line for line in edge_log(settings).read_text().splitlines()
             if "connected to the broker" in line]
    assert lines, edge_log(settings).read_text()
    stamp = lines[-1].split(" ", 1)[0]
    match = re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}([+-]\d\d:\d\d)", stamp)
    assert match, lines[-1]
    offset = datetime.now(ZONE).utcoffset()
    assert offset is not None
    hours, minutes = divmod(int(offset.total_seconds()) // 60, 60)
    assert match.group(1) == f"+{hours:02d}:{minutes:02d}"
    when = datetime.fromisoformat(stamp)
    assert abs(datetime.now(ZONE) - when) < timedelta(minutes=2)
