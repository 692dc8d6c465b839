"""Private files: a folder whose secrets only its owner may read (mode 0600, never in the
repository), written atomically. The edge's data dir and the hub's both keep their keys so."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self


@dataclass(frozen=True)
class SecretFolder:
    """A data folder with a `secrets/` inside; `ensure()` creates both, private."""

    root: Path

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    def _folders(self) -> tuple[Path, ...]:
        return (self.secrets,)

    def ensure(self) -> Self:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The folder holds password hashes, keys and customer data: only its user may look.
        os.chmod(self.root, 0o700)
        for folder in self._folders():
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
