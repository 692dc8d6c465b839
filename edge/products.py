"""The store's product list: what the staff checkout page needs to hold basket lines.

A product is a code (the `sku` a lane would send, usually the barcode), a name, a unit
price in minor units and its categories, the same fields as a basket line
(docs/checkout.md §2), so an item-bound coupon (`skus`, `cats`) reads a line entered on the
page exactly as it reads a lane's. Loaded with `edge products import` (CSV or JSON Lines,
docs/operations.md §13.6); a re-import of the same code replaces it.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.numbers import get_currency_precision

from edge.store import Store
from store_contract.basket import MAX_NAME, MAX_UNIT_MINOR, SKU_RE, Product
from store_contract.protocol import now_rfc3339

MAX_CATEGORIES = 20
CSV_COLUMNS = ("sku", "name", "price", "unit_minor", "categories")
PRICE_RE = re.compile(r"^[0-9]{1,9}([.,][0-9]+)?\Z")


def price_to_minor(text: str, currency: str) -> int:
    """A price written as "2.49" or "2,49" in minor units; ValueError when it is not one."""
    typed = text.strip()
    if not PRICE_RE.match(typed):
        raise ValueError(f"price {typed!r} is not an amount like 2.49")
    places = int(get_currency_precision(currency))
    try:
        minor = Decimal(typed.replace(",", ".")).scaleb(places)
    except InvalidOperation:
        raise ValueError(f"price {typed!r} is not an amount like 2.49") from None
    if minor != minor.to_integral_value():
        raise ValueError(f"price {typed!r} has more than {places} decimal places")
    return int(minor)


def parse_product(obj: Any, currency: str) -> Product:
    """One product from a JSON line or a CSV row; ValueError with a reason a person can act
    on. The price is `unit_minor` (whole minor units) or `price` ("2.49"), not both."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    sku = obj.get("sku")
    sku = sku.strip() if isinstance(sku, str) else sku
    if not isinstance(sku, str) or not SKU_RE.match(sku):
        raise ValueError("sku missing or not 1-64 of letters, digits and ._:/-")
    name = obj.get("name")
    if not isinstance(name, str) or not 0 < len(name.strip()) <= MAX_NAME:
        raise ValueError(f"name missing or longer than {MAX_NAME} characters")
    unit, price = obj.get("unit_minor"), obj.get("price")
    if unit in ("", None) and price in ("", None):
        raise ValueError("give the price as price (2.49) or unit_minor (249)")
    if unit not in ("", None) and price not in ("", None):
        raise ValueError("give the price once: price or unit_minor, not both")
    if unit not in ("", None):
        if isinstance(unit, str) and unit.strip().isdigit():
            unit = int(unit.strip())
        if not isinstance(unit, int) or isinstance(unit, bool) or not 0 <= unit <= MAX_UNIT_MINOR:
            raise ValueError(f"unit_minor must be a whole number from 0 to {MAX_UNIT_MINOR}")
        minor = unit
    else:
        if not isinstance(price, str | int) or isinstance(price, bool):
            raise ValueError("price must be an amount like 2.49")
        minor = price_to_minor(str(price), currency)
        if minor > MAX_UNIT_MINOR:
            raise ValueError("price is more than any one item costs")
    cats = obj.get("categories", [])
    if isinstance(cats, str):  # CSV: "dairy;organic" or "dairy organic"
        cats = [c for c in re.split(r"[;|\s]+", cats) if c]
    if not isinstance(cats, list) or len(cats) > MAX_CATEGORIES or not all(
            isinstance(c, str) and SKU_RE.match(c) for c in cats):
        raise ValueError(f"categories must be at most {MAX_CATEGORIES} category ids "
                         "(letters, digits and ._:/-), separated by ; in a CSV file")
    return Product(sku, name.strip(), minor, tuple(dict.fromkeys(cats)))


def upsert_products(db: Any, products: Iterable[Product]) -> None:
    """Write products (inside a store transaction); the same code again replaces it."""
    now = now_rfc3339()
    db.conn.executemany(
        "INSERT INTO products (sku, name, unit_minor, categories, updated_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sku) DO UPDATE SET name = excluded.name, "
        "unit_minor = excluded.unit_minor, categories = excluded.categories, "
        "updated_at = excluded.updated_at",
        [(p.sku, p.name, p.unit_minor, json.dumps(list(p.categories)), now) for p in products])


def find_product(store: Store, code: str) -> Product | None:
    """The product with this code, or None (also for text that cannot be a code)."""
    code = code.strip()
    if not SKU_RE.match(code):
        return None
    row = store.query_one("SELECT * FROM products WHERE sku = ?", (code,))
    if row is None:
        return None
    return Product(row["sku"], row["name"], row["unit_minor"],
                   tuple(json.loads(row["categories"])))


def known_categories(store: Store) -> list[str]:
    """Every category some product is in, sorted: what a line by category may name."""
    rows = store.query("SELECT DISTINCT j.value AS cat FROM products, "
                       "json_each(products.categories) AS j ORDER BY j.value")
    return [str(r["cat"]) for r in rows]


def csv_rows(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """(line number, row as a dict) of a CSV file with a header line; ValueError when the
    header lacks sku and name or names a column we do not read."""
    reader = csv.DictReader(lines)
    header = [h.strip() for h in reader.fieldnames or []]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if "sku" not in header or "name" not in header or unknown:
        raise ValueError("the first line of a CSV file must name its columns: sku, name, "
                         "price (or unit_minor), categories" +
                         (f"; not {', '.join(unknown)}" if unknown else ""))
    reader.fieldnames = header
    for row in reader:
        if None in row:
            yield reader.line_num, ValueError("more fields than the header names")
            continue
        if not any((v or "").strip() for v in row.values()):
            continue
        yield reader.line_num, row
