"""TLS on the store LAN: the store's own CA, the broker's mqtts listener, the plain listener
kept to localhost, a sale over mqtts, and certificate rotation while devices stay connected.

Everything is real: the certificates are made by `edge init` / `edge tls rotate`, Mosquitto
serves them, and the devices verify them with Python's ssl module (through paho).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509

from edge.app.service import EdgeService
from edge.broker import BrokerProcess, wait_for_port
from edge.datadir import DataDir
from edge.devices import Enrolment, sync_broker_files
from edge.settings import Settings, SettingsError, load_settings
from edge.store import Store
from edge.supervise import stop_process
from edge.tls import StoreTLS, default_names, fingerprint
from pos_bridge.device import DeviceClient, DeviceError
from pos_bridge.lane import Lane, MqttTransport, basket, new_txn_id
from tests.conftest import (
    REPO,
    Issuer,
    edge_cli,
    edge_env,
    free_port,
    running_edge,
    wait_until,
)

NAMES = ["localhost", "127.0.0.1"]


def lan_address() -> str:
    """An address of this machine that is not 127.0.0.1: its LAN address, or else another
    loopback address (a listener on 127.0.0.1 does not answer on 127.0.0.2 either)."""
    for name in default_names():
        try:
            if not name.startswith("127.") and socket.inet_aton(name) and name != "::1":
                return name
        except OSError:
            continue
    return "127.0.0.2"


@pytest.fixture
def tls_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, broker_host="0.0.0.0", broker_tls_port=free_port(),
                               tls_names=",".join([*NAMES, lan_address()]))


@pytest.fixture
def tls(tls_settings: Settings) -> StoreTLS:
    run = subprocess.run([*edge_cli(), "init"], env=edge_env(tls_settings), cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    made = StoreTLS.of(DataDir(tls_settings.data_path))
    assert json.loads(run.stdout)["ca_sha256"] == fingerprint(made.cas()[0])
    return made


@pytest.fixture
def tls_broker(tls_settings: Settings, tls: StoreTLS, datadir: DataDir,
               store: Store) -> Iterator[BrokerProcess]:
    sync_broker_files(tls_settings, datadir, store)
    proc = BrokerProcess(tls_settings, datadir, quiet=True).start()
    yield proc
    proc.stop()


def mqtts_url(settings: Settings, host: str, ca_file: Path | None) -> str:
    query = f"?cafile={quote(str(ca_file))}" if ca_file else ""
    return f"mqtts://{host}:{settings.broker_tls_port}{query}"


def handshake(host: str, port: int, ca_file: Path, server_name: str) -> x509.Certificate:
    """A bare TLS handshake verified against `ca_file`; the server's certificate."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection((host, port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls_sock:
        der = tls_sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.fixture
def tls_edge(tls_settings: Settings, tls_broker: BrokerProcess) -> Iterator[EdgeService]:
    """The edge, on the plain localhost listener as on a store box."""
    with running_edge(tls_settings) as service:
        yield service


@pytest.fixture
def connect(tls_settings: Settings,
            enrolled: Callable[..., Enrolment]) -> Iterator[Callable[..., DeviceClient]]:
    made: list[DeviceClient] = []

    def _connect(device_id: str, url: str, timeout: float = 5) -> DeviceClient:
        cred = enrolled("pos", device_id)
        client = DeviceClient(tls_settings.store_id, "pos", device_id, url, cred.username,
                              cred.password)
        made.append(client)
        return client.connect(timeout=timeout)

    yield _connect
    for client in made:
        client.close()


# ---------------------------------------------------------------- the certificates


