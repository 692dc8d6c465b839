"""The POS methods over HTTP (`POST /api/v1/pos/{device}/{method}`) for lanes without MQTT,
against a real `edge serve`; and the customer import a stand-alone store fills its cache with.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from edge.devices import Enrolment
from edge.settings import Settings
from pos_bridge.lane import HttpTransport, Lane, NotAllowed, Refused, basket
from store_contract.protocol import new_envelope
from tests.conftest import EdgeProc, Issuer, edge_cli, edge_env

ITEMS = basket([{"sku": "coffee", "qty": 2, "unit_minor": 650, "categories": ["hot-drinks"]}],
               "EUR")


def import_customers(settings: Settings, tmp_path: Path, lines: list[Any]) -> tuple[int, Any]:
    path = tmp_path / "customers.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    done = subprocess.run([*edge_cli(), "customers", "import", str(path)],
                          env=edge_env(settings), capture_output=True, text=True, timeout=60)
    return done.returncode, json.loads(done.stdout)


def url(edge: EdgeProc, device: str, method: str) -> str:
    return f"http://127.0.0.1:{edge.http_port}/api/v1/pos/{device}/{method}"


@pytest.fixture
def lane_login(enrolled: Callable[[str, str], Enrolment]) -> Enrolment:
    return enrolled("pos", "lane-7")


def test_http_lane_runs_a_whole_sale_with_the_lane_client(
        settings: Settings, tmp_path: Path, lane_login: Enrolment, issuer: Issuer,
        request: pytest.FixtureRequest) -> None:
    code, report = import_customers(settings, tmp_path, [
        {"id": "c-9", "display_name": "Ben", "tier": "silver", "points": 40,
         "card": "7000 0000 0009"}])
    assert (code, report["imported"]) == (0, 1)
    edge_process = request.getfixturevalue("edge_process")
    lane = Lane(HttpTransport(f"http://127.0.0.1:{edge_process.http_port}", "lane-7",
                              lane_login.password))
    assert lane.identify("h-1", code="700000000009")["customer"]["display_name"] == "Ben"
    coupon = issuer.coupon(disc={"kind": "amount", "value_minor": 300, "currency": "EUR"})
    assert lane.apply_coupon("h-1", coupon, ITEMS)["discount_minor"] == 300
    done = lane.complete("h-1", ITEMS, [{"kind": "card", "amount_minor": 1000}])
    assert len(done["redemptions"]) == 1
    with pytest.raises(Refused) as info:
        lane.apply_coupon("h-2", coupon, ITEMS)
    assert info.value.code == "coupon_used"
    assert info.value.message.startswith("Coupon already used at")


def test_http_lane_must_present_its_own_token(
        settings: Settings, enrolled: Callable[[str, str], Enrolment], lane_login: Enrolment,
        edge_process: EdgeProc) -> None:
    kiosk = enrolled("kiosk", "kiosk-1")
    other = enrolled("pos", "lane-8")
    body = new_envelope("ping", {}).to_json()
    for device, headers in [
            ("lane-7", {}),
            ("lane-7", {"Authorization": "Bearer wrong"}),
            ("lane-7", {"Authorization": f"Basic {lane_login.password}"}),
            ("lane-7", {"Authorization": f"Bearer {other.password}"}),  # another lane's token
            ("kiosk-1", {"Authorization": f"Bearer {kiosk.password}"}),  # not a lane
            ("Lane..7", {"Authorization": f"Bearer {lane_login.password}"})]:
        resp = requests.post(url(edge_process, device, "ping"), data=body, headers=headers,
                             timeout=5)
        assert resp.status_code == 401, (device, headers)
        assert resp.json()["error"]["code"] == "unauthorized"
    with pytest.raises(NotAllowed):
        Lane(HttpTransport(f"http://127.0.0.1:{edge_process.http_port}", "lane-7", "nope"),
             retries=0).void("x")


def test_http_answers_are_the_same_envelopes_as_on_the_bus(
        settings: Settings, lane_login: Enrolment, issuer: Issuer,
        edge_process: EdgeProc) -> None:
    auth = {"Authorization": f"Bearer {lane_login.password}"}
    envelope = new_envelope("coupon.apply", {"txn": "h-1", "code": issuer.coupon(),
                                             "basket": ITEMS})
    first = requests.post(url(edge_process, "lane-7", "coupon.apply"), data=envelope.to_json(),
                          headers=auth, timeout=5)
    second = requests.post(url(edge_process, "lane-7", "coupon.apply"), data=envelope.to_json(),
                           headers=auth, timeout=5)
    assert first.status_code == second.status_code == 200
    assert first.json()["ok"] and first.json()["re"] == envelope.id
    assert first.content == second.content  # a repeat gets the very same reply
    for payload, reason in [(b"{not json", "json"), (b"\xff\xfe", "encoding"),
                            (b"x" * 70_000, "oversize")]:
        resp = requests.post(url(edge_process, "lane-7", "coupon.apply"), data=payload,
                             headers=auth, timeout=5)
        assert resp.status_code == 200
        error = resp.json()["error"]
        assert (error["code"], error["detail"]) == ("bad_request", {"reason": reason})
    resp = requests.post(url(edge_process, "lane-7", "no.such.method"),
                         data=new_envelope("no.such.method").to_json(), headers=auth, timeout=5)
    assert resp.json()["error"]["code"] == "bad_request"


@pytest.mark.process
def test_customer_import_reports_what_it_skipped_and_keeps_no_numbers(
        settings: Settings, tmp_path: Path, issuer: Issuer) -> None:
    code, report = import_customers(settings, tmp_path, [
        {"id": "c-1", "display_name": "Anna", "phone": "0151 23456789",
         "email": "Anna@Example.org", "card": "4000-1234-1234-1234",
         "consent": {"personalised": True},
         "wallet": [issuer.coupon(jti="cpn-1", sub="c-1"), issuer.coupon(sub="c-2")]},
        {"id": "c-2", "display_name": "Bea", "phone": "12"},
        {"id": "bad id!", "display_name": "X"},
        "{not json",
        {"id": "c-3", "display_name": "Cem", "points": -4},
        {"id": "c-4", "display_name": "Dora", "tier": "gold", "points": 7}])
    assert code == 1  # some lines were skipped
    assert report["imported"] == 2 and report["skipped"] == 4
    by_line = {p["line"]: p["reason"] for p in report["problems"]}
    assert "not a valid phone number" in by_line[2]
    assert "id" in by_line[3]
    assert by_line[4] == "not valid JSON"
    assert "points" in by_line[5]
    raw = (settings.data_path / "edge.db").read_bytes()
    for secret in (b"23456789", b"Example.org", b"1234123412341234", b"4000-1234"):
        assert secret not in raw
    from edge.app.service import EdgeService

    svc = EdgeService(settings)
    try:
        who = svc.checkout.identify("lane-1", "t-1", None, "+49 151 2345 6789")
        assert who["customer"]["id"] == "c-1"
        # The coupon bound to someone else was not put into Anna's wallet.
        assert [w["coupon"] for w in who["wallet"]] == ["cpn-1"]
        assert svc.checkout.identify("lane-1", "t-2", "4000123412341234", None)[
            "customer"]["id"] == "c-1"
    finally:
        svc.stop()
