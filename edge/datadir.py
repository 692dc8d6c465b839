"""The layout of `EDGE_DATA_DIR` and its secret files (mode 0600, never in the repository)."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EDGE_MQTT_USER = "edge"


@dataclass(frozen=True)
class DataDir:
    """Paths under the data dir; `ensure()` creates the folders with private modes."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "edge.db"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def mosquitto(self) -> Path:
        return self.root / "mosquitto"

    def ensure(self) -> DataDir:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The database holds password hashes and customer data: only the edge's user may look.
        os.chmod(self.root, 0o700)
        for folder in (self.secrets, self.mosquitto):
            folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.secrets, 0o700)
        return self

    def secret_json(self, name: str, make: Any) -> dict[str, Any]:
        """Read secrets/NAME.json, creating it once from `make()` with mode 0600."""
        path = self.secrets / f"{name}.json"
        if not path.exists():
            write_private(path, json.dumps(make(), indent=2) + "\n")
        result: dict[str, Any] = json.loads(path.read_text())
        return result

    def secret_token(self, name: str, nbytes: int = 32) -> str:
        """A random url-safe secret kept in secrets/NAME (0600), created on first use."""
        path = self.secrets / name
        if not path.exists():
            write_private(path, secrets.token_urlsafe(nbytes) + "\n")
        return path.read_text().strip()

    def edge_mqtt_credentials(self) -> dict[str, str]:
        """The edge's own broker login, created by `edge init`."""
        return self.secret_json(
            "mqtt-edge", lambda: {"username": EDGE_MQTT_USER, "password": secrets.token_urlsafe(24)}
        )

    def hosted_printer_secret(self, printer_id: str) -> Path:
        """secrets/mqtt-printer-ID.json: the broker login of a printer the edge hosts."""
        return self.secrets / f"mqtt-printer-{printer_id}.json"


def write_private(path: Path, text: str, *, replace: bool = False) -> None:
    """Write a file only its owner can read, atomically (never half-written).

    Without `replace` an existing file wins: two processes creating the same secret at
    once end up sharing the first one.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if another process created it first: keep theirs
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
