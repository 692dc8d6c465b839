"""The staff pages over HTTPS: a real nginx (Debian's) in front of `edge serve`, configured by
`edge tls proxy-config` with the store's certificate; session cookies Secure on HTTPS and
always HttpOnly and SameSite; X-Forwarded-* believed from the configured proxy only; the
hub's cookies Secure behind its proxy.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, expect

from cloud_sync.hub.settings import load_hub_settings
from edge.accounts import add_user
from edge.broker import BrokerProcess, wait_for_port
from edge.settings import Settings
from edge.store import Store
from edge.supervise import stop_process
from edge.tls import standalone_nginx
from tests.browser import TIMEOUT_MS, browser, playwright  # noqa: F401 - fixtures
from tests.conftest import (
    REPO,
    edge_cli,
    edge_env,
    edge_log,
    free_port,
    start_edge,
    wait_until,
)
from tests.hubfix import hub_env_for, run_hub, start_hub, stop_hub
from tests.test_staff_checkout import CASHIER, CASHIER_PW, sign_in

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclasses.dataclass
class Proxied:
    https: str       # https://localhost:PORT, through nginx
    http: str        # http://localhost:PORT, nginx's plain port
    direct: str      # the edge's own port, plain
    ca_file: Path


def edge_command(settings: Settings, *args: str) -> str:
    done = subprocess.run([*edge_cli(), *args], env=edge_env(settings), cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_nginx(site: str, folder: Path) -> subprocess.Popen[bytes]:
    """Debian's nginx in the foreground, serving the edge's site."""
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed: run the README's test command, which installs it")
    return subprocess.Popen(standalone_nginx(site, folder))


@pytest.fixture
def proxied(settings: Settings, broker: BrokerProcess, store: Store,
            tmp_path: Path) -> Iterator[Proxied]:
    behind = dataclasses.replace(settings, http_trusted_proxy="127.0.0.1")
    edge_command(behind, "init")
    add_user(store, CASHIER, CASHIER_PW, "cashier")
    https_port, http_port = free_port(), free_port()
    site = edge_command(behind, "tls", "proxy-config", "--https-port", str(https_port),
                        "--http-port", str(http_port), "--listen", "127.0.0.1")
    edge = start_edge(behind)
    nginx = run_nginx(site, tmp_path / "nginx")
    try:
        wait_for_port("127.0.0.1", https_port, 10)
        yield Proxied(f"https://localhost:{https_port}", f"http://localhost:{http_port}",
                      f"http://127.0.0.1:{settings.http_port}",
                      behind.data_path / "tls" / "ca.crt")
    finally:
        stop_process(nginx)
        stop_process(edge)


def form_sign_in(session: requests.Session, base: str, **kwargs: object) -> requests.Response:
    """The login form as a browser posts it (with its CSRF token and Referer)."""
    form = session.get(f"{base}/staff/login", timeout=10, **kwargs)  # type: ignore[arg-type]
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, form.text
    return session.post(f"{base}/staff/login", timeout=10, allow_redirects=False,
                        data={"csrf_token": token.group(1), "username": CASHIER,
                              "password": CASHIER_PW},
                        headers={"Referer": f"{base}/staff/login"},
                        **kwargs)  # type: ignore[arg-type]


def session_cookie(response: requests.Response) -> dict[str, str | bool]:
    header = response.headers.get("Set-Cookie", "")
    assert header.startswith("session="), header
    morsel = SimpleCookie(header)["session"]
    return {"secure": bool(morsel["secure"]), "httponly": bool(morsel["httponly"]),
            "samesite": morsel["samesite"]}


def test_over_https_the_session_cookie_is_secure(proxied: Proxied) -> None:
    with requests.Session() as s:
        signed_in = form_sign_in(s, proxied.https, verify=str(proxied.ca_file))
        assert signed_in.status_code == 302, signed_in.text
        assert signed_in.headers["Location"].startswith("/staff/")
        assert session_cookie(signed_in) == {"secure": True, "httponly": True,
                                             "samesite": "Lax"}
        assert signed_in.headers["Strict-Transport-Security"].startswith("max-age=")
        page = s.get(f"{proxied.https}/staff/checkout", verify=str(proxied.ca_file),
                     timeout=10)
        assert page.status_code == 200 and CASHIER in page.text


def test_plain_http_through_the_proxy_is_sent_to_https(proxied: Proxied) -> None:
    answer = requests.get(f"{proxied.http}/staff/login?next=/staff/checkout",
                          allow_redirects=False, timeout=10)
    assert answer.status_code == 308
    assert answer.headers["Location"] == \
        f"{proxied.https}/staff/login?next=/staff/checkout"


def test_the_proxy_is_verified_with_the_store_ca_only(proxied: Proxied) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{proxied.https}/healthz", timeout=10)  # the system's CAs: not trusted


def test_a_client_cannot_claim_https_or_another_address_through_the_proxy(
        proxied: Proxied, settings: Settings) -> None:
    # Straight at the edge over plain HTTP: HttpOnly and SameSite, and no Secure (a browser
    # would not send a Secure cookie back over this connection).
    with requests.Session() as s:
        assert session_cookie(form_sign_in(s, proxied.direct)) == {
            "secure": False, "httponly": True, "samesite": "Lax"}
    # Through the proxy, a forged X-Forwarded-For is replaced by the real peer: the sign-in
    # refusal is logged for the address that really called.
    with requests.Session() as s:
        s.headers["X-Forwarded-For"] = "203.0.113.9"
        form = s.get(f"{proxied.https}/staff/login", timeout=10, verify=str(proxied.ca_file))
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token, form.text
        refused = s.post(f"{proxied.https}/staff/login", timeout=10, verify=str(proxied.ca_file),
                         data={"csrf_token": token.group(1), "username": CASHIER,
                               "password": "wrong"},
                         headers={"Referer": f"{proxied.https}/staff/login"})
    assert refused.status_code == 200 and "Sign in" in refused.text  # the form again
    log = edge_log(settings)
    assert wait_until(lambda: f"sign-in as {CASHIER} from 127.0.0.1 refused" in log.read_text())
    assert "203.0.113.9" not in log.read_text()


def test_an_edge_without_a_proxy_ignores_forwarded_headers(
        settings: Settings, broker: BrokerProcess, store: Store) -> None:
    add_user(store, CASHIER, CASHIER_PW, "cashier")
    edge = start_edge(settings)  # http_trusted_proxy is empty
    try:
        with requests.Session() as s:
            s.headers.update({"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
            cookie = session_cookie(form_sign_in(s, f"http://127.0.0.1:{settings.http_port}"))
        assert cookie["secure"] is False
    finally:
        stop_process(edge)


def test_chromium_signs_in_and_scans_over_https(proxied: Proxied,
                                               browser: Browser) -> None:  # noqa: F811
    # Chromium has no way to be given one CA headless; the chain itself is checked above.
    context = browser.new_context(ignore_https_errors=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        sign_in(page, proxied.https)
        (cookie,) = [c for c in context.cookies() if c["name"] == "session"]
        assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"]) == (True, True, "Lax")
        # A JSON action (CSRF token and the strict HTTPS Referer check) works through the proxy.
        page.keyboard.type("4000999999999999")
        page.keyboard.press("Enter")
        expect(page.get_by_role("alert")).to_contain_text("No customer")
    finally:
        context.close()


# ---------------------------------------------------------------- the hub


@pytest.mark.process
@pytest.mark.parametrize("proxy, secure", [("127.0.0.1", True), ("", False)])
def test_the_hub_cookie_is_secure_behind_its_tls_proxy(tmp_path: Path, proxy: str,
                                                       secure: bool) -> None:
    env = {**hub_env_for(tmp_path / "hub-data", "", 0), "HUB_TRUSTED_PROXY": proxy}
    settings = load_hub_settings(env)
    added = run_hub(settings, "managers", "add", "north-lead", "--region", "north",
                    "--password-stdin", input="north-password-1\n")
    assert added.returncode == 0, added.stderr
    server = start_hub(settings)
    try:
        with requests.Session() as s:
            # What nginx in front of the hub sends (docs/hub.md); only a trusted peer is believed.
            s.headers.update({"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"})
            base = server.url
            form = s.get(f"{base}/login", timeout=10)
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert token, form.text
            referer = base.replace("http://", "https://" if secure else "http://")
            # The browser's HTTPS leg is nginx's to carry: send the form's cookie back as a
            # browser would to https://, which requests will not do for a plain-HTTP URL.
            cookie = SimpleCookie(form.headers["Set-Cookie"])["session"].value
            answer = s.post(f"{base}/login", timeout=10, allow_redirects=False,
                            data={"csrf_token": token.group(1), "username": "north-lead",
                                  "password": "north-password-1"},
                            headers={"Referer": f"{referer}/login",
                                     "Cookie": f"session={cookie}"})
            assert answer.status_code == 302, answer.text
            assert session_cookie(answer) == {"secure": secure, "httponly": True,
                                              "samesite": "Lax"}
    finally:
        stop_hub(server)
    assert wait_until(lambda: server.proc.poll() is not None, 5)
