"""What the kiosk agent looks at, and the loop that reports it (docs/kiosk-box.md).

Two checks, both blind to anything personal: the browser check reads only the command
lines of this user's processes, and the page check reads only an HTTP status line (the
body is never read), sends no cookie and follows no redirect.
"""

from __future__ import annotations

import http.client
import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pos_bridge.device import DeviceClient, DeviceError

log = logging.getLogger(__name__)

# Seconds the kiosk page has to answer. The store box answers in milliseconds; a page that
# takes longer than this on the store LAN is one the shopper would see hang.
PAGE_TIMEOUT_S = 3.0
PROFILE_FLAG = "--user-data-dir"


def default_profile_dir() -> Path:
    """The profile folder scripts/kiosk-browser.sh uses when KIOSK_PROFILE_DIR is unset."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "store-kiosk-browser"


def check_page_url(url: str) -> str:
    """`url` when it is an http:// or https:// address with a host; ValueError otherwise
    (the same rule as scripts/kiosk-browser.sh)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(
            c.isspace() for c in url):
        raise ValueError(f"the kiosk page must be an http:// or https:// address, not {url!r}")
    return url


def _profile_of(argv: list[str]) -> str | None:
    """The profile folder a command line names with --user-data-dir, if any."""
    for i, arg in enumerate(argv):
        if arg.startswith(PROFILE_FLAG + "="):
            return arg.split("=", 1)[1]
        if arg == PROFILE_FLAG and i + 1 < len(argv):
            return argv[i + 1]
    return None


def browser_running(profile: Path, proc: Path = Path("/proc")) -> bool:
    """Is a process of this user alive whose command line uses `profile` as its browser
    profile (Chromium's --user-data-dir)? Read from /proc: a zombie has no command line, and
    another user's process does not count (it is not the kiosk's browser)."""
    wanted = os.path.normpath(profile)
    uid = os.getuid()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        named = _profile_of([a.decode(errors="replace") for a in raw.split(b"\0") if a])
        if named is not None and os.path.normpath(named) == wanted:
            return True
    return False


def page_reachable(url: str, *, timeout: float = PAGE_TIMEOUT_S,
                   tls: ssl.SSLContext | None = None) -> bool:
    """Does the kiosk page's server answer a GET at all? Any HTTP status counts (a 404 or a
    503 is still the store box answering); a refused, reset or timed-out connection, or a
    certificate the browser would not trust either, does not."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout,
                                           context=tls or ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "store-kiosk-agent"})
        conn.getresponse().close()  # the status line is enough; the page is never read
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


@dataclass(frozen=True)
class Screen:
    """What the status says about the kiosk's screen."""

    browser: str  # running | stopped
    page: str | None  # ok | unreachable; None when no page is known to check

    def fields(self) -> dict[str, str]:
        out = {"browser": self.browser}
        if self.page is not None:
            out["page"] = self.page
        return out

    def describe(self) -> str:
        """For the log: "browser running, page ok"."""
        return ", ".join(f"{k} {v}" for k, v in self.fields().items())


class KioskAgent:
    """Checks the screen every `every` seconds and republishes the device's retained status
    when the answer changed. Between changes the MQTT keep-alive is the heartbeat, as for
    every device (docs/protocol.md §7.1): the broker's Last Will says offline when it stops."""

    def __init__(self, device: DeviceClient, profile: Path, page: str | None, every: float,
                 tls: ssl.SSLContext | None = None) -> None:
        self.device = device
        self.profile = profile
        self.page = page
        self.every = every
        self.tls = tls
        self.screen: Screen | None = None

    def look(self) -> Screen:
        page = None
        if self.page is not None:
            page = "ok" if page_reachable(self.page, tls=self.tls) else "unreachable"
        return Screen("running" if browser_running(self.profile) else "stopped", page)

    def prime(self) -> Screen:
        """The first look, taken into the status before connecting, so that the first
        `online` the device publishes already says how the screen is."""
        self.screen = self.look()
        self.device.status.update(self.screen.fields())
        return self.screen

    def check(self) -> bool:
        """Look again; publish and log when something changed. True when it did."""
        screen = self.look()
        if screen == self.screen:
            return False
        self.screen = screen
        self.device.set_status(**screen.fields())
        log.info("kiosk %s: %s", self.device.device_id, screen.describe())
        return True

    def run(self, stop: threading.Event) -> None:
        """Check until `stop` is set. Raises DeviceError when the broker refuses the login
        on a reconnect (a password rotated at the edge): retrying cannot help."""
        while True:
            if self.device.refused:
                raise DeviceError(f"kiosk {self.device.device_id}: the broker refused the "
                                  f"login ({self.device.refused})")
            self.check()
            if stop.wait(self.every):
                return
