"""HTTP: one JSON error shape, staff sign-in with roles and CSRF, /healthz and /metrics."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from edge.accounts import add_user
from edge.app import create_app
from edge.settings import Settings
from tests.conftest import EdgeProc, edge_log, wait_until

pytestmark = pytest.mark.app

MANAGER_PW = "manager-password-1"
CASHIER_PW = "cashier-password-1"


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    service = app.extensions["edge"]
    add_user(service.store, "mia", MANAGER_PW, "manager")
    add_user(service.store, "carl", CASHIER_PW, "cashier")
    yield app
    service.stop()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def assert_error_shape(body: Any, code: str) -> None:
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert set(body["error"]) <= {"code", "message", "detail"}


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("get", "/api/v1/nothing-here", 404, "not_found"),
    ("post", "/api/v1/devices", 405, "method_not_allowed"),
    ("get", "/api/v1/devices", 401, "unauthorized"),
])
def test_every_api_error_has_the_one_json_shape(client: FlaskClient, method: str, path: str,
                                                status: int, code: str) -> None:
    resp = getattr(client, method)(path)
    assert resp.status_code == status
    assert resp.is_json
    assert_error_shape(resp.get_json(), code)


def test_a_crash_in_a_view_answers_the_same_shape(app: Flask) -> None:
    @app.get("/api/v1/test-crash")
    def crash() -> None:
        raise RuntimeError("bug")

    resp = app.test_client().get("/api/v1/test-crash")
    assert resp.status_code == 500
    assert_error_shape(resp.get_json(), "internal_error")


def test_devices_api_needs_staff_and_lists_devices(client: FlaskClient, app: Flask) -> None:
    from edge.devices import enrol

    svc = app.extensions["edge"]
    enrol(svc.settings, svc.datadir, svc.store, "pos", "lane-1")
    assert client.get("/api/v1/devices", headers=basic("mia", "wrong")).status_code == 401
    resp = client.get("/api/v1/devices", headers=basic("carl", CASHIER_PW))
    assert resp.status_code == 200
    [dev] = resp.get_json()["devices"]
    assert (dev["kind"], dev["id"], dev["state"], dev["last_seen"]) == (
        "pos", "lane-1", "unknown", None)
    assert "password_hash" not in dev


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "form has no CSRF token"
    return match.group(1)


def test_staff_login_needs_the_csrf_token(client: FlaskClient) -> None:
    resp = client.post("/staff/login", data={"username": "mia", "password": MANAGER_PW})
    assert resp.status_code == 400
    token = _csrf(client.get("/staff/login").get_data(as_text=True))
    resp = client.post("/staff/login", data={"username": "mia", "password": MANAGER_PW,
                                             "csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/staff/devices")
    page = client.get("/staff/devices")
    assert page.status_code == 200 and "mia (manager)" in page.get_data(as_text=True)


def test_staff_pages_redirect_to_login_and_never_to_another_site(client: FlaskClient) -> None:
    resp = client.get("/staff/devices")
    assert resp.status_code == 302 and "/staff/login" in resp.headers["Location"]
    resp = client.get("/staff/checkout?lane=lane-4")
    assert resp.headers["Location"].endswith("/staff/login?next=/staff/checkout?lane%3Dlane-4")
    token = _csrf(client.get("/staff/login").get_data(as_text=True))
    resp = client.post("/staff/login?next=//evil.example/x",
                       data={"username": "mia", "password": MANAGER_PW, "csrf_token": token})
    assert resp.headers["Location"] == "/staff/devices"


def test_repeated_wrong_passwords_lock_the_account(client: FlaskClient) -> None:
    for _ in range(5):
        assert client.get("/api/v1/devices", headers=basic("carl", "guess")).status_code == 401
    locked = client.get("/api/v1/devices", headers=basic("carl", CASHIER_PW))
    assert locked.status_code == 401


def test_passwords_are_stored_hashed_with_scrypt(app: Flask) -> None:
    row = app.extensions["edge"].store.query_one(
        "SELECT password_hash FROM staff_users WHERE username = 'mia'")
    assert row["password_hash"].startswith("scrypt:") and MANAGER_PW not in row["password_hash"]


def test_healthz_reports_database_broker_and_queue(client: FlaskClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["database"]["ok"] is True
    assert body["broker"]["connected"] is False  # not started: reported, not hidden
    assert body["queue"]["depth"] == 0 and body["status"] == "degraded"


def test_metrics_are_prometheus_text(client: FlaskClient) -> None:
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    for name in ("edge_bus_connected", "edge_outbox_depth", "edge_devices_online"):
        assert f"# TYPE {name} gauge" in text
    # One charset, and the text format version Prometheus servers of every age read.
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_metrics_speak_openmetrics_to_a_scraper_that_asks(client: FlaskClient) -> None:
    resp = client.get("/metrics", headers={
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"})
    assert resp.status_code == 200
    params = [p.strip() for p in resp.headers["Content-Type"].split(";")]
    assert params[0] == "application/openmetrics-text"
    assert [p for p in params if p.startswith("charset=")] == ["charset=utf-8"]
    assert resp.get_data(as_text=True).rstrip().endswith("# EOF")


def test_served_edge_is_healthy_and_stops_cleanly_on_sigterm(
        settings: Settings, edge_process: EdgeProc) -> None:
    url = f"http://127.0.0.1:{edge_process.http_port}/healthz"
    assert wait_until(lambda: requests.get(url, timeout=2).json()["broker"]["connected"], 15)
    body = requests.get(url, timeout=2).json()
    assert body["status"] == "ok"
    metrics = requests.get(f"http://127.0.0.1:{edge_process.http_port}/metrics", timeout=2).text
    assert "edge_bus_connected 1.0" in metrics
    edge_process.terminate()
    assert edge_process.wait(15) == 0
    out = edge_log(settings).read_text()
    assert "edge: stopped" in out and "Traceback" not in out
