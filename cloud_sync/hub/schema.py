"""The hub's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Instants that are compared or grouped in SQL are epoch seconds (`*_ts`, float); instants that
are only shown keep their RFC 3339 text. Money is integer minor units plus a currency.
"""

from __future__ import annotations

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

metadata = MetaData()
ID = 64  # store, device, customer and campaign ids are short; event ids are UUIDv7 text

# One row per store: its bearer token (SHA-256 of it, the token is random), region, the
# public key it signs receipt coupons with, and what its edge last told us of its queue.
stores = Table(
    "stores", metadata,
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
events = Table(
    "events", metadata,
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
redemptions = Table(
    "redemptions", metadata,
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
conflicts = Table(
    "conflicts", metadata,
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
changes = Table(
    "changes", metadata,
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
customers = Table(
    "customers", metadata,
    Column("id", String(ID), primary_key=True),
    Column("record", Text, nullable=False),
    Column("updated_ts", Float, nullable=False),
)

# Secrets and parameters the hub makes once: the chain's look-up stretch (salt, scrypt
# cost) and the key of its own identifier index. JSON text by name.
hub_secrets = Table(
    "hub_secrets", metadata,
    Column("name", String(ID), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_ts", Float, nullable=False),
)

# The current look-up key of each region (the HMAC half of a look-up hash; docs/sync.md).
region_keys = Table(
    "region_keys", metadata,
    Column("region", String(ID), primary_key=True),
    Column("kid", String(ID), nullable=False, unique=True),
    Column("key", String(64), nullable=False),   # base64url of 32 random bytes
    Column("created_ts", Float, nullable=False),
)

# Each identifier of each customer once: `digest` = HMAC(hub-only index key, "kind:value")
# finds the customer for an online look-up; `stretched` (hex) is the scrypt half of the
# look-up hash, computed once at import and keyed per region when a record is sent.
customer_index = Table(
    "customer_index", metadata,
    Column("digest", String(64), primary_key=True),
    Column("kind", String(10), nullable=False),
    Column("customer_id", String(ID), nullable=False, index=True),
    Column("stretched", String(64), nullable=False),
)

# Where a customer's record goes: their home region (reason `home`, never expires) and the
# regions where they were seen lately (reason `seen`, until HUB_CUSTOMER_SEEN_DAYS pass).
customer_regions = Table(
    "customer_regions", metadata,
    Column("customer_id", String(ID), primary_key=True),
    Column("region", String(ID), primary_key=True),
    Column("last_seen_ts", Float, nullable=False),
    Column("reason", String(10), nullable=False),
    Index("customer_regions_seen", "reason", "last_seen_ts"),
)

# Every online look-up by a store (found, not_found, throttled, bad): the rate limit counts
# these rows, so hub processes sharing a database share the limit. Throttled look-ups come
# in a flood: one row per store and kind per second holds their `count`.
lookup_audit = Table(
    "lookup_audit", metadata,
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

campaigns = Table(
    "campaigns", metadata,
    Column("id", String(128), primary_key=True),
    Column("record", Text, nullable=False),
    Column("updated_ts", Float, nullable=False),
)

# The chain's products (edge-hub products import, revision 0002): one row per sku and
# currency, each sent to every store as a `product` change (docs/sync.md).
products = Table(
    "products", metadata,
    Column("sku", String(64), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("name", String(80), nullable=False),
    Column("unit_minor", BigInteger, nullable=False),
    Column("categories", Text, nullable=False),  # JSON list of category ids
    Column("updated_ts", Float, nullable=False),
)

revocations = Table(
    "revocations", metadata,
    Column("scope", String(10), primary_key=True),  # coupon|campaign
    Column("id", String(128), primary_key=True),
    Column("reason", String(200)),
    Column("revoked_ts", Float, nullable=False),
)

# Coupons the hub signed (edge-hub coupons issue): their `max` for conflict detection.
issued_coupons = Table(
    "issued_coupons", metadata,
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
chain_keys = Table(
    "chain_keys", metadata,
    Column("kid", String(128), primary_key=True),
    Column("jwk", Text, nullable=False),          # the public JWK
    Column("added_ts", Float, nullable=False),
)

# Signing keys the hub no longer trusts (a stolen store box, a retired store): never
# published again, and a store may not publish a key of this kid again.
revoked_keys = Table(
    "revoked_keys", metadata,
    Column("kid", String(128), primary_key=True),
    Column("store_id", String(ID)),
    Column("reason", String(200)),
    Column("revoked_ts", Float, nullable=False),
)

# Stores taken out of service (`edge-hub stores retire`): their token and key are gone.
retired_stores = Table(
    "retired_stores", metadata,
    Column("store_id", String(ID), primary_key=True),
    Column("reason", String(200)),
    Column("retired_ts", Float, nullable=False),
)

# Redemptions the hub does not believe: the event's coupon token did not verify against a
# key the hub trusts for that coupon (or there was none). Kept for review, never counted in
# the ledger, the conflicts or the feed.
suspect_redemptions = Table(
    "suspect_redemptions", metadata,
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
managers = Table(
    "managers", metadata,
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
manager_login_failures = Table(
    "manager_login_failures", metadata,
    Column("username", String(ID), primary_key=True),
    Column("client", String(ID), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", Float, nullable=False),
    Column("updated", Float, nullable=False),
)
