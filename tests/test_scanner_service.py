"""`python -m pos_bridge.scanner run` as a store runs it: a process with its login, reading a
camera (the `watch:DIR` source) and a serial scanner (a real pseudo-terminal), its scans
routed by a real edge to the lane the scanner is assigned to."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.app.service import EdgeService
from edge.datadir import DataDir
from edge.scanners import add_scanner, target_of
from edge.settings import Settings
from edge.supervise import stop_process
from pos_bridge.device import DeviceClient
from store_contract.protocol import Envelope
from store_contract.scans import parse_scan
from tests.conftest import REPO

QR_TEXT = "MEMBER:c-anna:7f3a9c2e"  # what a shopper's app shows, in the shape of one


@pytest.fixture(scope="module")
def qr_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import qrcode

    path = tmp_path_factory.mktemp("codes") / "member.png"
    qrcode.make(QR_TEXT, box_size=6).save(path)
    return path


def _pty() -> tuple[int, str]:
    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.close(slave)
    return master, name


@pytest.fixture
def lane(device: Callable[..., DeviceClient]) -> queue.Queue[Envelope]:
    inbox: queue.Queue[Envelope] = queue.Queue()
    client = device("pos", "lane-1")
    client.command_handlers["scan"] = inbox.put
    return inbox


@pytest.fixture
def scanner_run(settings: Settings, datadir: DataDir, edge: EdgeService,
                tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Factory: enrol scan-1 for lane-1 (`edge scanners add`) and start the service with the
    readers given; stopped with SIGTERM after the test."""
    procs: list[subprocess.Popen[str]] = []

    def _run(*readers: str) -> subprocess.Popen[str]:
        _, enrolment = add_scanner(settings, datadir, edge.store, "scan-1",
                                   target_of("lane-1", None))
        with (tmp_path / "scanner.log").open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pos_bridge.scanner", "run", "--store",
                 settings.store_id, "--device", "scan-1", "--mqtt-url", settings.mqtt_url,
                 "--username", enrolment.username, *readers],
                env={**os.environ, "SCANNER_MQTT_PASSWORD": enrolment.password},
                stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
        procs.append(proc)
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        assert started == {"scanner": "scan-1", "readers": len(readers) // 2}
        return proc

    yield _run
    for proc in procs:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def _next(inbox: queue.Queue[Envelope]) -> dict[str, object]:
    try:
        envelope = inbox.get(timeout=20)
    except queue.Empty:
        raise AssertionError("no cmd/scan reached the lane") from None
    return envelope.data


def test_a_code_shown_to_the_camera_and_one_read_by_a_serial_scanner_reach_the_lane(
        scanner_run: Callable[..., subprocess.Popen[str]], lane: queue.Queue[Envelope],
        qr_image: Path, tmp_path: Path) -> None:
    camera = tmp_path / "camera"
    camera.mkdir()
    master, port = _pty()
    try:
        proc = scanner_run("--camera", f"watch:{camera},hold_off=1",
                           "--serial", f"{port},terminator=cr")
        shutil.copy(qr_image, camera / "shown.png")  # held in front of the camera
        first = _next(lane)
        assert (first["code"], first["source"], first["scanner"]) == (QR_TEXT, "camera", "scan-1")
        assert first["symbology"] == "]Q1" and first["seq"] == 1
        os.write(master, b"4006381333931\r")
        second = _next(lane)
        assert (second["code"], second["source"], second["seq"]) == (
            "4006381333931", "serial", 2)
        product = parse_scan(second).product
        assert product is not None and product.gtin == "04006381333931"
        # Held in view (a second more: four more frames of it): no second camera scan.
        # Taken away and shown again: one more.
        time.sleep(1.0)
        assert lane.empty()
        (camera / "shown.png").unlink()
        os.write(master, b"96385074\r")  # a scan meanwhile keeps the order honest
        assert _next(lane)["code"] == "96385074"
        time.sleep(1.5)  # away for longer than the hold-off: the next showing is a new one
        shutil.copy(qr_image, camera / "again.png")
        again = _next(lane)
        assert (again["code"], again["source"], again["seq"]) == (QR_TEXT, "camera", 4)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        os.close(master)


@pytest.mark.process
def test_without_its_password_or_with_a_bad_reader_setting_it_does_not_start(
        settings: Settings, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "pos_bridge.scanner", "run", "--store", settings.store_id,
            "--device", "scan-1", "--mqtt-url", settings.mqtt_url, "--username", "scanner-scan-1"]
    env = {k: v for k, v in os.environ.items() if k != "SCANNER_MQTT_PASSWORD"}
    done = subprocess.run([*base, "--serial", "/dev/ttyS0"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=REPO, check=False)
    assert done.returncode == 2 and "SCANNER_MQTT_PASSWORD is not set" in done.stderr
    env["SCANNER_MQTT_PASSWORD"] = "x"
    done = subprocess.run([*base, "--serial", "/dev/ttyS0,baudrate=fast"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert done.returncode == 2 and "baudrate='fast'" in done.stderr
    done = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60, cwd=REPO,
                          check=False)
    assert done.returncode == 2 and "at least one --hid, --serial or --camera" in done.stderr


def test_a_login_the_broker_refuses_stops_the_service_instead_of_retrying(
        settings: Settings, datadir: DataDir, edge: EdgeService,
        lane: queue.Queue[Envelope]) -> None:
    _, enrolment = add_scanner(settings, datadir, edge.store, "scan-1", target_of("lane-1", None))
    done = subprocess.run(
        [sys.executable, "-m", "pos_bridge.scanner", "run", "--store", settings.store_id,
         "--device", "scan-1", "--mqtt-url", settings.mqtt_url, "--username",
         enrolment.username, "--serial", "/dev/ttyS0"],
        env={**os.environ, "SCANNER_MQTT_PASSWORD": enrolment.password + "-wrong"},
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert done.returncode == 3 and "refused" in done.stderr, done.stderr