@pytest.mark.process
def test_init_makes_a_store_ca_and_a_server_certificate_once(tls_settings: Settings,
                                                             tls: StoreTLS) -> None:
    ca = tls.cas()[0]
    server = tls.server()
    assert server.issuer == ca.subject
    ca.verify_directly_issued_by(ca)
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    for secret in (tls.ca_key, tls.key_file):
        assert secret.stat().st_mode & 0o077 == 0, f"{secret.name} is readable by others"
    again = subprocess.run([*edge_cli(), "init"], env=edge_env(tls_settings), cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert fingerprint(tls.cas()[0]) == fingerprint(ca), "init again must keep the store's CA"
    assert fingerprint(tls.server()) == fingerprint(server)


def test_each_store_has_its_own_ca(tmp_path: Path) -> None:
    a, b = StoreTLS(tmp_path / "a"), StoreTLS(tmp_path / "b")
    a.ensure("a", NAMES)
    b.ensure("b", NAMES)
    assert fingerprint(a.cas()[0]) != fingerprint(b.cas()[0])
    with pytest.raises(ValueError):
        b.server().verify_directly_issued_by(a.cas()[0])


# ---------------------------------------------------------------- the broker's listeners


def test_a_lane_completes_a_sale_over_mqtts(tls_settings: Settings, tls: StoreTLS,
                                           tls_edge: EdgeService, issuer: Issuer,
                                           connect: Callable[..., DeviceClient]) -> None:
    device = connect("lane-1", mqtts_url(tls_settings, "localhost", tls.ca_file))
    assert isinstance(device.client.socket(), ssl.SSLSocket), "the connection is not TLS"
    lane = Lane(MqttTransport(device))
    txn = new_txn_id()
    items = basket([{"sku": "4011", "qty": 2, "unit_minor": 500}], "EUR")
    applied = lane.apply_coupon(txn, issuer.coupon(), items)
    assert applied["discount_minor"] == 100
    done = lane.complete(txn, items, [{"kind": "card", "amount_minor": 900}])
    assert [r["discount_minor"] for r in done["redemptions"]] == [100]
    assert tls_edge.store.query("SELECT state FROM transactions") == [{"state": "completed"}]


def test_a_device_with_another_ca_is_refused(tls_settings: Settings, tls: StoreTLS,
                                             tls_broker: BrokerProcess, tmp_path: Path,
                                             connect: Callable[..., DeviceClient]) -> None:
    other = StoreTLS(tmp_path / "other-store")
    other.ensure("other", NAMES)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake("127.0.0.1", tls_settings.broker_tls_port, other.ca_file, "localhost")
    with pytest.raises(DeviceError, match="no answer"):
        connect("lane-1", mqtts_url(tls_settings, "localhost", other.ca_file), timeout=3)
    # Nor is the store CA in the system's trust store: mqtts without the CA file fails too.
    with pytest.raises(DeviceError, match="no answer"):
        connect("lane-2", mqtts_url(tls_settings, "localhost", None), timeout=3)
    # The right CA but a name the certificate does not carry: refused as well.
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        handshake("127.0.0.1", tls_settings.broker_tls_port, tls.ca_file, "evil.example")


def test_plain_mqtt_is_refused_from_the_lan_but_tls_is_served_there(
        tls_settings: Settings, tls: StoreTLS, tls_broker: BrokerProcess,
        connect: Callable[..., DeviceClient]) -> None:
    lan = lan_address()
    plain_port = int(tls_settings.mqtt_url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((lan, plain_port), timeout=3).close()
    assert handshake(lan, tls_settings.broker_tls_port, tls.ca_file, lan)
    assert connect("lane-1", mqtts_url(tls_settings, lan, tls.ca_file)).connected.is_set()
    # On the box itself the plain listener still serves the edge.
    socket.create_connection(("127.0.0.1", plain_port), timeout=3).close()


@pytest.mark.process
def test_the_plain_listener_reaches_the_lan_only_when_the_setting_says_so(
        tls_settings: Settings, tls: StoreTLS, datadir: DataDir, store: Store) -> None:
    open_plain = dataclasses.replace(tls_settings, broker_plain_listener="lan")
    sync_broker_files(open_plain, datadir, store)
    proc = BrokerProcess(open_plain, datadir, quiet=True).start()
    try:
        plain_port = int(open_plain.mqtt_url.rsplit(":", 1)[1])
        socket.create_connection((lan_address(), plain_port), timeout=3).close()
    finally:
        proc.stop()


# ---------------------------------------------------------------- rotation


def rotate(settings: Settings, *args: str) -> dict[str, object]:
    run = subprocess.run([*edge_cli(), "tls", "rotate", *args], env=edge_env(settings),
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result: dict[str, object] = json.loads(run.stdout)
    return result


def test_rotation_serves_a_new_certificate_without_dropping_devices(
        tls_settings: Settings, tls: StoreTLS, tls_edge: EdgeService, tmp_path: Path,
        connect: Callable[..., DeviceClient]) -> None:
    port = tls_settings.broker_tls_port
    before = handshake("127.0.0.1", port, tls.ca_file, "localhost")
    old_ca = tmp_path / "old-ca.crt"
    old_ca.write_bytes(tls.ca_file.read_bytes())
    lane = connect("lane-1", mqtts_url(tls_settings, "localhost", old_ca))
    drops: list[object] = []
    on_disconnect = lane.client.on_disconnect
    lane.client.on_disconnect = lambda *a: (drops.append(a), on_disconnect(*a))

    rotate(tls_settings)
    # Mosquitto handles the SIGHUP in its own time: wait for the new certificate.
    assert wait_until(lambda: fingerprint(handshake("127.0.0.1", port, old_ca, "localhost"))
                      == fingerprint(tls.server()), 5)
    after = handshake("127.0.0.1", port, old_ca, "localhost")
    assert fingerprint(after) != fingerprint(before)
    assert fingerprint(after) == fingerprint(tls.server())
    assert lane.request("ping", {}, timeout=5)["ok"]
    assert drops == [], "the broker dropped a connected device while reloading"

    # A new CA: staged first, so devices can be given both before the server switches.
    rotate(tls_settings, "--ca")
    bundle = tmp_path / "both-cas.crt"
    bundle.write_bytes(tls.ca_file.read_bytes())
    assert len(tls.cas()) == 2
    assert fingerprint(handshake("127.0.0.1", port, old_ca, "localhost")) == fingerprint(after)
    rotate(tls_settings)
    assert wait_until(lambda: fingerprint(handshake("127.0.0.1", port, bundle, "localhost"))
                      == fingerprint(tls.server()), 5)
    switched = handshake("127.0.0.1", port, bundle, "localhost")
    assert switched.issuer != after.issuer
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake("127.0.0.1", port, old_ca, "localhost")
    assert len(tls.cas()) == 1
    assert connect("lane-2", mqtts_url(tls_settings, "localhost", bundle)).connected.is_set()


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("url, message", [
    ("mqtt://127.0.0.1:1883?cafile=/etc/hostname", "not mqtts"),
    ("mqtts://127.0.0.1:8883?cafile=/nonexistent/ca.crt", "does not exist"),
])
def test_a_cafile_that_cannot_work_is_a_config_error(url: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({}, mqtt_url=url)


def test_the_plain_listener_setting_takes_only_known_values() -> None:
    with pytest.raises(SettingsError, match="must be localhost or lan"):
        load_settings({}, broker_plain_listener="everywhere")


@pytest.mark.process
def test_edge_broker_makes_the_certificate_on_a_box_upgraded_without_init(
        tls_settings: Settings, datadir: DataDir, store: Store) -> None:
    folder = StoreTLS.of(datadir)
    assert not folder.ready()
    with open(tls_settings.data_path.parent / "broker.log", "wb") as log:
        proc = subprocess.Popen([*edge_cli(), "broker"], env=edge_env(tls_settings), cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", tls_settings.broker_tls_port, 20)
        served = handshake("127.0.0.1", tls_settings.broker_tls_port, folder.ca_file,
                           "localhost")
        assert fingerprint(served) == fingerprint(folder.server())
    finally:
        stop_process(proc)
    # Stopped at once after it started serving, it stops its Mosquitto too.
    conf = str(datadir.root / "mosquitto" / "mosquitto.conf").encode()

    def brokers_left() -> list[Path]:
        left = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                if conf in cmdline.read_bytes():
                    left.append(cmdline)
        return left

    assert wait_until(lambda: not brokers_left(), 10), brokers_left()


@pytest.mark.process
def test_healthz_reports_the_certificate_and_warns_before_it_ends(tls_edge: EdgeService,
                                                                  tls: StoreTLS) -> None:
    healthy, report = tls_edge.health()
    assert healthy and report["status"] == "ok"
    assert report["tls"]["ok"] is True
    assert report["tls"]["not_after"] == tls.server().not_valid_after_utc.isoformat()
    assert 390 <= report["tls"]["days_left"] <= 397
    assert tls.health(warn_days=report["tls"]["days_left"] + 1)["ok"] is False
    tls.cert_file.unlink()
    healthy, report = tls_edge.health()
    assert healthy and report["status"] == "degraded"  # the till still sells
    assert report["tls"] == {"ok": False, "error": "no certificate: run edge init"}
