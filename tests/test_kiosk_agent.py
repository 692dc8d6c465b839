"""`python -m pos_bridge.kiosk run`, the kiosk box's presence agent, as a kiosk box runs it: a
process with the login `edge kiosks add` printed, on a real Mosquitto with the edge's ACL,
watching a real "browser" process and a real HTTP server, its status read where staff read
it (GET /api/v1/devices, which the devices page shows field by field)."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from edge.app import create_app
from edge.app.service import EdgeService
from edge.broker import BrokerProcess
from edge.datadir import DataDir
from edge.settings import Settings
from edge.supervise import stop_process
from edge.tls import StoreTLS
from pos_bridge.kiosk.agent import page_reachable
from tests.conftest import REPO, free_port, running_edge, wait_until
from tests.test_deploy_docs import _unit
from tests.test_scan_routing import edge_json

KIOSK = "entrance"
MANAGER = ("mia", "manager-password-1")
UNIT = REPO / "config" / "systemd" / "store-kiosk-agent.service"


class KioskPage:
    """The store box's kiosk page as far as the agent can tell: a real HTTP server on a fixed
    port that can be taken down and brought back. It answers 503 to show that any answer
    counts, and notes what each request carried."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/kiosk/"
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                seen.append((self.path, dict(self.headers)))
                self.send_response(503)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"starting")

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def kiosk_page() -> Iterator[KioskPage]:
    page = KioskPage()
    page.up()
    yield page
    page.down()


def test_the_page_counts_as_reachable_only_when_it_answers_over_a_trusted_connection(
        settings: Settings, datadir: DataDir) -> None:
    tls = StoreTLS.of(datadir)
    tls.ensure(settings.store_id, ["127.0.0.1"])
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(tls.cert_file, tls.key_file)
    page = KioskPage(served)
    page.up()
    try:
        store_ca = ssl.create_default_context(cafile=str(tls.ca_file))
        assert page_reachable(page.url, tls=store_ca)
        # Chromium would show a certificate error: not a page that works.
        assert not page_reachable(page.url)
    finally:
        page.down()
    assert not page_reachable(page.url, tls=store_ca)  # nothing listens: refused
    with socket.socket() as silent:  # takes the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        assert not page_reachable(f"http://127.0.0.1:{silent.getsockname()[1]}/kiosk/",
                                  timeout=0.5)


@pytest.fixture
def app(settings: Settings, broker: BrokerProcess) -> Iterator[Flask]:
    """The edge as `edge serve` builds it, on the broker, with a manager to read the API."""
    from edge.accounts import add_user

    flask_app = create_app(settings)
    service: EdgeService = flask_app.extensions["edge"]
    add_user(service.store, *MANAGER, "manager")
    with running_edge(settings, service):
        yield flask_app


@pytest.fixture
def kiosk_login(settings: Settings, app: Flask) -> dict[str, Any]:
    """`edge kiosks add entrance`, as the IT person runs it: the login it prints."""
    added: dict[str, Any] = edge_json(settings, "kiosks", "add", KIOSK)
    return added


def shown(app: Flask) -> dict[str, Any]:
    """The kiosk's row as the staff devices page gets it."""
    resp = app.test_client().get("/api/v1/devices", auth=MANAGER)
    assert resp.status_code == 200
    rows = [d for d in resp.get_json()["devices"] if (d["kind"], d["id"]) == ("kiosk", KIOSK)]
    assert len(rows) == 1
    row: dict[str, Any] = rows[0]
    return row


def showing(app: Flask, state: str, **status: str) -> Callable[[], bool]:
    def check() -> bool:
        row = shown(app)
        return bool(row["state"] == state and
                    all(row["status"].get(k) == v for k, v in status.items()))
    return check


def agent_args(settings: Settings, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pos_bridge.kiosk", "run", "--store", settings.store_id,
            "--kiosk", KIOSK, "--mqtt", settings.mqtt_url, *extra]


