"""A camera as a scanner: frames from OpenCV, codes from `decode`, one scan per presentation.

Two threads per camera. The grabber reads frames as fast as the source gives them and keeps
only the newest (a camera's driver queue is cut to one frame where OpenCV allows it, with
`CAP_PROP_BUFFERSIZE`); the decoder takes whatever is newest when it is free. So a slow
decode skips frames instead of falling behind: the code decoded is the one in front of the
camera now, never one shown seconds ago.

One presentation, one scan: a code seen again less than `hold_off` seconds after it was
last seen is the same presentation and is not sent again, so a code held in view sends
once however long it stays, and a frame or two where it is not read does not send it
twice. Shown again after `hold_off` without it, it is sent again. Time is the frame's: the
clock for a live camera, the frame's place in a file (frame number / fps), so a recorded
sequence behaves the same however fast this machine decodes it.

Sources (`open_source`): a V4L2 device (an index such as `0`, or `/dev/video0`,
`/dev/v4l/by-id/...`), a video file, an OpenCV image sequence pattern (`frames/%03d.png`),
a directory of images read in name order, or `watch:DIR`, a live source showing the newest
image in a directory (where there is no camera, as in the demo). Files are played at their
own frame rate (`fps` to change it). A live source (a camera, `watch:`) that cannot be
opened or stops giving frames (unplugged, its driver failed) is opened again every
`retry` seconds until it works, as a keyboard-wedge or serial scanner is: a camera
plugged back in is reading again within a second or two. A file that cannot be opened or
ends stops the reader. Either way it is reported through `on_status`, once per failure,
and never raised into the service.

A frame that is the very one decoded last (a `watch:` directory whose picture has not
changed) is not decoded again.

No code text is logged (a member code, a coupon): only lengths and symbologies.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from store_contract.scans import Scan

from .decode import Decoded, Decoder, Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm",
                  ".ppm")
DEFAULT_FILE_FPS = 25.0


class FrameSource(Protocol):
    """What the grabber reads from: OpenCV's `VideoCapture` or a directory of images."""

    def read(self) -> tuple[bool, Any]: ...

    def release(self) -> None: ...


