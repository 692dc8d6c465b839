"""The `edge-hub` command: JSON on stdout, one clear line on stderr for bad input."""


from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import zxingcpp
from PIL import Image

from cloud_sync.hub.settings import HubSettings, load_hub_settings
from store_contract.campaigns import until_exp
from tests.hubfix import HubServer, hub_env_for, run_hub

pytestmark = pytest.mark.process  # a hub process for every test


@pytest.fixture
def sqlite_hub(tmp_path: Path) -> HubSettings:
    """A hub on SQLite, for commands that do not depend on the database kind."""
    return load_hub_settings(hub_env_for(tmp_path / "hub-data", "", 0))


def ok(settings: HubSettings, *args: str, input: str | None = None) -> Any:
    done = run_hub(settings, *args, input=input)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


def fails(settings: HubSettings, *args: str, input: str | None = None) -> str:
    done = run_hub(settings, *args, input=input)
    assert done.returncode != 0 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-hub: "), done.stderr
    return lines[0]


def test_stores_add_prints_the_token_once_and_refuses_a_second_add(sqlite_hub: HubSettings
                                                                   ) -> None:
    out = ok(sqlite_hub, "stores", "add", "s12", "--region", "north", "--name", "Store 12")
    assert set(out) == {"store", "region", "token"} and len(out["token"]) >= 40
    assert "already registered" in fails(sqlite_hub, "stores", "add", "s12", "--region",
                                         "north")
    rotated = ok(sqlite_hub, "stores", "add", "s12", "--region", "north", "--rotate")
    assert rotated["token"] != out["token"]
    listed = ok(sqlite_hub, "stores", "list")
    assert [(s["store"], s["region"], s["name"]) for s in listed] == [
        ("s12", "north", "Store 12")]
    assert "token" not in json.dumps(listed)


@pytest.mark.parametrize("store", ["S12", "s.1", "a" * 33, "s_1"])
def test_stores_add_refuses_a_malformed_store_id(sqlite_hub: HubSettings, store: str) -> None:
    assert "is not a store id" in fails(sqlite_hub, "stores", "add", store, "--region", "n")


def test_customer_import_reports_bad_lines_by_number(sqlite_hub: HubSettings,
                                                     tmp_path: Path) -> None:
    path = tmp_path / "customers.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "c-1", "display_name": "Ann", "phones": ["+49 30 901820"]}),
        "{not json",
        "",
        json.dumps({"id": "c-2"}),
        json.dumps({"id": "c-3", "display_name": "Cem", "points": -1}),
        json.dumps({"id": "c-4", "display_name": "Dee", "tier": "gold"}),
    ]) + "\n")
    out = ok(sqlite_hub, "customers", "import", str(path))
    assert out["imported"] == 2 and out["skipped"] == 3
    assert [p["line"] for p in out["problems"]] == [2, 4, 5]
    assert out["problems"][0]["reason"].startswith("not JSON")
    assert "display_name" in out["problems"][1]["reason"]
    assert "points" in out["problems"][2]["reason"]
    assert "cannot read" in fails(sqlite_hub, "customers", "import", str(tmp_path / "nope"))


def test_campaign_import_reports_bad_lines_and_revoke_is_sent(sqlite_hub: HubSettings,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "campaigns.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "cmp-1", "name": "Ten off",
                    "disc": {"kind": "percent", "value": 10}}),
        json.dumps({"id": "cmp-2", "name": "Bad", "disc": {"kind": "percent", "value": 900}}),
        json.dumps(["not", "an", "object"]),
    ]) + "\n")
    out = ok(sqlite_hub, "campaigns", "import", str(path))
    assert out["imported"] == 1 and [p["line"] for p in out["problems"]] == [2, 3]
    assert ok(sqlite_hub, "campaigns", "revoke", "cmp-1", "--reason", "misprint") == {
        "scope": "campaign", "id": "cmp-1", "reason": "misprint", "revoked": True}
    assert ok(sqlite_hub, "coupons", "revoke", "cpn-9")["scope"] == "coupon"
    assert "not a coupon id" in fails(sqlite_hub, "coupons", "revoke", "bad id!")


