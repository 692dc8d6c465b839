"""The store's Mosquitto: its password file, ACL and config, rendered from `config/mosquitto/`.

The password file uses Mosquitto's own `$7$` format (PBKDF2-SHA512, as `mosquitto_passwd`
writes it), so the broker checks device logins itself. After a change the running broker is
told to reload with SIGHUP, which re-reads the password file and the ACL.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import logging
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge.datadir import DataDir, write_private
from edge.settings import Settings
from edge.supervise import stop_process
from edge.tls import StoreTLS
from store_contract.errors import StartupError
from store_contract.mqtt import parse_mqtt_url

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parent.parent / "config" / "mosquitto"
PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for $7$


def hash_password(password: str, *, salt: bytes | None = None,
                  iterations: int = PBKDF2_ITERATIONS) -> str:
    """A Mosquitto `$7$` password hash (PBKDF2-HMAC-SHA512, 12-byte salt)."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Does `password` match a `$7$` hash made by `hash_password` (or mosquitto_passwd)?"""
    try:
        _, seven, iterations, salt, _digest = stored.split("$")
        if seven != "7":
            return False
        expected = hash_password(password, salt=base64.b64decode(salt),
                                 iterations=int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(expected, stored)


@dataclass(frozen=True)
class Login:
    """One broker account: the edge's or a device's."""

    username: str
    password_hash: str
    kind: str = ""  # empty for the edge itself
    id: str = ""


def _acl_blocks(text: str) -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = blocks.setdefault(line[1:-1], [])
        elif current is not None:
            current.append(line)
    return blocks


def render_acl(store_id: str, edge: Login, devices: Iterable[Login],
               template: Path = CONFIG_DIR / "acl.template") -> str:
    """The ACL file for the edge and every enrolled device."""
    blocks = _acl_blocks(template.read_text())
    out = [f"# Generated from {template.name} for store {store_id}; do not edit.", ""]
    out += [line.format(store=store_id, username=edge.username) for line in blocks["edge"]]
    for dev in devices:
        out.append("")
        out.append(f"user {dev.username}")
        for line in blocks["all"] + blocks.get(dev.kind, []):
            if not line.startswith("user "):
                out.append(line.format(store=store_id, kind=dev.kind, id=dev.id,
                                       username=dev.username))
    return "\n".join(out) + "\n"


def render_passwd(logins: Iterable[Login]) -> str:
    return "".join(f"{login.username}:{login.password_hash}\n" for login in logins)


def render_conf(settings: Settings, datadir: DataDir,
                template: Path = CONFIG_DIR / "mosquitto.conf.template") -> str:
    address = parse_mqtt_url(settings.mqtt_url)
    # Mosquitto started as root drops to this user: the one who owns the data dir.
    try:
        owner = pwd.getpwuid(datadir.root.stat().st_uid).pw_name
    except (KeyError, FileNotFoundError):
        owner = getpass.getuser()
    lan_host = settings.broker_host or address.host
    tls = StoreTLS.of(datadir)
    if settings.broker_tls_port and tls.ready():
        tls_listener = (CONFIG_DIR / "tls-listener.conf.template").read_text().format(
            tls_port=settings.broker_tls_port, tls_host=lan_host, cert=tls.cert_file,
            key=tls.key_file)
    else:
        tls_listener = ("\n# No TLS listener: broker_tls_port is 0 or `edge init` has not made "
                        "the store's certificate yet.\n")
    return template.read_text().format(
        host=lan_host if settings.broker_plain_listener == "lan" else "127.0.0.1",
        port=address.port, dir=datadir.mosquitto, user=owner, tls_listener=tls_listener,
    )


def write_broker_files(settings: Settings, datadir: DataDir, edge: Login,
                       devices: list[Login]) -> None:
    """Write mosquitto.conf, passwd and acl into the data dir, then reload a running broker."""
    folder = datadir.mosquitto
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(folder / "mosquitto.conf", render_conf(settings, datadir), replace=True)
    write_private(folder / "passwd", render_passwd([edge, *devices]), replace=True)
    write_private(folder / "acl", render_acl(settings.store_id, edge, devices),
                  replace=True)
    reload_broker(datadir)


def running_broker_pid(datadir: DataDir) -> int | None:
    try:
        pid = int((datadir.mosquitto / "mosquitto.pid").read_text().strip())
        # A stale pid file may name another program now: only ever signal a mosquitto.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid if b"mosquitto" in cmdline else None


def reload_broker(datadir: DataDir) -> bool:
    """SIGHUP the store's running broker, if there is one: it re-reads passwd and acl."""
    pid = running_broker_pid(datadir)
    if pid is None:
        return False
    os.kill(pid, signal.SIGHUP)
    log.info("told the broker (pid %s) to reload its password file and ACL", pid)
    return True


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing is listening on {host}:{port}") from None
            time.sleep(0.05)


class BrokerProcess:
    """A Mosquitto child process running the data dir's config (for `edge broker`, demo, tests)."""

    def __init__(self, settings: Settings, datadir: DataDir, *, quiet: bool = False) -> None:
        self.settings = settings
        self.datadir = datadir
        self.quiet = quiet
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> BrokerProcess:
        conf = self.datadir.mosquitto / "mosquitto.conf"
        if not conf.exists():
            raise StartupError(f"{conf} is missing; run `edge init` first")
        address = parse_mqtt_url(self.settings.mqtt_url)
        try:
            wait_for_port(address.host, address.port, 0)
        except TimeoutError:
            pass
        else:
            raise StartupError(f"port {address.port} on {address.host} is already taken (another "
                               "Mosquitto?); stop it or change EDGE_MQTT_URL")
        try:
            self.process = subprocess.Popen(
                [self.settings.broker_bin, "-c", str(conf)],
                stdout=subprocess.DEVNULL if self.quiet else None,
                stderr=subprocess.DEVNULL if self.quiet else None,
                start_new_session=True,  # Ctrl-C goes to our process, which stops the broker
            )
        except FileNotFoundError:
            raise StartupError(
                f"Mosquitto ({self.settings.broker_bin}) is not installed: "
                "run `apt-get install mosquitto` or set EDGE_BROKER_BIN") from None
        address = parse_mqtt_url(self.settings.mqtt_url)
        try:
            wait_for_port(address.host, address.port, timeout)
            time.sleep(0.1)  # a broker that lost the race for its port exits right away
            if self.process.poll() is not None:
                raise TimeoutError
        except TimeoutError:
            self.stop()
            raise StartupError(f"Mosquitto did not start listening on {address.host}:"
                               f"{address.port}; is the port taken?") from None
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
