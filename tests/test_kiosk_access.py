"""Kiosk enrolment, pairing a kiosk's browser, and what the kiosk credential opens
(docs/kiosk.md, "Enrolment and pairing").

The pairing goes through the edge's real pages (Flask test client; the pairing screen also
in real Chromium against `edge serve`) and the real `edge` command; the credential is
tried on staff pages, the API, the HTTP POS route and a real Mosquitto.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser, expect

from edge import kiosks
from edge.accounts import add_user
from edge.app import create_app
from edge.app.kiosk_access import KIOSK_COOKIE, PAIRING_COOKIE, current_kiosk
from edge.datadir import DataDir
from edge.devices import authenticate, enrol
from edge.kiosks import add_kiosk, get_kiosk, list_kiosks, pair_kiosk, start_pairing
from edge.scanners import route_of
from edge.settings import Settings
from edge.store import Store
from pos_bridge.device import DeviceClient, DeviceError
from tests import browser as chromium
from tests.conftest import EdgeProc, at_once, edge_cli, edge_env, wait_until

playwright, browser = chromium.playwright, chromium.browser

MANAGER, MANAGER_PW = "mia", "manager-password-1"
OTHER_MANAGER, OTHER_PW = "max", "manager-password-2"
CASHIER, CASHIER_PW = "tom", "cashier-password-1"


# ------------------------------------------------------------------ helpers


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    """The edge's app (not started: no bus needed for pages), with two managers and a
    cashier, and a kiosk `k1` and a kiosk `k2`."""
    application = create_app(settings)
    svc = application.extensions["edge"]
    add_user(svc.store, MANAGER, MANAGER_PW, "manager")
    add_user(svc.store, OTHER_MANAGER, OTHER_PW, "manager")
    add_user(svc.store, CASHIER, CASHIER_PW, "cashier")
    for kiosk_id in ("k1", "k2"):
        add_kiosk(settings, svc.datadir, svc.store, kiosk_id)
    yield application
    svc.stop()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found[1]


def staff_client(app: Flask, user: str = MANAGER, password: str = MANAGER_PW) -> FlaskClient:
    """A browser signed in on the staff pages, as a person does it (with the form's token)."""
    client = app.test_client()
    token = csrf_of(client.get("/staff/login").get_data(as_text=True))
    reply = client.post("/staff/login", data={"csrf_token": token, "username": user,
                                              "password": password})
    assert reply.status_code == 302, reply.get_data(as_text=True)[:300]
    return client


def enter_code(staff: FlaskClient, kiosk_id: str, code: str) -> Any:
    """A manager types `code` for `kiosk_id` on /staff/kiosks and presses Pair."""
    token = csrf_of(staff.get("/staff/kiosks/").get_data(as_text=True))
    return staff.post(f"/staff/kiosks/{kiosk_id}/pair", data={"csrf_token": token, "code": code})


def screen_code(kiosk_browser: FlaskClient) -> str:
    """What the pairing screen shows this browser (the kiosk's own browser opens /kiosk/)."""
    start = kiosk_browser.get("/kiosk/")
    assert start.status_code == 302 and start.headers["Location"].endswith("/kiosk/pair")
    page = kiosk_browser.get("/kiosk/pair")
    assert page.status_code == 200
    found = re.search(r'id="code"[^>]*>(\d{4} \d{4})<', page.get_data(as_text=True))
    assert found, "the pairing screen shows no code"
    return found[1]


def credential_of(kiosk_browser: FlaskClient) -> str | None:
    cookie = kiosk_browser.get_cookie(KIOSK_COOKIE, path="/kiosk")
    return cookie.value if cookie else None


def paired_browser(app: Flask, kiosk_id: str, staff: FlaskClient | None = None
                   ) -> tuple[FlaskClient, str]:
    """A kiosk browser paired through the screen and the staff page; it and its credential."""
    kiosk_browser = app.test_client()
    code = screen_code(kiosk_browser)
    assert enter_code(staff or staff_client(app), kiosk_id, code).status_code == 302
    status = kiosk_browser.get("/kiosk/pair/status")
    assert status.get_json() == {"state": "paired", "go": f"/kiosk/{kiosk_id}/"}
    token = credential_of(kiosk_browser)
    assert token is not None, "the poll after pairing set no credential"
    return kiosk_browser, token


def kiosk_of(app: Flask, token: str) -> str | None:
    """Whom `current_kiosk()` names for a request carrying `token` as its kiosk cookie."""
    with app.test_request_context("/kiosk/", headers={"Cookie": f"{KIOSK_COOKIE}={token}"}):
        kiosk = current_kiosk()
        return kiosk.id if kiosk else None


def move_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Everything in edge.kiosks now happens `seconds` later than the real clock."""
    real = kiosks.time.time
    monkeypatch.setattr(kiosks, "_clock", lambda: real() + seconds)


def audit_rows(store: Store) -> list[dict[str, Any]]:
    return store.query("SELECT action, lane, by, by_kind, detail FROM till_audit "
                       "WHERE action LIKE 'kiosk.%' ORDER BY id")


def edge_command(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*edge_cli(), *args], env=edge_env(settings), capture_output=True,
                          text=True, timeout=60)


# ------------------------------------------------------------------ enrolment


def test_a_kiosk_is_enrolled_with_its_scanner_printer_and_languages(
        settings: Settings, datadir: DataDir, store: Store) -> None:
    enrol(settings, datadir, store, "scanner", "scan-k")
    enrol(settings, datadir, store, "printer", "prn-k")
    kiosk, login = add_kiosk(settings, datadir, store, "entrance", scanner="scan-k",
                             printer="prn-k", langs="de,en")
    assert kiosk == kiosks.Kiosk("entrance", "scan-k", "prn-k", ("de", "en"), None)
    assert (login.kind, login.username) == ("kiosk", "kiosk-entrance")
    assert len(login.password) >= 20
    # Its device login is in the broker's files, its scanner sends to it.
    assert "kiosk-entrance:" in (datadir.mosquitto / "passwd").read_text()
    assert str(route_of(store, "scan-k")) == "kiosk entrance"
    assert list_kiosks(store) == [{
        "id": "entrance", "scanner": "scan-k", "printer": "prn-k", "langs": ["de", "en"],
        "paired": False, "paired_at": None, "waiting": False,
        "added_at": list_kiosks(store)[0]["added_at"]}]
    # No --lang: the store's locale; a scanner moved elsewhere is no longer the kiosk's.
    plain, _ = add_kiosk(settings, datadir, store, "exit")
    assert plain.langs == () and plain.scanner is None and plain.printer is None


@pytest.mark.parametrize("kiosk_id, options, message", [
    ("k9", {"scanner": "scan-none"}, "There is no enrolled scanner 'scan-none'"),
    ("k9", {"printer": "prn-none"}, "There is no enrolled printer 'prn-none'"),
    ("k9", {"langs": "de,xx-nope"}, "Language 'xx-nope' is not a language tag"),
    ("k9", {"langs": "de,,en"}, "Language '' is not a language tag"),
    ("k9", {"langs": "de,de"}, "Language 'de' is named twice"),
    ("k9", {"scanner": "Bad_Id"}, "Device id 'Bad_Id' must be"),
    ("K_9", {}, "Device id 'K_9' must be"),
    ("pair", {}, "A kiosk cannot be called 'pair'"),
    ("k1", {}, "Kiosk k1 is already enrolled"),
    ("lane-k", {}, "Kiosk lane-k is already enrolled as a device"),
])
def test_bad_enrolments_are_refused_in_one_line_and_leave_nothing(
        settings: Settings, datadir: DataDir, store: Store, kiosk_id: str,
        options: dict[str, str], message: str) -> None:
    add_kiosk(settings, datadir, store, "k1")
    enrol(settings, datadir, store, "kiosk", "lane-k")  # a kiosk device without its row
    before = store.query("SELECT kind, id FROM devices ORDER BY kind, id")
    with pytest.raises(kiosks.EdgeError) as refused:
        add_kiosk(settings, datadir, store, kiosk_id, **options)  # type: ignore[arg-type]
    assert refused.value.message.startswith(message)
    assert "\n" not in refused.value.message
    assert store.query("SELECT kind, id FROM devices ORDER BY kind, id") == before
    assert [k["id"] for k in list_kiosks(store)] == ["k1"]


@pytest.mark.process
def test_the_edge_kiosks_commands(settings: Settings, datadir: DataDir, store: Store) -> None:
    enrol(settings, datadir, store, "scanner", "scan-1")
    added = edge_command(settings, "kiosks", "add", "k1", "--scanner", "scan-1", "--lang",
                         "de,en")
    assert added.returncode == 0, added.stderr
    printed = json.loads(added.stdout)
    assert {k: printed[k] for k in ("id", "scanner", "printer", "langs", "paired_at", "kind",
                                    "username")} == {
        "id": "k1", "scanner": "scan-1", "printer": None, "langs": ["de", "en"],
        "paired_at": None, "kind": "kiosk", "username": "kiosk-k1"}
    # The printed password is the kiosk device's broker login.
    assert authenticate(store, "kiosk", "k1", printed["password"])

    again = edge_command(settings, "kiosks", "add", "k1")
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        "edge: Kiosk k1 is already enrolled; `edge kiosks remove k1` first to enrol it afresh."]
    bad = edge_command(settings, "kiosks", "add", "k2", "--printer", "nope")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "no enrolled printer 'nope'" in bad.stderr

    browser, code = start_pairing(store)
    paired = edge_command(settings, "kiosks", "pair", "k1", "12345678"
                          if code != "12345678" else "87654321")
    assert paired.returncode == 1 and "No kiosk shows this pairing code" in paired.stderr
    paired = edge_command(settings, "kiosks", "pair", "k1", kiosks.format_code(code))
    assert paired.returncode == 0, paired.stderr
    assert json.loads(paired.stdout)["paired"] == "waiting for the kiosk's screen"
    picked = kiosks.pairing_state(store, browser)
    assert picked.state == "paired" and picked.credential
    assert kiosks.kiosk_for_credential(store, picked.credential) == get_kiosk(store, "k1")
    listed = json.loads(edge_command(settings, "kiosks", "list").stdout)
    assert [(k["id"], k["paired"]) for k in listed] == [("k1", True)]

    unpaired = edge_command(settings, "kiosks", "unpair", "k1")
    assert unpaired.returncode == 0 and json.loads(unpaired.stdout)["unpaired"] is True
    assert kiosks.kiosk_for_credential(store, picked.credential) is None
    actions = [(r["action"], json.loads(r["detail"])["kiosk"], r["by"].endswith(
        "(edge command)")) for r in audit_rows(store)]
    assert actions == [("kiosk.pair", "k1", True), ("kiosk.unpair", "k1", True)]

    removed = edge_command(settings, "kiosks", "remove", "k1")
    assert removed.returncode == 0 and json.loads(removed.stdout) == {"id": "k1",
                                                                     "removed": True}
    assert get_kiosk(store, "k1") is None
    assert "kiosk-k1:" not in (datadir.mosquitto / "passwd").read_text()
    gone = edge_command(settings, "kiosks", "remove", "k1")
    assert gone.returncode == 1 and "No kiosk 'k1' is enrolled." in gone.stderr


# ------------------------------------------------------------------ pairing


@pytest.mark.app
def test_pairing_through_the_screen_and_the_staff_page(
        app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    kiosk_browser = app.test_client()
    code = screen_code(kiosk_browser)
    pairing = kiosk_browser.get_cookie(PAIRING_COOKIE, path="/kiosk/pair")
    assert pairing is not None and pairing.http_only and pairing.same_site == "Strict"
    assert kiosk_browser.get("/kiosk/pair/status").get_json()["state"] == "waiting"
    # A browser without this screen's pairing cookie learns nothing, before or after.
    stranger = app.test_client()
    assert stranger.get("/kiosk/pair/status").get_json() == {"state": "unknown"}

    staff = staff_client(app)
    page = staff.get("/staff/kiosks/").get_data(as_text=True)
    assert 'data-kiosk="k1"' in page and "not paired" in page
    done = enter_code(staff, "k1", code)
    assert done.status_code == 302
    assert "waiting for the screen" in staff.get("/staff/kiosks/").get_data(as_text=True)
    assert stranger.get("/kiosk/pair/status").get_json() == {"state": "unknown"}
    assert credential_of(stranger) is None

    status = kiosk_browser.get("/kiosk/pair/status")
    assert status.get_json() == {"state": "paired", "go": "/kiosk/k1/"}
    cookie = next(c for c in status.headers.getlist("Set-Cookie")
                  if c.startswith(f"{KIOSK_COOKIE}="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/kiosk" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over HTTPS it is Secure (below)
    assert re.search(r"Max-Age=(\d+)", cookie) and \
        int(re.search(r"Max-Age=(\d+)", cookie)[1]) > 300 * 86400  # type: ignore[index]
    token = credential_of(kiosk_browser)
    assert token and kiosk_of(app, token) == "k1"
    # The browser's start page now leads to its kiosk's pages, not to pairing.
    start = kiosk_browser.get("/kiosk/")
    assert start.status_code == 302 and start.headers["Location"] == "/kiosk/k1/"
    assert kiosk_browser.get("/kiosk/pair").headers["Location"] == "/kiosk/k1/"
    # Its own kiosk's pages are not refused (whatever kiosk_ui serves there).
    assert kiosk_browser.get("/kiosk/k1/").status_code not in (302, 401, 403)

    svc = app.extensions["edge"]
    k1 = get_kiosk(svc.store, "k1")
    assert k1 is not None and k1.paired_at is not None
    assert "since" in staff.get("/staff/kiosks/").get_data(as_text=True)
    rows = audit_rows(svc.store)
    assert [(r["action"], r["by"], r["by_kind"], json.loads(r["detail"])) for r in rows] == [
        ("kiosk.pair", MANAGER, "staff", {"kiosk": "k1"})]
    audit_page = staff.get("/staff/audit").get_data(as_text=True)
    assert "kiosk screen paired" in audit_page and "kiosk k1" in audit_page
    # Neither the code nor the credential is kept or logged in clear.
    digits = code.replace(" ", "")
    dump = "\n".join(_database_text(svc.store))
    assert digits not in dump and token not in dump
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert digits not in logged and code not in logged and token not in logged


def _database_text(store: Store) -> list[str]:
    """Every value of the kiosk tables and the audit trail, as text."""
    out = []
    for table in ("kiosks", "kiosk_pairings", "kiosk_pair_failures", "till_audit"):
        out += [json.dumps(r) for r in store.query(f"SELECT * FROM {table}")]
    return out


@pytest.mark.app
def test_the_credential_cookie_is_secure_over_https(app: Flask) -> None:
    kiosk_browser = app.test_client()
    page = kiosk_browser.get("/kiosk/pair", base_url="https://localhost")
    pairing = kiosk_browser.get_cookie(PAIRING_COOKIE, domain="localhost", path="/kiosk/pair")
    assert pairing is not None and pairing.secure
    code = re.search(r'id="code"[^>]*>(\d{4} \d{4})<', page.get_data(as_text=True))
    assert code is not None
    pair_kiosk(app.extensions["edge"].store, "k1", code[1], MANAGER)
    status = kiosk_browser.get("/kiosk/pair/status", base_url="https://localhost")
    cookie = next(c for c in status.headers.getlist("Set-Cookie")
                  if c.startswith(f"{KIOSK_COOKIE}="))
    assert "; Secure" in cookie


@pytest.mark.app
def test_an_expired_code_is_refused_and_the_screen_gets_a_new_one(
        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    kiosk_browser = app.test_client()
    code = screen_code(kiosk_browser)
    move_clock(monkeypatch, kiosks.CODE_VALID_S + 1)
    assert kiosk_browser.get("/kiosk/pair/status").get_json() == {"state": "expired"}
    refused = enter_code(staff_client(app), "k1", code)
    assert refused.status_code == 400
    assert "This pairing code has expired" in refused.get_data(as_text=True)
    assert get_kiosk(app.extensions["edge"].store, "k1").paired_at is None  # type: ignore[union-attr]
    # The screen loads again and shows another code, which works.
    fresh = screen_code(kiosk_browser)
    assert fresh != code
    assert enter_code(staff_client(app), "k1", fresh).status_code == 302
    assert kiosk_browser.get("/kiosk/pair/status").get_json()["state"] == "paired"


@pytest.mark.app
def test_a_code_is_used_once(app: Flask) -> None:
    kiosk_browser = app.test_client()
    code = screen_code(kiosk_browser)
    staff = staff_client(app)
    assert enter_code(staff, "k1", code).status_code == 302
    again = enter_code(staff, "k2", code)
    assert again.status_code == 400
    assert "This pairing code was already used." in again.get_data(as_text=True)
    kiosk_browser.get("/kiosk/pair/status")
    token = credential_of(kiosk_browser)
    assert token and kiosk_of(app, token) == "k1"
    # Once fetched, the credential is not handed out a second time.
    assert kiosk_browser.get_cookie(PAIRING_COOKIE, path="/kiosk/pair") is None
    assert enter_code(staff, "k1", code).status_code == 400


@pytest.mark.app
def test_a_new_screen_code_voids_the_old_one(app: Flask) -> None:
    kiosk_browser = app.test_client()
    first = screen_code(kiosk_browser)
    second = screen_code(kiosk_browser)  # the screen loaded again
    refused = enter_code(staff_client(app), "k1", first)
    assert refused.status_code == 400 and "No kiosk shows this pairing code" in \
        refused.get_data(as_text=True)
    assert enter_code(staff_client(app), "k1", second).status_code == 302


@pytest.mark.app
def test_wrong_codes_lock_the_manager_out_for_ten_minutes(
        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    kiosk_browser = app.test_client()
    code = screen_code(kiosk_browser)
    digits = code.replace(" ", "")
    wrong = [f"{(int(digits) + n) % 10 ** 8:08d}" for n in range(1, 6)]
    staff = staff_client(app)
    for guess in wrong:
        reply = enter_code(staff, "k1", guess)
        assert reply.status_code == 400
        assert "No kiosk shows this pairing code." in reply.get_data(as_text=True)
    # The 6th, even the right code, is refused, and the page says why and for how long.
    locked = enter_code(staff, "k1", code)
    assert locked.status_code == 429
    text = locked.get_data(as_text=True)
    assert "5 wrong pairing codes in 10 minutes: mia cannot pair a kiosk for 10 more " \
        "minutes." in text
    assert kiosk_browser.get("/kiosk/pair/status").get_json()["state"] == "waiting"
    # Badly typed codes are refused without counting, the same way as before.
    malformed = enter_code(staff_client(app, OTHER_MANAGER, OTHER_PW), "k1", "12 34")
    assert malformed.status_code == 400 and "A pairing code is 8 digits" in \
        malformed.get_data(as_text=True)
    # Another manager is not locked out by mia's guesses.
    assert enter_code(staff_client(app, OTHER_MANAGER, OTHER_PW), "k1", code).status_code == 302
    # Ten minutes on, mia may try again.
    move_clock(monkeypatch, kiosks.WRONG_CODE_WINDOW_S + 1)
    fresh = screen_code(app.test_client())
    assert enter_code(staff, "k2", fresh).status_code == 302


@pytest.mark.app
def test_pairing_again_kills_the_old_credential_at_once(app: Flask) -> None:
    staff = staff_client(app)
    old_browser, old = paired_browser(app, "k1", staff)
    new_browser, new = paired_browser(app, "k1", staff)
    assert old != new
    assert kiosk_of(app, old) is None and kiosk_of(app, new) == "k1"
    back = old_browser.get("/kiosk/k1/", headers={"Accept": "text/html"})
    assert back.status_code == 302 and back.headers["Location"].endswith("/kiosk/pair")
    assert old_browser.post("/kiosk/k1/anything").status_code == 401
    assert new_browser.get("/kiosk/k1/").status_code not in (302, 401, 403)


@pytest.mark.app
def test_unpair_and_remove_kill_the_credential(app: Flask, settings: Settings) -> None:
    staff = staff_client(app)
    _, k1 = paired_browser(app, "k1", staff)
    _, k2 = paired_browser(app, "k2", staff)
    token = csrf_of(staff.get("/staff/kiosks/").get_data(as_text=True))
    assert staff.post("/staff/kiosks/k1/unpair", data={"csrf_token": token}).status_code == 302
    assert kiosk_of(app, k1) is None and kiosk_of(app, k2) == "k2"
    svc = app.extensions["edge"]
    assert get_kiosk(svc.store, "k1").paired_at is None  # type: ignore[union-attr]
    assert [(r["action"], json.loads(r["detail"])["kiosk"]) for r in audit_rows(svc.store)] == [
        ("kiosk.pair", "k1"), ("kiosk.pair", "k2"), ("kiosk.unpair", "k1")]

    kiosks.remove_kiosk(settings, svc.datadir, svc.store, "k2")
    assert kiosk_of(app, k2) is None
    # Removing the kiosk as a device takes its row (and credential) too.
    _, k1_again = paired_browser(app, "k1", staff)
    from edge.devices import remove
    remove(settings, svc.datadir, svc.store, "kiosk", "k1")
    assert kiosk_of(app, k1_again) is None and get_kiosk(svc.store, "k1") is None
    assert list_kiosks(svc.store) == []


@pytest.mark.app
def test_the_staff_page_is_for_managers_and_needs_the_form_token(app: Flask) -> None:
    anonymous = app.test_client()
    assert anonymous.get("/staff/kiosks/").headers["Location"].startswith("/staff/login")
    cashier = staff_client(app, CASHIER, CASHIER_PW)
    assert cashier.get("/staff/kiosks/").status_code == 403
    code = screen_code(app.test_client())
    token = csrf_of(cashier.get("/staff/devices").get_data(as_text=True))
    assert cashier.post("/staff/kiosks/k1/pair",
                        data={"csrf_token": token, "code": code}).status_code == 403
    manager = staff_client(app)
    assert manager.post("/staff/kiosks/k1/pair", data={"code": code}).status_code == 400
    not_there = enter_code(manager, "k9", code)
    assert not_there.status_code == 404 and "No kiosk &#39;k9&#39; is enrolled." in \
        not_there.get_data(as_text=True)
    # None of the refusals used the code up.
    assert enter_code(manager, "k1", code).status_code == 302


# ------------------------------------------------------------------ what the credential opens


@pytest.mark.app
def test_the_kiosk_credential_is_not_a_staff_login_or_a_device_password(
        app: Flask, settings: Settings) -> None:
    svc = app.extensions["edge"]
    enrol(settings, svc.datadir, svc.store, "pos", "lane-1")
    kiosk_browser, token = paired_browser(app, "k1")
    # The cookie as a browser would never send it (Path=/kiosk), to be sure it is ignored.
    kiosk_browser.set_cookie(KIOSK_COOKIE, token, path="/")
    for page in ("/staff/devices", "/staff/kiosks/", "/staff/audit", "/staff/checkout"):
        reply = kiosk_browser.get(page)
        assert reply.status_code == 302 and "/staff/login" in reply.headers["Location"], page
    assert kiosk_browser.get("/api/v1/devices").status_code == 401
    assert kiosk_browser.get("/api/v1/scanners").status_code == 401
    body = json.dumps({"id": "r-1", "data": {"txn": "t-1", "code": "x"}})
    for lane in ("lane-1", "k1"):
        as_cookie = kiosk_browser.post(f"/api/v1/pos/{lane}/identify", data=body)
        as_bearer = app.test_client().post(f"/api/v1/pos/{lane}/identify", data=body,
                                           headers={"Authorization": f"Bearer {token}"})
        assert as_cookie.status_code == 401 and as_bearer.status_code == 401, lane
    # As HTTP Basic for a staff account named like the kiosk: a wrong password, no more.
    basic = app.test_client().get("/api/v1/devices", auth=("k1", token))
    assert basic.status_code == 401


@pytest.mark.app
def test_a_forged_or_another_kiosks_credential_never_opens_this_kiosk(app: Flask) -> None:
    staff = staff_client(app)
    k1_browser, k1 = paired_browser(app, "k1", staff)
    _, k2 = paired_browser(app, "k2", staff)
    assert kiosk_of(app, k1) == "k1" and kiosk_of(app, k2) == "k2"
    for forged in ("", "x" * 43, k1[:-1] + ("A" if k1[-1] != "A" else "B"), "k1", "z" * 500):
        assert kiosk_of(app, forged) is None, forged
    other = k1_browser.get("/kiosk/k2/")
    assert other.status_code == 403
    assert "paired with another kiosk" in other.get_data(as_text=True)
    assert k1_browser.post("/kiosk/k2/session").status_code == 403
    assert k1_browser.get("/kiosk/k2").status_code == 403
    forged_browser = app.test_client()
    forged_browser.set_cookie(KIOSK_COOKIE, "x" * 43, path="/kiosk")
    assert forged_browser.get("/kiosk/k1/", headers={"Accept": "text/html"}).headers[
        "Location"].endswith("/kiosk/pair")
    assert forged_browser.post("/kiosk/k1/session").status_code == 401


@pytest.mark.app
def test_a_flood_of_pairing_screens_keeps_only_the_newest_codes(app: Flask) -> None:
    store = app.extensions["edge"].store
    made = [start_pairing(store) for _ in range(kiosks.MAX_OPEN_CODES + 10)]
    assert store.query_one("SELECT count(*) AS n FROM kiosk_pairings")["n"] == \
        kiosks.MAX_OPEN_CODES  # type: ignore[index]
    # The oldest are gone, the newest still pair.
    assert kiosks.pairing_state(store, made[0][0]).state == "unknown"
    pair_kiosk(store, "k1", made[-1][1], MANAGER)
    assert kiosks.pairing_state(store, made[-1][0]).state == "paired"


def test_polls_at_once_hand_out_one_credential(settings: Settings, datadir: DataDir,
                                               store: Store) -> None:
    add_kiosk(settings, datadir, store, "k1")
    browser, code = start_pairing(store)
    pair_kiosk(store, "k1", code, MANAGER)
    answers = at_once([lambda: kiosks.pairing_state(store, browser) for _ in range(8)])
    handed = [a.credential for a in answers if a.credential]
    assert len(handed) == 1 and {a.state for a in answers} == {"paired"}
    assert kiosks.kiosk_for_credential(store, handed[0]) == get_kiosk(store, "k1")


def test_the_kiosk_credential_is_no_mqtt_password(
        settings: Settings, datadir: DataDir, store: Store, broker: Any) -> None:
    _, login = add_kiosk(settings, datadir, store, "k1")
    browser, code = start_pairing(store)
    pair_kiosk(store, "k1", code, MANAGER)
    credential = kiosks.pairing_state(store, browser).credential
    assert credential
    with pytest.raises(DeviceError, match="refused"):
        DeviceClient(settings.store_id, "kiosk", "k1", settings.mqtt_url, "kiosk-k1",
                     credential).connect(timeout=5)
    # The kiosk device's own login still works: the refusal was the credential's.
    device = DeviceClient(settings.store_id, "kiosk", "k1", settings.mqtt_url,
                          login.username, login.password).connect(timeout=5)
    device.close()


# ------------------------------------------------------------------ the real screen


@pytest.fixture
def served(settings: Settings, store: Store, datadir: DataDir,
           edge_process: EdgeProc) -> str:
    add_user(store, MANAGER, MANAGER_PW, "manager")
    add_kiosk(settings, datadir, store, "k1")
    base = f"http://127.0.0.1:{edge_process.http_port}"
    assert wait_until(lambda: requests.get(f"{base}/healthz", timeout=2).status_code == 200,
                      15)
    return base


def test_the_pairing_screen_in_chromium(served: str, browser: Browser, tmp_path: Path,
                                        settings: Settings) -> None:
    kiosk = browser.new_context(viewport={"width": 1080, "height": 1920})
    kiosk.set_default_timeout(chromium.TIMEOUT_MS)
    screen = kiosk.new_page()
    errors: list[str] = []
    screen.on("pageerror", lambda err: errors.append(str(err)))
    outside: list[str] = []
    screen.on("request", lambda r: outside.append(r.url) if not r.url.startswith(served)
              and not r.url.startswith("data:") else None)
    screen.goto(f"{served}/kiosk/")
    expect(screen).to_have_url(f"{served}/kiosk/pair")
    code_box = screen.locator("#code")
    expect(code_box).to_have_text(re.compile(r"^\d{4} \d{4}$"))
    code = code_box.inner_text()
    screen.screenshot(path=str(tmp_path / "kiosk-pair.png"))
    size = float(code_box.evaluate("e => parseFloat(getComputedStyle(e).fontSize)"))
    box = code_box.bounding_box()
    assert size >= 100 and box is not None
    assert box["height"] < 2 * size and box["x"] >= 0 and box["x"] + box["width"] <= 1080, \
        "the code is not on one line within the portrait screen"

    # A manager pairs it on the staff page, in a browser of their own.
    office = browser.new_context()
    office.set_default_timeout(chromium.TIMEOUT_MS)
    staff = office.new_page()
    staff.goto(f"{served}/staff/kiosks/")
    staff.get_by_label("Username").fill(MANAGER)
    staff.get_by_label("Password").fill(MANAGER_PW)
    staff.get_by_role("button", name="Sign in").click()
    expect(staff).to_have_url(f"{served}/staff/kiosks/")
    staff.get_by_label("Code for k1").fill(code)
    staff.get_by_role("button", name="Pair").click()
    expect(staff.get_by_role("status")).to_contain_text("Kiosk k1 is paired")

    # The screen's next poll takes it to its kiosk's pages, with the credential cookie.
    expect(screen).to_have_url(f"{served}/kiosk/k1/", timeout=chromium.TIMEOUT_MS)
    cookies = {c["name"]: c for c in kiosk.cookies()}
    credential = cookies[KIOSK_COOKIE]
    assert credential["httpOnly"] and credential["sameSite"] == "Strict"
    assert credential["path"] == "/kiosk"
    assert credential["expires"] > wait_time_days(300)
    assert KIOSK_COOKIE not in screen.evaluate("document.cookie")
    # Back at the start page, the kiosk goes straight to its own pages.
    screen.goto(f"{served}/kiosk/")
    expect(screen).to_have_url(f"{served}/kiosk/k1/")
    assert errors == [] and outside == []

    # Unpaired from the command line: the same browser is back at the pairing screen.
    done = edge_command(settings, "kiosks", "unpair", "k1")
    assert done.returncode == 0, done.stderr
    screen.goto(f"{served}/kiosk/k1/")
    expect(screen).to_have_url(f"{served}/kiosk/pair")
    expect(screen.locator("#code")).to_have_text(re.compile(r"^\d{4} \d{4}$"))
    office.close()
    kiosk.close()


def wait_time_days(days: int) -> float:
    """A cookie's expiry (Unix time) `days` from now."""
    import time

    return time.time() + days * 86400

