"""Stores registered at the hub and their bearer tokens.

A token is random (`secrets.token_urlsafe(32)`) and shown once, when the store is added;
the hub keeps only its SHA-256, so a copy of the database lets nobody post as a store.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from sqlalchemy import select, update

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.schema import stores
from edge.errors import BadRequest, Conflict
from edge.protocol import ID_RE


def token_hash(token: str) -> str:
    """The form a store token is kept in (and looked up by)."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_store_id(store_id: str) -> None:
    """Raise BadRequest unless `store_id` is a valid store id (ARCHITECTURE §3)."""
    if not isinstance(store_id, str) or not ID_RE.match(store_id):
        raise BadRequest(f"{store_id!r} is not a store id: 1-32 of a-z, 0-9 and '-', "
                         "starting with a letter or digit", code="bad_store_id")


def add_store(db: HubDB, store_id: str, region: str, name: str | None = None,
              rotate: bool = False) -> str:
    """Register a store (or give a registered one a new token with `rotate`); its token."""
    check_store_id(store_id)
    if not isinstance(region, str) or not ID_RE.match(region):
        raise BadRequest(f"{region!r} is not a region id: 1-32 of a-z, 0-9 and '-'",
                         code="bad_region")
    from cloud_sync.hub.lookups import store_bundle_changes

    token = secrets.token_urlsafe(32)
    with db.write() as conn:
        existing = conn.execute(select(stores.c.id, stores.c.region)
                                .where(stores.c.id == store_id)).first()
        if existing is not None and not rotate:
            raise Conflict(f"store {store_id} is already registered; use --rotate to give it "
                           "a new token", code="store_exists")
        if existing is None:
            conn.execute(stores.insert().values(
                id=store_id, region=region, name=name or store_id,
                token_hash=token_hash(token), created_at=time.time()))
        else:
            values: dict[str, Any] = {"token_hash": token_hash(token), "region": region}
            if name:
                values["name"] = name
            conn.execute(update(stores).where(stores.c.id == store_id).values(**values))
        if existing is None or existing.region != region:
            # The region's look-up key: the store reads the feed again with it.
            store_bundle_changes(conn, [store_id], time.time())
    return token


def authenticate(db: HubDB, token: str) -> str | None:
    """The store a bearer token belongs to, or None."""
    if not token:
        return None
    with db.read() as conn:
        row = conn.execute(select(stores.c.id)
                           .where(stores.c.token_hash == token_hash(token))).first()
    return None if row is None else str(row[0])


def touch(db: HubDB, store_id: str, now: float | None = None) -> None:
    """Record contact from a store; skipped when it was recorded in the last few seconds,
    so a store polling hard does not turn every read into a write."""
    now = time.time() if now is None else now
    with db.write() as conn:
        conn.execute(update(stores)
                     .where(stores.c.id == store_id)
                     .where((stores.c.last_contact_ts.is_(None))
                            | (stores.c.last_contact_ts < now - 5))
                     .values(last_contact_ts=now))


def list_stores(db: HubDB) -> list[dict[str, Any]]:
    """Every store with its region, name, contact times and reported queue (no tokens)."""
    cols = [stores.c.id, stores.c.region, stores.c.name, stores.c.created_at,
            stores.c.last_contact_ts, stores.c.last_batch_ts, stores.c.queue_depth,
            stores.c.oldest_age_s, stores.c.dead_letters, stores.c.reported_ts,
            stores.c.public_jwk.isnot(None).label("has_key")]
    with db.read() as conn:
        rows = conn.execute(select(*cols).order_by(stores.c.id)).mappings().all()
    return [{"store" if k == "id" else k: (bool(v) if k == "has_key" else v)
             for k, v in row.items()} for row in rows]
