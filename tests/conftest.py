"""Fixtures in layers: settings -> store -> broker (real Mosquitto) -> edge -> devices.

Nothing relies on a broker or server already running: each test gets its own Mosquitto on
a free port, its own data dir and, where it needs one, its own `edge serve` process.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from edge.app.service import EdgeService
from edge.broker import BrokerProcess
from edge.datadir import DataDir
from edge.devices import Enrolment, enrol, sync_broker_files
from edge.settings import Settings, load_settings
from edge.store import Store
from edge.supervise import stop_process
from pos_bridge.device import DeviceClient
from store_contract.errors import StartupError

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")
# The hub's fixtures (PostgreSQL, hub settings, `edge-hub serve`), for any test to ask for.
pytest_plugins = ["tests.hubfix"]


# ------------------------------------------------------------------ the fast tier
# `pytest -m fast` runs the contract and domain tests alone, in seconds: no Mosquitto, no
# browser, no database server, no hub or edge process (README, "Tests"). A test is in the
# tier unless it asks for one of these fixtures or is marked `process`, or tests the web
# apps (`app`: the composition, not the domain); one that starts a process anyway fails,
# telling its author to mark it.
REAL_PARTS = frozenset({"broker", "enrolled", "edge", "device", "edge_process", "virtual_printer",
                        "pg_cluster", "pg_url", "hub_db_url", "hub_settings", "hub_server", "hub",
                        "hub_store", "hub_key", "playwright", "browser", "page"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if not names & REAL_PARTS and item.get_closest_marker("process") is None \
                and item.get_closest_marker("app") is None:
            item.add_marker(pytest.mark.fast)


class _NoProcesses(subprocess.Popen):  # type: ignore[type-arg]
    def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"a test of the fast tier started a process ({args!r}): mark it "
                           "@pytest.mark.process, or use the fixture of the real part")


@contextlib.contextmanager
def _processes_refused(item: pytest.Item) -> Iterator[None]:
    """A fast test may not start a process, not even in a module's fixture set up for it."""
    if item.get_closest_marker("fast") is None:
        yield
        return
    real = subprocess.Popen
    subprocess.Popen = _NoProcesses  # type: ignore[misc]
    try:
        yield
    finally:
        subprocess.Popen = real  # type: ignore[misc]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _processes_refused(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _processes_refused(item):
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def at_once(calls: Sequence[Callable[[], T]], timeout: float = 60.0) -> list[T]:
    """Run the calls at the same instant, each in a thread of its own (a barrier lets them go
    together); their results in order. An exception in a call is raised here, not lost in
    its thread."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def go(i: int) -> None:
        try:
            start.wait(timeout)
            results[i] = calls[i]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    return results


def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
               interval: float = 0.02) -> bool:
    """Poll `predicate` until it is truthy or `timeout` passes; returns the last verdict."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def subscribed(client: Any, topic: str, qos: int = 1, timeout: float = 5.0) -> list[Any]:
    """Subscribe a paho client to `topic` and wait for the broker's SUBACK (not a sleep);
    the reason codes it granted. A code `is_failure` when the broker refused (its ACL)."""
    import threading

    acks: dict[int, list[Any]] = {}
    arrived = threading.Condition()
    previous = client.on_subscribe

    def on_subscribe(c: Any, userdata: Any, mid: int, codes: list[Any], props: Any) -> None:
        with arrived:
            acks[mid] = list(codes)
            arrived.notify_all()
        if previous is not None:
            previous(c, userdata, mid, codes, props)

    client.on_subscribe = on_subscribe
    try:
        result, mid = client.subscribe(topic, qos=qos)
        assert result == 0, f"subscribing to {topic} failed: {result}"
        with arrived:
            assert arrived.wait_for(lambda: mid in acks, timeout), f"no SUBACK for {topic}"
            return acks[mid]
    finally:
        client.on_subscribe = previous


