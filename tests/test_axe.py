"""The accessibility helper (tests/axe.py) really catches what it is for: a page served over
HTTP with a form field that has no label and text of too low contrast is reported (rule,
impact, the failing elements), the assertion's message lists them, and the same page done
right passes. Real Chromium, the pinned axe-core, whose pin is one exact version and hash."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests import axe
from tests import browser as chromium
from tests.axe import assert_accessible, axe_violations

playwright, browser, axe_page = chromium.playwright, chromium.browser, axe.axe_page

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Newsletter</title><link rel="icon" href="data:,">
<style>body {{ background: #fff; color: #222; }} .hint {{ color: {hint}; }}</style></head>
<body><main>
  <h1>Newsletter</h1>
  <p class="hint" id="hint">We write once a month.</p>
  <form>
    {field}
    <button type="submit">Send</button>
  </form>
</main></body>
</html>
"""
# A field with no label at all (axe-core: `label`, critical) and light grey on white, about
# 1.9:1 where AA asks for 4.5:1 (`color-contrast`, serious).
BAD = PAGE.format(hint="#bbbbbb", field='<input id="email" name="email" type="email">')
GOOD = PAGE.format(hint="#555555", field='<label for="email">E-mail</label> '
                                         '<input id="email" name="email" type="email">')


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """The two pages served from files over real HTTP; the base URL."""
    (tmp_path / "bad.html").write_text(BAD)
    (tmp_path / "good.html").write_text(GOOD)
    with chromium.serve_files(tmp_path) as base:
        yield base


def test_a_missing_label_and_low_contrast_are_reported(site: str, axe_page: Page) -> None:
    axe_page.goto(f"{site}bad.html")
    found = {v["id"]: v for v in axe_violations(axe_page)}
    assert set(found) == {"label", "color-contrast"}, found
    assert found["label"]["impact"] == "critical"
    assert [n["selector"] for n in found["label"]["nodes"]] == ["#email"]
    assert found["color-contrast"]["impact"] == "serious"
    assert [n["selector"] for n in found["color-contrast"]["nodes"]] == ["#hint"]
    assert "contrast" in found["color-contrast"]["help"].lower()
    assert "contrast of 1.9" in found["color-contrast"]["nodes"][0]["why"]

    # Only the impacts asked for: the contrast problem is serious, not critical.
    assert [v["id"] for v in axe_violations(axe_page, impacts=("critical",))] == ["label"]

    with pytest.raises(AssertionError) as failed:
        assert_accessible(axe_page)
    message = str(failed.value)
    assert f"axe-core {axe.pinned_version()} finds 2 serious or critical" in message
    assert f"{site}bad.html" in message
    assert "\n- label (critical): " in message and "\n    #email  -- " in message
    assert "\n- color-contrast (serious): " in message and "\n    #hint  -- " in message


def test_the_same_page_done_right_passes(site: str, axe_page: Page) -> None:
    axe_page.goto(f"{site}good.html")
    assert axe_violations(axe_page, impacts=axe.IMPACTS) == []
    assert_accessible(axe_page)
    # axe-core was injected once and is the pinned one.
    assert axe_page.evaluate("axe.version") == axe.pinned_version()


def test_findings_name_each_failing_page_of_a_walk(site: str, axe_page: Page) -> None:
    findings = axe.Findings(axe_page)
    for name in ("good", "bad", "good again"):
        axe_page.goto(f"{site}{name.split()[0]}.html")
        findings.check(name)
    with pytest.raises(AssertionError) as failed:
        findings.assert_none()
    message = str(failed.value)
    assert "serious or critical WCAG violations on 1 of 3 pages\n\nbad (" in message
    assert "good" not in message and "- label (critical)" in message


def test_an_unknown_impact_is_refused_by_name(site: str, axe_page: Page) -> None:
    axe_page.goto(f"{site}good.html")
    with pytest.raises(ValueError, match="unknown axe-core impact 'severe'"):
        axe_violations(axe_page, impacts=("serious", "severe"))


def test_axe_core_is_pinned_to_one_version_and_its_hash() -> None:
    """package.json asks for one exact version (no range that npm could move), and the lock
    file holds that version with its sha512 integrity hash, which `npm ci` checks."""
    package = json.loads((axe.PINNED.parent / "package.json").read_text())
    wanted = package["dependencies"]["axe-core"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", wanted), f"not one exact version: {wanted!r}"
    lock = json.loads(axe.PINNED.read_text())
    entry = lock["packages"]["node_modules/axe-core"]
    assert entry["version"] == wanted == axe.pinned_version()
    assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", entry["integrity"]), entry
    assert lock["packages"][""]["dependencies"] == {"axe-core": wanted}
