"""Whether the CRM hub can be reached: online-only coupons (`off: false`) need it.

The sync sender records every answer it gets from the hub; between sends, a light probe of
the hub's `/healthz` keeps the picture current. A stand-alone store (no hub) is never
"offline": there is no hub whose ledger an online-only coupon would need.
"""

from __future__ import annotations

import logging
import time

import requests

from edge.settings import Settings

log = logging.getLogger(__name__)


class HubLink:
    def __init__(self, settings: Settings) -> None:
        self.url = settings.hub_url.rstrip("/")
        self.offline_after = settings.hub_offline_after_s
        self.last_contact: float | None = None

    @property
    def standalone(self) -> bool:
        return not self.url

    def record_contact(self) -> None:
        self.last_contact = time.monotonic()

    def online(self) -> bool:
        if self.standalone:
            return True
        return (self.last_contact is not None
                and time.monotonic() - self.last_contact < self.offline_after)

    def probe(self) -> bool:
        """Ask the hub's /healthz (a scheduled job); an answer from the hub is contact."""
        if self.standalone:
            return True
        try:
            resp = requests.get(f"{self.url}/healthz", timeout=3)
        except requests.RequestException as exc:
            log.info("hub not reachable: %s", exc.__class__.__name__)
            return False
        if resp.status_code >= 500:  # a proxy in front of a hub that is down
            return False
        self.record_contact()
        return True
