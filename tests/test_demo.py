"""The demo as a new user meets it: `edge demo` started as README says, its banner read and
followed word for word in real Chromium, then Ctrl-C.

The banner is the demo's user interface: these tests take every address, sign-in and code
from what it printed, never from the code that printed it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests import browser as chromium
from tests.conftest import REPO, free_port

browser, playwright = chromium.browser, chromium.playwright
page = chromium.page

START_TIMEOUT_S = 120


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    banner: str
    data_dir: Path

    def line(self, label: str) -> str:
        """What follows `label` on its banner line ("Checkout (staff page):" -> the URL)."""
        found = re.search(rf"^\s*{re.escape(label)}\s*(.+)$", self.banner, re.MULTILINE)
        assert found, f"the banner has no {label!r} line:\n{self.banner}"
        return found.group(1).strip()

    def after(self, heading: str, label: str) -> str:
        """The `label` line that comes after the `heading` line (each part has a sign-in)."""
        start = self.banner.index(heading)
        found = re.search(rf"^\s*{re.escape(label)}\s*(.+)$", self.banner[start:], re.MULTILINE)
        assert found, f"no {label!r} after {heading!r}:\n{self.banner}"
        return found.group(1).strip()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    data_dir = tmp_path_factory.mktemp("demo") / "demo-data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "demo", "--data-dir", str(data_dir),
         "--http-port", str(free_port()), "--mqtt-port", str(free_port()),
         "--hub-port", str(free_port())],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    lines: list[str] = []
    drain = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        for text in proc.stdout:
            lines.append(text)
            if "Press Ctrl-C to stop." in text or time.monotonic() > deadline:
                break
        banner = "".join(lines)
        if "Press Ctrl-C to stop." not in banner:
            pytest.fail(f"edge demo did not come up:\n{banner}")
        drain.start()  # keeps reading what the lanes print: the demo never waits on a pipe
        yield Demo(proc, banner, data_dir)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if drain.is_alive():
            drain.join(10)  # at the end of the output, now that the demo is gone
        proc.stdout.close()


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid` (from /proc), with its command line."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = {}, [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            try:
                found[child] = (Path(f"/proc/{child}/cmdline").read_bytes()
                                .replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
            todo.append(child)
    return found


def sign_in(page: Page, url: str, who: str) -> None:
    """Open `url` and sign in with the banner's "user / password"."""
    username, password = (part.strip() for part in who.split(" / "))
    page.goto(url)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_the_hub_part_of_the_banner_works_as_written(demo: Demo, page: Page) -> None:
    url = demo.line("CRM hub, regional dashboard:")
    sign_in(page, url, demo.after("CRM hub, regional dashboard:", "sign in as:"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Region north")
    # What the banner promises is there: the live store, Harbour Street's history and the
    # one offline double spend...
    kpis = page.locator("table.kpis")
    expect(kpis).to_contain_text("Demo Store")
    expect(kpis).to_contain_text("Harbour Street")
    expect(page.locator("table.conflicts.open tbody tr")).to_have_count(1)
    expect(page.locator("table.conflicts.open")).to_contain_text("Demo Store")
    # ...and nothing it does not: no redemption the hub does not believe, no kiosk visit at
    # the demo store (its kiosk has not been used), and its sales are the live lanes'.
    expect(page.locator("table.suspects")).to_have_count(0)
    expect(page.locator("table.kpis tr[data-store='store-1'] .kiosk")).to_have_text("0")
    page.goto(url.rstrip("/") + "/?period=today")
    sales = page.locator("table.kpis tr[data-store='store-1'] .transactions")
    first = int(sales.inner_text())
    expect(sales).not_to_have_text(str(first), timeout=60_000)  # the lanes keep selling


def test_ctrl_c_stops_every_process_of_the_demo(demo: Demo) -> None:
    children = descendants(demo.proc.pid)
    commands = " ".join(children.values())
    for part in ("mosquitto", "cloud_sync.hub.cli", "pos_bridge.virtual_printer",
                 "edge.cli serve", "pos_bridge.simulator"):
        assert part in commands, children
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(30) == 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in children):
        time.sleep(0.2)
    assert [cmd for pid, cmd in children.items() if Path(f"/proc/{pid}").exists()] == []
