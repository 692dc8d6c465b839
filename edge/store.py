"""The edge's SQLite store: WAL, migrations applied at start-up, and one write path.

Every write — from MQTT handlers, HTTP views, scheduled jobs or another process such as
`edge devices add` — goes through `Store.write()`/`Store.transaction()`, which hold a
process-wide lock and open the transaction with `BEGIN IMMEDIATE`, so writers queue for
the lock instead of failing half-way with "database is locked". Reads use a connection per
thread and never block the writer (WAL).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import sqlite_utils
from sqlite_utils.migrations import Migrations

from store_contract.protocol import now_rfc3339

if TYPE_CHECKING:
    from edge.outbox import OutboxCap

T = TypeVar("T")
Params = tuple[Any, ...] | dict[str, Any]
MIGRATIONS = Migrations("edge")


class WriterConnection(sqlite3.Connection):
    """The write connection. `queue_event` marks it when a transaction adds outbox events,
    so the store can tell the sync sender once that transaction has committed."""

    outbox_written = False
    outbox_cap: OutboxCap | None = None


def _connect(path: Path, factory: type[sqlite3.Connection] = sqlite3.Connection
             ) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10,
                           factory=factory)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    # FULL: a committed redemption survives a power cut, not just a crash.
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class Store:
    """The database of one store edge."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._writer = cast(WriterConnection, _connect(path, WriterConnection))
        # Called (outside the lock) after a commit that queued outbox events: the sender's kick.
        self.on_outbox: Callable[[], None] | None = None
        self._writer.execute("PRAGMA journal_mode = WAL")
        self._write_db = sqlite_utils.Database(self._writer)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        # The last COMMIT that failed (for /healthz; whether writes work now is the probe's).
        self.write_failure: dict[str, str] | None = None
        self._probed: tuple[float, dict[str, Any]] | None = None
        self.write(MIGRATIONS.apply)

    @property
    def outbox_cap(self) -> OutboxCap | None:
        """The outbox's cap, checked by `queue_event` on this store's writer."""
        return self._writer.outbox_cap

    @outbox_cap.setter
    def outbox_cap(self, cap: OutboxCap | None) -> None:
        self._writer.outbox_cap = cap

    # ------------------------------------------------------------ writes

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction (`BEGIN IMMEDIATE`); commits on success, rolls back on error."""
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._write_db
            except BaseException:
                self._writer.outbox_written = False
                self._writer.execute("ROLLBACK")
                raise
            try:
                self._writer.execute("COMMIT")
            except BaseException as exc:
                # A COMMIT that fails (disk full, an I/O error, a deferred constraint) can
                # leave the transaction open, and every later BEGIN would fail: roll back,
                # so the writer is ready for the next transaction, and remember it.
                self._writer.outbox_written = False
                if self._writer.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._writer.execute("ROLLBACK")
                self.write_failure = {"at": now_rfc3339(), "error": _error_name(exc)}
                self._probed = None  # the next health check writes again
                raise
            queued, self._writer.outbox_written = self._writer.outbox_written, False
        if queued and self.on_outbox is not None:
            self.on_outbox()

    def write(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """Run `fn(db)` in one write transaction and return its result."""
        with self.transaction() as db:
            return fn(db)

    def probe_write(self, every_s: float = 5.0) -> dict[str, Any]:
        """`{"ok": bool, "error"?}`: a real write (one row, committed) at most every
        `every_s` seconds, so /healthz sees a writer that can no longer commit."""
        now = time.monotonic()
        if self._probed is not None and now - self._probed[0] < every_s:
            return self._probed[1]
        try:
            self.write(lambda db: db.execute(
                "INSERT OR REPLACE INTO write_probe (id, at) VALUES (1, ?)", (now_rfc3339(),)))
            result: dict[str, Any] = {"ok": True}
        except Exception as exc:  # reported, never raised, from a health check
            result = {"ok": False, "error": _error_name(exc)}
        self._probed = (now, result)
        return result

    # ------------------------------------------------------------ reads

    @property
    def reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self.reader.execute(sql, params)]

    def query_one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        row = self.reader.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    def check(self) -> None:
        """Raise if the database cannot answer (for /healthz)."""
        self.reader.execute("SELECT 1").fetchone()

    def checkpoint(self) -> None:
        """Fold the WAL back into the database file so it does not grow without bound."""
        with self._write_lock:
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            self._writer.close()


# ---------------------------------------------------------------- migrations
# Append new migrations at the end; never edit one that has shipped.


@MIGRATIONS(name="0001_devices_staff_outbox")
def _m0001(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE devices (
            kind TEXT NOT NULL,
            id TEXT NOT NULL,
            username TEXT NOT NULL UNIQUE,
            password_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'unknown',
            last_seen TEXT,
            status TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (kind, id)
        );
        CREATE TABLE staff_users (
            username TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('cashier', 'manager')),
            created_at TEXT NOT NULL,
            failed_logins INTEGER NOT NULL DEFAULT 0,
            locked_until REAL NOT NULL DEFAULT 0
        );
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            occurred_at TEXT NOT NULL,
            device_id TEXT,
            data TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        """
    )


