"""The hub's settings, from `HUB_*` environment variables: one declared registry (the
machinery is store_contract/registry.py, shared with the edge), documented in docs/hub.md.

A wrong value, or a `HUB_*` variable that is not a setting, stops start-up with one line
that names the variable. A variable set to "" means the setting's default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from zoneinfo import ZoneInfo

from store_contract.registry import Registry, between, locale_name, opt, time_zone


def _check_database_url(value: str) -> None:
    if value and not value.startswith(("sqlite://", "postgresql://", "postgres://",
                                       "postgresql+psycopg://")):
        raise ValueError(f"must be sqlite:///path or postgresql://..., "
                         f"not {value.split('://', 1)[0]}://")


@dataclass(frozen=True)
class HubSettings:
    """The hub's settings, typed and checked; the fields are the registry of settings.

    Build with `load_hub_settings()`; docs/hub.md ("Settings") documents each one.
    """

    data_dir: Path = opt(Path("hub-data"), "The data dir (mode 0700): hub.db on SQLite, "
                         "secrets/ (signing key, session key).")
    database_url: str = opt("", "Empty: SQLite file hub.db in the data dir; or "
                            "sqlite:///path, or postgresql://user:password@host:5432/db. "
                            "A secret (the password).", _check_database_url, secret=True)
    http_host: str = opt("127.0.0.1", "Where `edge-hub serve` listens.")
    http_port: int = opt(8090, "Its port; 0 picks a free one and prints it.", between(0, 65535))
    tz: str = opt("UTC", "IANA time zone of the dashboard's days and periods.", time_zone)
    locale: str = opt("en_IE", "How the dashboard writes dates, times and money (Babel/CLDR).",
                      locale_name)
    max_batch_events: int = opt(1000, "Most events in one batch.", between(1, 100_000))
    max_batch_bytes: int = opt(4 * 1024 * 1024, "Largest request body.",
                               between(1024, 256 << 20))
    stale_after_s: int = opt(900, "A store silent this long \"stopped syncing\", seconds.",
                             between(10, 7 * 86400))
    threads: int = opt(8, "Waitress worker threads.", between(1, 64))
    lookup_per_minute: int = opt(30, "Online customer look-ups per store per rolling minute.",
                                 between(1, 100_000))
    customer_seen_days: int = opt(90, "A customer seen in a region is sent there this long, "
                                  "days.", between(1, 3650))
    trusted_proxy: str = opt("", "The TLS proxy's address: its X-Forwarded-Proto/-For count.")

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'hub.db'}"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


REGISTRY = Registry(HubSettings, "HUB_", "docs/hub.md", message="{where}={value!r} {problem}",
                    secret_message="{where} {problem}", not_int="must be a whole number",
                    empty_is_default=True)


def load_hub_settings(env: Mapping[str, str] | None = None) -> HubSettings:
    env = os.environ if env is None else env
    values = REGISTRY.from_env(env)
    if "trusted_proxy" in values:
        values["trusted_proxy"] = values["trusted_proxy"].strip()
    settings = HubSettings(**values)
    return replace(settings, data_dir=settings.data_dir.expanduser().resolve())
