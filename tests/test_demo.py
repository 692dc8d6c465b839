"""The demo as a new user meets it: `edge demo` started as README says, its banner read and
followed word for word in real Chromium, then Ctrl-C.

The banner is the demo's user interface: these tests take every address, sign-in and code
from what it printed, never from the code that printed it.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from tests import browser as chromium
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.process

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
        [sys.executable, "-m", "edge.app.cli", "demo", "--data-dir", str(data_dir),
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


def banner_steps(demo: Demo) -> list[tuple[str, str]]:
    """The codes the banner says to scan, in order, each with what it says of it."""
    start = demo.banner.index("then type each code into the scan field")
    end = demo.banner.index("and press Redeem", start)
    steps = []
    for line in demo.banner[start:end].splitlines()[1:]:
        if not line.strip():
            continue
        code, _, said = line.strip().partition(" ")
        steps.append((code, said.strip()))
    assert steps, demo.banner
    return steps


def money_in(text: str) -> str:
    found = re.findall(r"[−-]?€\d+\.\d\d", text)
    assert found, text
    return found[-1]


def test_the_checkout_walkthrough_of_the_banner_works_word_for_word(demo: Demo, page: Page
                                                                    ) -> None:
    url = demo.line("Checkout (staff page):")
    sign_in(page, url, demo.after("Checkout (staff page):", "sign in as:"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Checkout")
    scan, refusal = page.locator("#scan"), page.locator("#refusal")
    steps = banner_steps(demo)
    for code, said in steps:
        scan.fill(code)
        scan.press("Enter")
        expect(page.locator("#notice")).not_to_be_empty()
        expect(refusal).to_be_hidden()
        if "loyalty card" in said:  # "Anna's loyalty card": Anna is on the sale
            expect(page.locator("#customer")).to_contain_text(said.split("'")[0])
        if "the basket is" in said:
            expect(page.locator("#basket-total")).to_have_text(money_in(said))
    coupon_said = steps[-1][1]
    expect(page.locator("#discount-total")).to_have_text(money_in(coupon_said))
    expect(page.locator("#coupons")).to_contain_text(coupon_said.split(":")[0])
    page.get_by_role("button", name="Redeem").click()
    expect(page.locator("#sale-state")).to_have_text("redeemed")
    expect(refusal).to_be_hidden()

    # "the receipt prints on printer-1 (see Receipts)": there, with Anna's name and total.
    page.get_by_role("link", name="Receipts").click()
    row = page.locator("#receipts tbody tr").first
    expect(row.locator(".shopper")).to_have_text("Anna")
    expect(row.locator(".lane")).to_have_text("staff-web")
    expect(row).to_contain_text("printed", timeout=20_000)

    # "Shoppers are found by phone too: +49 160 5550199 (Chloé), or 0160 5550199."
    phones = re.search(r"found by phone too: (\+[\d ]+) \((\w+)\), or ([\d ]+)\.",
                       demo.banner)
    assert phones, demo.banner
    for number in (phones.group(1).strip(), phones.group(3).strip()):
        page.goto(url)
        page.get_by_role("button", name="New sale").click()
        scan.fill(number)
        scan.press("Enter")
        expect(page.locator("#customer")).to_contain_text(phones.group(2))
        expect(refusal).to_be_hidden()


def test_the_camera_scanner_part_of_the_banner_works_as_written(demo: Demo, page: Page
                                                                 ) -> None:
    # Open the checkout of the camera's lane, signed in as the banner says ...
    part = demo.banner[demo.banner.index("Camera scanner:"):
                       demo.banner.index("Kiosk (shopper screen):")]
    url = demo.line("open the checkout of its lane:")
    sign_in(page, url, demo.after("Checkout (staff page):", "sign in as:"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("lane-3")
    # ... then run its shell lines one by one, as someone at the box would.
    commands = [line.strip() for line in part.splitlines()
                if line.strip().startswith(("cp ", "rm "))]
    assert len(commands) == 4, part
    for command in commands:
        subprocess.run(command, shell=True, check=True, timeout=30)
        if "anna-card" in command:
            expect(page.locator("#customer")).to_contain_text("Anna", timeout=15_000)
        elif "save10" in command:
            expect(page.locator("#discount-total")).to_have_text("−€2.80", timeout=15_000)
        else:  # the nappies, shown once and then again
            expect(page.locator("#basket-total")).to_have_text(
                "€27.98" if command.startswith("rm ") else "€13.99", timeout=15_000)
    # What the banner says the page then shows.
    promised = re.search(r"shows (\w+), two packs of nappies \((€[\d.,]+)\) and the coupon"
                         r"\s+\"([^\"]+)\" \((−€[\d.,]+)\)", part)
    assert promised, part
    expect(page.locator("#customer")).to_contain_text(promised.group(1))
    expect(page.locator("#basket-total")).to_have_text(promised.group(2))
    expect(page.locator("#coupons")).to_contain_text(promised.group(3))
    expect(page.locator("#discount-total")).to_have_text(promised.group(4))
    expect(page.locator("#refusal")).to_be_hidden()


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


def test_the_banners_api_and_health_lines_answer_as_they_say(demo: Demo) -> None:
    # "Devices (API): curl -u manager:PASSWORD URL": the same request, as curl sends it.
    command = shlex.split(demo.line("Devices (API):"))
    assert command[:2] == ["curl", "-u"], command
    user, _, password = command[2].partition(":")
    answer = requests.get(command[3], auth=(user, password), timeout=10)
    assert answer.status_code == 200, answer.text
    devices = {(d["kind"], d["id"]) for d in answer.json()["devices"]}
    named = re.search(r"Simulated devices: (.+)\.", demo.banner)
    assert named, demo.banner
    for device in named.group(1).split(", "):
        kind, _, ident = device.partition(" ")
        assert (kind, ident) in devices, (device, devices)
    assert requests.get(demo.line("Health:"), timeout=10).json()["status"] in ("ok", "degraded")
    metrics = requests.get(demo.line("Metrics:"), timeout=10)  # from the box itself
    assert metrics.status_code == 200 and "edge_bus_connected 1.0" in metrics.text


def test_the_kiosk_part_of_the_banner_works_as_written(demo: Demo, page: Page,
                                                       browser: Any) -> None:
    """A shopper walks up to the demo's kiosk, identifies with the app's member QR, prints
    an offer, checks a price, and redeems the printed coupon at the counter; every address,
    name and shell line from the banner. (After the hub test, which counts no kiosk visit,
    and before Ctrl-C.)"""
    part = demo.banner[demo.banner.index("Kiosk (shopper screen):"):
                       demo.banner.index("Receipts (staff")]
    kiosk_url = demo.line("Kiosk (shopper screen):").split()[0]
    paired_at = re.search(r"enter it for (\S+) at (\S+) \(as manager\)", part)
    offer = re.search(r'on\s+"([^"]+)": the coupon prints on (\S+), as a\s+picture in (\S+?)\.',
                      part)
    assert paired_at and offer, part
    commands = [line.strip() for line in part.splitlines()
                if line.strip().startswith(("cp ", "rm "))]
    assert len(commands) == 6, part

    # The kiosk's screen shows a pairing code; the manager enters it on the staff page.
    screen_context = browser.new_context(viewport={"width": 1080, "height": 1920})
    screen_context.set_default_timeout(chromium.TIMEOUT_MS)
    screen = screen_context.new_page()
    screen.goto(kiosk_url)
    code = screen.locator("#code")
    expect(code).to_have_text(re.compile(r"^\d{4} \d{4}$"))
    sign_in(page, paired_at.group(2), demo.after("Checkout (staff page):", "sign in as:"))
    page.get_by_label(f"Code for {paired_at.group(1)}").fill(code.inner_text())
    page.get_by_role("button", name="Pair").click()
    expect(screen.locator("h1")).to_have_text("Welcome!", timeout=15_000)
    expect(screen.locator("body")).to_have_attribute("data-live", "on")

    # Emma's app member QR in front of the kiosk's camera: her home page.
    subprocess.run(commands[0], shell=True, check=True, timeout=30)
    expect(screen.locator("h1")).to_have_text("Hello, Emma!", timeout=15_000)
    card = screen.locator(".card.offer", has_text=offer.group(1))
    card.get_by_role("button", name="Print").click()
    expect(screen.locator("#print-status")).to_contain_text("take it from the printer",
                                                            timeout=15_000)
    slips = sorted(Path(offer.group(3)).glob("*.png"))
    assert len(slips) == 1, slips
    # A product shown to it: its price.
    subprocess.run(commands[1], shell=True, check=True, timeout=30)
    expect(screen.get_by_role("dialog")).to_contain_text("€13.99", timeout=15_000)
    screen.get_by_role("button", name="OK").click()
    screen.get_by_role("button", name="Done").click()
    expect(screen.locator("h1")).to_have_text("Welcome!")
    assert "Emma" not in screen.content()

    # At the counter: Emma's card, nappies twice, then the printed coupon.
    counter = demo.line("open the checkout of its lane:")
    page.goto(counter)
    expect(page.get_by_role("heading", level=1)).to_contain_text("lane-3")
    # One line at a time, each seen on the page before the next, as a person does it.
    after = ["#customer", "#basket-total", "#basket-total", "#coupons"]
    shows = ["Emma", "€13.99", "€27.98", offer.group(1)]
    for command, where, what in zip(commands[2:], after, shows, strict=True):
        subprocess.run(command, shell=True, check=True, timeout=60)
        expect(page.locator(where)).to_contain_text(what, timeout=15_000)
    expect(page.locator("#discount-total")).to_have_text("−€2.80")
    expect(page.locator("#refusal")).to_be_hidden()
    screen_context.close()


def test_ctrl_c_stops_every_process_of_the_demo(demo: Demo) -> None:
    children = descendants(demo.proc.pid)
    commands = " ".join(children.values())
    for part in ("mosquitto", "cloud_sync.hub.cli", "pos_bridge.virtual_printer",
                 "edge.app.cli serve", "pos_bridge.simulator"):
        assert part in commands, children
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(30) == 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in children):
        time.sleep(0.2)
    assert [cmd for pid, cmd in children.items() if Path(f"/proc/{pid}").exists()] == []
