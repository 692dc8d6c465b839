"""Roles at the till (docs/operations.md §16.3): a cashier works only on the lane their
sign-in belongs to; voiding a completed sale and reprinting a receipt need a manager, or a
manager's approval typed on the cashier's screen, checked as a sign-in and good for one
action; every void and reprint is in the audit trail and reaches the hub.

Real HTTP through the Flask test client against the edge's own app and SQLite store; lanes
sell over the POS HTTP API with their device password; the hub is a real `edge-hub serve`
on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import re
from base64 import b64encode
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.schema import events as hub_events
from edge.accounts import POLICY, add_user
from edge.app import create_app
from edge.app.printers import add_printer
from edge.app.service import EdgeService
from edge.datadir import DataDir
from edge.devices import enrol
from edge.settings import Settings
from store_contract.protocol import new_envelope
from tests.conftest import Issuer
from tests.hubfix import HubServer, event

pytestmark = pytest.mark.app

MANAGER, MANAGER_PW = "mia", "manager-password-1"
CASHIER, CASHIER_PW = "carla", "cashier-password-1"
OTHER_CASHIER, OTHER_PW = "tom", "cashier-password-2"
JSON = {"Accept": "application/json"}  # what the page's scripts ask for


@dataclass
class Till:
    """The edge's app, its store's passwords for lane-1, and signed-in staff clients."""

    app: Flask
    lane_1_password: str

    @property
    def edge(self) -> EdgeService:
        svc: EdgeService = self.app.extensions["edge"]
        return svc

    def sign_in(self, username: str, password: str, lane: str | None = None) -> Staff:
        client = self.app.test_client()
        form = client.get("/staff/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token
        done = client.post("/staff/login", data={"username": username, "password": password,
                                                 "csrf_token": token.group(1)})
        assert done.status_code == 302, done.get_data(as_text=True)
        staff = Staff(client, "")
        if lane is not None:
            staff.open(lane)
        return staff

    def lane_sells(self, txn: str, coupon: str | None = None) -> dict[str, Any]:
        """lane-1's own POS completes a sale over the POS HTTP API (with a coupon)."""
        basket = {"currency": "EUR", "total_minor": 2000,
                  "lines": [{"sku": "BASKET", "qty": 1, "unit_minor": 2000, "categories": []}]}
        if coupon is not None:
            assert self.pos("coupon.apply", {"txn": txn, "code": coupon,
                                             "basket": basket})["ok"]
        reply = self.pos("txn.complete", {"txn": txn, "basket": basket, "tenders": [],
                                          "total_minor": 1800 if coupon else 2000,
                                          "currency": "EUR"})
        assert reply["ok"], reply
        data: dict[str, Any] = reply["data"]
        return data

    def pos(self, method: str, data: dict[str, Any]) -> dict[str, Any]:
        answer = self.app.test_client().post(
            f"/api/v1/pos/lane-1/{method}", data=new_envelope(method, data).to_json(),
            headers={"Authorization": f"Bearer {self.lane_1_password}"})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        reply: dict[str, Any] = answer.get_json()
        return reply

    def audit(self) -> list[dict[str, Any]]:
        return self.edge.store.query("SELECT action, lane, txn, job, by, by_kind, approved_by, "
                                     "detail FROM till_audit ORDER BY id")

    def outbox(self, type_: str) -> list[dict[str, Any]]:
        return [json.loads(r["data"]) for r in self.edge.store.query(
            "SELECT data FROM outbox WHERE type = ? ORDER BY seq", (type_,))]


@dataclass
class Staff:
    """A signed-in browser session: opens the checkout page for a lane, then acts on it."""

    client: FlaskClient
    csrf: str
    lane: str = "staff-web"

    def open(self, lane: str) -> Any:
        page = self.client.get(f"/staff/checkout?lane={lane}", headers=JSON)
        if page.status_code == 200:
            token = re.search(r'name="csrf-token" content="([^"]+)"', page.get_data(as_text=True))
            assert token
            self.csrf, self.lane = token.group(1), lane
        return page

    def post(self, action: str, body: dict[str, Any], lane: str | None = None) -> Any:
        return self.client.post(f"/staff/checkout/{action}?lane={lane or self.lane}", json=body,
                                headers={"X-CSRFToken": self.csrf, **JSON})

    def sell(self, txn: str, coupon: str) -> None:
        """Total, coupon, Redeem: what the cashier does on the page."""
        applied = self.post("scan", {"txn": txn, "code": coupon, "total": "20.00"}).get_json()
        assert applied["reply"]["ok"], applied
        done = self.post("redeem", {"txn": txn, "total": "20.00",
                                    "discount_minor": applied["reply"]["data"]["discount_minor"]})
        assert done.get_json()["reply"]["ok"], done.get_json()

    def approval(self, txn: str, username: str = MANAGER, password: str = MANAGER_PW) -> Any:
        return self.post("approve", {"txn": txn, "username": username, "password": password})