@MIGRATIONS(name="0002_checkout")
def _m0002(db: sqlite_utils.Database) -> None:
    # Money in integer minor units; instants that are compared in SQL as epoch seconds (REAL),
    # instants that are only shown as RFC 3339 text.
    db.executescript(
        """
        CREATE TABLE customers (
            id TEXT PRIMARY KEY,
            display_name TEXT NOT NULL,
            tier TEXT NOT NULL,
            points INTEGER NOT NULL DEFAULT 0,
            consent TEXT NOT NULL DEFAULT '{}',
            updated_at TEXT NOT NULL
        );
        -- HMAC of a normalised phone, e-mail or card number: the numbers themselves are not kept.
        CREATE TABLE customer_lookup (
            hash TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('phone', 'email', 'card')),
            customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE
        );
        CREATE INDEX customer_lookup_customer ON customer_lookup(customer_id);
        CREATE TABLE wallet (
            customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
            coupon_id TEXT NOT NULL,
            campaign_id TEXT NOT NULL,
            description TEXT NOT NULL,
            expires_at REAL,
            max_uses INTEGER NOT NULL DEFAULT 1,
            token TEXT NOT NULL,
            clipped_at TEXT NOT NULL,
            PRIMARY KEY (customer_id, coupon_id)
        );
        CREATE TABLE campaigns (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            code TEXT UNIQUE,
            terms TEXT NOT NULL,
            offer INTEGER NOT NULL DEFAULT 0,
            tiers TEXT,
            starts_at REAL,
            ends_at REAL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE revocations (
            id TEXT NOT NULL,
            scope TEXT NOT NULL CHECK (scope IN ('coupon', 'campaign')),
            reason TEXT,
            revoked_at TEXT NOT NULL,
            PRIMARY KEY (scope, id)
        );
        CREATE TABLE stores (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            region TEXT
        );
        CREATE TABLE trusted_keys (
            kid TEXT PRIMARY KEY,
            jwk TEXT NOT NULL,
            added_at TEXT NOT NULL
        );
        CREATE TABLE transactions (
            device_id TEXT NOT NULL,
            txn TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('open', 'completed', 'voided')),
            customer_id TEXT,
            identifier_kind TEXT,
            identifier TEXT,
            opened_at TEXT NOT NULL,
            completed_at TEXT,
            voided_at TEXT,
            total_minor INTEGER,
            currency TEXT,
            basket TEXT,
            tenders TEXT,
            receipt_job TEXT,
            result TEXT,
            PRIMARY KEY (device_id, txn)
        );
        CREATE TABLE reservations (
            id TEXT PRIMARY KEY,
            coupon_id TEXT NOT NULL,
            campaign_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            txn TEXT NOT NULL,
            code TEXT NOT NULL,
            discount_minor INTEGER NOT NULL,
            currency TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('held', 'redeemed', 'released', 'expired')),
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE INDEX reservations_held ON reservations(coupon_id, expires_at)
            WHERE state = 'held';
        CREATE INDEX reservations_sale ON reservations(device_id, txn);
        -- The use ledger: this store's redemptions and, after sync, other stores'.
        CREATE TABLE redemptions (
            id TEXT PRIMARY KEY,
            coupon_id TEXT NOT NULL,
            campaign_id TEXT NOT NULL,
            store_id TEXT NOT NULL,
            device_id TEXT,
            txn TEXT,
            customer_id TEXT,
            discount_minor INTEGER NOT NULL,
            currency TEXT NOT NULL,
            redeemed_at TEXT NOT NULL,
            reversed_at TEXT
        );
        CREATE INDEX redemptions_live ON redemptions(coupon_id, redeemed_at)
            WHERE reversed_at IS NULL;
        CREATE INDEX redemptions_sale ON redemptions(device_id, txn);
        """
    )