class Issuer:
    """The shopper app's (the chain's) signing key: signs coupons and member codes with PyJWT,
    as the app does, independently of the edge's own code."""

    def __init__(self, folder: Path, kid: str = "app-test-1") -> None:
        self.kid = kid
        self.private = Ed25519PrivateKey.generate()
        self.jwk = json.loads(OKPAlgorithm.to_jwk(self.private))
        public = {k: v for k, v in self.jwk.items() if k != "d"}
        self.jwks_path = folder / "trusted-keys.json"
        self.jwks_path.write_text(json.dumps({"keys": [{**public, "kid": kid}]}))

    def sign(self, claims: dict[str, Any], typ: str = "coupon+jwt",
             headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm="EdDSA",
                          headers={"typ": typ, "kid": self.kid, **(headers or {})})

    def coupon(self, **claims: Any) -> str:
        """A coupon; defaults: a fresh jti, 10 % off, valid from an hour ago for a week."""
        now = int(time.time())
        body = {"jti": f"cpn-{uuid.uuid4().hex[:12]}", "cmp": "cmp-test", "nbf": now - 3600,
                "exp": now + 7 * 86400, "disc": {"kind": "percent", "value": 10}}
        body.update(claims)
        return self.sign({k: v for k, v in body.items() if v is not None})

    def member(self, sub: str, *, life: int = 120, iat: int | None = None) -> str:
        iat = int(time.time()) if iat is None else iat
        return self.sign({"sub": sub, "iat": iat, "exp": iat + life,
                          "jti": uuid.uuid4().hex}, typ="member+jwt")


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    return Issuer(tmp_path)


@pytest.fixture
def settings(tmp_path: Path, issuer: Issuer) -> Settings:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("Mosquitto is not installed: run the README's test command, which installs it")
    return load_settings(
        {},
        store_id="store-t",
        data_dir=str(tmp_path / "data"),
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",
        broker_tls_port=0,  # TLS tests set a port (tests/test_tls.py)
        http_port=free_port(),
        broker_bin=shutil.which("mosquitto") or "/usr/sbin/mosquitto",
        mqtt_keepalive=5,
        trusted_keys=str(issuer.jwks_path),
    )


@pytest.fixture
def datadir(settings: Settings) -> DataDir:
    return DataDir(settings.data_path).ensure()


@pytest.fixture
def store(datadir: DataDir) -> Iterator[Store]:
    s = Store(datadir.database)
    yield s
    s.close()


BROKER_TRIES = 5


def start_broker(settings: Settings, datadir: DataDir, store: Store) -> BrokerProcess:
    """A real Mosquitto with the store's password file and ACL, on a free port.

    Mosquitto 2.0.11 cannot be told to pick its own TCP port (`listener 0` means a unix
    socket), so the port is chosen first (free_port) and another process may take it before
    Mosquitto binds it. BrokerProcess.start then fails: the port is taken before the start,
    or Mosquitto exits at once ("Address already in use"). Then a new port is chosen and the
    broker started again. The new port goes into `settings` itself (the fixtures' shared,
    frozen object), so the edge and the devices made after the broker use it; a copy made
    from `settings` before the broker started would still name the old port.
    """
    for attempt in range(BROKER_TRIES):
        sync_broker_files(settings, datadir, store)
        try:
            return BrokerProcess(settings, datadir, quiet=True).start()
        except StartupError as exc:
            if attempt == BROKER_TRIES - 1 or "taken" not in str(exc):
                raise
            object.__setattr__(settings, "mqtt_url", f"mqtt://127.0.0.1:{free_port()}")
    raise AssertionError("unreachable")


@pytest.fixture
def broker(settings: Settings, datadir: DataDir, store: Store) -> Iterator[BrokerProcess]:
    """A real Mosquitto with the store's password file and ACL, on a free port (see
    start_broker: tried again on a new port when another process took the first)."""
    proc = start_broker(settings, datadir, store)
    yield proc
    proc.stop()


@pytest.fixture
def enrolled(settings: Settings, datadir: DataDir, store: Store) -> Callable[[str, str], Enrolment]:
    def _enrol(kind: str, device_id: str) -> Enrolment:
        return enrol(settings, datadir, store, kind, device_id)

    return _enrol


@contextlib.contextmanager
def running_edge(settings: Settings,
                 service: EdgeService | None = None) -> Iterator[EdgeService]:
    """The edge service in this process (`service`, e.g. the one `create_app` built, or a
    new one), started and on the bus; stopped afterwards."""
    service = service or EdgeService(settings)
    service.start()
    try:
        assert service.bus.wait_connected(10), "the edge did not connect to the test broker"
        yield service
    finally:
        service.stop()


@pytest.fixture
def edge(request: pytest.FixtureRequest, settings: Settings,
         broker: BrokerProcess) -> Iterator[EdgeService]:
    """The edge service in this process, connected to the test broker. A test marked
    `@pytest.mark.edge_settings(print_retries=0, ...)` gets it with those settings."""
    marker = request.node.get_closest_marker("edge_settings")
    with running_edge(settings.with_overrides(**marker.kwargs) if marker else settings) as service:
        yield service


