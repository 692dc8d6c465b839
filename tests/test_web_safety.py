"""The staff pages stay pages of the edge: where a sign-in may send the browser, the headers
every page carries, and the size of what the edge reads (edge/websafe.py; the hub's
dashboard uses the same function, see tests/test_hub_dashboard.py).

Open-redirect targets are tried in real Chromium against a real `edge serve`."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import requests
from playwright.sync_api import Page, expect

from edge.accounts import add_user
from edge.settings import Settings
from edge.store import Store
from store_contract.web import local_path
from tests import browser as chromium
from tests.conftest import EdgeProc, wait_until

playwright, browser, page = chromium.playwright, chromium.browser, chromium.page

MANAGER, MANAGER_PW = "mia", "manager-password-1"

# Each would take the browser to another site (or run script) if it were followed as it is,
# after a browser's own clean-up, or once percent-decoded.
ESCAPES = [
    "//evil.example/x", "///evil.example/x", "////evil.example", "/\\evil.example",
    "\\\\evil.example", "\\/evil.example", "https:evil.example", "https://evil.example/",
    "http:/evil.example", "javascript:alert(1)", "data:text/html,hi", "evil.example",
    "/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", " //evil.example",
    "/%2F/evil.example", "/%2f%2fevil.example", "%2F%2Fevil.example", "/%5Cevil.example",
    "/%5cevil.example", "/%09/evil.example", "/%252F%252Fevil.example",
    "/%25252F%25252Fevil.example", "/staff/%5C..%5C", "/" + "a" * 3000,
]
# Paths of the site itself, query strings and encoded characters included, stay as they are.
LOCAL = ["/staff/devices", "/staff/checkout?lane=pos-1", "/staff/receipts/?q=a%20b&x=1",
         "/staff/sync/", "/staff/x%2Fy", "/staff/%C3%A9t%C3%A9", "/"]


@pytest.mark.parametrize("target", ESCAPES)
def test_a_target_that_leaves_the_site_falls_back(target: str) -> None:
    assert local_path(target, "/fallback") == "/fallback"


@pytest.mark.parametrize("target", LOCAL)
def test_a_path_of_the_site_is_kept(target: str) -> None:
    assert local_path(target, "/fallback") == target


def test_no_target_falls_back() -> None:
    assert local_path(None, "/fallback") == "/fallback"
    assert local_path("", "/fallback") == "/fallback"


@pytest.fixture
def staff_edge(settings: Settings, store: Store,
               edge_process: EdgeProc) -> str:
    add_user(store, MANAGER, MANAGER_PW, "manager")
    base = f"http://127.0.0.1:{edge_process.http_port}"
    assert wait_until(lambda: requests.get(f"{base}/healthz", timeout=2).ok, 15)
    return base


def sign_in_with_each_next(page: Page, login: str, user: str, password: str, home: str,
                           local: str) -> None:
    """Sign in at `login` with each escaping `?next=` (the browser must land on `home`) and
    with the site's own path `local` (it must land there); no request ever leaves."""
    site = login.split("/", 3)[:3]
    base = "/".join(site)
    asked: list[str] = []
    page.on("request", lambda req: asked.append(req.url))
    for target in [t for t in ESCAPES if len(t) < 100] + [local]:
        page.context.clear_cookies()
        page.goto(f"{login}?next={quote(target, safe='')}")
        page.get_by_label("Username").fill(user)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()
        expect(page).to_have_url(f"{base}{local if target == local else home}")
    assert [u for u in asked if "evil.example" in u.split("?")[0]] == []


def test_chromium_stays_on_the_edge_after_signing_in_with_any_next(staff_edge: str,
                                                                   page: Page) -> None:
    sign_in_with_each_next(page, f"{staff_edge}/staff/login", MANAGER, MANAGER_PW,
                           "/staff/devices", "/staff/sync/")


def test_staff_pages_carry_the_security_headers_and_are_not_cached(staff_edge: str) -> None:
    with requests.Session() as s:
        login = s.get(f"{staff_edge}/staff/login")
        for resp in (login, s.get(f"{staff_edge}/staff/devices", allow_redirects=False)):
            assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Cache-Control"] == "no-store"
        static = s.get(f"{staff_edge}/staff/static/checkout.js")
        assert static.status_code == 200
        assert static.headers["X-Content-Type-Options"] == "nosniff"
        assert "no-store" not in static.headers.get("Cache-Control", "")


def test_a_body_over_the_limit_is_refused_before_it_is_read(settings: Settings,
                                                             staff_edge: str) -> None:
    limit = settings.http_max_body_bytes
    url = f"{staff_edge}/api/v1/pos/pos-1/coupon.apply"
    too_big = requests.post(url, data=b"{" + b" " * limit + b"}",
                            headers={"Authorization": "Bearer x",
                                     "Content-Type": "application/json"}, timeout=10)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "request_entity_too_large"
    # Sent chunked, with no length to refuse it by: cut off at the limit all the same.
    chunks = (b" " * 65536 for _ in range(limit // 65536 + 2))
    chunked = requests.post(url, data=chunks, headers={"Authorization": "Bearer x"},
                            timeout=10)
    assert chunked.status_code == 413
    # A sign-in form far over the limit: 413, and the edge still answers.
    form = requests.post(f"{staff_edge}/staff/login",
                         data={"username": "x" * (limit + 10), "password": "y"}, timeout=10)
    assert form.status_code == 413
    assert requests.get(f"{staff_edge}/healthz", timeout=5).ok
    # A body within the limit is read and judged on its merits (here: a wrong token).
    small = requests.post(url, data=b"{}", headers={"Authorization": "Bearer x"}, timeout=10)
    assert small.status_code == 401



@pytest.mark.parametrize("token", ["", "a-monitor-token-1"])
def test_details_are_the_monitors_and_liveness_is_anyones(settings: Settings,
                                                          token: str) -> None:
    import dataclasses

    from edge.app import create_app

    app = create_app(dataclasses.replace(settings, monitor_token=token))
    try:
        client = app.test_client()
        lan = {"REMOTE_ADDR": "10.0.4.17"}
        live = client.get("/healthz", environ_base=lan)
        assert live.status_code == 200 and live.get_json() == {"status": "degraded"}
        metrics = client.get("/metrics", environ_base=lan)
        assert metrics.status_code == 401 and b"edge_" not in metrics.data
        wrong = client.get("/metrics", environ_base=lan,
                           headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
        if token:
            ok = {"Authorization": f"Bearer {token}"}
            assert "database" in client.get("/healthz", environ_base=lan, headers=ok).get_json()
            assert client.get("/metrics", environ_base=lan, headers=ok).status_code == 200
            # With a token set, the box itself needs it too.
            assert client.get("/metrics").status_code == 401
        else:
            assert "database" in client.get("/healthz").get_json()  # from 127.0.0.1
            assert client.get("/metrics").status_code == 200
    finally:
        app.extensions["edge"].stop()
