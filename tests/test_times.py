"""How times read (store_contract.wording.local_time, the locale's date fields) and the devices'
in-memory "last seen" (edge.devices.LastSeen). Expected strings are written out or computed
with zoneinfo/strftime, never with the function under test."""

from __future__ import annotations

import io
import logging
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cloud_sync.hub.settings import load_hub_settings
from edge.devices import LastSeen
from edge.store import Store
from store_contract import logsafe
from store_contract.errors import StartupError
from store_contract.wording import Moment, date_pattern, input_date, local_time, parse_input_date

HELSINKI = ZoneInfo("Europe/Helsinki")
# 24 Nov 2026, 14:10:09 UTC = 16:10:09 in Helsinki (EET, +02:00).
MOMENT = datetime(2026, 11, 24, 14, 10, 9, tzinfo=UTC)


@pytest.mark.parametrize("when", [MOMENT, MOMENT.timestamp(), "2026-11-24T14:10:09.000Z",
                                  "2026-11-24T15:10:09+01:00"])
def test_local_time_reads_any_moment_in_the_stores_zone_24_hour(when: Moment) -> None:
    assert local_time(when, HELSINKI, "de_DE", "seconds") == "16:10:09"
    assert local_time(when, HELSINKI, "en_US", "clock") == "16:10"
    assert local_time(when, HELSINKI, "en_IE") == "24 Nov, 16:10"


def test_local_time_refuses_a_moment_without_a_zone() -> None:
    with pytest.raises(ValueError):
        local_time(datetime(2026, 11, 24, 16, 10), HELSINKI, "de_DE")


@pytest.mark.parametrize(("locale", "pattern", "shown"), [
    ("de_DE", "dd.MM.yyyy", "04.11.2026"),
    ("en_IE", "dd/MM/yyyy", "04/11/2026"),
    ("en_US", "MM/dd/yyyy", "11/04/2026"),
    ("fi_FI", "dd.MM.yyyy", "04.11.2026"),
])
def test_date_fields_follow_the_locale_both_ways(locale: str, pattern: str, shown: str) -> None:
    assert date_pattern(locale) == pattern
    assert input_date(date(2026, 11, 4), locale) == shown
    assert parse_input_date(shown, locale) == date(2026, 11, 4)
    assert parse_input_date(" 2026-11-04 ", locale) == date(2026, 11, 4)  # ISO, always


def test_typed_dates_that_are_none_are_refused() -> None:
    assert parse_input_date("4.11.26", "de_DE") == date(2026, 11, 4)
    for text in ("31.02.2026", "24.11", "24.11.2026 x", "", "11/24/2026"):
        with pytest.raises(ValueError):
            parse_input_date(text, "de_DE")


def test_hub_locale_is_checked_at_start(tmp_path: Path) -> None:
    env = {"HUB_DATA_DIR": str(tmp_path)}
    assert load_hub_settings(env).locale == "en_IE"
    assert load_hub_settings({**env, "HUB_LOCALE": "de_DE"}).locale == "de_DE"
    with pytest.raises(StartupError, match="HUB_LOCALE"):
        load_hub_settings({**env, "HUB_LOCALE": "xx_NOPE"})


def _last_seen_in_db(path: Path) -> str | None:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT last_seen FROM devices WHERE id = 'lane-1'").fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def test_last_seen_moves_in_memory_and_is_written_once_per_flush(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    try:
        store.write(lambda db: db.execute(
            "INSERT INTO devices (kind, id, username, password_hash, created_at) "
            "VALUES ('pos', 'lane-1', 'pos-lane-1', 'x', '2026-11-24T00:00:00.000Z')"))
        seen = LastSeen()
        for i in range(1000):  # a lane busy selling: no write per message
            seen.note("pos", "lane-1", MOMENT.timestamp() + i / 1000)
        seen.note("pos", "ghost", MOMENT.timestamp())  # not enrolled: nothing written
        assert _last_seen_in_db(tmp_path / "edge.db") is None
        rows = seen.merge([{"kind": "pos", "id": "lane-1", "last_seen": None}])
        assert rows[0]["last_seen"] == "2026-11-24T14:10:09.999Z"
        assert seen.flush(store) == 1
        assert _last_seen_in_db(tmp_path / "edge.db") == "2026-11-24T14:10:09.999Z"
        assert seen.flush(store) == 0  # nothing new: no write at all
        # A newer moment in the database (a status written meanwhile) is never moved back.
        store.write(lambda db: db.execute(
            "UPDATE devices SET last_seen = '2026-11-24T14:20:00.000Z' WHERE id = 'lane-1'"))
        seen.note("pos", "lane-1", MOMENT.timestamp() + 5)
        assert seen.flush(store) == 0
        assert _last_seen_in_db(tmp_path / "edge.db") == "2026-11-24T14:20:00.000Z"
    finally:
        store.close()


def test_log_stamps_carry_the_zone_offset_and_keep_the_format() -> None:
    logger = logging.getLogger("test-times-stamp")
    logger.propagate = False
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    try:
        logsafe.install(logger, zone=ZoneInfo("Asia/Kolkata"))  # +05:30 all year
        logger.warning("card 4000 1234 1234 1234 refused")
    finally:
        logger.removeHandler(handler)
    stamp, rest = out.getvalue().strip().split(" ", 1)
    assert stamp.endswith("+05:30"), stamp
    when = datetime.fromisoformat(stamp)
    assert abs((datetime.now(UTC) - when).total_seconds()) < 60
    assert rest == "WARNING: card [redacted] refused"
