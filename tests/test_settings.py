"""Settings: the documented defaults, environment overrides and one-line start-up errors."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from edge.settings import REPO_DEFAULTS, SETTINGS, SettingsError, load_settings
from tests.conftest import edge_cli


def test_defaults_file_documents_every_setting_with_its_default() -> None:
    table = tomllib.loads(REPO_DEFAULTS.read_text())
    assert set(table) == {s.name for s in SETTINGS}
    for setting in SETTINGS:
        assert table[setting.name] == setting.default, setting.name


def test_environment_overrides_the_defaults_file() -> None:
    s = load_settings({"EDGE_STORE_ID": "store-12", "EDGE_HTTP_PORT": "9090",
                       "EDGE_TZ": "Europe/London"})
    assert (s.store_id, s.http_port, s.tz) == ("store-12", 9090, "Europe/London")


def test_site_file_sits_between_defaults_and_environment(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('store_id = "store-7"\nhttp_port = 8181\n')
    s = load_settings({"EDGE_CONFIG": str(site), "EDGE_HTTP_PORT": "8282"})
    assert (s.store_id, s.http_port) == ("store-7", 8282)


@pytest.mark.parametrize(("environ", "words"), [
    ({"EDGE_HTTP_PORT": "eighty"}, "EDGE_HTTP_PORT: http_port='eighty' is not a whole number"),
    ({"EDGE_HTTP_PORT": "70000"}, "must be a port number"),
    ({"EDGE_TZ": "Mars/Olympus"}, "is not an IANA time zone"),
    ({"EDGE_STORE_ID": "Store 12"}, "store_id='Store 12' must be 1-32 characters"),
    ({"EDGE_MQTT_URL": "http://broker"}, "must look like mqtt://"),
])
def test_wrong_values_stop_with_one_line_saying_what_to_fix(environ: dict[str, str],
                                                            words: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(environ)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_in_site_file_is_named(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('store_idd = "x"\n')
    with pytest.raises(SettingsError, match=r"unknown setting 'store_idd' \(did you mean store_id"):
        load_settings({"EDGE_CONFIG": str(site)})


def test_wrong_type_in_site_file_is_named(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text("http_port = true\nstore_id = 5\n")
    with pytest.raises(SettingsError, match="http_port must be a whole number"):
        load_settings({"EDGE_CONFIG": str(site)})


@pytest.mark.process
def test_edge_refuses_to_start_with_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "EDGE_DATA_DIR": str(tmp_path), "EDGE_HTTP_PORT": "abc"}
    done = subprocess.run([*edge_cli(), "serve"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "EDGE_HTTP_PORT" in lines[0] and "whole number" in lines[0]


def test_a_misspelt_environment_variable_stops_start_up() -> None:
    with pytest.raises(SettingsError, match="unknown environment variable EDGE_STOREID; did you "
                                            "mean EDGE_STORE_ID"):
        load_settings({"EDGE_STOREID": "store-2"})


def test_a_quoted_number_in_a_settings_file_is_a_wrong_type(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('http_port = "80"\n')
    with pytest.raises(SettingsError, match="http_port must be a whole number"):
        load_settings({"EDGE_CONFIG": str(site)})


def test_a_child_process_environment_reproduces_the_settings() -> None:
    s = load_settings({}, store_id="store-9", http_port=9999, tz="Europe/Paris")
    env = s.environ({"PATH": "/bin", "EDGE_STORE_ID": "stale"})
    assert env["PATH"] == "/bin" and env["EDGE_STORE_ID"] == "store-9"
    loaded = load_settings(env)
    assert loaded.data_path == s.data_path  # written out absolute, so any working dir works
    assert loaded.with_overrides(data_dir=s.data_dir) == s
