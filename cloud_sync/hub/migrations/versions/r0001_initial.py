"""The hub's schema as it was when migrations began (revision 0001).

Creates every table on an empty database. A database the hub made before it had
migrations (its tables made at start-up, no alembic_version table) is adopted instead: the
nullable columns the hub used to add at start-up are added, and when its tables then have
this shape it is stamped with this revision, its data kept. A database of another shape
stops here with the differences named; a person must look at it.

The tables are a frozen copy of cloud_sync/hub/schema.py at this revision: later changes
to the schema are later revisions, never edits here.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from cloud_sync.hub.schema_version import adopt_or_create

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = 64


def tables() -> MetaData:
    """The hub's tables at this revision."""
    md = MetaData()

    # One row per store: its bearer token (SHA-256 of it, the token is random), region, the
    # public key it signs receipt coupons with, and what its edge last told us of its queue.
    Table(
        "stores", md,
        Column("id", String(ID), primary_key=True),
        Column("region", String(ID), nullable=False, index=True),
        Column("name", String(120), nullable=False),
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("created_at", Float, nullable=False),
        Column("last_contact_ts", Float),      # any authenticated request from the store
        Column("last_batch_ts", Float),        # last events batch stored
        Column("queue_depth", Integer),        # reported by the edge with each batch
        Column("oldest_age_s", Float),         # age of the edge's oldest unsent event
        Column("dead_letters", Integer),       # events the edge could not deliver
        Column("reported_ts", Float),          # when the three above were reported
        Column("public_jwk", Text),            # the store's Ed25519 public JWK (receipt coupons)
    )

    # Every event a store sent, once (deduplicated on event_id). The typed columns are copied
    # out of `data` at ingest so the dashboard can aggregate in plain SQL on either database.
    Table(
        "events", md,
        Column("event_id", String(ID), primary_key=True),
        Column("store_id", String(ID), nullable=False),
        Column("type", String(40), nullable=False),
        Column("occurred_at", String(40), nullable=False),
        Column("occurred_ts", Float, nullable=False),
        Column("device_id", String(ID)),
        Column("customer_id", String(ID)),
        Column("total_minor", BigInteger),     # transaction.completed: what was paid
        Column("discount_minor", BigInteger),  # coupon discounts of the event
        Column("currency", String(3)),
        Column("coupon_id", String(128)),
        Column("data", Text, nullable=False),  # the event's data, JSON
        Column("batch_id", String(ID)),
        Column("received_ts", Float, nullable=False),
        Index("events_store_type_time", "store_id", "type", "occurred_ts"),
        Index("events_customer", "customer_id"),
    )

    # The chain-wide use ledger of coupons, from coupon.redeemed / coupon.redemption_reversed.
    Table(
        "redemptions", md,
        Column("id", String(ID), primary_key=True),  # the edge's redemption id
        Column("event_id", String(ID), nullable=False),
        Column("store_id", String(ID), nullable=False),
        Column("coupon_id", String(128), nullable=False, index=True),
        Column("campaign_id", String(128), nullable=False),
        Column("customer_id", String(ID)),
        Column("max_uses", Integer, nullable=False, default=1),
        Column("discount_minor", BigInteger, nullable=False),
        Column("currency", String(3), nullable=False),
        Column("redeemed_at", String(40), nullable=False),
        Column("redeemed_ts", Float, nullable=False),
        Column("reversed_at", String(40)),
        Index("redemptions_store_time", "store_id", "redeemed_ts"),
    )

    # A coupon used more often than its `max` across the chain (offline double spend).
    Table(
        "conflicts", md,
        Column("coupon_id", String(128), primary_key=True),
        Column("campaign_id", String(128), nullable=False),
        Column("max_uses", Integer, nullable=False),
        Column("uses", Integer, nullable=False),
        Column("stores", Text, nullable=False),       # JSON list of store ids involved
        Column("redemptions", Text, nullable=False),  # JSON list of redemption ids
        Column("detected_ts", Float, nullable=False),
        Column("updated_ts", Float, nullable=False),
        Column("resolved_ts", Float),                 # uses back within max (a reversal)
    )

    # The change feed the stores pull (cursor = seq). `store_id` set: for that store only;
    # `region` set: for the stores of that region only; neither: for every store.
    Table(
        "changes", md,
        Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
               autoincrement=True),
        Column("kind", String(20), nullable=False),  # customer|campaign|revocation|keys|erasure...
        Column("ref", String(128), nullable=False),  # the id the change is about
        Column("payload", Text, nullable=False),     # JSON
        Column("store_id", String(ID)),
        Column("created_ts", Float, nullable=False),
        Column("region", String(ID)),
        # Never reuse a seq (SQLite would reuse the highest after a delete): a store's cursor
        # must never point past a change it has not read.
        sqlite_autoincrement=True,
    )

    # The hub's master data, as last imported (customers hold what the edges hash for look-up).
    Table(
        "customers", md,
        Column("id", String(ID), primary_key=True),
        Column("record", Text, nullable=False),
        Column("updated_ts", Float, nullable=False),
    )

    # Secrets and parameters the hub makes once: the chain's look-up stretch (salt, scrypt
    # cost) and the key of its own identifier index. JSON text by name.
    Table(
        "hub_secrets", md,
        Column("name", String(ID), primary_key=True),
        Column("value", Text, nullable=False),
        Column("created_ts", Float, nullable=False),
    )

    # The current look-up key of each region (the HMAC half of a look-up hash; docs/sync.md).
    Table(
        "region_keys", md,
        Column("region", String(ID), primary_key=True),
        Column("kid", String(ID), nullable=False, unique=True),
        Column("key", String(64), nullable=False),   # base64url of 32 random bytes
        Column("created_ts", Float, nullable=False),
    )

    # Each identifier of each customer once: `digest` = HMAC(hub-only index key, "kind:value")
    # finds the customer for an online look-up; `stretched` (hex) is the scrypt half of the
    # look-up hash, computed once at import and keyed per region when a record is sent.
    Table(
        "customer_index", md,
        Column("digest", String(64), primary_key=True),
        Column("kind", String(10), nullable=False),
        Column("customer_id", String(ID), nullable=False, index=True),
        Column("stretched", String(64), nullable=False),
    )

    # Where a customer's record goes: their home region (reason `home`, never expires) and the
    # regions where they were seen lately (reason `seen`, until HUB_CUSTOMER_SEEN_DAYS pass).
    Table(
        "customer_regions", md,
        Column("customer_id", String(ID), primary_key=True),
        Column("region", String(ID), primary_key=True),
        Column("last_seen_ts", Float, nullable=False),
        Column("reason", String(10), nullable=False),
        Index("customer_regions_seen", "reason", "last_seen_ts"),
    )

    # Every online look-up by a store (found, not_found, throttled, bad): the rate limit counts
    # these rows, so hub processes sharing a database share the limit. Throttled look-ups come
    # in a flood: one row per store and kind per second holds their `count`.
    Table(
        "lookup_audit", md,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
               autoincrement=True),
        Column("ts", Float, nullable=False),
        Column("store_id", String(ID), nullable=False),
        Column("kind", String(10), nullable=False),
        Column("outcome", String(12), nullable=False),
        Column("customer_id", String(ID)),
        Column("count", Integer, nullable=False, default=1),
        Index("lookup_audit_store_time", "store_id", "outcome", "ts"),
    )

    Table(
        "campaigns", md,
        Column("id", String(128), primary_key=True),
        Column("record", Text, nullable=False),
        Column("updated_ts", Float, nullable=False),
    )

    Table(
        "revocations", md,
        Column("scope", String(10), primary_key=True),  # coupon|campaign
        Column("id", String(128), primary_key=True),
        Column("reason", String(200)),
        Column("revoked_ts", Float, nullable=False),
    )

    # Coupons the hub signed (edge-hub coupons issue): their `max` for conflict detection.
    Table(
        "issued_coupons", md,
        Column("id", String(128), primary_key=True),
        Column("campaign_id", String(128), nullable=False),
        Column("customer_id", String(ID)),
        Column("max_uses", Integer, nullable=False),
        Column("expires_ts", Float, nullable=False),
        Column("issued_ts", Float, nullable=False),
        # SHA-256 of the token as signed: a redemption carrying exactly this token is believed
        # without checking the signature again (the hub made it). Null for coupons issued
        # before it was kept; those are verified by signature.
        Column("token_sha256", String(64)),
    )

    # The chain's other signing keys (the shopper app's): they sign coupons and member codes
    # like the hub's own key, and are published to every store with it.
    Table(
        "chain_keys", md,
        Column("kid", String(128), primary_key=True),
        Column("jwk", Text, nullable=False),          # the public JWK
        Column("added_ts", Float, nullable=False),
    )

    # Signing keys the hub no longer trusts (a stolen store box, a retired store): never
    # published again, and a store may not publish a key of this kid again.
    Table(
        "revoked_keys", md,
        Column("kid", String(128), primary_key=True),
        Column("store_id", String(ID)),
        Column("reason", String(200)),
        Column("revoked_ts", Float, nullable=False),
    )

    # Stores taken out of service (`edge-hub stores retire`): their token and key are gone.
    Table(
        "retired_stores", md,
        Column("store_id", String(ID), primary_key=True),
        Column("reason", String(200)),
        Column("retired_ts", Float, nullable=False),
    )

    # Redemptions the hub does not believe: the event's coupon token did not verify against a
    # key the hub trusts for that coupon (or there was none). Kept for review, never counted in
    # the ledger, the conflicts or the feed.
    Table(
        "suspect_redemptions", md,
        Column("id", String(ID), primary_key=True),   # the edge's redemption id
        Column("event_id", String(ID), nullable=False),
        Column("store_id", String(ID), nullable=False, index=True),
        Column("coupon_id", String(128), nullable=False),
        Column("campaign_id", String(128), nullable=False),
        Column("reason", String(40), nullable=False),
        Column("redeemed_at", String(40), nullable=False),
        Column("received_ts", Float, nullable=False),
    )

    # Regional managers (region NULL: sees every region).
    Table(
        "managers", md,
        Column("username", String(ID), primary_key=True),
        Column("password_hash", String(200), nullable=False),
        Column("region", String(ID)),
        Column("created_ts", Float, nullable=False),
        Column("failed_logins", Integer, nullable=False, default=0),
        Column("locked_until", Float, nullable=False, default=0),
        # Random, new with every password set: a dashboard session made under another ends.
        Column("session_epoch", BigInteger),
    )

    # Wrong dashboard passwords, counted per (manager, client), per client ("*" manager) and per
    # manager ("*" client) before the password is checked (cloud_sync/hub/managers.py).
    Table(
        "manager_login_failures", md,
        Column("username", String(ID), primary_key=True),
        Column("client", String(ID), primary_key=True),
        Column("failures", Integer, nullable=False),
        Column("locked_until", Float, nullable=False),
        Column("updated", Float, nullable=False),
    )

    return md


def upgrade() -> None:
    adopt_or_create(op.get_bind(), tables())


def downgrade() -> None:
    raise NotImplementedError("the hub is not downgraded: restore the backup taken before "
                              "`edge-hub migrate`")
