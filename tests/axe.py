"""Accessibility checks with axe-core in a real page: the WCAG 2.0, 2.1 and 2.2 level A and AA
rules, run by axe-core itself inside Chromium, so what is checked is the page as drawn
(computed colours, hidden elements, names given by ARIA), not the HTML text.

axe-core comes from the npm registry at the exact version and integrity hash pinned in
`tests/npm/package-lock.json`; `scripts/test.sh` installs it into `.cache/axe/` (git ignores
it). Tests download nothing: without the installed file they skip (fail under CI).

The pages send a Content-Security-Policy that allows no inline script, and Playwright injects
axe-core as one, so the checks run in a browser context that bypasses the page's CSP
(`axe_page`). Other tests keep the CSP in force.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.browser import TIMEOUT_MS
from tests.hubfix import REPO, missing_part

PINNED = REPO / "tests" / "npm" / "package-lock.json"
INSTALLED = REPO / ".cache" / "axe" / "node_modules" / "axe-core"
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa")
IMPACTS = ("minor", "moderate", "serious", "critical")  # axe-core's own scale
BLOCKING = ("serious", "critical")

# Runs in the page: axe-core over the whole document with the WCAG rules only; each violation
# with the CSS selector of every failing element (an element in a frame or a shadow root has
# one selector per level, joined here by " >>> ") and axe-core's sentence on what to fix.
_RUN = """async (tags) => {
  const result = await axe.run(document, {runOnly: {type: 'tag', values: tags},
                                          resultTypes: ['violations']});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map(n => ({
      selector: n.target.map(t => Array.isArray(t) ? t.join(' >>> ') : t).join(' >>> '),
      why: n.failureSummary || ''}))}));
}"""


def pinned_version() -> str:
    """The axe-core version the lock file pins."""
    lock = json.loads(PINNED.read_text())
    version: str = lock["packages"]["node_modules/axe-core"]["version"]
    return version


def axe_script() -> Path:
    """The installed axe.min.js, once it is known to be the pinned version."""
    script = INSTALLED / "axe.min.js"
    want = pinned_version()
    if not script.exists():
        missing_part(f"axe-core {want} is not installed in {INSTALLED.parent.parent} "
                     "(scripts/test.sh installs it)")
    found = json.loads((INSTALLED / "package.json").read_text())["version"]
    if found != want:
        missing_part(f"axe-core {found} is installed but {want} is pinned in {PINNED} "
                     "(scripts/test.sh installs the pinned one)")
    return script


def axe_violations(page: Page, impacts: Iterable[str] = BLOCKING) -> list[dict[str, Any]]:
    """The WCAG A/AA violations axe-core finds on `page` as it is now, of the given impacts:
    each a dict with `id` (the rule), `impact`, `help` (what the rule asks) and `nodes`
    (each failing element's `selector` and `why`)."""
    wanted = tuple(impacts)
    unknown = [i for i in wanted if i not in IMPACTS]
    if unknown:
        raise ValueError(f"unknown axe-core impact {unknown[0]!r} (one of {', '.join(IMPACTS)})")
    if not page.evaluate("typeof window.axe === 'object' && typeof axe.run === 'function'"):
        page.add_script_tag(path=str(axe_script()))
    if page.evaluate("axe.version") != pinned_version():
        raise AssertionError(f"the page already had axe-core {page.evaluate('axe.version')}, "
                             f"not the pinned {pinned_version()}")
    found: list[dict[str, Any]] = page.evaluate(_RUN, list(WCAG_TAGS))
    return [v for v in found if v["impact"] in wanted]


def describe(violations: list[dict[str, Any]]) -> str:
    """One line per rule (id, impact, what it asks), then each failing element's selector and
    why it fails, indented."""
    lines: list[str] = []
    for v in violations:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']}")
        for node in v["nodes"]:
            why = " ".join(node["why"].split())
            lines.append(f"    {node['selector']}" + (f"  -- {why}" if why else ""))
    return "\n".join(lines)


def assert_accessible(page: Page, impacts: Iterable[str] = BLOCKING) -> None:
    """Fails, listing every violation readably, if axe-core finds a WCAG A/AA violation of the
    given impacts (serious or critical unless told) on `page` as it is now."""
    wanted = tuple(impacts)
    violations = axe_violations(page, wanted)
    if violations:
        raise AssertionError(
            f"axe-core {pinned_version()} finds {len(violations)} {' or '.join(wanted)} "
            f"WCAG violation(s) on {page.url}:\n{describe(violations)}")


class Findings:
    """The serious or critical violations of each page a test visits (`check` after showing
    each page or state), so that one run names every page that fails (`assert_none` at the
    end), not just the first."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.checked: list[str] = []
        self.failed: list[str] = []

    def check(self, what: str) -> None:
        """axe-core over the page as it is now, under the name `what`."""
        self.checked.append(what)
        violations = axe_violations(self.page)
        if violations:
            self.failed.append(f"{what} ({self.page.url}):\n{describe(violations)}")

    def assert_none(self) -> None:
        assert not self.failed, (
            f"axe-core {pinned_version()}: serious or critical WCAG violations on "
            f"{len(self.failed)} of {len(self.checked)} pages\n\n" + "\n\n".join(self.failed))


@pytest.fixture
def axe_page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context that lets axe-core in past the page's CSP (see above)."""
    context = browser.new_context(viewport={"width": 1100, "height": 700}, bypass_csp=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()
