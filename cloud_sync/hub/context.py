"""What the hub's parts share while it runs: its settings, its database and its data dir.

Its own module so that the app, the store API, the dashboard and the keys need not import
each other to reach it (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.settings import HubSettings
from store_contract.files import SecretFolder


@dataclass
class Hub:
    settings: HubSettings
    db: HubDB


def hub_datadir(settings: HubSettings) -> SecretFolder:
    """The hub's data dir (0700) with its secrets/ (session key, signing key), 0600 files."""
    return SecretFolder(settings.data_dir).ensure()
