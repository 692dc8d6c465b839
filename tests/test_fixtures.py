"""The test fixtures' own rules: which PostgreSQL they use, that under CI a missing required
part fails instead of skipping, and that Mosquitto moves on when its port was taken."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from edge.app.service import EdgeService
from edge.datadir import DataDir
from edge.devices import enrol
from edge.settings import Settings
from edge.store import Store
from pos_bridge.device import DeviceClient
from store_contract.mqtt import parse_mqtt_url
from tests.conftest import start_broker
from tests.hubfix import find_pg_bin, missing_part


def _release(root: Path, name: str, *programs: str) -> Path:
    bin_dir = root / name / "bin"
    bin_dir.mkdir(parents=True)
    for program in programs:
        (bin_dir / program).touch()
    return bin_dir


def test_the_newest_complete_postgresql_release_is_used(tmp_path: Path) -> None:
    _release(tmp_path, "9", "initdb", "pg_ctl")
    fifteen = _release(tmp_path, "15", "initdb", "pg_ctl")
    _release(tmp_path, "17", "initdb")  # no pg_ctl: not usable
    _release(tmp_path, "latest", "initdb", "pg_ctl")  # not a release number
    assert find_pg_bin(tmp_path) == fifteen
    sixteen = _release(tmp_path, "16", "initdb", "pg_ctl")
    assert find_pg_bin(tmp_path) == sixteen  # 16 > 15 > 9, compared as numbers


def test_no_postgresql_release_is_none(tmp_path: Path) -> None:
    assert find_pg_bin(tmp_path) is None
    _release(tmp_path, "15", "pg_ctl")
    assert find_pg_bin(tmp_path) is None


def test_a_missing_part_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    # BaseException: a skip raised here must fail this test, not skip it.
    with pytest.raises(BaseException) as raised:
        missing_part("PostgreSQL is not installed")
    assert raised.type is pytest.fail.Exception
    assert "PostgreSQL is not installed" in str(raised.value)


def test_a_missing_part_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(BaseException) as raised:
        missing_part("PostgreSQL is not installed")
    assert raised.type is pytest.skip.Exception
    assert "PostgreSQL is not installed" in str(raised.value)


@pytest.mark.process
@pytest.mark.parametrize("listening", [True, False])
def test_the_broker_moves_to_a_new_port_when_its_port_was_taken(
        settings: Settings, datadir: DataDir, store: Store, listening: bool) -> None:
    # Another process holds the port chosen for Mosquitto (the race free_port() cannot
    # prevent): the fixture starts the broker on another port and says which. A listening
    # holder is seen before the start; a bound, silent one makes Mosquitto exit at once
    # ("Address already in use").
    taken = parse_mqtt_url(settings.mqtt_url).port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        if listening:
            squatter.listen(1)
        broker = start_broker(settings, datadir, store)
        try:
            port = parse_mqtt_url(settings.mqtt_url).port
            assert port != taken
            assert broker.process is not None and broker.process.poll() is None
            # The broker on the new port lets an enrolled device in.
            cred = enrol(settings, datadir, store, "pos", "lane-1")
            lane = DeviceClient(settings.store_id, "pos", "lane-1", settings.mqtt_url,
                                cred.username, cred.password).connect()
            assert lane.connected.is_set()
            lane.close()
        finally:
            broker.stop()


@pytest.mark.edge_settings(print_retries=0, status_mute_s=2)
def test_the_edge_settings_marker_reaches_the_running_edge(
        edge: EdgeService, settings: Settings) -> None:
    # The tests that need a changed edge (fewer print tries, a short hold, a mute) rely on it.
    assert settings.print_retries != 0
    assert (edge.settings.print_retries, edge.settings.status_mute_s) == (0, 2)
