"""The change puller: what the store needs to work offline, from the hub's change feed.

`GET /api/v1/stores/{store}/changes?cursor=…` pages through customers, campaigns,
revocations, key sets, erasure requests, the chain's products and (an extension,
docs/sync.md) other stores' redemptions (this store's own too: an edge restored from an
older backup learns back what it redeemed since). Each page is applied in ONE store
transaction together with the new cursor, so a crash leaves either the whole page and its
cursor or neither: the page is simply read again.

The feed never freezes: each record is applied inside its own SAVEPOINT, so a record that
fails for any reason (bad values, a constraint, a bug) leaves no partial writes and is
skipped — counted, kept in `feed_skips` for staff, logged with its seq, kind and a fixed
reason but never its values — and the cursor still moves to the page's end. Only a store
whose database itself is failing (disk full, I/O error, gone) stops the page, which is then
read again once the database answers, so no record is skipped for the store's own fault.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import requests

from cloud_sync.client import Backoff, HubClient, retry_after, rfc3339
from edge.coupons import CouponBook, revoke, upsert_campaigns
from edge.customers import forget_customer, save_bundle, upsert_customers
from edge.datadir import DataDir
from edge.erasure import erase_customer
from edge.hublink import HubLink
from edge.metrics import Metrics
from edge.products import remove_products, upsert_products
from edge.settings import Settings
from edge.store import Store
from edge.tokens import TrustedKeys
from store_contract.basket import SKU_RE
from store_contract.campaigns import parse_campaign
from store_contract.customers import KeyBundle, Lookup, parse_customer
from store_contract.jws import SigningKey, key_scope, public_key_from_jwk
from store_contract.products import check_currency, parse_product_row

log = logging.getLogger(__name__)
PAGE = 500
MAX_PAGES_PER_RUN = 200  # a store catching up on a long feed yields to other jobs meanwhile
# The kinds `_apply_one` knows (metric labels and `feed_skips.kind`; anything else: "unknown").
KINDS = ("customer", "campaign", "revocation", "keys", "erasure", "redemption", "lookup_key",
         "forget", "product")
KEEP_SKIPS = 100  # skipped records listed for staff; the total is kept apart
# SQLite result codes that say the store's database is failing, not the record: the page
# must then be read again later rather than its records skipped for good.
_STORE_FAILING = frozenset({
    sqlite3.SQLITE_PERM, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM,
    sqlite3.SQLITE_READONLY, sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_NOLFS, sqlite3.SQLITE_AUTH, sqlite3.SQLITE_NOTADB})


class PullError(Exception):
    """The hub's answer could not be used; the same page is asked for again later."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait  # what the hub asked us to wait (Retry-After), if it did


class Unusable(ValueError):
    """A feed record (or one key of a key set) this store cannot apply. Its text is shown to
    staff and logged, so it is a fixed sentence: never put the record's values in it."""