@MIGRATIONS(name="0003_receipts")
def _m0003(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        ALTER TABLE customers ADD COLUMN segments TEXT NOT NULL DEFAULT '[]';
        ALTER TABLE campaigns ADD COLUMN segments TEXT;
        -- Receipt printers and the lanes that print on them. `connection` set: the edge runs
        -- the printer service itself (a network printer); empty: a pos_bridge process beside
        -- the printer (USB, serial) serves it.
        CREATE TABLE printers (
            id TEXT PRIMARY KEY,
            connection TEXT,
            profile TEXT NOT NULL DEFAULT 'default',
            lanes TEXT NOT NULL DEFAULT '[]',
            added_at TEXT NOT NULL
        );
        -- The durable print spool: one row per receipt, written with the sale it belongs to.
        CREATE TABLE print_jobs (
            job TEXT PRIMARY KEY,
            device_id TEXT NOT NULL,
            txn TEXT,
            printer TEXT,
            state TEXT NOT NULL
                CHECK (state IN ('queued', 'sending', 'held', 'printed', 'failed')),
            reason TEXT,
            document TEXT NOT NULL,
            customer_id TEXT,
            personalised INTEGER NOT NULL DEFAULT 0,
            offer_coupon TEXT,
            copy_of TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            printed_at TEXT
        );
        CREATE INDEX print_jobs_open ON print_jobs(next_attempt_at)
            WHERE state IN ('queued', 'sending', 'held');
        CREATE INDEX print_jobs_recent ON print_jobs(created_at);
        CREATE INDEX print_jobs_customer ON print_jobs(customer_id);
        -- Next-visit coupons this store signed and printed.
        CREATE TABLE issued_coupons (
            id TEXT PRIMARY KEY,
            campaign_id TEXT NOT NULL,
            customer_id TEXT NOT NULL,
            device_id TEXT,
            txn TEXT,
            issued_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE INDEX issued_coupons_customer ON issued_coupons(customer_id, issued_at);
        CREATE INDEX transactions_customer ON transactions(customer_id, completed_at)
            WHERE customer_id IS NOT NULL;
        """
    )


@MIGRATIONS(name="0004_sync")
def _m0004(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- Events the hub refused as such (4xx other than 408/429): kept for staff, never
        -- dropped; a manager may send one again after the cause is fixed.
        CREATE TABLE dead_letters (
            event_id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            occurred_at TEXT NOT NULL,
            device_id TEXT,
            data TEXT NOT NULL,
            created_at REAL NOT NULL,
            status INTEGER,
            error TEXT NOT NULL,
            failed_at REAL NOT NULL
        );
        -- The age of the oldest waiting event is read before every batch to the hub.
        CREATE INDEX outbox_created ON outbox(created_at);
        -- Small durable facts of the sync: the change-feed cursor, the last success, ...
        CREATE TABLE sync_state (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        """
    )


@MIGRATIONS(name="0005_feed_skips")
def _m0005(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- Changes from the hub this store could not apply (the newest 100; the total is
        -- `feed_skipped` in sync_state): what staff see on /staff/sync. Never the record's
        -- values, which may hold personal data: its seq, kind and a fixed reason.
        CREATE TABLE feed_skips (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            seq INTEGER,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL,
            skipped_at TEXT NOT NULL
        );
        """
    )


@MIGRATIONS(name="0006_wallet_until")
def _m0006(db: sqlite_utils.Database) -> None:
    # A coupon's `until` (its last local date, YYYY-MM-DD): the wallet leaves it out after
    # that date here even though its `exp` is later (it must cover the chain's last zone).
    db.executescript("ALTER TABLE wallet ADD COLUMN until TEXT;")


@MIGRATIONS(name="0007_write_probe")
def _m0007(db: sqlite_utils.Database) -> None:
    # One row the health check rewrites: proof that a transaction still commits.
    db.executescript("CREATE TABLE write_probe (id INTEGER PRIMARY KEY, at TEXT NOT NULL);")


def _error_name(exc: BaseException) -> str:
    """What went wrong, as staff and IT read it, without the statement's values."""
    text = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@MIGRATIONS(name="0008_staff_sign_in")
def _m0008(db: sqlite_utils.Database) -> None:
    # session_epoch: goes up when a password changes, ending the sessions made before.
    # login_failures: wrong passwords counted per account and client ("*" = any), so one
    # machine guessing cannot lock a manager out everywhere (docs/operations.md §6).
    db.executescript(
        """
        ALTER TABLE staff_users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE login_failures (
            username TEXT NOT NULL,
            client TEXT NOT NULL,
            failures INTEGER NOT NULL,
            locked_until REAL NOT NULL DEFAULT 0,
            updated REAL NOT NULL,
            PRIMARY KEY (username, client)
        );
        CREATE INDEX login_failures_updated ON login_failures (updated);
        """
    )


@MIGRATIONS(name="0009_member_codes_used")
def _m0009(db: sqlite_utils.Database) -> None:
    # Member codes already used, by jti, until they expire: a code identifies one sale.
    db.executescript(
        """
        CREATE TABLE member_codes_used (
            jti TEXT PRIMARY KEY,
            exp REAL NOT NULL,
            device_id TEXT NOT NULL,
            txn TEXT NOT NULL,
            used_at TEXT NOT NULL
        );
        CREATE INDEX member_codes_used_exp ON member_codes_used (exp);
        """
    )


@MIGRATIONS(name="0010_status_flapping")
def _m0010(db: sqlite_utils.Database) -> None:
    # What the hub last heard of each device's status and when, and the changes since:
    # a flapping device is recorded once per interval (docs/protocol.md, presence).
    db.executescript(
        """
        ALTER TABLE devices ADD COLUMN status_synced TEXT;
        ALTER TABLE devices ADD COLUMN status_synced_at REAL NOT NULL DEFAULT 0;
        ALTER TABLE devices ADD COLUMN flaps INTEGER NOT NULL DEFAULT 0;
        """
    )


@MIGRATIONS(name="0011_till_audit")
def _m0011(db: sqlite_utils.Database) -> None:
    # till_audit: every void, reversal and reprint with who did it and who approved it
    # (docs/operations.md §16.3); the hub hears of each through the outbox as well.
    # staff_approvals: a manager's approval on a cashier's screen, good for one action.
    db.executescript(
        """
        CREATE TABLE till_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            action TEXT NOT NULL,
            lane TEXT NOT NULL,
            txn TEXT,
            job TEXT,
            by TEXT NOT NULL,
            by_kind TEXT NOT NULL CHECK (by_kind IN ('staff', 'device')),
            approved_by TEXT,
            detail TEXT NOT NULL DEFAULT '{}',
            at TEXT NOT NULL
        );
        CREATE TABLE staff_approvals (
            id TEXT PRIMARY KEY,
            manager TEXT NOT NULL,
            for_user TEXT NOT NULL,
            action TEXT NOT NULL,
            lane TEXT NOT NULL,
            target TEXT NOT NULL,
            expires_at REAL NOT NULL
        );
        """
    )


@MIGRATIONS(name="0012_products")
def _m0012(db: sqlite_utils.Database) -> None:
    # The store's product list for the staff checkout page (edge products import, later the
    # hub): what a typed or scanned product code costs and which categories it is in, so
    # item-bound coupons work on the page as at an integrated lane.
    db.executescript(
        """
        CREATE TABLE products (
            sku TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            unit_minor INTEGER NOT NULL,
            categories TEXT NOT NULL DEFAULT '[]',
            updated_at TEXT NOT NULL
        );
        """
    )


@MIGRATIONS(name="0013_scanners")
def _m0013(db: sqlite_utils.Database) -> None:
    # Which lane or kiosk each scanner's scans go to (docs/protocol.md, "Scans"), and what
    # staff see of its scans on the devices page. A scanner enrolled with `edge devices add`
    # but never assigned gets its row with its first scan (target NULL: unassigned). Never
    # a code's text: only when it last scanned and how many scans had nowhere to go.
    db.executescript(
        """
        CREATE TABLE scanners (
            id TEXT PRIMARY KEY,
            target_kind TEXT CHECK (target_kind IN ('pos', 'kiosk')),
            target TEXT,
            assigned_at TEXT,
            last_scan TEXT,
            scans INTEGER NOT NULL DEFAULT 0,
            unassigned_scans INTEGER NOT NULL DEFAULT 0,
            last_unassigned TEXT
        );
        """
    )


@MIGRATIONS(name="0014_product_gtin")
def _m0014(db: sqlite_utils.Database) -> None:
    # A product's sku as a GTIN-14 when it is a GTIN in any form (EAN-13, UPC-A, EAN-8,
    # GTIN-14), indexed: a scan of another form of the same GTIN finds the product
    # (edge/products.py `find_product`, docs/operations.md §13.6). Filled here for the
    # products imported before; `upsert_products` fills it from now on.
    from store_contract.scans import gtin14

    db.executescript(
        """
        ALTER TABLE products ADD COLUMN gtin TEXT;
        CREATE INDEX products_gtin ON products (gtin);
        """
    )
    rows = db.conn.execute("SELECT sku FROM products").fetchall()
    db.conn.executemany("UPDATE products SET gtin = ? WHERE sku = ?",
                        [(gtin14(sku), sku) for (sku,) in rows if gtin14(sku) is not None])


@MIGRATIONS(name="0015_kiosks")
def _m0015(db: sqlite_utils.Database) -> None:
    # Kiosks (docs/kiosk.md, "Enrolment and pairing"): a device of kind `kiosk` plus its row
    # here, with the printer its coupons print on and the languages it offers (its scanner
    # is the one the scanners table sends to it). `credential_hash`: SHA-256 of the kiosk
    # browser's credential cookie, NULL while no browser is paired; the credential itself is
    # never stored. kiosk_pairings: one-time pairing codes shown on a kiosk's screen, by the
    # hash of the browser's pairing cookie, the code only as its hash. kiosk_pair_failures:
    # wrong codes entered, per staff account, for the lock-out.
    db.executescript(
        """
        CREATE TABLE kiosks (
            id TEXT PRIMARY KEY,
            printer TEXT,
            langs TEXT NOT NULL DEFAULT '[]',
            credential_hash TEXT UNIQUE,
            paired_at TEXT,
            added_at TEXT NOT NULL
        );
        CREATE TABLE kiosk_pairings (
            browser_hash TEXT PRIMARY KEY,
            code_hash TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'shown' CHECK (state IN ('shown', 'claimed', 'done')),
            kiosk TEXT REFERENCES kiosks (id) ON DELETE CASCADE,
            claimed_at REAL
        );
        CREATE INDEX kiosk_pairings_expires ON kiosk_pairings (expires_at);
        CREATE TABLE kiosk_pair_failures (
            by TEXT NOT NULL,
            at REAL NOT NULL
        );
        CREATE INDEX kiosk_pair_failures_by ON kiosk_pair_failures (by, at);
        """
    )
