"""Docs that stay honest: every setting and every CLI command is documented."""

from __future__ import annotations

from pathlib import Path

import click

from edge.app.cli import main
from edge.settings import SETTINGS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _commands(group: click.Group, prefix: str = "edge") -> list[str]:
    names = []
    for name, cmd in group.commands.items():
        full = f"{prefix} {name}"
        if isinstance(cmd, click.Group):
            names += _commands(cmd, full)
        else:
            names.append(full)
    return names


def test_every_setting_and_its_variable_is_in_the_settings_doc() -> None:
    text = (DOCS / "settings.md").read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in text or s.env not in text]
    assert missing == []


def test_every_cli_command_is_in_the_operations_doc() -> None:
    text = (DOCS / "operations.md").read_text()
    missing = [c for c in _commands(main) if c not in text]
    assert missing == []


def test_every_hub_command_and_setting_is_in_the_hub_doc() -> None:
    from cloud_sync.hub.cli import main as hub_main
    from cloud_sync.hub.settings import HubSettings

    text = (DOCS / "hub.md").read_text()
    missing = [c for c in _commands(hub_main, "edge-hub") if c not in text]
    missing += [f"HUB_{f.upper()}" for f in HubSettings.__dataclass_fields__
                if f not in ("database_url",) and f"HUB_{f.upper()}" not in text]
    assert missing == []
