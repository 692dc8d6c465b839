"""Stores registered at the hub and their bearer tokens.

A token is random (`secrets.token_urlsafe(32)`) and shown once, when the store is added;
the hub keeps only its SHA-256, so a copy of the database lets nobody post as a store.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

from sqlalchemy import select, update

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.schema import retired_stores, revoked_keys, stores
from store_contract.errors import BadRequest, Conflict, NotFound
from store_contract.protocol import ID_RE


def token_hash(token: str) -> str:
    """The form a store token is kept in (and looked up by)."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_store_id(store_id: str) -> None:
    """Raise BadRequest unless `store_id` is a valid store id (docs/protocol.md §2)."""
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
        if conn.execute(select(retired_stores.c.store_id)
                        .where(retired_stores.c.store_id == store_id)).first() is not None:
            raise Conflict(f"store {store_id} was retired; register the new box under a new "
                           "store id", code="store_retired")
        if existing is not None and not rotate:
            raise Conflict(f"store {store_id} is already registered; use --rotate to give it "
                           "a new token", code="store_exists")
        if existing is None:
            conn.execute(stores.insert().values(
                id=store_id, region=region, name=name or store_id,
                token_hash=token_hash(token), created_at=time.time()))
        else:
            # Whoever held the old token may hold the old signing key too: the store offers
            # its key again with the new token (and a new key after `edge keys rotate`).
            values: dict[str, Any] = {"token_hash": token_hash(token), "region": region,
                                      "public_jwk": None}
            if name:
                values["name"] = name
            conn.execute(update(stores).where(stores.c.id == store_id).values(**values))
        if existing is None or existing.region != region:
            # The region's look-up key: the store reads the feed again with it.
            store_bundle_changes(conn, [store_id], time.time())
    return token


def retire_store(db: HubDB, store_id: str, reason: str | None = None) -> dict[str, Any]:
    """Take a store out of service: its token stops working at once, its signing key is
    revoked (out of the key set every store pulls), its history stays for the figures."""
    check_store_id(store_id)
    now = time.time()
    with db.write() as conn:
        row = conn.execute(select(stores.c.public_jwk).where(stores.c.id == store_id)).first()
        if row is None:
            raise NotFound(f"The hub has no store {store_id}.", code="store_unknown")
        if conn.execute(select(retired_stores.c.store_id)
                        .where(retired_stores.c.store_id == store_id)).first() is not None:
            return {"store": store_id, "retired": True, "already": True}
        conn.execute(retired_stores.insert().values(store_id=store_id,
                                                    reason=(reason or "")[:200],
                                                    retired_ts=now))
        # A random hash no token has: the old token is refused from now on.
        conn.execute(update(stores).where(stores.c.id == store_id).values(
            token_hash=token_hash(secrets.token_urlsafe(32)), public_jwk=None))
        if row.public_jwk:
            kid = json.loads(row.public_jwk).get("kid")
            if kid and conn.execute(select(revoked_keys.c.kid)
                                    .where(revoked_keys.c.kid == kid)).first() is None:
                conn.execute(revoked_keys.insert().values(
                    kid=kid, store_id=store_id, reason=f"store retired {reason or ''}"[:200],
                    revoked_ts=now))
    return {"store": store_id, "retired": True}


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
            stores.c.public_jwk.isnot(None).label("has_key"),
            retired_stores.c.retired_ts.isnot(None).label("retired")]
    with db.read() as conn:
        rows = conn.execute(select(*cols).select_from(stores.outerjoin(
            retired_stores, retired_stores.c.store_id == stores.c.id))
            .order_by(stores.c.id)).mappings().all()
    return [{"store" if k == "id" else k: (bool(v) if k in ("has_key", "retired") else v)
             for k, v in row.items()} for row in rows]