def test_hub_coupon_verifies_against_the_jwks_and_its_qr_decodes(
        hub_server: HubServer, tmp_path: Path) -> None:
    settings = hub_server.settings
    (tmp_path / "cmp.jsonl").write_text(json.dumps({
        "id": "cmp-5", "name": "Five off", "disc": {"kind": "amount", "value_minor": 500,
                                                    "currency": "EUR"},
        "min_minor": 2000, "stack": False}) + "\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"id": "c-1", "display_name": "Ann"}) + "\n")
    ok(settings, "campaigns", "import", str(tmp_path / "cmp.jsonl"))
    ok(settings, "customers", "import", str(tmp_path / "c.jsonl"))
    png = tmp_path / "coupon.png"
    out = ok(settings, "coupons", "issue", "--campaign", "cmp-5", "--customer", "c-1",
             "--max", "2", "--days", "7", "--qr", str(png))
    assert out["qr"] == str(png)
    jwks = requests.get(f"{hub_server.url}/.well-known/jwks.json", timeout=5).json()
    header = jwt.get_unverified_header(out["token"])
    assert header["typ"] == "coupon+jwt" and header["kid"] == "hub-1"
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(out["token"], key, algorithms=["EdDSA"])
    assert claims["jti"] == out["coupon"] and claims["cmp"] == "cmp-5"
    assert claims["sub"] == "c-1" and claims["max"] == 2 and claims["min_minor"] == 2000
    assert claims["disc"] == {"kind": "amount", "value_minor": 500, "currency": "EUR"}
    # --days 7: until a week from today in HUB_TZ (UTC here); exp covers the last zone.
    week = {(datetime.fromtimestamp(t, UTC).date() + timedelta(days=7)).isoformat()
            for t in (claims["nbf"], time.time())}
    assert claims["until"] in week
    assert claims["exp"] == until_exp(date.fromisoformat(claims["until"]))
    decoded = zxingcpp.read_barcodes(Image.open(png))
    assert [d.text for d in decoded] == [out["token"]]
    assert "no campaign" in fails(settings, "coupons", "issue", "--campaign", "cmp-none")
    assert "no customer" in fails(settings, "coupons", "issue", "--campaign", "cmp-5",
                                  "--customer", "c-404")


def test_member_code_lives_five_minutes(sqlite_hub: HubSettings, tmp_path: Path) -> None:
    out = ok(sqlite_hub, "members", "issue", "c-1", "--qr", str(tmp_path / "m.png"))
    keys = ok(sqlite_hub, "keys", "show")
    key = jwt.PyJWKSet.from_dict(keys)["hub-1"]
    claims = jwt.decode(out["token"], key, algorithms=["EdDSA"])
    assert claims["sub"] == "c-1" and claims["exp"] - claims["iat"] == 300
    assert abs(claims["iat"] - time.time()) < 30 and claims["jti"]
    assert jwt.get_unverified_header(out["token"])["typ"] == "member+jwt"
    assert out["expires_at"].endswith("Z")
    assert [d.text for d in zxingcpp.read_barcodes(Image.open(tmp_path / "m.png"))] == [
        out["token"]]
    assert "not a customer id" in fails(sqlite_hub, "members", "issue", "bad id")


def test_managers_add_reads_the_password_from_stdin(sqlite_hub: HubSettings) -> None:
    out = ok(sqlite_hub, "managers", "add", "mia", "--region", "north", "--password-stdin",
             input="a long enough password\n")
    assert out == {"manager": "mia", "region": "north"}
    assert ok(sqlite_hub, "managers", "add", "root", "--all-regions", "--password-stdin",
              input="another long password\n")["region"] is None
    assert "exactly one" in fails(sqlite_hub, "managers", "add", "x", "--password-stdin",
                                  input="a long enough password\n")
    assert ok(sqlite_hub, "managers", "remove", "mia") == {"manager": "mia", "removed": True}
    assert "no manager 'mia'" in fails(sqlite_hub, "managers", "remove", "mia")


def test_bad_settings_stop_with_one_line(sqlite_hub: HubSettings) -> None:
    done = run_hub(sqlite_hub, "stores", "list")
    assert done.returncode == 0
    import subprocess
    import sys

    env = {"HUB_DATA_DIR": str(sqlite_hub.data_dir), "HUB_HTTP_PORT": "http",
           "PATH": "/usr/bin:/bin"}
    bad = subprocess.run([sys.executable, "-m", "cloud_sync.hub.cli", "stores", "list"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "edge-hub: HUB_HTTP_PORT='http' must be a whole number"