def clean_env(**env: str) -> dict[str, str]:
    """This environment without the browser's and the agent's own settings, plus `env`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}, **env}


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; stopped after it."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        stop_process(proc)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def browser(processes: list[subprocess.Popen[str]]) -> Callable[[Path], subprocess.Popen[str]]:
    """Factory: a stand-in for Chromium, a real process with the profile in its command line
    as scripts/kiosk-browser.sh gives it."""

    def _start(profile: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)",
                                 f"--user-data-dir={profile}"], text=True)
        processes.append(proc)
        return proc

    return _start


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    proc.send_signal(sig)
    proc.wait(15)


@pytest.mark.process
def test_the_agent_shows_the_kiosk_online_with_its_browser_and_page_then_offline_when_killed(
        settings: Settings, app: Flask, kiosk_login: dict[str, Any], kiosk_page: KioskPage,
        browser: Callable[[Path], subprocess.Popen[str]],
        processes: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    profile = tmp_path / "store-kiosk-browser"
    browser(tmp_path / "another-profile")  # some other Chromium: not the kiosk's
    agent = subprocess.Popen(
        agent_args(settings, "--page", kiosk_page.url, "--browser-profile", str(profile),
                   "--every", "1"),
        env=clean_env(KIOSK_MQTT_PASSWORD=kiosk_login["password"]),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    processes.append(agent)
    assert agent.stdout is not None
    assert json.loads(agent.stdout.readline()) == {
        "kiosk": KIOSK, "browser": "stopped", "page": "ok"}
    assert wait_until(showing(app, "online", browser="stopped", page="ok"), 15), shown(app)
    assert shown(app)["status"]["sw"]

    chromium = browser(profile)
    assert wait_until(showing(app, "online", browser="running", page="ok"), 15), shown(app)
    stop(chromium)  # crashed; the unit has not started it again yet
    assert wait_until(showing(app, "online", browser="stopped"), 15), shown(app)
    chromium = browser(profile)
    assert wait_until(showing(app, "online", browser="running"), 15), shown(app)

    kiosk_page.down()  # the store box's web server stopped: connection refused
    assert wait_until(showing(app, "online", browser="running", page="unreachable"), 15), \
        shown(app)
    kiosk_page.up()
    assert wait_until(showing(app, "online", page="ok"), 15), shown(app)
    # Only ever the page itself, with nothing of anybody: no cookie, no credential.
    assert {path for path, _ in kiosk_page.requests} == {"/kiosk/"}
    assert not any({"Cookie", "Authorization"} & set(headers)
                   for _, headers in kiosk_page.requests)

    stop(agent)  # the box died: the broker's Last Will says so
    assert wait_until(showing(app, "offline"), 15), shown(app)
    assert shown(app)["status"]["browser"] == "running", "offline keeps the last known fields"


@pytest.mark.process
def test_nothing_changed_sends_nothing_and_a_clean_stop_says_offline(
        settings: Settings, app: Flask, kiosk_login: dict[str, Any], kiosk_page: KioskPage,
        processes: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    agent = subprocess.Popen(
        agent_args(settings, "--page", kiosk_page.url, "--every", "1"),
        env=clean_env(KIOSK_MQTT_PASSWORD=kiosk_login["password"],
                      KIOSK_PROFILE_DIR=str(tmp_path / "profile")),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    processes.append(agent)
    assert agent.stdout is not None and json.loads(agent.stdout.readline())["kiosk"] == KIOSK
    edge: EdgeService = app.extensions["edge"]
    assert wait_until(showing(app, "online", browser="stopped", page="ok"), 15)
    first = edge.last_seen.get("kiosk", KIOSK)
    looked = len(kiosk_page.requests)
    assert wait_until(lambda: len(kiosk_page.requests) >= looked + 3, 15)  # three more looks
    assert edge.last_seen.get("kiosk", KIOSK) == first, "an unchanged status was sent again"

    agent.send_signal(signal.SIGTERM)
    assert agent.wait(15) == 0
    assert wait_until(showing(app, "offline"), 15), shown(app)
    assert agent.stderr is not None
    log = agent.stderr.read()
    assert "browser stopped, page ok" in log and kiosk_login["password"] not in log


@pytest.mark.process
def test_it_comes_back_by_itself_when_the_broker_restarts(
        settings: Settings, app: Flask, broker: BrokerProcess, kiosk_login: dict[str, Any],
        browser: Callable[[Path], subprocess.Popen[str]],
        processes: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    chromium = browser(profile)
    agent = subprocess.Popen(
        agent_args(settings, "--browser-profile", str(profile), "--every", "1"),
        env=clean_env(KIOSK_MQTT_PASSWORD=kiosk_login["password"]),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    processes.append(agent)
    assert agent.stdout is not None
    assert json.loads(agent.stdout.readline()) == {"kiosk": KIOSK, "browser": "running"}
    assert wait_until(showing(app, "online", browser="running"), 15), shown(app)
    assert "page" not in shown(app)["status"], "no page given: none reported"
    broker.stop()
    stop(chromium)  # while the bus is away
    broker.start()
    assert wait_until(showing(app, "online", browser="stopped"), 60), shown(app)
    assert agent.poll() is None


@pytest.mark.process
def test_a_login_the_broker_refuses_ends_it_with_one_line_and_status_3(
        settings: Settings, app: Flask, kiosk_login: dict[str, Any]) -> None:
    done = subprocess.run(
        agent_args(settings), env=clean_env(KIOSK_MQTT_PASSWORD="not-" + kiosk_login["password"]),
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("kiosk-agent: "), done.stderr
    assert done.stderr.startswith(f"kiosk-agent: kiosk {KIOSK} could not connect to the broker")
    assert "(refused: " in done.stderr and kiosk_login["password"] not in done.stderr
    assert done.stdout == ""
    assert shown(app)["state"] == "unknown"


@pytest.mark.process
def test_a_password_changed_at_the_edge_ends_the_running_agent_with_status_3(
        settings: Settings, app: Flask, kiosk_login: dict[str, Any], tmp_path: Path,
        processes: list[subprocess.Popen[str]]) -> None:
    """The broker drops the old login when the edge gives the kiosk a new password, and
    refuses it when the agent reconnects: it stops, as retrying cannot help."""
    agent = subprocess.Popen(
        agent_args(settings, "--browser-profile", str(tmp_path / "profile"), "--every", "1"),
        env=clean_env(KIOSK_MQTT_PASSWORD=kiosk_login["password"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    processes.append(agent)
    assert agent.stdout is not None and json.loads(agent.stdout.readline())["kiosk"] == KIOSK
    rotated = edge_json(settings, "devices", "add", "kiosk", KIOSK, "--rotate")
    assert rotated["password"] != kiosk_login["password"]
    assert agent.wait(60) == 3
    assert agent.stderr is not None
    last = agent.stderr.read().splitlines()[-1]
    assert last.startswith(f"kiosk-agent: kiosk {KIOSK}: the broker refused the login"), last


@pytest.mark.process
@pytest.mark.parametrize(("extra", "env", "says"), [
    (["--every", "0"], {}, "Invalid value for '--every': 0.0 is not in the range 1<=x<=300."),
    (["--every", "301"], {}, "'--every': 301.0 is not in the range 1<=x<=300."),
    (["--page", "file:///etc/passwd"], {},
     "the kiosk page must be an http:// or https:// address, not 'file:///etc/passwd'"),
    ([], {"KIOSK_URL": "javascript:alert(1)"},
     "the kiosk page must be an http:// or https:// address, not 'javascript:alert(1)'"),
    (["--page", "http:///kiosk/"], {}, "must be an http:// or https:// address"),
    (["--browser-profile", "relative/dir"], {},
     "the browser profile must be an absolute path, not 'relative/dir'"),
    (["--page-ca", "/nonexistent/ca.crt"], {}, "'/nonexistent/ca.crt' does not exist"),
    (["--kiosk", "Entrance 1"], {}, "'Entrance 1' is not an id"),
    (["--mqtt", "http://store-box:8080"], {},
     "the store broker must be an mqtt:// or mqtts:// address, not 'http://store-box:8080'"),
    ([], {"KIOSK_MQTT_PASSWORD": ""}, "KIOSK_MQTT_PASSWORD is not set"),
])
def test_bad_input_is_refused_in_one_line_with_status_2(
        settings: Settings, extra: list[str], env: dict[str, str], says: str) -> None:
    done = subprocess.run(agent_args(settings, *extra),
                          env=clean_env(**{"KIOSK_MQTT_PASSWORD": "x", **env}),
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("kiosk-agent: "), done.stderr
    assert says in done.stderr


def test_the_unit_is_a_user_unit_that_runs_the_agent_and_restarts_it_always() -> None:
    text = UNIT.read_text()
    unit = _unit(text)
    assert unit["ExecStart"] == ("/opt/store-edge/.venv/bin/python -m pos_bridge.kiosk run "
                                 "$KIOSK_AGENT_ARGS")
    assert (REPO / "pos_bridge" / "kiosk" / "__main__.py").is_file()
    assert (unit["Restart"], unit["StartLimitIntervalSec"]) == ("always", "0")
    assert "User" not in unit and unit["WantedBy"] == "default.target"
    # The browser's settings (its page and profile), then the agent's own with the password.
    assert [line for line in text.splitlines() if line.startswith("EnvironmentFile=")] == [
        "EnvironmentFile=-/etc/store-edge/kiosk-browser.env",
        "EnvironmentFile=/etc/store-edge/kiosk-agent.env"]
    assert unit["NoNewPrivileges"] == "true"
