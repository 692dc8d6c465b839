"""The camera reader (pos_bridge/scanner/camera.py) on real OpenCV sources: image sequences
written to tmp_path from the corpus sample (tests/data/scans) and from QR codes made here.
No camera is needed: an image sequence is an OpenCV source like a V4L2 device, played at
a frame rate."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import qrcode

from pos_bridge.scanner.camera import CameraReader
from pos_bridge.scanner.decode import Decoded, Decoder
from store_contract.scans import Scan

DATA = Path(__file__).parent / "data" / "scans"
QR = DATA / "qr" / "qrcode-1" / "1.png"  # a photographed QR
QR_TEXT = QR.with_suffix(".txt").read_text(encoding="utf-8")
EAN = DATA / "barcodes" / "ean13-1" / "18.png"  # a photographed EAN-13
NOTHING = sorted((DATA / "barcodes" / "falsepositives").glob("*.png"))


class Collected:
    """What a reader reported: its scans and its status changes."""

    def __init__(self) -> None:
        self.scans: list[Scan] = []
        self.status: list[tuple[str, str]] = []

    def on_scan(self, scan: Scan) -> None:
        self.scans.append(scan)

    def on_status(self, state: str, detail: str) -> None:
        self.status.append((state, detail))


def sequence(directory: Path, frames: list[Path]) -> str:
    """The frames as an OpenCV image sequence (000.png, 001.png, ...): its pattern."""
    directory.mkdir(parents=True, exist_ok=True)
    for number, frame in enumerate(frames):
        shutil.copyfile(frame, directory / f"{number:03d}.png")
    return str(directory / "%03d.png")


def play(source: str | Path, **options: Any) -> Collected:
    got = Collected()
    reader = CameraReader(source, got.on_scan, on_status=got.on_status, **options)
    with reader:
        assert reader.wait(60), "the reader did not finish its source"
    return got


def qr_png(path: Path, text: str) -> Path:
    maker = qrcode.QRCode(border=4, box_size=4)
    maker.add_data(text)
    maker.make(fit=True)
    cv2.imwrite(str(path), np.array(maker.make_image().get_image().convert("L")))
    return path


@pytest.mark.parametrize("kind", ["pattern", "directory"])
def test_a_code_held_for_30_frames_is_one_scan_and_shown_again_is_another(
        tmp_path: Path, kind: str) -> None:
    blank = NOTHING[0]
    pattern = sequence(tmp_path / "seq", [QR] * 30 + [blank] * 50 + [QR] * 30)
    source = pattern if kind == "pattern" else str(tmp_path / "seq")
    got = play(source, fps=50, hold_off=0.8)  # 50 frames without it: over 1 s
    assert [(s.code, s.seq, s.source, s.symbology) for s in got.scans] == [
        (QR_TEXT, 1, "camera", "]Q1"), (QR_TEXT, 2, "camera", "]Q1")]
    assert got.status and got.status[-1][0] == "ended"


@pytest.mark.parametrize(("hold_off", "scans"), [(2.0, 1), (0.5, 2)])
def test_a_code_back_within_the_hold_off_is_the_same_presentation(
        tmp_path: Path, hold_off: float, scans: int) -> None:
    # 10 frames at 10 fps without it: 1.1 s between the last sighting and the next.
    pattern = sequence(tmp_path / "seq", [EAN] * 10 + [NOTHING[1]] * 10 + [EAN] * 10)
    got = play(pattern, fps=10, hold_off=hold_off)
    assert [s.code for s in got.scans] == [EAN.with_suffix(".txt").read_text()] * scans
    assert [s.seq for s in got.scans] == list(range(1, scans + 1))
    assert got.scans[0].product is not None and got.scans[0].symbology == "]E0"


def test_two_codes_in_turn_are_one_scan_each(tmp_path: Path) -> None:
    pattern = sequence(tmp_path / "seq", [QR] * 25 + [EAN] * 25 + [QR] * 10)
    got = play(pattern, fps=50, hold_off=1.0)
    assert [s.code for s in got.scans] == [QR_TEXT, EAN.with_suffix(".txt").read_text()]


def test_frames_without_codes_give_no_scan_at_all(tmp_path: Path) -> None:
    pattern = sequence(tmp_path / "seq", NOTHING * 3)
    got = play(pattern, fps=100)
    assert got.scans == []
    assert got.status[-1][0] == "ended"


def test_the_newest_frame_is_decoded_not_a_stale_one(tmp_path: Path) -> None:
    """Every frame holds its own number; decoding is slowed to a tenth of a second while
    the source gives a frame every 10 ms. The frame decoded is always the newest the grabber
    has (never one queued behind it), so frames are skipped, not delayed."""
    frames = [qr_png(tmp_path / f"{n:03d}.png", f"frame {n:03d}") for n in range(1, 121)]
    assert len(frames) == 120
    decoder = Decoder()
    lag: list[int] = []
    reader: CameraReader

    def slow_decode(image: Any) -> list[Decoded]:
        newest = reader.frames_grabbed  # the grabber's newest frame as this one is taken
        codes = decoder.decode(image)
        (code,) = codes
        lag.append(newest - int(code.text.split()[1]))
        threading.Event().wait(0.1)
        return codes

    got = Collected()
    reader = CameraReader(str(tmp_path / "%03d.png"), got.on_scan, fps=100, hold_off=0,
                          decode=slow_decode)
    with reader:
        assert reader.wait(60)
    numbers = [int(s.code.split()[1]) for s in got.scans]
    assert numbers == sorted(numbers) and len(numbers) == len(set(numbers))
    assert len(numbers) <= 120 // 3, "frames were queued, not skipped"
    assert max(b - a for a, b in zip(numbers, numbers[1:], strict=False)) > 3
    # Only the frames that arrived between taking this one and reading the grabber's
    # counter (a queue would lag by ~9 more frames with every slow decode).
    assert lag and max(lag) <= 5, lag


@pytest.mark.parametrize("make", [
    lambda tmp: tmp / "missing.mp4",
    lambda tmp: tmp / "missing-%03d.png",
    lambda tmp: (tmp / "no-images").mkdir() or tmp / "no-images",
    lambda tmp: (tmp / "notes.avi").write_text("not a video") and tmp / "notes.avi",
])
def test_a_file_that_cannot_be_opened_is_reported_not_raised(
        tmp_path: Path, make: Callable[[Path], Path | str]) -> None:
    got = play(make(tmp_path))
    assert got.scans == []
    assert [state for state, _ in got.status] == ["error"]
    assert got.status[0][1].startswith("cannot open the camera source")


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("source", ["/dev/video-that-is-not-there", "watch:{tmp}/none"])
def test_a_camera_that_is_not_there_is_reported_once_and_tried_again(
        tmp_path: Path, source: str) -> None:
    got = Collected()
    reader = CameraReader(source.format(tmp=tmp_path), got.on_scan, on_status=got.on_status,
                          retry=0.05)
    with reader:
        time.sleep(0.6)  # a dozen tries
        assert not reader.wait(0), "the reader gave up on a camera that may come back"
    assert [state for state, _ in got.status] == ["error"]
    assert reader.state == "error" and got.scans == []


def test_a_camera_unplugged_and_plugged_back_reads_again(tmp_path: Path) -> None:
    """A watched directory is a live source: taken away it is a camera unplugged (no
    frames), put back it is the camera plugged in again (as a by-id device node comes
    back)."""
    got = Collected()
    camera = tmp_path / "camera"
    reader = CameraReader(f"watch:{camera}", got.on_scan, on_status=got.on_status,
                          retry=0.1, hold_off=0.2)
    with reader:
        assert wait_for(lambda: reader.state == "error", 5)  # not plugged in at the start
        camera.mkdir()
        shutil.copyfile(QR, camera / "shown.png")
        assert wait_for(lambda: len(got.scans) == 1, 10), got.status
        shutil.rmtree(camera)  # unplugged
        assert wait_for(lambda: reader.state == "failed", 5)
        time.sleep(0.3)  # over the hold-off: shown again after this is a new presentation
        camera.mkdir()
        shutil.copyfile(EAN, camera / "shown.png")
        assert wait_for(lambda: len(got.scans) == 2, 10), got.status
    assert [state for state, _ in got.status] == ["error", "running", "failed", "running"]
    assert [s.code for s in got.scans] == [QR_TEXT, EAN.with_suffix(".txt").read_text()]
    assert [s.seq for s in got.scans] == [1, 2]


def test_a_picture_left_in_a_watched_directory_is_decoded_once(tmp_path: Path) -> None:
    camera = tmp_path / "camera"
    camera.mkdir()
    shutil.copyfile(QR, camera / "shown.png")
    decoded: list[int] = []
    decoder = Decoder()

    def counting(image: Any) -> list[Decoded]:
        decoded.append(1)
        return decoder.decode(image)

    got = Collected()
    reader = CameraReader(f"watch:{camera}", got.on_scan, decode=counting, hold_off=0.1)
    with reader:
        assert wait_for(lambda: got.scans, 5)
        time.sleep(1.2)  # about five more frames of the same picture
        assert reader.frames_grabbed >= 5 and len(decoded) == 1
        time.sleep(0.2)
        shutil.copyfile(QR, camera / "shown.png")  # shown again, after the hold-off
        assert wait_for(lambda: len(got.scans) == 2, 5)
    assert len(decoded) == 2


def test_a_failing_callback_or_decoder_does_not_stop_the_reader(tmp_path: Path) -> None:
    pattern = sequence(tmp_path / "seq", [QR] * 15 + [NOTHING[0]] * 20 + [EAN] * 15)
    calls: list[int] = []
    delivered: list[Scan] = []

    def on_scan(scan: Scan) -> None:
        calls.append(scan.seq or 0)
        if len(calls) == 1:
            raise RuntimeError("the service's callback broke")
        delivered.append(scan)

    decoder = Decoder()
    frames = 0

    def flaky_decode(image: Any) -> list[Decoded]:
        nonlocal frames
        frames += 1
        if frames % 3 == 0:
            raise RuntimeError("a decoder fault")
        return decoder.decode(image)

    reader = CameraReader(pattern, on_scan, fps=50, hold_off=1.0, decode=flaky_decode)
    with reader:
        assert reader.wait(60)
    assert calls == [1, 2]
    assert [s.code for s in delivered] == [EAN.with_suffix(".txt").read_text()]
    assert reader.state == "ended"


def test_stop_ends_a_source_that_is_still_playing(tmp_path: Path) -> None:
    pattern = sequence(tmp_path / "seq", [QR] * 100)
    got = Collected()
    reader = CameraReader(pattern, got.on_scan, fps=10).start()  # 10 s of frames
    threading.Event().wait(0.5)
    reader.stop()
    assert not any(t.is_alive() for t in reader._threads)
    assert reader.state == "stopped" and reader.frames_grabbed < 100
    assert [s.seq for s in got.scans] == [1]


def test_sequence_numbers_start_from_1_for_each_reader(tmp_path: Path) -> None:
    pattern = sequence(tmp_path / "seq", [QR] * 3 + [NOTHING[0]] * 3 + [EAN] * 3)
    first = play(pattern, fps=10, hold_off=1.0)
    second = play(pattern, fps=10, hold_off=1.0)
    assert [s.seq for s in first.scans] == [s.seq for s in second.scans] == [1, 2]


def test_no_code_text_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = "MEMBER-4711-SECRET"
    qr_png(tmp_path / "000.png", secret)
    caplog.set_level(logging.DEBUG, logger="pos_bridge.scanner")
    got = play(str(tmp_path / "%03d.png"), fps=50)
    assert [s.code for s in got.scans] == [secret]
    assert caplog.records and all(secret not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("options", "message"), [
    ({"hold_off": -1}, "hold_off"), ({"fps": 0}, "fps"), ({"fps": 5000}, "fps")])
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CameraReader("0", lambda scan: None, **options)


def test_the_service_may_stop_the_reader_from_its_callback(tmp_path: Path) -> None:
    pattern = sequence(tmp_path / "seq", [QR] * 50)
    got: list[Scan] = []

    def on_scan(scan: Scan) -> None:
        got.append(scan)
        reader.stop()

    reader = CameraReader(pattern, on_scan, fps=25)
    reader.start()
    assert reader.wait(10)
    assert [s.seq for s in got] == [1] and reader.state == "stopped"
    assert reader.frames_grabbed < 50


# ---------------------------------------------------------------- on the store's bus
def test_camera_scans_reach_the_bus_through_the_scanner_service(
        tmp_path: Path, settings: Any, datadir: Any, device: Callable[..., Any]) -> None:
    """A camera read by the scanner service lands on a real Mosquitto as `evt/scan`: one
    event per presentation, a binary QR's bytes exact, as the edge reads it back."""
    from pos_bridge.scanner.service import ScannerService
    from store_contract.mqtt import make_client, parse_mqtt_url, stop_loop
    from store_contract.protocol import event_topic
    from store_contract.scans import parse_scan

    binary = bytes(range(256))
    maker = qrcode.QRCode(border=4, box_size=4)
    maker.add_data(binary)
    maker.make(fit=True)
    cv2.imwrite(str(tmp_path / "binary.png"),
                np.array(maker.make_image().get_image().convert("L")))
    pattern = sequence(tmp_path / "seq", [tmp_path / "binary.png"] * 20 + [EAN] * 20)
    creds = datadir.edge_mqtt_credentials()
    address = parse_mqtt_url(settings.mqtt_url)
    got: list[dict[str, Any]] = []
    observer = make_client("camera-observer", address, username=creds["username"],
                           password=creds["password"])
    topic = event_topic(settings.store_id, "scanner", "cam-1", "scan")
    subscribed = threading.Event()
    observer.on_connect = lambda c, *_: c.subscribe(topic, 1)
    observer.on_subscribe = lambda *_: subscribed.set()
    observer.on_message = lambda _c, _u, m: got.append(json.loads(m.payload)["data"])
    observer.connect(address.host, address.port)
    observer.loop_start()
    service = ScannerService(device("scanner", "cam-1"), [
        lambda publish: CameraReader(pattern, publish, fps=25, hold_off=2.0)])
    try:
        assert subscribed.wait(10)
        service.start()
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # nothing more may come
        scans = [parse_scan(data) for data in got]
        assert [(s.source, s.seq, s.symbology) for s in scans] == [
            ("camera", 1, "]Q1"), ("camera", 2, "]E0")]
        assert scans[0].payload == binary
        assert scans[1].code == EAN.with_suffix(".txt").read_text()
        assert scans[1].product is not None
    finally:
        service.stop()
        observer.disconnect()
        stop_loop(observer)
