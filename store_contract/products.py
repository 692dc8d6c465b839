"""A product file's rows, read the same at the edge and at the hub.

`edge products import` (docs/operations.md §13.6) and `edge-hub products import`
(docs/hub.md) take the same files: CSV with a header line or JSON Lines, the same columns
and the same rules, so a list that loads at one loads at the other. The hub sends each
product to every store in the change feed (docs/sync.md, `product`), where the edge reads
it back with `parse_product_row` too. Prices are in one currency per row: a row's own
`currency` column, or the currency the importer is told (the store's, at the edge).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.numbers import get_currency_precision, is_currency

from store_contract.basket import MAX_NAME, MAX_UNIT_MINOR, SKU_RE, Product

MAX_CATEGORIES = 20
CSV_COLUMNS = ("sku", "name", "price", "unit_minor", "categories", "currency")
PRICE_RE = re.compile(r"^[0-9]{1,9}([.,][0-9]+)?\Z")
FORMATS = ("csv", "jsonl")


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


def check_currency(value: Any) -> str:
    """An ISO 4217 code such as EUR (any case, upper-cased); ValueError when it is not."""
    code = value.strip().upper() if isinstance(value, str) else None
    if not code or len(code) != 3 or not code.isalpha() or not is_currency(code):
        raise ValueError("currency must be an ISO 4217 code such as EUR, GBP or USD")
    return code


def parse_product_row(obj: Any, currency: str | None) -> tuple[Product, str]:
    """A product and the currency of its price: the row's own `currency`, else `currency`
    (None: the row must name it). ValueError with a reason a person can act on."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    own = obj.get("currency")
    if own not in ("", None):
        currency = check_currency(own)
    if currency is None:
        raise ValueError("currency missing: give a currency column (EUR) or --currency")
    return parse_product(obj, currency), currency


def parse_product(obj: Any, currency: str) -> Product:
    """One product from a JSON line or a CSV row, its price read in `currency`; ValueError
    with a reason a person can act on. The price is `unit_minor` (whole minor units) or
    `price` ("2.49"), not both."""
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
    if cats is None or cats == "":
        cats = []
    if isinstance(cats, str):  # CSV: "dairy;organic" or "dairy organic"
        cats = [c for c in re.split(r"[;|\s]+", cats) if c]
    if not isinstance(cats, list) or len(cats) > MAX_CATEGORIES or not all(
            isinstance(c, str) and SKU_RE.match(c) for c in cats):
        raise ValueError(f"categories must be at most {MAX_CATEGORIES} category ids "
                         "(letters, digits and ._:/-), separated by ; in a CSV file")
    return Product(sku, name.strip(), minor, tuple(dict.fromkeys(cats)))


def csv_rows(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """(line number, row as a dict) of a CSV file with a header line; ValueError when the
    header lacks sku and name or names a column we do not read."""
    reader = csv.DictReader(lines)
    header = [h.strip() for h in reader.fieldnames or []]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if "sku" not in header or "name" not in header or unknown:
        raise ValueError("the first line of a CSV file must name its columns: sku, name, "
                         "price (or unit_minor), categories, currency" +
                         (f"; not {', '.join(unknown)}" if unknown else ""))
    reader.fieldnames = header
    for row in reader:
        if None in row:
            yield reader.line_num, ValueError("more fields than the header names")
            continue
        if not any((v or "").strip() for v in row.values()):
            continue
        yield reader.line_num, row


def jsonl_rows(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON, or a ValueError in its place) of the non-blank lines."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError:
            yield number, ValueError("not valid JSON")


def file_format(path: str, fmt: str | None) -> str:
    """The format a product file is read in: `fmt` when given, else csv for a .csv name
    and JSON Lines for any other."""
    return fmt or ("csv" if path.lower().endswith(".csv") else "jsonl")


def product_rows(lines: Iterable[str], fmt: str) -> list[tuple[int, Any]]:
    """Every (line number, row or ValueError) of a product file in `fmt` (csv or jsonl);
    ValueError (or csv.Error) when a CSV header cannot be read, before any row is."""
    if fmt == "csv":
        return list(csv_rows(lines))
    return list(jsonl_rows(lines))
