"""The hub's settings (cloud_sync/hub/settings.py): one declared registry, on the machinery
the edge's settings use too (store_contract/registry.py), documented in docs/hub.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_sync.hub import settings as hub_settings
from cloud_sync.hub.settings import HubSettings, load_hub_settings
from edge import settings as edge_settings
from store_contract.errors import StartupError
from store_contract.registry import Registry, SettingsError

REPO = Path(__file__).resolve().parent.parent
HUB_DOC = REPO / "docs" / "hub.md"


def _settings_table() -> dict[str, str]:
    """The variables of docs/hub.md's "Settings" table and their documented defaults."""
    text = HUB_DOC.read_text()
    section = text[text.index("## Settings"):text.index("## Commands")]
    return dict(re.findall(r"^\| `(HUB_[A-Z0-9_]+)` \| ([^|]*) \|", section, re.M))


def test_the_edge_and_the_hub_share_one_registry_implementation() -> None:
    assert isinstance(edge_settings.REGISTRY, Registry)
    assert isinstance(hub_settings.REGISTRY, Registry)
    assert edge_settings.SettingsError is SettingsError
    assert {s.env for s in hub_settings.REGISTRY.settings} == {
        f"HUB_{f.upper()}" for f in HubSettings.__dataclass_fields__}


def test_every_hub_setting_is_in_the_docs_table_and_every_row_is_a_setting() -> None:
    table = _settings_table()
    declared = {s.env: s for s in hub_settings.REGISTRY.settings}
    assert sorted(table) == sorted(declared)
    for env, setting in declared.items():  # a number's default is the documented one
        if setting.type is int:
            assert table[env].strip() == f"`{setting.default}`", env
    missing, unknown = hub_settings.REGISTRY.doc_mismatches(HUB_DOC.read_text())
    assert (missing, unknown) == ([], [])


def test_the_defaults_are_the_ones_the_hub_always_had(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_hub_settings({})
    assert s == HubSettings(data_dir=tmp_path / "hub-data", database_url="",
                            http_host="127.0.0.1", http_port=8090, tz="UTC", locale="en_IE",
                            max_batch_events=1000, max_batch_bytes=4194304, stale_after_s=900,
                            threads=8, lookup_per_minute=30, customer_seen_days=90,
                            trusted_proxy="")
    # A variable set to "" means the default, as before.
    assert load_hub_settings({"HUB_TZ": "", "HUB_HTTP_PORT": "", "HUB_DATA_DIR": ""}) == s
    assert load_hub_settings({"HUB_TRUSTED_PROXY": " 127.0.0.1 "}).trusted_proxy == "127.0.0.1"


@pytest.mark.parametrize(("env", "line"), [
    ({"HUB_HTTP_PORT": "http"}, "HUB_HTTP_PORT='http' must be a whole number"),
    ({"HUB_HTTP_PORT": "70000"}, "HUB_HTTP_PORT=70000 must be from 0 to 65535"),
    ({"HUB_THREADS": "0"}, "HUB_THREADS=0 must be from 1 to 64"),
    ({"HUB_TZ": "Mars/Olympus"},
     "HUB_TZ='Mars/Olympus' is not an IANA time zone such as Europe/Berlin"),
    ({"HUB_LOCALE": "xx_QQ"}, "HUB_LOCALE='xx_QQ' is not a locale such as en_IE, en_GB or de_DE"),
    ({"HUB_DATABASE_URL": "mysql://hub:s3cret@db/hub"},
     "HUB_DATABASE_URL must be sqlite:///path or postgresql://..., not mysql://"),
])
def test_a_wrong_value_is_one_line_naming_the_variable(env: dict[str, str], line: str) -> None:
    with pytest.raises(StartupError) as err:
        load_hub_settings(env)
    assert str(err.value) == line  # the same words as before the registry; no password


def test_an_unknown_hub_variable_is_named_with_the_closest_setting() -> None:
    with pytest.raises(SettingsError) as err:
        load_hub_settings({"HUB_HTTP_PROT": "8091", "HUB_TZ": "UTC"})
    assert str(err.value) == ("config error: unknown environment variable HUB_HTTP_PROT; did "
                              "you mean HUB_HTTP_PORT? unset it or see docs/hub.md for the "
                              "settings there are")
    with pytest.raises(SettingsError, match="variable HUB_COLOUR; unset it"):
        load_hub_settings({"HUB_COLOUR": "blue"})


@pytest.mark.process
def test_the_hub_refuses_to_start_with_an_unknown_variable_in_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HUB_DATA_DIR": str(tmp_path / "hub"),
           "HUB_THREDS": "4"}
    done = subprocess.run([sys.executable, "-m", "cloud_sync.hub.cli", "serve"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "edge-hub: config error: unknown environment variable HUB_THREDS; did you mean "
        "HUB_THREADS? unset it or see docs/hub.md for the settings there are"]
    assert not (tmp_path / "hub").exists()  # stopped before touching anything