class DirectorySource:
    """The images of a directory in name order, one per frame."""

    def __init__(self, directory: Path) -> None:
        self.files = sorted(p for p in directory.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        self.position = 0

    def read(self) -> tuple[bool, Any]:
        while self.position < len(self.files):
            path = self.files[self.position]
            self.position += 1
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is not None:
                return True, frame
            log.warning("camera: image %d of the directory is not readable, skipped",
                        self.position)
        return False, None

    def release(self) -> None:
        self.files = []


class WatchedDirectory:
    """A live source showing what lies in a directory: the newest image in it, or an empty
    grey frame when there is none, `fps` times a second. It stands in for a camera where
    there is none (the demo store): copy a code's picture in to hold it in front of the
    camera, delete it to take it away."""

    def __init__(self, directory: Path, fps: float = 4.0) -> None:
        self.directory = directory
        self.interval = 1.0 / fps
        self._due = time.monotonic()
        self._shown: tuple[str, int, int] | None = None  # name, mtime, size
        self._frame: Any = None
        self._blank = np.full((480, 640, 3), 200, np.uint8)

    def _newest(self) -> tuple[Path, int, int] | None:
        newest: tuple[Path, int, int] | None = None
        try:
            for path in self.directory.iterdir():
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    with contextlib.suppress(OSError):  # taken away meanwhile
                        info = path.stat()
                        if newest is None or info.st_mtime_ns > newest[1]:
                            newest = (path, info.st_mtime_ns, info.st_size)
        except OSError:
            return None
        return newest

    def read(self) -> tuple[bool, Any]:
        delay = self._due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._due = max(self._due + self.interval, time.monotonic())
        if not self.directory.is_dir():
            return False, None  # taken away, as a camera unplugged
        newest = self._newest()
        if newest is None:
            return True, self._blank
        key = (newest[0].name, newest[1], newest[2])
        if key != self._shown:
            frame = cv2.imread(str(newest[0]), cv2.IMREAD_COLOR)
            # Half copied, or not a picture: the blank frame, and another look next time.
            self._shown = key if frame is not None else None
            self._frame = frame
        return True, self._frame if self._frame is not None else self._blank

    def release(self) -> None:
        self._frame = None


class SourceError(Exception):
    """The source could not be opened."""


def is_live(source: str | int | Path) -> bool:
    """A camera (a V4L2 index or /dev path) or a watched directory, not a file."""
    text = str(source)
    return isinstance(source, int) or text.isdigit() or text.startswith(("watch:", "/dev/"))


def open_source(source: str | int | Path) -> tuple[FrameSource, bool, float]:
    """(the source, whether it is live, its frame rate for playback: 0 for a live one)."""
    text = str(source)
    if text.startswith("watch:"):
        watched = Path(text[len("watch:"):])
        if not watched.is_dir():
            raise SourceError("watch: names no directory")
        return WatchedDirectory(watched), True, 0.0
    path = Path(text)
    if isinstance(source, int) or text.isdigit():
        return _capture(cv2.VideoCapture(int(text), cv2.CAP_V4L2), text, live=True)
    if path.is_dir():
        directory = DirectorySource(path)
        if not directory.files:
            raise SourceError("the directory holds no images")
        return directory, False, DEFAULT_FILE_FPS
    if text.startswith("/dev/"):
        return _capture(cv2.VideoCapture(text, cv2.CAP_V4L2), text, live=True)
    if "%" in path.name:
        return _capture(cv2.VideoCapture(text, cv2.CAP_IMAGES), text, live=False)
    if not path.is_file():
        raise SourceError("no such file, directory or device")
    return _capture(cv2.VideoCapture(text), text, live=False)


def _capture(capture: Any, text: str, *, live: bool) -> tuple[FrameSource, bool, float]:
    if not capture.isOpened():
        capture.release()
        raise SourceError("OpenCV cannot open it")
    if live:
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # no queue of old frames in the driver
        return capture, True, 0.0
    fps = capture.get(cv2.CAP_PROP_FPS)
    return capture, False, fps if 1.0 <= fps <= 240.0 else DEFAULT_FILE_FPS


class CameraReader:
    """Reads one camera and calls `on_scan(Scan)` once per presentation of each code.

    `on_status(state, detail)` hears of `"ended"` (a file played to its end), `"failed"`
    (a live camera stopped giving frames), `"error"` (the source could not be opened) and,
    for a live source after either of those, `"running"` (it gives frames again). A live
    source is opened again every `retry` seconds; a file's failure ends the reader.
    Sequence numbers start from 1 for each reader.
    """

    def __init__(self, source: str | int | Path, on_scan: Callable[[Scan], None], *,
                 hold_off: float = 2.0, fps: float | None = None,
                 decoder: Decoder | None = None,
                 decode: Callable[[Image], list[Decoded]] | None = None,
                 on_status: Callable[[str, str], None] | None = None,
                 retry: float = 0.5) -> None:
        if hold_off < 0:
            raise ValueError("hold_off: not a number of seconds from 0")
        if fps is not None and not 0 < fps <= 1000:
            raise ValueError("fps: not a frame rate above 0")
        self.source = source
        self.on_scan = on_scan
        self.on_status = on_status
        self.hold_off = hold_off
        self.fps = fps
        self.retry = retry
        self.live = is_live(source)
        self._decode = decode or (decoder or Decoder()).decode
        self._seq = 0
        self._last_seen: dict[tuple[str, bytes], float] = {}
        self._lock = threading.Condition()
        self._frame: Any = None
        self._frame_time = 0.0
        self._frame_no = 0  # of the newest frame; 0: none yet
        self._source_done = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # "running", then "ended", "failed", "error" or "stopped" (a live source goes from
        # "failed" or "error" back to "running" when it gives frames again)
        self.state = "idle"
        self.frames_grabbed = 0
        self.frames_decoded = 0

    # ------------------------------------------------------------------ life cycle
    def start(self) -> CameraReader:
        self.state = "running"
        grabber = threading.Thread(target=self._grab, name="camera-grab", daemon=True)
        decoder = threading.Thread(target=self._decode_loop, name="camera-decode", daemon=True)
        self._threads = [grabber, decoder]
        grabber.start()
        decoder.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stops both threads and releases the source."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():  # stop() from a callback
                thread.join(timeout)
        if self.state == "running":
            self.state = "stopped"

    def wait(self, timeout: float | None = None) -> bool:
        """Waits until the source has ended (or failed) and its last frame is decoded."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
        return not any(thread.is_alive() for thread in self._threads)

    def __enter__(self) -> CameraReader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ grabbing
    def _report(self, state: str, detail: str) -> None:
        self.state = state
        log.log(logging.INFO if state in ("ended", "running") else logging.WARNING,
                "camera %s: %s", state, detail)
        if self.on_status is not None:
            try:
                self.on_status(state, detail)
            except Exception:
                log.exception("camera: on_status failed")

    def _grab(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    source, _, file_fps = open_source(self.source)
                except (SourceError, OSError, cv2.error) as exc:
                    if self.state not in ("error", "failed"):  # once per outage
                        self._report("error", f"cannot open the camera source: {exc}")
                    if not self.live:
                        return
                    self._stop.wait(self.retry)
                    continue
                try:
                    self._play(source, self.fps or file_fps)
                finally:
                    source.release()
                if not self.live:
                    return
                self._stop.wait(self.retry)
        finally:
            self._finish_source()

    def _play(self, source: FrameSource, fps: float) -> None:
        """Read frames until the source gives none or the reader is stopped."""
        started = time.monotonic()
        number = 0
        while not self._stop.is_set():
            try:
                ok, frame = source.read()
            except cv2.error as exc:
                ok, frame = False, None
                log.warning("camera: reading a frame failed: %s", exc)
            if not ok or frame is None:
                if self.live:
                    if self.state != "failed":
                        self._report("failed", "the camera stopped giving frames")
                else:
                    self._report("ended", f"the source ended after {number} frames")
                return
            if self.state != "running":
                self._report("running", "the camera gives frames again")
            number += 1
            if self.live:
                frame_time = time.monotonic()
            else:  # played at its frame rate, timed by its place in the file
                frame_time = (number - 1) / fps
                delay = started + frame_time - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
            with self._lock:
                self.frames_grabbed += 1
                self._frame, self._frame_time = frame, frame_time
                self._frame_no = self.frames_grabbed
                self._lock.notify_all()

    def _finish_source(self) -> None:
        with self._lock:
            self._source_done = True
            self._lock.notify_all()

    # ------------------------------------------------------------------ decoding
    def _decode_loop(self) -> None:
        taken = 0
        last: Any = None  # the frame decoded last
        while True:
            with self._lock:
                while self._frame_no == taken and not self._source_done \
                        and not self._stop.is_set():
                    self._lock.wait(0.5)
                if self._stop.is_set() or self._frame_no == taken:
                    return  # stopped, or the source is done and its last frame decoded
                frame, frame_time, taken = self._frame, self._frame_time, self._frame_no
                self._frame = None  # the grabber's next frame replaces it; never queued
            if frame is last:
                continue  # the very picture decoded last (a watched directory unchanged)
            last = frame
            try:
                codes = self._decode(frame)
            except Exception:
                log.exception("camera: a frame could not be decoded")
                continue
            self.frames_decoded += 1
            for code in codes:
                self._seen(code, frame_time)

    def _seen(self, code: Decoded, frame_time: float) -> None:
        key = (code.format, code.raw)
        last = self._last_seen.get(key)
        self._last_seen[key] = frame_time
        if last is not None and frame_time - last <= self.hold_off:
            return  # the same presentation: held in view, or read again a moment later
        self._forget(frame_time)
        self._seq += 1
        scan = code.to_scan("camera", seq=self._seq)
        log.info("camera scan %d: %s, %d characters", self._seq,
                 code.symbology or code.format, len(code.text))
        try:
            self.on_scan(scan)
        except Exception:
            log.exception("camera: on_scan failed for scan %d", self._seq)

    def _forget(self, now: float) -> None:
        """Codes not seen for longer than the hold-off: their next sighting is new anyway."""
        if len(self._last_seen) > 64:
            for key in [k for k, t in self._last_seen.items() if now - t > self.hold_off]:
                del self._last_seen[key]
