"""The change puller: what the store needs to work offline, from the hub's change feed.

`GET /api/v1/stores/{store}/changes?cursor=…` pages through customers, campaigns,
revocations, key sets, erasure requests and (an extension, docs/sync.md) other stores'
redemptions. Each page is applied in ONE store transaction together with the new cursor,
so a crash leaves either the whole page and its cursor or neither: the page is simply
read again. A record that cannot be valid here (a bad campaign, a key that is not Ed25519)
is skipped with a log line and counted, never retried forever.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from cloud_sync.client import Backoff, HubClient, retry_after, rfc3339
from edge.coupons import CouponBook, parse_campaign, revoke, upsert_campaigns
from edge.customers import (
    IdentifierError,
    KeyBundle,
    Lookup,
    erase_customer,
    forget_customer,
    parse_customer,
    save_bundle,
    upsert_customers,
)
from edge.datadir import DataDir
from edge.hublink import HubLink
from edge.metrics import Metrics
from edge.settings import Settings
from edge.store import Store
from edge.tokens import SigningKey, TrustedKeys, public_key_from_jwk

log = logging.getLogger(__name__)
PAGE = 500
MAX_PAGES_PER_RUN = 200  # a store catching up on a long feed yields to other jobs meanwhile


class PullError(Exception):
    """The hub's answer could not be used; the same page is asked for again later."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait  # what the hub asked us to wait (Retry-After), if it did


