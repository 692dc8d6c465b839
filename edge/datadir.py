"""The layout of `EDGE_DATA_DIR` and its secret files (mode 0600, never in the repository)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from store_contract.files import SecretFolder, write_private

__all__ = ["DataDir", "EDGE_MQTT_USER", "write_private"]

EDGE_MQTT_USER = "edge"


@dataclass(frozen=True)
class DataDir(SecretFolder):
    """Paths under the data dir; `ensure()` creates the folders with private modes."""

    @property
    def database(self) -> Path:
        return self.root / "edge.db"

    @property
    def mosquitto(self) -> Path:
        return self.root / "mosquitto"

    def _folders(self) -> tuple[Path, ...]:
        return (self.secrets, self.mosquitto)

    def edge_mqtt_credentials(self) -> dict[str, str]:
        """The edge's own broker login, created by `edge init`."""
        return self.secret_json(
            "mqtt-edge", lambda: {"username": EDGE_MQTT_USER, "password": secrets.token_urlsafe(24)}
        )

    def hosted_printer_secret(self, printer_id: str) -> Path:
        """secrets/mqtt-printer-ID.json: the broker login of a printer the edge hosts."""
        return self.secrets / f"mqtt-printer-{printer_id}.json"