def error(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.get_json()["error"]
    return body


@pytest.fixture
def make_till(settings: Settings) -> Iterator[Callable[[Settings], Till]]:
    made: list[Till] = []

    def _make(edge_settings: Settings) -> Till:
        app = create_app(edge_settings)
        svc: EdgeService = app.extensions["edge"]
        add_user(svc.store, MANAGER, MANAGER_PW, "manager")
        add_user(svc.store, CASHIER, CASHIER_PW, "cashier")
        add_user(svc.store, OTHER_CASHIER, OTHER_PW, "cashier")
        lane_1 = enrol(edge_settings, DataDir(edge_settings.data_path), svc.store, "pos",
                       "lane-1")
        enrol(edge_settings, DataDir(edge_settings.data_path), svc.store, "kiosk", "kiosk-1")
        till = Till(app, lane_1.password)
        made.append(till)
        return till

    yield _make
    for till in made:
        till.edge.stop()


@pytest.fixture
def till(settings: Settings, make_till: Callable[[Settings], Till]) -> Till:
    return make_till(settings)


def test_cashier_cannot_void_another_lanes_completed_sale(till: Till, issuer: Issuer) -> None:
    coupon = issuer.coupon()
    sold = till.lane_sells("L1-100", coupon)
    assert len(sold["redemptions"]) == 1
    cashier = till.sign_in(CASHIER, CASHIER_PW, "staff-web")

    refused = cashier.post("void", {"txn": "L1-100"}, lane="lane-1")
    assert refused.status_code == 403
    assert error(refused)["detail"] == {"reason": "other_lane", "lane": "lane-1",
                                        "signed_in_at": "staff-web"}
    assert "signed in at lane staff-web" in error(refused)["message"]
    # Nor by opening lane-1's page after staff-web: the sign-in belongs to staff-web.
    assert cashier.open("lane-1").status_code == 403
    # Nor with a manager's approval for it: the approval is asked on the cashier's lane.
    assert cashier.post("approve", {"txn": "L1-100", "username": MANAGER,
                                    "password": MANAGER_PW}, lane="lane-1").status_code == 403
    # The sale and its coupon use stand.
    assert till.edge.store.query_one("SELECT state FROM transactions WHERE txn = 'L1-100'") \
        == {"state": "completed"}
    assert till.edge.store.query_one("SELECT reversed_at FROM redemptions") == \
        {"reversed_at": None}
    assert till.audit() == []


def test_a_manager_may_switch_lanes_and_void_there(till: Till, issuer: Issuer) -> None:
    till.lane_sells("L1-101", issuer.coupon())
    manager = till.sign_in(MANAGER, MANAGER_PW, "staff-web")
    assert manager.open("lane-1").status_code == 200
    voided = manager.post("void", {"txn": "L1-101"})
    assert voided.status_code == 200
    assert voided.get_json()["reply"]["data"]["was"] == "completed"
    assert till.audit()[0] | {"detail": None} == {
        "action": "txn.void", "lane": "lane-1", "txn": "L1-101", "job": None, "by": MANAGER,
        "by_kind": "staff", "approved_by": None, "detail": None}


def test_own_lanes_completed_sale_needs_a_managers_approval_which_gives_the_coupon_back(
        till: Till, issuer: Issuer) -> None:
    coupon = issuer.coupon()
    cashier = till.sign_in(CASHIER, CASHIER_PW, "staff-web")
    cashier.sell("web-1", coupon)

    refused = cashier.post("void", {"txn": "web-1"})
    assert refused.status_code == 403
    assert error(refused)["code"] == "forbidden"
    assert error(refused)["detail"] == {"reason": "manager_required", "txn": "web-1"}
    assert "needs a manager" in error(refused)["message"]
    # Still used: a second sale cannot take the coupon.
    assert cashier.post("scan", {"txn": "web-2", "code": coupon, "total": "20.00"}
                        ).get_json()["reply"]["error"]["code"] == "coupon_used"

    granted = cashier.approval("web-1")
    assert granted.status_code == 200
    assert granted.get_json()["manager"] == MANAGER
    voided = cashier.post("void", {"txn": "web-1", "approval": granted.get_json()["approval"]})
    assert voided.status_code == 200, voided.get_json()
    assert voided.get_json()["reply"]["data"]["was"] == "completed"
    assert len(voided.get_json()["reply"]["data"]["reversed"]) == 1
    # The coupon is free again.
    again = cashier.post("scan", {"txn": "web-3", "code": coupon, "total": "20.00"})
    assert again.get_json()["reply"]["ok"] is True

    entry = till.audit()[-1]
    assert entry | {"detail": None} == {
        "action": "txn.void", "lane": "staff-web", "txn": "web-1", "job": None, "by": CASHIER,
        "by_kind": "staff", "approved_by": MANAGER, "detail": None}
    assert json.loads(entry["detail"]) == {"was": "completed", "reversed": 1}
    [event] = till.outbox("transaction.voided")
    assert (event["txn"], event["by"], event["by_kind"], event["approved_by"]) == \
        ("web-1", CASHIER, "staff", MANAGER)


def test_voiding_an_open_sale_stays_a_cashiers_action_and_is_recorded(
        till: Till, issuer: Issuer) -> None:
    cashier = till.sign_in(CASHIER, CASHIER_PW, "staff-web")
    held = cashier.post("scan", {"txn": "web-4", "code": issuer.coupon(), "total": "20.00"})
    assert held.get_json()["reply"]["ok"]
    voided = cashier.post("void", {"txn": "web-4"})
    assert voided.status_code == 200
    assert voided.get_json()["reply"]["data"]["was"] == "open"
    assert [(a["action"], a["by"], a["approved_by"]) for a in till.audit()] == \
        [("txn.void", CASHIER, None)]
    [event] = till.outbox("staff.action")
    assert event["action"] == "txn.void" and event["was"] == "open" and event["by"] == CASHIER
    assert till.outbox("transaction.voided") == []


def test_wrong_manager_password_is_refused_and_counts_towards_the_lock_out(
        till: Till, issuer: Issuer) -> None:
    cashier = till.sign_in(CASHIER, CASHIER_PW, "staff-web")
    cashier.sell("web-5", issuer.coupon())
    for i in range(POLICY.max_failures):
        wrong = cashier.approval("web-5", password=f"not-the-password-{i}")
        assert wrong.status_code == 403
        assert error(wrong)["detail"] == {"reason": "approval_refused", "why": "credentials"}
    assert till.edge.store.query_one(
        "SELECT failures, locked_until > 0 AS locked FROM login_failures WHERE username = ? "
        "AND client = '*'", (MANAGER,)) == {"failures": POLICY.max_failures, "locked": 0}
    # Locked like a sign-in: now even the right password is refused from this machine ...
    assert cashier.approval("web-5").status_code == 403
    # ... and the manager cannot sign in here either, for the same count.
    basic = b64encode(f"{MANAGER}:{MANAGER_PW}".encode()).decode()
    assert till.app.test_client().get(
        "/api/v1/devices", headers={"Authorization": f"Basic {basic}"}).status_code == 401
    assert cashier.post("void", {"txn": "web-5"}).status_code == 403
    assert till.audit() == []


def test_a_cashier_cannot_approve(till: Till, issuer: Issuer) -> None:
    cashier = till.sign_in(CASHIER, CASHIER_PW, "staff-web")
    cashier.sell("web-6", issuer.coupon())
    for who, password in ((OTHER_CASHIER, OTHER_PW), (CASHIER, CASHIER_PW)):
        refused = cashier.approval("web-6", who, password)
        assert refused.status_code == 403
        assert error(refused)["detail"] == {"reason": "approval_refused", "why": "not_manager"}
        assert f"{who} is not a manager" in error(refused)["message"]
    assert till.edge.store.query("SELECT * FROM staff_approvals") == []


def test_an_approval_is_good_for_one_action_only(till: Till, issuer: Issuer) -> None:
    cashier = till.sign_in(CASHIER, CASHIER_PW, "staff-web")
    cashier.sell("web-7", issuer.coupon())
    cashier.sell("web-8", issuer.coupon())
    approval = cashier.approval("web-7").get_json()["approval"]
    # Not for another sale (and that try uses it up) ...
    other = cashier.post("void", {"txn": "web-8", "approval": approval})
    assert other.status_code == 403
    assert error(other)["detail"] == {"reason": "approval_refused", "why": "other_action"}
    used_up = cashier.post("void", {"txn": "web-7", "approval": approval})
    assert error(used_up)["detail"] == {"reason": "approval_refused", "why": "used"}

    approval = cashier.approval("web-7").get_json()["approval"]
    # ... not for another cashier ...
    tom = till.sign_in(OTHER_CASHIER, OTHER_PW, "staff-web")
    assert error(tom.post("void", {"txn": "web-7", "approval": approval}))["detail"]["why"] \
        == "other_action"

    approval = cashier.approval("web-7").get_json()["approval"]
    assert cashier.post("void", {"txn": "web-7", "approval": approval}).status_code == 200
    # ... and never twice: the same approval sent again is refused.
    replay = cashier.post("void", {"txn": "web-7", "approval": approval})
    assert replay.status_code == 403
    assert error(replay)["detail"] == {"reason": "approval_refused", "why": "used"}
    assert "already used" in error(replay)["message"]
    assert [a["txn"] for a in till.audit()] == ["web-7"]


@pytest.mark.parametrize(("lane", "status", "detail"), [
    ("lane-9", 404, {"field": "lane", "reason": "lane_unknown", "lane": "lane-9"}),
    ("kiosk-1", 404, {"field": "lane", "reason": "lane_unknown", "lane": "kiosk-1"}),
    ("Lane_4", 400, {"field": "lane"}),
    ("x" * 40, 400, {"field": "lane"}),
])
def test_lane_must_be_an_enrolled_pos_lane(till: Till, lane: str, status: int,
                                           detail: dict[str, str]) -> None:
    manager = till.sign_in(MANAGER, MANAGER_PW)
    page = manager.open(lane)
    assert page.status_code == status
    assert page.get_json()["error"]["detail"] == detail
    cashier = till.sign_in(CASHIER, CASHIER_PW, "staff-web")
    action = cashier.post("scan", {"txn": "web-9", "code": "4000123412341234"}, lane=lane)
    assert action.status_code == status
    assert error(action)["detail"] == detail
    if status == 404:
        assert error(action)["message"] == (
            f"There is no lane {lane} at this store: the checkout page works for staff-web "
            "and the enrolled POS lanes.")


def test_a_cashier_signed_in_at_lane_1_works_there_only(till: Till, issuer: Issuer) -> None:
    cashier = till.sign_in(CASHIER, CASHIER_PW, "lane-1")
    assert cashier.post("scan", {"txn": "L1-7", "code": issuer.coupon(), "total": "20.00"}
                        ).get_json()["reply"]["ok"]
    assert cashier.post("scan", {"txn": "W-7", "code": issuer.coupon(), "total": "20.00"},
                        lane="staff-web").status_code == 403
    assert cashier.open("staff-web").status_code == 403


def test_a_cashiers_first_action_binds_the_sign_in_to_the_page_lane(till: Till,
                                                                      issuer: Issuer) -> None:
    cashier = till.sign_in(CASHIER, CASHIER_PW)
    token = re.search(r'name="csrf_token" value="([^"]+)"',
                      cashier.client.get("/staff/receipts/").get_data(as_text=True))
    assert token
    cashier.csrf = token.group(1)
    assert cashier.post("scan", {"txn": "W-8", "code": issuer.coupon(), "total": "20.00"}
                        ).get_json()["reply"]["ok"]
    assert error(cashier.open("lane-1"))["detail"]["reason"] == "other_lane"


def test_a_lanes_own_pos_voids_without_a_manager_and_is_recorded_as_the_device(
        till: Till, issuer: Issuer) -> None:
    till.lane_sells("L1-200", issuer.coupon())
    reply = till.pos("txn.void", {"txn": "L1-200"})
    assert reply["ok"] and reply["data"]["was"] == "completed"
    assert till.audit()[0] | {"detail": None} == {
        "action": "txn.void", "lane": "lane-1", "txn": "L1-200", "job": None, "by": "lane-1",
        "by_kind": "device", "approved_by": None, "detail": None}
    [event] = till.outbox("transaction.voided")
    assert (event["by"], event["by_kind"], event["approved_by"]) == ("lane-1", "device", None)


def reprint_job(till: Till) -> str:
    add_printer(till.edge.settings, DataDir(till.edge.settings.data_path), till.edge.store,
                "printer-1", lanes=["lane-1"], connection=None, profile="default")
    job: str = till.lane_sells("L1-300")["receipt"]["job"]
    till.edge.store.write(lambda db: db.execute(
        "UPDATE print_jobs SET state = 'printed' WHERE job = ?", (job,)))
    return job


def receipt_page(staff: Staff, job: str) -> str:
    page = staff.client.get(f"/staff/receipts/{job}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    staff.csrf = token.group(1)
    return page


def test_reprint_by_a_cashier_needs_a_managers_approval_and_is_audited(till: Till) -> None:
    job = reprint_job(till)
    cashier = till.sign_in(CASHIER, CASHIER_PW)
    page = receipt_page(cashier, job)
    assert f'data-approve="/staff/receipts/{job}/approve"' in page

    refused = cashier.client.post(f"/staff/receipts/{job}/reprint",
                                  data={"csrf_token": cashier.csrf}, headers=JSON)
    assert refused.status_code == 403
    assert error(refused)["detail"] == {"reason": "manager_required", "job": job}
    assert till.edge.store.query_one("SELECT COUNT(*) AS n FROM print_jobs") == {"n": 1}

    approve = f"/staff/receipts/{job}/approve"
    headers = {"X-CSRFToken": cashier.csrf, **JSON}
    assert error(cashier.client.post(approve, json={"username": OTHER_CASHIER,
                                                    "password": OTHER_PW}, headers=headers)
                 )["detail"]["why"] == "not_manager"
    granted = cashier.client.post(approve, json={"username": MANAGER, "password": MANAGER_PW},
                                  headers=headers).get_json()
    copied = cashier.client.post(f"/staff/receipts/{job}/reprint",
                                 data={"csrf_token": cashier.csrf,
                                       "approval": granted["approval"]})
    assert copied.status_code == 302
    copies = till.edge.store.query("SELECT job FROM print_jobs WHERE copy_of = ?", (job,))
    assert len(copies) == 1
    # The same approval does not print a second copy.
    replay = cashier.client.post(f"/staff/receipts/{job}/reprint",
                                 data={"csrf_token": cashier.csrf,
                                       "approval": granted["approval"]}, headers=JSON)
    assert replay.status_code == 403
    assert error(replay)["detail"]["why"] == "used"
    assert till.edge.store.query_one("SELECT COUNT(*) AS n FROM print_jobs") == {"n": 2}

    [entry] = till.audit()
    assert entry | {"detail": None} == {
        "action": "receipt.reprint", "lane": "lane-1", "txn": "L1-300", "job": job,
        "by": CASHIER, "by_kind": "staff", "approved_by": MANAGER, "detail": None}
    assert json.loads(entry["detail"]) == {"copy": True, "new_job": copies[0]["job"]}
    [event] = till.outbox("staff.action")
    assert (event["action"], event["job"], event["by"], event["approved_by"], event["copy"]) \
        == ("receipt.reprint", job, CASHIER, MANAGER, True)

    # A manager reprints without an approval; the audit page lists both, for managers only.
    manager = till.sign_in(MANAGER, MANAGER_PW)
    receipt_page(manager, job)
    assert manager.client.post(f"/staff/receipts/{job}/reprint",
                               data={"csrf_token": manager.csrf}).status_code == 302
    audit = manager.client.get("/staff/audit")
    assert audit.status_code == 200
    text = audit.get_data(as_text=True)
    assert text.count('data-action="receipt.reprint"') == 2 and "copy of a receipt" in text
    assert cashier.client.get("/staff/audit").status_code == 403


def hub_events_of(hub: HubServer, store_id: str, type_: str) -> list[dict[str, Any]]:
    db = HubDB(hub.settings.db_url)
    try:
        with db.read() as conn:
            rows = conn.execute(select(hub_events.c.data, hub_events.c.device_id)
                                .where(hub_events.c.store_id == store_id)
                                .where(hub_events.c.type == type_)).all()
    finally:
        db.dispose()
    return [{**json.loads(r.data), "device_id": r.device_id} for r in rows]


def test_an_approved_void_and_a_reprint_reach_the_hub_with_who_did_them(
        settings: Settings, hub_server: HubServer,
        make_till: Callable[[Settings], Till], issuer: Issuer) -> None:
    token = hub_server.add_store(settings.store_id)
    till = make_till(settings.with_overrides(hub_url=hub_server.url, hub_token=token,
                                             sync_pull_interval_s=3600))
    cashier = till.sign_in(CASHIER, CASHIER_PW, "staff-web")
    cashier.sell("web-10", issuer.coupon())
    approval = cashier.approval("web-10").get_json()["approval"]
    assert cashier.post("void", {"txn": "web-10", "approval": approval}).status_code == 200
    job = reprint_job(till)
    manager = till.sign_in(MANAGER, MANAGER_PW)
    receipt_page(manager, job)
    assert manager.client.post(f"/staff/receipts/{job}/reprint",
                               data={"csrf_token": manager.csrf}).status_code == 302

    till.edge.sender.run()
    assert till.edge.store.query("SELECT type FROM outbox") == []
    assert till.edge.sender.dead_letters() == []
    [voided] = hub_events_of(hub_server, settings.store_id, "transaction.voided")
    assert (voided["txn"], voided["by"], voided["by_kind"], voided["approved_by"],
            voided["device_id"]) == ("web-10", CASHIER, "staff", MANAGER, "staff-web")
    [reprinted] = hub_events_of(hub_server, settings.store_id, "staff.action")
    assert (reprinted["action"], reprinted["job"], reprinted["by"], reprinted["approved_by"],
            reprinted["lane"]) == ("receipt.reprint", job, MANAGER, None, "lane-1")


def test_the_hub_refuses_a_staff_action_that_does_not_say_who(hub_server: HubServer
                                                              ) -> None:
    token = hub_server.add_store("s1")
    who = {"by": "carla", "by_kind": "staff", "approved_by": "mia"}
    good = event("s1", "staff.action", data={"action": "receipt.reprint", "job": "j-1", **who})
    nobody = event("s1", "staff.action", data={"action": "receipt.reprint", "job": "j-2"})
    odd = event("s1", "staff.action", data={"action": "txn.refund", "txn": "t-1", **who})
    voided = event("s1", "transaction.voided", data={"txn": "t-2", **who,
                                                     "approved_by": "Not A Name"})
    answer = requests.post(f"{hub_server.url}/api/v1/stores/s1/events",
                           json={"batch_id": "b-1", "events": [good, nobody, odd, voided]},
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code == 400
    assert [(r["index"], r["error"]) for r in answer.json()["error"]["detail"]["rejected"]] == [
        (1, "data.by: missing or not a staff user name or device id"),
        (2, "data.action: not one of txn.void, receipt.reprint"),
        (3, "data.approved_by: not a staff user name")]
    accepted = requests.post(f"{hub_server.url}/api/v1/stores/s1/events",
                             json={"batch_id": "b-2", "events": [good]},
                             headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert accepted.json()["accepted"] == [good["event_id"]]


def test_a_refused_lane_is_explained_on_a_staff_page_with_the_way_back(till: Till) -> None:
    cashier = till.sign_in(CASHIER, CASHIER_PW, "lane-1")
    page = cashier.client.get("/staff/checkout?lane=staff-web", headers={"Accept": "text/html"})
    assert page.status_code == 403
    html = page.get_data(as_text=True)
    assert "<h1>Not allowed here</h1>" in html
    assert "signed in at lane-1 and" in html and "lane lane-1" not in html
    assert 'href="/staff/checkout"' in html and f"{CASHIER} (cashier)" in html
    assert page.headers["Content-Security-Policy"].endswith("frame-ancestors 'none'")
