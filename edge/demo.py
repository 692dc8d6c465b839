"""`edge demo`: a whole store on this machine — broker, edge, simulated lanes and devices.

Everything runs as child processes, as on a store box; Ctrl-C stops them in order.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from edge.broker import BrokerProcess, wait_for_port
from edge.datadir import DataDir, write_private
from edge.devices import enrol, sync_broker_files
from edge.errors import StartupError
from edge.settings import Settings, load_settings
from edge.staff.accounts import add_user
from edge.store import Store
from edge.supervise import stop_process

DEMO_DEVICES = [("pos", "lane-1"), ("pos", "lane-2"), ("printer", "printer-1"),
                ("scanner", "scanner-1"), ("kiosk", "kiosk-1")]


def _port_or_free(port: int) -> int:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(settings: Settings) -> dict[str, str]:
    return settings.with_overrides(log_level="WARNING").environ()


def _prepare(settings: Settings) -> tuple[DataDir, str]:
    """Data dir, demo devices and a manager account with a fresh password."""
    datadir = DataDir(settings.data_path).ensure()
    store = Store(datadir.database)
    try:
        datadir.edge_mqtt_credentials()
        enrolled = [enrol(settings, datadir, store, kind, dev_id, rotate=True).to_dict()
                    for kind, dev_id in DEMO_DEVICES]
        password = secrets.token_urlsafe(9)
        add_user(store, "manager", password, "manager", replace=True)
        sync_broker_files(settings, datadir, store)
    finally:
        store.close()
    spec = {"store": settings.store_id, "mqtt_url": settings.mqtt_url, "devices": enrolled}
    write_private(datadir.root / "demo-devices.json", json.dumps(spec, indent=2), replace=True)
    return datadir, password


def _wait_healthy(url: str, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartupError("the edge stopped during start-up; see the lines above")
        try:
            if requests.get(url, timeout=1).json()["broker"]["connected"]:
                return
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise StartupError(f"the edge did not become healthy at {url}")


def run_demo(data_dir: str, http_port: int, mqtt_port: int) -> None:
    mqtt_port = _port_or_free(mqtt_port)
    http_port = _port_or_free(http_port)
    settings = load_settings(data_dir=str(Path(data_dir).resolve()),
                             mqtt_url=f"mqtt://127.0.0.1:{mqtt_port}", http_port=http_port)
    datadir, password = _prepare(settings)
    broker = BrokerProcess(settings, datadir, quiet=True).start()
    children: list[subprocess.Popen[Any]] = []
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        edge = subprocess.Popen([sys.executable, "-m", "edge.cli", "serve"], env=_env(settings),
                                start_new_session=True)
        children.append(edge)
        base = f"http://{settings.http_host}:{http_port}"
        wait_for_port(settings.http_host, http_port, 30)
        _wait_healthy(f"{base}/healthz", edge)
        sim = subprocess.Popen([sys.executable, "-m", "pos_bridge.simulator",
                                str(datadir.root / "demo-devices.json")], env=_env(settings),
                               start_new_session=True)
        children.append(sim)
        print(f"""
Demo store "{settings.store_name}" ({settings.store_id}) is running.

  Devices (staff page): {base}/staff/devices
      sign in as:       manager / {password}
  Devices (API):        curl -u manager:{password} {base}/api/v1/devices
  Health:               {base}/healthz
  Metrics:              {base}/metrics
  MQTT broker:          mqtt://127.0.0.1:{mqtt_port}
      edge login in:    {datadir.secrets}/mqtt-edge.json
  Data:                 {datadir.root}

Simulated devices: {", ".join(f"{k} {i}" for k, i in DEMO_DEVICES)}.
Press Ctrl-C to stop.
""", flush=True)
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    raise StartupError(f"a demo process stopped unexpectedly: {child.args!r}")
            time.sleep(0.3)
    finally:
        for child in reversed(children):
            stop_process(child)
        broker.stop()
        print("Demo store stopped.", flush=True)