@dataclass(frozen=True)
class Skip:
    """A feed record (or one key of a key set) that was not applied, and why."""

    seq: int | None
    kind: str
    reason: str


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
        self.key_error: str | None = None  # the hub refused our signing key
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
            self.publish_key()  # again if the key set just read lacked our key
            self.backoff.succeeded()
            self.last_success = time.time()
            self.metrics.sync_pull_last_success.set(self.last_success)
        except (requests.RequestException, PullError, sqlite3.Error) as exc:
            if isinstance(exc, PullError):
                reason = str(exc)
            elif isinstance(exc, sqlite3.Error):  # the page is read again once it answers
                reason = f"the store's database failed ({exc.__class__.__name__})"
            else:
                reason = f"the hub could not be reached ({exc.__class__.__name__})"
            delay = self.backoff.failed(exc.wait if isinstance(exc, PullError) else None)
            self.last_error = reason
            log.warning("change feed: %s; trying again in %.1f s", reason, delay)
            if self.wake is not None:
                self.wake(delay)
        finally:
            self._lock.release()

    def publish_key(self) -> None:
        """Tell the hub the public key our receipt coupons are signed with, once per key and
        hub token (a rotated token means the hub dropped the key: publish it again).

        A key the hub refuses (revoked after a theft: 409 `key_revoked`) is reported to staff
        but does not stop the feed: the store still needs its customers and revocations.
        """
        if self.signing_key is None or self.client is None:
            return
        kid = self.signing_key.kid
        published = f"{kid} {hashlib.sha256(self.settings.hub_token.encode()).hexdigest()[:16]}"
        row = self.store.query_one("SELECT value FROM sync_state WHERE key = 'key_published'")
        if row and row["value"] == published:
            return
        resp = self.client.put_key(self.signing_key.public_jwk())
        if resp.status_code == 409:
            self.key_error = (f"The hub no longer accepts this store's receipt coupon key {kid} "
                              f"({_code(resp)}): IT must run edge keys rotate on this box "
                              "and restart the edge")
            log.warning("change feed: %s", self.key_error)
            return
        if resp.status_code not in (200, 201, 204):
            raise _failure("publishing the store's key", resp)
        self.key_error = None
        self.store.write(lambda db: db.execute(
            "INSERT OR REPLACE INTO sync_state (key, value) VALUES ('key_published', ?)",
            (published,)))

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
        """Apply one page and move the cursor, in one transaction; applied counts by kind.

        Every record that cannot be applied is skipped (see the module's docstring); only
        a failing database raises, and then nothing of the page is kept.
        """
        counts: dict[str, int] = {}
        skips: list[Skip] = []
        # Keys first: a customer's wallet in the same page may hold coupons signed with them.
        key_sets = [c for c in changes if isinstance(c, dict) and c.get("kind") == "keys"]
        key_set = key_sets[-1] if key_sets else None
        # The look-up key bundle too: customers in the same page are hashed with it.
        bundles = [c for c in changes if isinstance(c, dict) and c.get("kind") == "lookup_key"]
        bundle = self._bundle(bundles[-1]) if bundles else None
        old_bundle = self.lookup.bundle
        rekey = bundle is not None and bundle.kid != old_bundle.kid
        if bundle is not None and rekey:
            self.lookup.rekey(bundle)
        applied = False
        try:
            applied = self._apply_page(changes, cursor, new_cursor, key_set, counts, skips,
                                       rekey)
        finally:
            if key_set is not None:
                self.keys.reload()  # from the table: the new set if committed, else the old
            if rekey and not applied:
                self.lookup.rekey(old_bundle)
        if not applied:
            return {}
        if bundle is not None and rekey:
            # After the commit: a crash before this line reads the feed again from the start
            # with the old file, and the first page brings the bundle back.
            if self.datadir is not None:
                save_bundle(self.datadir, bundle)
            log.info("new look-up key from the hub: look-ups cleared%s",
                     ", reading the change feed again" if cursor else "")
            self._replay = bool(cursor)
        for skip in skips:
            log.warning("skipped change %s (%s) from the hub: %s", skip.seq, skip.kind,
                        skip.reason)
            self.metrics.sync_changes_skipped.labels(kind=skip.kind).inc()
        for kind, n in counts.items():
            self.metrics.sync_changes.labels(kind=kind).inc(n)
        return counts

    def _apply_page(self, changes: list[Any], cursor: str, new_cursor: str,
                    key_set: dict[str, Any] | None, counts: dict[str, int],
                    skips: list[Skip], rekey: bool = False) -> bool:
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
            keys_ok = key_set is not None and self._record(
                conn, key_set, partial(self._apply_keys, conn, key_set, skips), skips)
            for change in changes:
                kind = change.get("kind") if isinstance(change, dict) else None
                if kind == "keys":  # applied above; an earlier set in the page is superseded
                    done = "keys" if change is not key_set or keys_ok else "skipped"
                    counts[done] = counts.get(done, 0) + 1
                    continue
                if self._record(conn, change, partial(self._apply_one, db, kind, change), skips):
                    counts[str(kind)] = counts.get(str(kind), 0) + 1
                else:
                    counts["skipped"] = counts.get("skipped", 0) + 1
            self._keep_skips(conn, skips)
            conn.execute("INSERT OR REPLACE INTO sync_state (key, value) "
                         "VALUES ('pull_cursor', ?)", (new_cursor,))
        return True

    def _record(self, conn: sqlite3.Connection, change: Any, apply: Callable[[], None],
                skips: list[Skip]) -> bool:
        """Apply one record inside its own savepoint; False (and a Skip) if it failed."""
        conn.execute("SAVEPOINT feed_record")
        try:
            apply()
        except Exception as exc:  # any fault of one record skips that record, bar the store's
            if _store_failing(exc):
                raise
            # Undo the record's partial writes; if the database cannot even do that, it is
            # failing after all and this raises, so the page is not applied.
            conn.execute("ROLLBACK TO feed_record")
            conn.execute("RELEASE feed_record")
            skips.append(Skip(_seq(change), _kind(change), _reason(change, exc)))
            return False
        conn.execute("RELEASE feed_record")
        return True

    def _apply_keys(self, conn: sqlite3.Connection, change: dict[str, Any],
                    skips: list[Skip]) -> None:
        """The hub's key set replaces the keys from the hub; each key is judged on its own,
        so one bad or duplicate key never takes the good ones with it."""
        jwks = change.get("jwks")
        keys = jwks.get("keys") if isinstance(jwks, dict) else None
        if not isinstance(keys, list):
            raise Unusable(_NOT_A_JWK_SET)
        seq = _seq(change)
        rows: dict[str, dict[str, Any]] = {}
        for jwk in keys:
            try:
                kid, public = self._key_row(jwk)
                if kid in rows:  # the first one stays trusted; the table has one row per kid
                    raise Unusable("a second key with the same kid was left out")
            except Unusable as exc:
                skips.append(Skip(seq, "keys", str(exc)))
                continue
            rows[kid] = public
        if self.signing_key is not None and self.signing_key.kid not in rows:
            # The hub no longer sends our key (token rotated, hub restored): offer it again
            # on the next run, so other stores keep honouring our receipt offers.
            conn.execute("DELETE FROM sync_state WHERE key = 'key_published'")
        now = rfc3339(time.time()) or ""
        conn.execute("DELETE FROM trusted_keys")
        conn.executemany("INSERT INTO trusted_keys (kid, jwk, added_at) VALUES (?, ?, ?)",
                         [(kid, json.dumps(public), now) for kid, public in rows.items()])
        self.keys.trust(rows)

    def _key_row(self, jwk: Any) -> tuple[str, dict[str, Any]]:
        """(kid, the public members to keep) of one key of the hub's set; Unusable if not."""
        if not isinstance(jwk, dict):
            raise Unusable("a key that is not a JSON object was left out")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unusable("a key without a kid was left out")
        try:
            public_key_from_jwk(jwk)
        except ValueError:
            raise Unusable("a key that is not a usable Ed25519 public key was left out"
                           ) from None
        try:
            key_scope(kid, jwk)
        except ValueError:
            raise Unusable("a store key whose kid and store do not match was left out"
                           ) from None
        return kid, {k: jwk[k] for k in ("kty", "crv", "x", "kid", "use", "alg", "store")
                     if k in jwk}

    def _keep_skips(self, conn: sqlite3.Connection, skips: list[Skip]) -> None:
        """Remember the page's skips for staff (the newest KEEP_SKIPS) and count them all."""
        if not skips:
            return
        now = rfc3339(time.time()) or ""
        conn.executemany("INSERT INTO feed_skips (seq, kind, reason, skipped_at) "
                         "VALUES (?, ?, ?, ?)", [(s.seq, s.kind, s.reason, now) for s in skips])
        conn.execute("DELETE FROM feed_skips WHERE id <= (SELECT MAX(id) FROM feed_skips) - ?",
                     (KEEP_SKIPS,))
        conn.execute("INSERT INTO sync_state (key, value) VALUES ('feed_skipped', ?) "
                     "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + ?",
                     (str(len(skips)), len(skips)))

    def _apply_one(self, db: Any, kind: Any, change: Any) -> None:
        """Apply one record (not `keys`: see `_apply_keys`). Raise ValueError (or Unusable,
        whose fixed text staff see) for a record that cannot be valid here."""
        if not isinstance(change, dict):
            raise Unusable("the change is not a JSON object")
        conn = db.conn
        if kind == "customer":
            customer = change["customer"]
            if isinstance(customer, dict) and "lookups" in customer and \
                    customer.get("key") != self.lookup.kid:
                raise Unusable("a customer hashed with a look-up key this store does not hold "
                               "(the hub sends the key, then the customer again)")
            record = parse_customer(customer, self.lookup)
            upsert_customers(db, [record], self.coupons.wallet_entry)
        elif kind == "lookup_key":
            if self._bundle(change) is None:
                raise Unusable("a look-up key bundle that is not usable; the key held stays")
        elif kind == "forget":
            customer_id = change["customer_id"]
            if not isinstance(customer_id, str) or not customer_id:
                raise Unusable("a forget needs a customer_id")
            forget_customer(conn, customer_id)
        elif kind == "campaign":
            upsert_campaigns(db, [parse_campaign(change["campaign"], self.settings.locale)])
        elif kind == "revocation":
            scope, ident, reason = change["scope"], change["id"], change.get("reason")
            if scope not in ("coupon", "campaign") or not isinstance(ident, str) or not ident:
                raise Unusable("a revocation needs scope coupon or campaign and an id")
            revoke(db, scope, ident, reason if isinstance(reason, str) else None)
        elif kind == "erasure":
            customer_id = change["customer_id"]
            if not isinstance(customer_id, str) or not customer_id:
                raise Unusable("an erasure needs a customer_id")
            counts = erase_customer(conn, customer_id)
            log.info("erased a customer at the hub's request: %s", counts)
        elif kind == "redemption":
            self._redemption(conn, change["redemption"])
        elif kind == "product":
            self._product(db, change)
        else:
            raise Unusable("a kind of change this store does not know")

    def _redemption(self, conn: Any, r: Any) -> None:
        """A use of a coupon: our ledger then refuses the coupon when it is used up.

        Other stores' uses, and our own too: an edge restored from an older backup reads the
        feed again from its older cursor and so learns back what it redeemed since. A
        redemption it already has is never duplicated or altered, except that it takes a
        reversal from the store that redeemed it.
        """
        if not isinstance(r, dict):
            raise Unusable("a redemption that is not a JSON object")
        for name in ("id", "coupon", "campaign", "store_id", "redeemed_at"):
            if not isinstance(r.get(name), str) or not r[name]:
                raise Unusable(f"a redemption needs {name}")
        reversed_at = r.get("reversed_at")
        if reversed_at is not None and (not isinstance(reversed_at, str) or not reversed_at):
            raise Unusable("a redemption's reversed_at must be a time")
        store_name = r.get("store_name")
        if (r["store_id"] != self.settings.store_id and isinstance(store_name, str)
                and 0 < len(store_name) <= 120):  # what cashiers read out
            conn.execute("INSERT INTO stores (id, name) VALUES (?, ?) ON CONFLICT (id) "
                         "DO UPDATE SET name = excluded.name", (r["store_id"], store_name))
        # A relearned own redemption has no lane, sale or customer: the feed does not carry
        # them, and the sale itself was lost with the newer database.
        conn.execute(
            "INSERT INTO redemptions (id, coupon_id, campaign_id, store_id, discount_minor, "
            "currency, redeemed_at, reversed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET reversed_at = excluded.reversed_at "
            "WHERE redemptions.reversed_at IS NULL AND excluded.reversed_at IS NOT NULL "
            "AND redemptions.store_id = excluded.store_id",
            (r["id"], r["coupon"], r["campaign"], r["store_id"], int(r.get("discount_minor", 0)),
             str(r.get("currency", self.settings.currency)), r["redeemed_at"], reversed_at))

    def _product(self, db: Any, change: dict[str, Any]) -> None:
        """A product of the chain's list, or its removal (`"deleted": true`). Products are
        sent to every store in every currency the chain prices them in: one in another
        currency than this store's is passed over (its price means nothing here)."""
        record = change.get("product")
        if not isinstance(record, dict):
            raise Unusable("a product change without a product object")
        try:
            currency = check_currency(record.get("currency"))
        except ValueError:
            raise Unusable("a product without a valid currency") from None
        if currency != self.settings.currency:
            return
        if change.get("deleted") is True:
            sku = record.get("sku")
            if not isinstance(sku, str) or not SKU_RE.match(sku):
                raise Unusable("a product removal without a valid sku")
            remove_products(db, [sku])
            return
        try:
            product, _ = parse_product_row(record, currency)
        except ValueError:
            raise Unusable("a product whose sku, name, price or categories are not valid"
                           ) from None
        upsert_products(db, [product])

    def _bundle(self, change: dict[str, Any]) -> KeyBundle | None:
        """The look-up key bundle of a `lookup_key` change, or None when it is not one."""
        try:
            return KeyBundle.from_json(change.get("lookup_key"))
        except ValueError:
            return None

    @property
    def skipped(self) -> int:
        """Feed records skipped since this store's database was made (survives restarts)."""
        row = self.store.query_one("SELECT value FROM sync_state WHERE key = 'feed_skipped'")
        return int(row["value"]) if row else 0

    def recent_skips(self, limit: int = KEEP_SKIPS) -> list[dict[str, Any]]:
        """The newest skipped feed records first: seq, kind, reason, skipped_at."""
        return self.store.query("SELECT seq, kind, reason, skipped_at FROM feed_skips "
                                "ORDER BY id DESC LIMIT ?", (limit,))

    def state(self) -> dict[str, Any]:
        last = self.recent_skips(1)
        return {"cursor": self.cursor or None, "last_success": rfc3339(self.last_success),
                "last_error": self.last_error, "skipped": self.skipped,
                "last_skip": last[0] if last else None, "key_error": self.key_error}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def _code(resp: requests.Response) -> str:
    try:
        return str(resp.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {resp.status_code}"


def _failure(what: str, resp: requests.Response) -> PullError:
    return PullError(f"{what}: the hub answered {resp.status_code}", retry_after(resp))


_NOT_A_JWK_SET = "the key set is not a JWK Set; the keys held before stay"


def _seq(change: Any) -> int | None:
    seq = change.get("seq") if isinstance(change, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def _kind(change: Any) -> str:
    """The record's kind as a metric label and for staff: a known kind, else a fixed word."""
    if not isinstance(change, dict):
        return "malformed"
    kind = change.get("kind")
    return kind if isinstance(kind, str) and kind in KINDS else "unknown"


def _reason(change: Any, exc: BaseException) -> str:
    """Why a record was skipped, for staff and the log: a fixed text and the error's class,
    never the exception's message (an IdentifierError quotes the phone number it read)."""
    if isinstance(exc, Unusable):
        return str(exc)
    what = _kind(change)
    return f"the {what} change could not be applied ({exc.__class__.__name__})"


def _store_failing(exc: BaseException) -> bool:
    """True for errors that mean the store's database is failing, not this one record."""
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and (code & 0xFF) in _STORE_FAILING
    return False
