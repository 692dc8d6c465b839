"""Hub fixtures: a private PostgreSQL cluster, hub settings on either database, and a real
`edge-hub serve` process.

tests/conftest.py loads this module as a pytest plugin: every test module can ask for its
fixtures by name.
`hub_db_url` is parametrised over SQLite and PostgreSQL, so every test that uses it (or a
fixture built on it) runs on both.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.hub.settings import HubSettings, load_hub_settings
from edge.supervise import stop_process
from tests.conftest import listening_port


def find_pg_bin(root: Path = Path("/usr/lib/postgresql")) -> Path | None:
    """The newest installed PostgreSQL release's bin dir (one with initdb and pg_ctl), or
    None: Debian installs each release under /usr/lib/postgresql/<major>/bin."""
    found = [d for d in root.glob("*/bin")
             if d.parent.name.isdigit() and (d / "initdb").exists() and (d / "pg_ctl").exists()]
    return max(found, key=lambda d: int(d.parent.name), default=None)


def in_ci() -> bool:
    """CI (the environment variable CI=true, set by .ci/run): a required part that is missing
    fails the tests instead of skipping them, so they cannot silently vanish."""
    return os.environ.get("CI", "").strip().lower() == "true"


def missing_part(message: str) -> None:
    """A required real part (PostgreSQL, ...) is not installed: fail under CI, else skip."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing part fails the run)", pytrace=False)
    pytest.skip(message)


