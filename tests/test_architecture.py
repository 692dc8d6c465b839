"""The package layout's import rules (docs/architecture.md) catch the knots they are for.

Each case copies the packages, adds one forbidden import to the copy and runs `lint-imports`
on it as CI does: the unchanged copy passes, each change fails naming its contract.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("store_contract", "edge", "cloud_sync", "pos_bridge", "kiosk_ui", "store_demo")
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.process


def _copy(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__", "static", "templates"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _add_import(path: Path, line: str) -> None:
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    assert marker in text, path
    path.write_text(text.replace(marker, marker + line + "\n", 1))


def test_the_layout_as_it_is_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    # The copy is what was checked, not the installed packages.
    assert "Analyzed" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("store_contract/errors.py", "import edge.store  # noqa",
     "The contract package imports nothing else from the repository BROKEN"),
    ("cloud_sync/hub/api.py", "from edge import outbox  # noqa",
     "use the edge only through store_contract BROKEN"),
    ("pos_bridge/lane.py", "import edge.transactions  # noqa",
     "use the edge only through store_contract BROKEN"),
    ("cloud_sync/hub/kpis.py", "import cloud_sync.sender  # noqa",
     "The hub does not import the store box's side of the sync"),
    ("edge/store.py", "import edge.app.service  # noqa",
     "The edge's core does not import its composition layer (edge.app) BROKEN"),
    ("edge/coupons.py", "import pos_bridge.printer  # noqa",
     "wires in the device clients and the hub link BROKEN"),
    ("edge/transactions.py", "import cloud_sync.sender  # noqa",
     "wires in the device clients and the hub link BROKEN"),
    ("edge/app/service.py", "import store_demo.store  # noqa",
     "Only the `edge demo` command imports the demo BROKEN"),
    ("edge/receipts.py", "import edge.erasure  # noqa",
     "No import circles between the modules of a package BROKEN"),
])
def test_a_forbidden_import_fails_its_contract(tmp_path: Path, module: str, line: str,
                                               contract: str) -> None:
    root = _copy(tmp_path)
    _add_import(root / module, line)
    result = _lint(root)
    assert result.returncode != 0, result.stdout
    flat = " ".join(result.stdout.split())
    assert contract in flat, result.stdout


SERVER_ONLY = ("flask", "flask_wtf", "werkzeug", "waitress", "sqlalchemy", "psycopg",
               "sqlite_utils", "apscheduler", "prometheus_client", "escpos")
_BLOCKER = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("not installed for a lane client: " + name)
sys.meta_path.insert(0, Refuse())
"""


@pytest.mark.parametrize("module", [
    "pos_bridge.lane", "pos_bridge.device", "store_contract.protocol", "store_contract.jws",
    "store_contract.events", "store_contract.campaigns", "store_contract.customers"])
def test_the_lane_client_and_the_contract_import_without_the_servers_packages(module: str) -> None:
    """A POS integrator's base install (no extra) has none of the store box's or the hub's
    packages: what they import must not need them."""
    code = _BLOCKER.format(blocked=set(SERVER_ONLY)) + f"import {module}\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_blocker_refuses_what_it_should() -> None:
    """The positive control: the same check fails for a module of the store box."""
    code = _BLOCKER.format(blocked=set(SERVER_ONLY)) + "import edge.app.api\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "not installed for a lane client" in result.stderr


def test_the_base_install_declares_none_of_the_servers_packages() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {re.split(r"[\[<>=!~ ]", dep)[0].lower() for dep in project["dependencies"]}
    assert not base & {"flask", "flask-wtf", "waitress", "sqlalchemy", "psycopg",
                       "sqlite-utils", "apscheduler", "prometheus-client", "alembic"}
    extras = project["optional-dependencies"]
    assert {"edge", "hub", "printer", "dev"} <= set(extras)


def test_the_repository_cites_only_its_own_docs() -> None:
    """Docstrings and docs point to docs/ of this repository, never to a design document
    outside it (the repository is read on its own)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    outside = re.compile(r"ARCHITECTURE(\.md| §)|\.\./shared|STYLE\.md")
    found = [f"{name}:{n}" for name in tracked
             if name.endswith((".py", ".md", ".yaml", ".html", ".js", ".sh", ".toml", ".template"))
             and name != "tests/test_architecture.py"
             for n, line in enumerate((REPO / name).read_text().splitlines(), 1)
             if outside.search(line)]
    assert found == []
