"""Staff sign-in against a real `edge serve`: wrong passwords counted atomically per
account and client, nobody locked out from someone else's machine, the same answer for
unknown and locked accounts, and sessions that end when the account goes or its password
changes (edge/staff/accounts.py; docs/operations.md §6)."""

from __future__ import annotations

import http.client
import re
import subprocess
import threading
from base64 import b64encode
from pathlib import Path

import pytest
import requests

from edge.accounts import POLICY, add_user
from edge.settings import Settings
from edge.store import Store
from tests.conftest import EdgeProc, edge_cli, edge_env, edge_log, wait_until

pytestmark = pytest.mark.app

MANAGER, MANAGER_PW = "mia", "manager-password-1"
CASHIER, CASHIER_PW = "tom", "cashier-password-1"


@pytest.fixture
def staff_edge(settings: Settings, store: Store,
               edge_process: EdgeProc) -> str:
    add_user(store, MANAGER, MANAGER_PW, "manager")
    add_user(store, CASHIER, CASHIER_PW, "cashier")
    base = f"http://127.0.0.1:{edge_process.http_port}"
    assert wait_until(lambda: requests.get(f"{base}/healthz", timeout=2).ok, 15)
    return base


def basic_get(base: str, user: str, password: str, source: str = "127.0.0.1") -> int:
    """GET /api/v1/devices with HTTP Basic from the loopback address `source`; the status."""
    conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=30,
                                      source_address=(source, 0))
    try:
        token = b64encode(f"{user}:{password}".encode()).decode()
        conn.request("GET", "/api/v1/devices", headers={"Authorization": f"Basic {token}"})
        return conn.getresponse().status
    finally:
        conn.close()


def refusals(settings: Settings, kind: str) -> int:
    return len(re.findall(rf"staff sign-in as \S+ from \S+ refused: {kind}",
                          edge_log(settings).read_text()))


def test_forty_parallel_wrong_passwords_get_five_tries(staff_edge: str,
                                                       settings: Settings) -> None:
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda i=i: statuses.append(
        basic_get(staff_edge, MANAGER, f"guess-{i:04d}-xx"))) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [401] * 40
    # Exactly as many passwords were checked as one after another would have been.
    assert wait_until(lambda: refusals(settings, "wrong password") == POLICY.max_failures, 5), \
        edge_log(settings).read_text()[-3000:]
    assert refusals(settings, "locked") == 40 - POLICY.max_failures
    # Locked for this client, even with the right password ...
    assert basic_get(staff_edge, MANAGER, MANAGER_PW) == 401
    # ... but not for the manager at another machine.
    assert basic_get(staff_edge, MANAGER, MANAGER_PW, source="127.0.0.2") == 200


def test_unknown_and_locked_accounts_get_the_same_answer(staff_edge: str,
                                                         settings: Settings) -> None:
    for i in range(POLICY.max_failures):
        basic_get(staff_edge, CASHIER, f"wrong-{i}-password")
    login = f"{staff_edge}/staff/login"
    with requests.Session() as s:
        token = re.search(r'name="csrf_token" value="([^"]+)"', s.get(login).text)
        assert token is not None
        locked = s.post(login, data={"csrf_token": token[1], "username": CASHIER,
                                     "password": CASHIER_PW})
        unknown = s.post(login, data={"csrf_token": token[1], "username": "nobody-here",
                                      "password": CASHIER_PW})
    assert locked.status_code == unknown.status_code == 200
    body = [re.sub(r'value="[^"]*"', "", r.text).replace(CASHIER, "X").replace("nobody-here", "X")
            for r in (locked, unknown)]
    assert body[0] == body[1]
    assert "Wrong username or password" in body[0]


def _signed_in(base: str, user: str, password: str) -> requests.Session:
    s = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', s.get(f"{base}/staff/login").text)
    assert token is not None
    reply = s.post(f"{base}/staff/login", data={"csrf_token": token[1], "username": user,
                                                "password": password}, allow_redirects=False)
    assert reply.status_code == 302, reply.text[:500]
    assert s.get(f"{base}/api/v1/devices").status_code == 200
    return s


def _edge(settings: Settings, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([*edge_cli(), *args], env=edge_env(settings), input=stdin,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_removing_a_cashier_or_changing_a_password_ends_the_sessions(
        staff_edge: str, settings: Settings) -> None:
    cashier = _signed_in(staff_edge, CASHIER, CASHIER_PW)
    manager = _signed_in(staff_edge, MANAGER, MANAGER_PW)
    assert '"removed": true' in _edge(settings, "staff", "remove", CASHIER)
    assert cashier.get(f"{staff_edge}/api/v1/devices").status_code == 401
    # Made again with the same name: the old session stays ended.
    _edge(settings, "staff", "add", CASHIER, "--role", "cashier", "--password-stdin",
          stdin=CASHIER_PW + "\n")
    assert cashier.get(f"{staff_edge}/api/v1/devices").status_code == 401

    _edge(settings, "staff", "passwd", MANAGER, "--password-stdin",
          stdin="a-new-manager-password\n")
    assert manager.get(f"{staff_edge}/api/v1/devices").status_code == 401
    _signed_in(staff_edge, MANAGER, "a-new-manager-password")


@pytest.mark.process
def test_removing_an_unknown_account_says_so(settings: Settings, store: Store,
                                             tmp_path: Path) -> None:
    done = subprocess.run([*edge_cli(), "staff", "remove", "nobody"], env=edge_env(settings),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "no staff user 'nobody'" in done.stderr


@pytest.mark.parametrize("later_s, still_in", [
    (59 * 60, True),            # busy within the idle time ...
    (61 * 60, False),           # ... idle for longer than staff_idle_minutes (60)
])
def test_a_session_ends_after_the_idle_time(settings: Settings, later_s: float,
                                            still_in: bool,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.app import create_app
    from edge.app.staff import auth

    app = create_app(settings)
    try:
        add_user(app.extensions["edge"].store, MANAGER, MANAGER_PW, "manager")
        app.config["WTF_CSRF_ENABLED"] = False
        client = app.test_client()
        assert client.post("/staff/login", data={"username": MANAGER,
                                                 "password": MANAGER_PW}).status_code == 302
        assert client.get("/api/v1/devices").status_code == 200
        start = auth.time.time()
        monkeypatch.setattr(auth.time, "time", lambda: start + later_s)
        assert (client.get("/api/v1/devices").status_code == 200) is still_in
    finally:
        app.extensions["edge"].stop()


def test_a_busy_session_still_ends_after_staff_session_hours(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.app import create_app
    from edge.app.staff import auth

    app = create_app(settings)
    try:
        add_user(app.extensions["edge"].store, MANAGER, MANAGER_PW, "manager")
        app.config["WTF_CSRF_ENABLED"] = False
        client = app.test_client()
        client.post("/staff/login", data={"username": MANAGER, "password": MANAGER_PW})
        start = auth.time.time()
        # A request every 50 minutes keeps it from idling, until 12 hours have passed.
        for step in range(1, 16):
            monkeypatch.setattr(auth.time, "time", lambda step=step: start + step * 50 * 60)
            expected = 200 if step * 50 * 60 <= settings.staff_session_hours * 3600 else 401
            assert client.get("/api/v1/devices").status_code == expected, step
    finally:
        app.extensions["edge"].stop()
