"""The store's product list: what the staff checkout page needs to hold basket lines.

A product is a code (the `sku` a lane would send, usually the barcode), a name, a unit
price in minor units and its categories, the same fields as a basket line
(docs/checkout.md §2), so an item-bound coupon (`skus`, `cats`) reads a line entered on the
page exactly as it reads a lane's. Loaded with `edge products import` (CSV or JSON Lines,
docs/operations.md §13.6) or from the hub's change feed (docs/sync.md, `product`); a
re-import of the same code replaces it. The file's rules are shared with the hub
(`store_contract.products`); what is the edge's own is the table, and finding a product by
what a scanner read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from edge.store import Store
from store_contract.basket import SKU_RE, Product
from store_contract.products import (  # noqa: F401 - csv_rows, parse_product: as before
    csv_rows,
    parse_product,
    parse_product_row,
)
from store_contract.protocol import now_rfc3339
from store_contract.scans import MAX_CODE_CHARS, gtin14


def parse_store_product(obj: Any, currency: str) -> Product:
    """A row of `edge products import`: a product priced in the store's `currency`; a row
    naming another currency is refused (its price means nothing here)."""
    product, own = parse_product_row(obj, currency)
    if own != currency:
        raise ValueError(f"currency {own} is not this store's currency ({currency})")
    return product


def upsert_products(db: Any, products: Iterable[Product]) -> None:
    """Write products (inside a store transaction); the same code again replaces it. A sku
    that is a GTIN in any form keeps its GTIN-14 beside it, so a scan of another form of
    the same GTIN finds it (`find_product`)."""
    now = now_rfc3339()
    db.conn.executemany(
        "INSERT INTO products (sku, name, unit_minor, categories, updated_at, gtin) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sku) DO UPDATE SET name = excluded.name, "
        "unit_minor = excluded.unit_minor, categories = excluded.categories, "
        "updated_at = excluded.updated_at, gtin = excluded.gtin",
        [(p.sku, p.name, p.unit_minor, json.dumps(list(p.categories)), now, gtin14(p.sku))
         for p in products])


def remove_products(db: Any, skus: Iterable[str]) -> int:
    """Delete products by sku (inside a store transaction); how many there were."""
    cursor = db.conn.executemany("DELETE FROM products WHERE sku = ?", [(s,) for s in skus])
    return int(cursor.rowcount)


def find_product(store: Store, code: str, symbology: str | None = None) -> Product | None:
    """The product a typed or scanned code names, or None (also for any text that cannot
    be a code: a member QR, a long text, control characters; this never raises).

    An exact sku first; else, when the code is a GTIN in any form (EAN-13, UPC-A, EAN-8,
    GTIN-14, a UPC-E under the AIM identifier `]E0`, a GS1 code's (01)), the product whose
    sku is the same GTIN in another form: a scanned UPC-A 036000291452 finds the product
    imported as 0036000291452. `symbology` is the scan's AIM identifier, when known.
    """
    if not isinstance(code, str) or len(code) > MAX_CODE_CHARS:
        return None
    code = code.strip()
    row = store.query_one("SELECT * FROM products WHERE sku = ?", (code,)) \
        if SKU_RE.match(code) else None
    if row is None:
        gtin = gtin14(code, symbology)
        if gtin is None:
            return None
        row = store.query_one("SELECT * FROM products WHERE gtin = ? ORDER BY sku LIMIT 1",
                              (gtin,))
        if row is None:
            return None
    return Product(row["sku"], row["name"], row["unit_minor"],
                   tuple(json.loads(row["categories"])))


def known_categories(store: Store) -> list[str]:
    """Every category some product is in, sorted: what a line by category may name."""
    rows = store.query("SELECT DISTINCT j.value AS cat FROM products, "
                       "json_each(products.categories) AS j ORDER BY j.value")
    return [str(r["cat"]) for r in rows]
