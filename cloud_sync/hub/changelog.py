"""The change log behind the feed: how a change is appended, and which older change of the
same record it replaces (docs/sync.md §4). The feed (`cloud_sync.hub.feed`) reads it; the
feed, the look-ups and the ingest append to it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Connection, delete

from cloud_sync.hub.db import insert_new
from cloud_sync.hub.schema import changes

KINDS = ("customer", "campaign", "revocation", "keys", "erasure", "redemption", "lookup_key",
         "forget", "product")


# Kinds where only the newest change per `ref` (and region) matters to a store that has not
# seen it yet. A customer's record and a `forget` of them in one region replace each other;
# a product's ref is "CURRENCY:sku", so its newest price or its removal replaces the older.
_SUPERSEDED = {"customer": ("customer", "forget"), "forget": ("customer", "forget"),
               "campaign": ("campaign",), "keys": ("keys",), "lookup_key": ("lookup_key",),
               "product": ("product",)}


# Any constant: the advisory lock that keeps feed appends in commit order on PostgreSQL.
_FEED_LOCK = 0x5EED


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def append_changes(conn: Connection, items: list[tuple[str, str, dict[str, Any], str | None]],
                   now: float | None = None, region: str | None = None) -> None:
    """Add (kind, ref, payload, store_id or None) changes inside the caller's transaction;
    with `region`, all of them are for the stores of that region only.

    On PostgreSQL, seq numbers come from a sequence and transactions may commit out of
    order, so a store could move its cursor past a seq that commits later and never see
    it; one lock held until commit keeps feed writers in seq order.
    """
    if not items:
        return
    now = time.time() if now is None else now
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_FEED_LOCK})")
    # New rows first, old ones after: had the newest row gone first, SQLite could hand its
    # seq to the new row, and a store whose cursor is at that seq would never see it.
    rows = [{"kind": kind, "ref": ref, "payload": dumps(payload), "store_id": store_id,
             "region": region, "created_ts": now} for kind, ref, payload, store_id in items]
    if not any(kind in _SUPERSEDED for kind, _, _, _ in items):
        conn.execute(changes.insert(), rows)  # nothing replaces an older change
        return
    first = min(insert_new(conn, changes, rows, "seq"))
    same_region = changes.c.region.is_(None) if region is None else changes.c.region == region
    for kind, replaced in _SUPERSEDED.items():
        refs = sorted({ref for k, ref, _, _ in items if k == kind})
        for start in range(0, len(refs), 500):
            conn.execute(delete(changes).where(changes.c.kind.in_(replaced))
                         .where(changes.c.ref.in_(refs[start:start + 500])).where(same_region)
                         .where(changes.c.seq < first))