class Puller:
    """Reads the change feed to its end; `run()` is the scheduled job."""

    def __init__(self, settings: Settings, store: Store, link: HubLink, metrics: Metrics,
                 keys: TrustedKeys, coupons: CouponBook, lookup: Lookup,
                 signing_key: SigningKey | None = None,
                 wake: Callable[[float], None] | None = None,
                 datadir: DataDir | None = None) -> None:
        self.settings = settings
        self.store = store
        self.link = link
        self.metrics = metrics
        self.keys = keys
        self.coupons = coupons
        self.lookup = lookup
        self.signing_key = signing_key
        self.wake = wake
        self.datadir = datadir  # where the hub's look-up key bundle is kept
        self._replay = False
        self.client = HubClient(settings) if not link.standalone else None
        self.backoff = Backoff(cap=settings.sync_backoff_max_s)
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.skipped = 0
        self._lock = threading.Lock()

    @property
    def cursor(self) -> str:
        row = self.store.query_one("SELECT value FROM sync_state WHERE key = 'pull_cursor'")
        return row["value"] if row else ""

    def run(self) -> None:
        """Publish our key if the hub lacks it, then apply pages until the feed is read."""
        if self.client is None or self.backoff.remaining() > 0:
            return
        if not self._lock.acquire(blocking=False):
            return
        try:
            self.publish_key()
            for _ in range(MAX_PAGES_PER_RUN):
                if not self.pull_page():
                    break
            else:
                if self.wake is not None:
                    self.wake(0)
            self.backoff.succeeded()
            self.last_success = time.time()
            self.metrics.sync_pull_last_success.set(self.last_success)
        except (requests.RequestException, PullError) as exc:
            reason = str(exc) if isinstance(exc, PullError) else \
                f"the hub could not be reached ({exc.__class__.__name__})"
            delay = self.backoff.failed(exc.wait if isinstance(exc, PullError) else None)
            self.last_error = reason
            log.warning("change feed: %s; trying again in %.1f s", reason, delay)
            if self.wake is not None:
                self.wake(delay)
        finally:
            self._lock.release()

    def publish_key(self) -> None:
        """Tell the hub the public key our receipt coupons are signed with (once per key)."""
        if self.signing_key is None or self.client is None:
            return
        kid = self.signing_key.kid
        row = self.store.query_one("SELECT value FROM sync_state WHERE key = 'key_published'")
        if row and row["value"] == kid:
            return
        resp = self.client.put_key(self.signing_key.public_jwk())
        if resp.status_code not in (200, 201, 204):
            raise _failure("publishing the store's key", resp)
        self.store.write(lambda db: db.execute(
            "INSERT OR REPLACE INTO sync_state (key, value) VALUES ('key_published', ?)", (kid,)))

    def pull_page(self) -> bool:
        """Read and apply one page; True if the hub has more."""
        assert self.client is not None
        cursor = self.cursor
        resp = self.client.get_changes(cursor, PAGE)
        if resp.status_code != 200:
            raise _failure("reading the change feed", resp)
        self.link.record_contact()
        try:
            page = resp.json()
            changes = page["changes"]
            new_cursor = str(page["cursor"])
            if not isinstance(changes, list):
                raise TypeError("changes is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            raise PullError(f"the change feed's answer is not usable ({exc})") from None
        self._replay = False
        if changes:
            self.apply(changes, cursor, new_cursor)
        if self._replay:
            return True  # a new look-up key: the feed is read again from the start
        return bool(page.get("more")) and new_cursor != cursor

    # ------------------------------------------------------------ applying a page

    def apply(self, changes: list[Any], cursor: str, new_cursor: str) -> dict[str, int]:
        """Apply one page and move the cursor, in one transaction; counts by kind."""
        counts: dict[str, int] = {}
        # Keys first: a customer's wallet in the same page may hold coupons signed with them.
        key_sets = [c for c in changes if isinstance(c, dict) and c.get("kind") == "keys"]
        new_keys = self._key_rows(key_sets[-1]) if key_sets else None
        # The look-up key bundle too: customers in the same page are hashed with it.
        bundles = [c for c in changes if isinstance(c, dict) and c.get("kind") == "lookup_key"]
        bundle = self._bundle(bundles[-1]) if bundles else None
        old_bundle = self.lookup.bundle
        rekey = bundle is not None and bundle.kid != old_bundle.kid
        if rekey:
            assert bundle is not None
            self.lookup.rekey(bundle)
        applied = False
        try:
            applied = self._apply_page(changes, cursor, new_cursor, new_keys, counts, rekey)
        finally:
            if new_keys is not None:
                self.keys.reload()  # from the table: the new set if committed, else the old
            if rekey and not applied:
                self.lookup.rekey(old_bundle)
        if rekey and applied and bundle is not None:
            # After the commit: a crash before this line reads the feed again from the start
            # with the old file, and the first page brings the bundle back.
            if self.datadir is not None:
                save_bundle(self.datadir, bundle)
            log.info("new look-up key from the hub: look-ups cleared%s",
                     ", reading the change feed again" if cursor else "")
            self._replay = bool(cursor)
        for kind, n in counts.items():
            self.metrics.sync_changes.labels(kind=kind).inc(n)
        return counts

    def _apply_page(self, changes: list[Any], cursor: str, new_cursor: str,
                    new_keys: list[tuple[str, str, str]] | None, counts: dict[str, int],
                    rekey: bool = False) -> bool:
        """Apply the page in one transaction; False if another run applied it meanwhile."""
        with self.store.transaction() as db:
            conn = db.conn
            row = conn.execute("SELECT value FROM sync_state WHERE key = 'pull_cursor'"
                               ).fetchone()
            if (row[0] if row else "") != cursor:
                return False  # another run applied this page meanwhile
            if rekey:
                # Hashes made with the old key match nothing any more; the feed read again
                # from the start (compacted) brings every customer back hashed anew.
                conn.execute("DELETE FROM customer_lookup")
                if cursor:
                    new_cursor = ""
            if new_keys is not None:
                conn.execute("DELETE FROM trusted_keys")
                conn.executemany("INSERT INTO trusted_keys (kid, jwk, added_at) VALUES (?, ?, ?)",
                                 new_keys)
                self.keys.trust({kid: json.loads(jwk) for kid, jwk, _ in new_keys})
            for change in changes:
                kind = change.get("kind") if isinstance(change, dict) else None
                try:
                    self._apply_one(db, kind, change)
                except (ValueError, IdentifierError, TypeError, KeyError) as exc:
                    self.skipped += 1
                    log.warning("skipped a %s change from the hub: %s", kind or "malformed",
                                exc)
                    kind = "skipped"
                counts[str(kind)] = counts.get(str(kind), 0) + 1
            conn.execute("INSERT OR REPLACE INTO sync_state (key, value) "
                         "VALUES ('pull_cursor', ?)", (new_cursor,))
        return True

    def _bundle(self, change: dict[str, Any]) -> KeyBundle | None:
        try:
            return KeyBundle.from_json(change.get("lookup_key"))
        except ValueError as exc:
            log.warning("skipped a look-up key bundle from the hub: %s", exc)
            return None

    def _key_rows(self, change: dict[str, Any]) -> list[tuple[str, str, str]] | None:
        keys = change.get("jwks", {}).get("keys") if isinstance(change.get("jwks"), dict) \
            else None
        if not isinstance(keys, list):
            log.warning("skipped a key set from the hub that is not a JWK Set")
            return None
        rows = []
        now = rfc3339(time.time()) or ""
        for jwk in keys:
            kid = jwk.get("kid") if isinstance(jwk, dict) else None
            try:
                if not isinstance(kid, str) or not kid:
                    raise ValueError("no kid")
                public_key_from_jwk(jwk)
            except ValueError as exc:
                log.warning("skipped key %r from the hub: %s", kid, exc)
                continue
            public = {k: jwk[k] for k in ("kty", "crv", "x", "kid", "use", "alg") if k in jwk}
            rows.append((kid, json.dumps(public), now))
        return rows

    def _apply_one(self, db: Any, kind: Any, change: dict[str, Any]) -> None:
        conn = db.conn
        if kind == "customer":
            record = parse_customer(change["customer"], self.lookup)
            upsert_customers(db, [record], self.coupons.wallet_entry)
        elif kind == "campaign":
            upsert_campaigns(db, [parse_campaign(change["campaign"], self.settings.locale)])
        elif kind == "revocation":
            scope, ident, reason = change["scope"], change["id"], change.get("reason")
            if scope not in ("coupon", "campaign") or not isinstance(ident, str) or not ident:
                raise ValueError("a revocation needs scope coupon|campaign and an id")
            revoke(db, scope, ident, reason if isinstance(reason, str) else None)
        elif kind in ("keys", "lookup_key"):
            pass  # applied before the others (see apply)
        elif kind == "forget":
            customer_id = change["customer_id"]
            if not isinstance(customer_id, str) or not customer_id:
                raise ValueError("a forget needs a customer_id")
            forget_customer(conn, customer_id)
        elif kind == "erasure":
            customer_id = change["customer_id"]
            if not isinstance(customer_id, str) or not customer_id:
                raise ValueError("an erasure needs a customer_id")
            counts = erase_customer(conn, customer_id)
            log.info("erased a customer at the hub's request: %s", counts)
        elif kind == "redemption":
            self._other_store_redemption(conn, change["redemption"])
        else:
            raise ValueError(f"unknown kind {kind!r}")

    def _other_store_redemption(self, conn: Any, r: dict[str, Any]) -> None:
        """A use of a coupon at another store: our ledger then refuses it when it is used up."""
        if r["store_id"] == self.settings.store_id:
            return
        for name in ("id", "coupon", "campaign", "store_id", "redeemed_at"):
            if not isinstance(r.get(name), str) or not r[name]:
                raise ValueError(f"a redemption needs {name}")
        name = r.get("store_name")
        if isinstance(name, str) and 0 < len(name) <= 120:  # what cashiers read out
            conn.execute("INSERT INTO stores (id, name) VALUES (?, ?) ON CONFLICT (id) "
                         "DO UPDATE SET name = excluded.name", (r["store_id"], name))
        conn.execute(
            "INSERT INTO redemptions (id, coupon_id, campaign_id, store_id, discount_minor, "
            "currency, redeemed_at, reversed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET reversed_at = excluded.reversed_at",
            (r["id"], r["coupon"], r["campaign"], r["store_id"], int(r.get("discount_minor", 0)),
             str(r.get("currency", self.settings.currency)), r["redeemed_at"],
             r.get("reversed_at")))

    def state(self) -> dict[str, Any]:
        return {"cursor": self.cursor or None, "last_success": rfc3339(self.last_success),
                "last_error": self.last_error, "skipped": self.skipped}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def _failure(what: str, resp: requests.Response) -> PullError:
    return PullError(f"{what}: the hub answered {resp.status_code}", retry_after(resp))