PG_BIN = find_pg_bin()
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """A throw-away PostgreSQL cluster on a free port, trusted local logins.

    PostgreSQL refuses to run as root: when the tests do, the cluster belongs to the
    `postgres` user and its programs run through `runuser`.
    """

    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's tmp dir: that is 0700 root, and the postgres user must enter it.
        self.root = Path(tempfile.mkdtemp(prefix="hub-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.as_root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        assert PG_BIN is not None
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stderr}{done.stdout}\n{log}")

    def start(self, *, durable: bool = False) -> PostgresCluster:
        """initdb and start. Tests run without fsync (their data need not survive a power
        cut, and it keeps them quick); `durable` commits as production does (benchmarks)."""
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")
        sync = ("-c fsync=on -c synchronous_commit=on -c full_page_writes=on" if durable
                else "-c fsync=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                  f"{sync} -c max_connections=200", "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self) -> str:
        name = f"hub_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the whole test session."""
    if PG_BIN is None:
        missing_part("PostgreSQL is not installed (apt-get install postgresql)")
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database in the session's cluster."""
    name = pg_cluster.create_database()
    yield pg_cluster.url(name)
    pg_cluster.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def hub_db_url(request: pytest.FixtureRequest) -> str:
    """HUB_DATABASE_URL for the test: empty (SQLite in the data dir) or a new PostgreSQL db."""
    if request.param == "sqlite":
        return ""
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def hub_settings(tmp_path: Path, hub_db_url: str) -> HubSettings:
    """Settings of a hub with its own data dir (port 0: `start_hub` learns the real one)."""
    return load_hub_settings(hub_env_for(tmp_path / "hub-data", hub_db_url, 0))


def hub_env_for(data_dir: Path, db_url: str, port: int) -> dict[str, str]:
    return {"HUB_DATA_DIR": str(data_dir), "HUB_DATABASE_URL": db_url,
            "HUB_HTTP_HOST": "127.0.0.1", "HUB_HTTP_PORT": str(port), "HUB_THREADS": "8"}


def hub_env(settings: HubSettings) -> dict[str, str]:
    """The process environment for an `edge-hub` command on these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(hub_env_for(settings.data_dir, settings.database_url, settings.http_port))
    env.update({"HUB_MAX_BATCH_EVENTS": str(settings.max_batch_events),
                "HUB_MAX_BATCH_BYTES": str(settings.max_batch_bytes),
                "HUB_TRUSTED_PROXY": settings.trusted_proxy})
    return env


def hub_cli() -> list[str]:
    return [sys.executable, "-m", "cloud_sync.hub.cli"]


def run_hub(settings: HubSettings, *args: str, input: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run one `edge-hub` command with these settings (not checked)."""
    return subprocess.run([*hub_cli(), *args], env=hub_env(settings), capture_output=True,
                          text=True, input=input, timeout=60, cwd=REPO)


class BlackHole:
    """A listening socket whose accept queue is full, so connects to its port hang (no
    SYN-ACK): a hub "black-holed" on loopback. Raises RuntimeError on a kernel that
    completes such connects anyway (then there is no black hole to measure against)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(0)
        self.fillers: list[socket.socket] = []
        for _ in range(3):
            filler = socket.socket()
            filler.settimeout(0.3)
            with contextlib.suppress(OSError):
                filler.connect(("127.0.0.1", port))
            self.fillers.append(filler)
        probe = socket.socket()
        probe.settimeout(1.0)
        try:
            probe.connect(("127.0.0.1", port))
            hangs = False
        except TimeoutError:
            hangs = True
        finally:
            probe.close()
        if not hangs:
            self.close()
            raise RuntimeError("this kernel completes connects to a full accept queue: "
                               "no black hole")

    def close(self) -> None:
        for s in (*self.fillers, self.sock):
            s.close()


@dataclass
class HubServer:
    settings: HubSettings
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    def add_store(self, store_id: str, region: str = "north") -> str:
        """Register a store through the CLI; its token."""
        import json

        done = run_hub(self.settings, "stores", "add", store_id, "--region", region)
        assert done.returncode == 0, done.stderr
        token: str = json.loads(done.stdout)["token"]
        return token


def start_hub(settings: HubSettings, *, keep_port: bool = False) -> HubServer:
    """`edge-hub serve` on a port it picks itself (HUB_HTTP_PORT=0, so no other process can
    take the port between choosing and binding it), or on the settings' port with
    `keep_port` (a hub coming back where the edge knows it); returns once it listens."""
    import selectors

    log = settings.data_dir.parent / "hub-serve.log"
    env = {**hub_env(settings), "HUB_HTTP_PORT": str(settings.http_port) if keep_port else "0"}
    with log.open("ab") as out:
        proc = subprocess.Popen([*hub_cli(), "serve"], env=env, stdout=subprocess.PIPE,
                                stderr=out, cwd=REPO)
    assert proc.stdout is not None
    line = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                chunk = proc.stdout.read1(4096)  # type: ignore[attr-defined]
                if not chunk:
                    break
                line += chunk
    try:
        port = listening_port(line)
    except (ValueError, KeyError, AssertionError):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        pytest.fail(f"edge-hub serve did not start:\n{line!r}\n{log.read_text()}")
    server = HubServer(replace(settings, http_port=port), proc, log)
    return server


@contextlib.contextmanager
def serving(env: dict[str, str], url: str, log: Path) -> Iterator[None]:
    """`edge-hub serve` with the environment `env` (its settings, port included) while the
    block runs; the test fails when it does not answer at `url` within 30 s."""
    import requests

    with log.open("ab") as out:
        proc = subprocess.Popen([*hub_cli(), "serve"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO)

    def up() -> bool:
        try:
            return requests.get(f"{url}/login", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        deadline = time.monotonic() + 30
        while not up():
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"edge-hub serve did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield
    finally:
        stop_process(proc)


def stop_hub(server: HubServer, timeout: float = 15.0) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            server.proc.kill()
    code = server.proc.wait()
    if server.proc.stdout is not None:
        server.proc.stdout.close()
    return code


def serve_hub(settings: HubSettings, *, keep_port: bool = False) -> Iterator[HubServer]:
    """For a fixture to `yield from`: the hub started (`start_hub`), stopped after the test."""
    server = start_hub(settings, keep_port=keep_port)
    try:
        yield server
    finally:
        stop_hub(server)


@pytest.fixture
def hub_server(hub_settings: HubSettings) -> Iterator[HubServer]:
    """A real `edge-hub serve` process on each database (output in hub-serve.log beside the
    data dir)."""
    yield from serve_hub(hub_settings)


@pytest.fixture
def hub_sqlite(tmp_path: Path) -> HubSettings:
    """A hub on SQLite with a free port (not started; the sync tests, where the database
    makes no difference)."""
    return load_hub_settings(hub_env_for(tmp_path / "hub-data", "", free_port()))


@pytest.fixture
def hub(hub_sqlite: HubSettings) -> Iterator[HubServer]:
    """`hub_sqlite` serving, on a port it picks itself."""
    yield from serve_hub(hub_sqlite)


@pytest.fixture
def hub_store(hub_server: HubServer) -> Callable[..., str]:
    """Factory: register a store at the running hub; its token."""

    def _add(store_id: str, region: str = "north") -> str:
        return hub_server.add_store(store_id, region)

    return _add


def event(store_id: str, type_: str = "device.status", **fields: Any) -> dict[str, Any]:
    """A valid event of `type_` (data from `data=`), with a fresh event id."""
    from store_contract.protocol import now_rfc3339, uuid7

    body: dict[str, Any] = {"event_id": uuid7(), "type": type_, "occurred_at": now_rfc3339(),
                            "store_id": store_id, "device_id": "pos-1", "data": {}}
    body.update(fields)
    return body


def redeemed(store_id: str, coupon: str, *, redemption: str | None = None,
             campaign: str = "cmp-test", max_uses: int | None = None,
             signer: Any = None, claims: dict[str, Any] | None = None) -> dict[str, Any]:
    """A coupon.redeemed event of `coupon` at `store_id`; with `signer` (a SigningKey) it
    carries the scanned coupon as its `token` (jti `coupon`, cmp `campaign`, `claims`)."""
    from store_contract.protocol import uuid7

    data: dict[str, Any] = {"redemption": redemption or uuid7(), "coupon": coupon,
                            "campaign": campaign, "discount_minor": 250, "currency": "EUR",
                            "customer_id": None, "txn": "t-1"}
    if max_uses is not None:
        data["max_uses"] = max_uses
    if signer is not None:
        now = int(time.time())
        data["token"] = signer.sign({"jti": coupon, "cmp": campaign, "nbf": now - 60,
                                     "exp": now + 86400, **(claims or {})}, "coupon+jwt")
    return event(store_id, "coupon.redeemed", data=data)


@pytest.fixture
def hub_key(hub_server: HubServer) -> Any:
    """The running hub's own signing key (it signs coupons the hub believes)."""
    from cloud_sync.hub.keys import hub_signing_key

    return hub_signing_key(hub_server.settings)