@pytest.fixture
def device(settings: Settings, enrolled: Callable[[str, str], Enrolment],
           broker: BrokerProcess) -> Iterator[Callable[..., DeviceClient]]:
    """Factory: enrol a device and connect it; every device is closed after the test."""
    made: list[DeviceClient] = []

    def _device(kind: str, device_id: str, **kwargs: object) -> DeviceClient:
        cred = enrolled(kind, device_id)
        client = DeviceClient(settings.store_id, kind, device_id, settings.mqtt_url,
                              cred.username, cred.password, **kwargs)  # type: ignore[arg-type]
        made.append(client)
        return client.connect()

    yield _device
    for client in made:
        client.close()


def edge_env(settings: Settings) -> dict[str, str]:
    """The environment for an `edge` command run with the test's settings."""
    return settings.environ()


def edge_cli() -> list[str]:
    return [sys.executable, "-m", "edge.app.cli"]


def listening_port(line: bytes) -> int:
    """The port in the `{"listening", "port"}` line `edge serve` and `edge-hub serve` print:
    a JSON number, as scripts reading it expect."""
    port = json.loads(line)["port"]
    if not isinstance(port, int):
        raise AssertionError(f"the serve line's port is not a number: {line!r}")
    return port


def edge_log(settings: Settings) -> Path:
    """Where the `edge_process` fixture's edge writes its output."""
    return settings.data_path.parent / "edge-serve.log"


class EdgeProc(subprocess.Popen[bytes]):
    """An `edge serve` process and the HTTP port it reported (`http_port`)."""

    http_port: int


def start_edge(settings: Settings, extra_env: dict[str, str] | None = None
               ) -> EdgeProc:
    """Start `edge serve` with the test's settings (and `extra_env`) and wait until it says
    which HTTP port it listens on (output is appended to `edge_log()`, so restarts in one
    test keep the whole story). With `http_port` 0 the edge binds a port of its own choosing
    and reports it, so no other process can take it between choosing and binding; the port
    is `proc.http_port`."""
    log_path = edge_log(settings)
    with log_path.open("ab") as log:
        start = log.tell()
        proc = EdgeProc([*edge_cli(), "serve"],
                        env={**edge_env(settings), **(extra_env or {})},
                        stdout=log, stderr=subprocess.STDOUT)

    def reported() -> int | None:
        with log_path.open("rb") as log:
            log.seek(start)
            for line in log.read().splitlines():
                if line.startswith(b'{"listening"'):
                    return listening_port(line)
        return None

    deadline = time.monotonic() + 20
    port = reported()
    while port is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        port = reported()
    if port is None:
        proc.kill()
        proc.wait()
        pytest.fail(f"edge serve did not start:\n{log_path.read_text()}")
    if settings.http_port not in (0, port):
        proc.kill()
        proc.wait()
        pytest.fail(f"edge serve listens on {port}, not {settings.http_port}")
    proc.http_port = port
    return proc


@pytest.fixture
def edge_process(settings: Settings, broker: BrokerProcess) -> Iterator[EdgeProc]:
    """`edge serve` as its own process, as a store box runs it (output: `edge_log()`). It
    binds an HTTP port of its own choosing: `edge_process.http_port`."""
    proc = start_edge(settings.with_overrides(http_port=0))
    yield proc
    stop_process(proc)


def start_edge_on_bus(settings: Settings) -> EdgeProc:
    """`edge serve`, once /healthz says it is on the bus (a request sent before the edge
    subscribed would be lost)."""
    import requests

    proc = start_edge(settings)
    url = f"http://127.0.0.1:{proc.http_port}/healthz"
    if not wait_until(lambda: requests.get(url, timeout=2).json()["broker"]["connected"], 15):
        stop_process(proc)
        pytest.fail(f"edge serve did not connect to the broker:\n{edge_log(settings).read_text()}")
    return proc


@pytest.fixture
def virtual_printer() -> Iterator[Callable[[str], Any]]:
    """Factory: a started virtual network printer of a profile; all stopped after the test."""
    from pos_bridge.virtual_printer import VirtualPrinter

    made: list[VirtualPrinter] = []

    def _printer(profile: str = "TM-T20II") -> VirtualPrinter:
        vp = VirtualPrinter(profile=profile).start()
        made.append(vp)
        return vp

    yield _printer
    for vp in made:
        vp.stop()
