"""HTTP to the CRM hub: one session per caller, the store's bearer token, timeouts on every
request, and the backoff both the sender and the puller wait by."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from edge.settings import Settings
from store_contract.protocol import format_ts

RETRY_AFTER_MAX_S = 3600.0  # a hub asking for more than an hour is not believed beyond that


class HubClient:
    """Requests to `{hub_url}/api/v1/stores/{store}/...` as this store."""

    def __init__(self, settings: Settings) -> None:
        self.base = f"{settings.hub_url.rstrip('/')}/api/v1/stores/{settings.store_id}"
        self.timeout = (settings.sync_connect_timeout_s, settings.sync_read_timeout_s)
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {settings.hub_token}",
                                     "User-Agent": f"store-edge/{settings.store_id}"})

    def post_events(self, body: bytes) -> requests.Response:
        return self.session.post(f"{self.base}/events", data=body, timeout=self.timeout,
                                 headers={"Content-Type": "application/json"})

    def get_changes(self, cursor: str, limit: int) -> requests.Response:
        params: dict[str, str | int] = {"cursor": cursor, "limit": limit}
        return self.session.get(f"{self.base}/changes", params=params, timeout=self.timeout)

    def put_key(self, jwk: dict[str, Any]) -> requests.Response:
        return self.session.put(f"{self.base}/key", json=jwk, timeout=self.timeout)

    def close(self) -> None:
        self.session.close()


def retry_after(resp: requests.Response, now: float | None = None) -> float | None:
    """Seconds the hub asked us to wait (`Retry-After`: seconds or an HTTP date), or None."""
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MAX_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - now), RETRY_AFTER_MAX_S)


@dataclass
class Backoff:
    """Exponential backoff with jitter, capped: 1, 2, 4 ... seconds, each between half and all
    of its step, so fifty stores that lost the hub together do not come back together."""

    cap: float
    base: float = 1.0
    failures: int = 0
    until: float = 0.0  # time.monotonic() before which nobody should try

    def failed(self, wait: float | None = None) -> float:
        """Count a failure; the delay before the next try (`wait` = what the hub asked)."""
        self.failures += 1
        if wait is None:
            step = min(self.cap, self.base * 2 ** min(self.failures - 1, 30))
            wait = step / 2 + random.uniform(0, step / 2)
        self.until = time.monotonic() + wait
        return wait

    def succeeded(self) -> None:
        self.failures = 0
        self.until = 0.0

    def remaining(self) -> float:
        return max(0.0, self.until - time.monotonic())


def rfc3339(epoch: float | None) -> str | None:
    """An epoch time as RFC 3339 text for reports (None stays None)."""
    return None if epoch is None else format_ts(datetime.fromtimestamp(epoch, UTC))
