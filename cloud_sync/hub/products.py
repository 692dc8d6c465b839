"""The chain's products at the hub: `edge-hub products import` and `remove` (docs/hub.md).

Products are chain-wide: every imported or changed product is one `product` change for
every store, and a removal is one `product` change with `"deleted": true` (docs/sync.md).
A file is read by the same rules as the edge's `edge products import`
(`store_contract.products`), so one list loads at either end. Prices are per currency:
each row carries its currency (or the import's `--currency`), a product is kept once per
sku and currency, and each store applies only the products in its own currency.

A product imported again unchanged appends nothing to the feed, so a nightly import of the
whole list costs the stores only what changed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, delete, select, tuple_

from cloud_sync.hub.changelog import append_changes
from cloud_sync.hub.db import HubDB, upsert
from cloud_sync.hub.schema import products
from store_contract.basket import SKU_RE, Product
from store_contract.errors import BadRequest
from store_contract.products import check_currency, parse_product_row

SHOW_PROBLEMS = 50  # skipped lines listed in the report; `skipped` counts them all
_CHUNK = 500


def _ref(sku: str, currency: str) -> str:
    """The change's `ref`: a newer change of the same sku and currency replaces it."""
    return f"{currency}:{sku}"


def _currency(value: str | None) -> str | None:
    """`--currency` checked: None when not given; BadRequest (one line) when not a code."""
    if not value:
        return None
    try:
        return check_currency(value)
    except ValueError as exc:
        raise BadRequest(f"--currency: {exc}", code="bad_currency") from None


def product_record(product: Product, currency: str) -> dict[str, Any]:
    """A product as the feed carries it (read back by `parse_product_row`)."""
    return {"sku": product.sku, "name": product.name, "unit_minor": product.unit_minor,
            "categories": list(product.categories), "currency": currency}


def import_products(db: HubDB, rows: Iterable[tuple[int, Any]],
                    currency: str | None = None) -> dict[str, Any]:
    """Import (line number, row or ValueError) pairs; the last row of a sku and currency
    wins. `{"imported","unchanged","skipped","problems"}`: imported counts the products new
    or changed (one `product` change each), unchanged those already held as they are."""
    default = _currency(currency)
    latest: dict[tuple[str, str], Product] = {}
    problems: list[dict[str, Any]] = []
    for number, row in rows:
        try:
            if isinstance(row, ValueError):
                raise row
            product, cur = parse_product_row(row, default)
        except ValueError as exc:
            problems.append({"line": number, "reason": str(exc)})
            continue
        latest[(product.sku, cur)] = product
    now = time.time()
    with db.write() as conn:
        held = _held(conn, list(latest))
        changed = {key: p for key, p in latest.items()
                   if held.get(key) != (p.name, p.unit_minor, list(p.categories))}
        upsert(conn, products, ["sku", "currency"], [
            {"sku": sku, "currency": cur, "name": p.name, "unit_minor": p.unit_minor,
             "categories": json.dumps(list(p.categories)), "updated_ts": now}
            for (sku, cur), p in changed.items()])
        append_changes(conn, [("product", _ref(sku, cur), {"product": product_record(p, cur)},
                               None) for (sku, cur), p in changed.items()], now)
    return {"imported": len(changed), "unchanged": len(latest) - len(changed),
            "skipped": len(problems), "problems": problems[:SHOW_PROBLEMS]}


def _held(conn: Connection, keys: list[tuple[str, str]]
          ) -> dict[tuple[str, str], tuple[str, int, list[str]]]:
    """What the hub holds of these (sku, currency): name, price and categories."""
    out: dict[tuple[str, str], tuple[str, int, list[str]]] = {}
    for start in range(0, len(keys), _CHUNK):
        part = keys[start:start + _CHUNK]
        for row in conn.execute(
                select(products.c.sku, products.c.currency, products.c.name,
                       products.c.unit_minor, products.c.categories)
                .where(tuple_(products.c.sku, products.c.currency).in_(part))):
            out[(row.sku, row.currency)] = (row.name, int(row.unit_minor),
                                            json.loads(row.categories))
    return out


def remove_product(db: HubDB, sku: str, currency: str | None = None) -> dict[str, Any]:
    """Remove a product (in `currency`, or in every currency the hub holds it in) at the hub
    and, through the feed, at every store; `{"sku","removed": [currencies]}`."""
    if not isinstance(sku, str) or not SKU_RE.match(sku):
        raise BadRequest(f"{sku[:70]!r} is not a sku (1-64 of letters, digits and ._:/-)",
                         code="bad_sku")
    cur = _currency(currency)
    where = products.c.sku == sku
    if cur is not None:
        where = where & (products.c.currency == cur)
    with db.write() as conn:
        gone: list[str] = sorted(conn.execute(select(products.c.currency).where(where)).scalars())
        if not gone:
            raise BadRequest(f"the hub has no product {sku}"
                             + (f" in {cur}" if cur else ""), code="unknown_product")
        conn.execute(delete(products).where(where))
        append_changes(conn, [("product", _ref(sku, c),
                               {"product": {"sku": sku, "currency": c}, "deleted": True}, None)
                              for c in gone])
    return {"sku": sku, "removed": gone}
