"""The hub's settings, from `HUB_*` environment variables (documented in docs/hub.md).

A wrong value stops start-up with one line that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError

from store_contract.errors import StartupError


@dataclass(frozen=True)
class HubSettings:
    data_dir: Path
    database_url: str          # empty: SQLite file hub.db in data_dir
    http_host: str = "127.0.0.1"
    http_port: int = 8090
    tz: str = "UTC"            # the dashboard's days and periods
    locale: str = "en_IE"      # how the dashboard writes dates, times and money
    max_batch_events: int = 1000
    max_batch_bytes: int = 4 * 1024 * 1024
    stale_after_s: int = 900   # a store silent this long "stopped syncing"
    threads: int = 8           # waitress worker threads
    lookup_per_minute: int = 30    # online customer look-ups per store per rolling minute
    customer_seen_days: int = 90   # a customer seen in a region is sent there this long
    trusted_proxy: str = ""    # the TLS proxy's address: its X-Forwarded-Proto/-For count

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'hub.db'}"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StartupError(f"{name}={raw!r} must be a whole number") from None
    if not low <= value <= high:
        raise StartupError(f"{name}={value} must be from {low} to {high}")
    return value


def load_hub_settings(env: Mapping[str, str] | None = None) -> HubSettings:
    env = os.environ if env is None else env
    tz = env.get("HUB_TZ") or "UTC"
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise StartupError(f"HUB_TZ={tz!r} is not an IANA time zone such as Europe/Berlin") \
            from None
    locale = env.get("HUB_LOCALE") or "en_IE"
    try:
        Locale.parse(locale)
    except (UnknownLocaleError, ValueError):
        raise StartupError(f"HUB_LOCALE={locale!r} is not a locale such as en_IE or de_DE") \
            from None
    url = env.get("HUB_DATABASE_URL", "")
    if url and not url.startswith(("sqlite://", "postgresql://", "postgres://",
                                   "postgresql+psycopg://")):
        raise StartupError(f"HUB_DATABASE_URL must be sqlite:///path or postgresql://..., "
                           f"not {url.split('://', 1)[0]}://")
    return HubSettings(
        data_dir=Path(env.get("HUB_DATA_DIR") or "hub-data").expanduser().resolve(),
        database_url=url,
        http_host=env.get("HUB_HTTP_HOST") or "127.0.0.1",
        http_port=_int(env, "HUB_HTTP_PORT", 8090, 0, 65535),
        tz=tz,
        locale=locale,
        max_batch_events=_int(env, "HUB_MAX_BATCH_EVENTS", 1000, 1, 100_000),
        max_batch_bytes=_int(env, "HUB_MAX_BATCH_BYTES", 4 * 1024 * 1024, 1024, 256 << 20),
        stale_after_s=_int(env, "HUB_STALE_AFTER_S", 900, 10, 7 * 86400),
        threads=_int(env, "HUB_THREADS", 8, 1, 64),
        lookup_per_minute=_int(env, "HUB_LOOKUP_PER_MINUTE", 30, 1, 100_000),
        customer_seen_days=_int(env, "HUB_CUSTOMER_SEEN_DAYS", 90, 1, 3650),
        trusted_proxy=env.get("HUB_TRUSTED_PROXY", "").strip(),
    )
