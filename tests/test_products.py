"""The product list's boundary: each bad row is refused with a reason a person can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.imports import import_records
from edge.products import csv_rows, find_product, known_categories, parse_product, upsert_products
from edge.store import Store
from store_contract.basket import Product


def test_a_good_product_from_json_and_from_csv_text() -> None:
    assert parse_product({"sku": " 8000070 ", "name": "Coffee", "unit_minor": 799,
                          "categories": ["coffee", "pantry", "coffee"]}, "EUR") == \
        Product("8000070", "Coffee", 799, ("coffee", "pantry"))
    assert parse_product({"sku": "4011", "name": "Bananas", "price": "1,29",
                          "unit_minor": "", "categories": "produce; fruit"}, "EUR") == \
        Product("4011", "Bananas", 129, ("produce", "fruit"))
    assert parse_product({"sku": "J1", "name": "Tea", "price": "300"}, "JPY").unit_minor == 300


@pytest.mark.parametrize(("row", "reason"), [
    ({"name": "x", "price": "1"}, "sku missing or not 1-64 of letters, digits and ._:/-"),
    ({"sku": "a b", "name": "x", "price": "1"}, "sku missing"),
    ({"sku": "1", "name": " ", "price": "1"}, "name missing or longer than 80 characters"),
    ({"sku": "1", "name": "x" * 81, "price": "1"}, "name missing or longer than 80"),
    ({"sku": "1", "name": "x"}, "give the price as price (2.49) or unit_minor (249)"),
    ({"sku": "1", "name": "x", "price": "1", "unit_minor": 100}, "give the price once"),
    ({"sku": "1", "name": "x", "price": "-1"}, "price '-1' is not an amount like 2.49"),
    ({"sku": "1", "name": "x", "price": "1.999"}, "price '1.999' has more than 2 decimal"),
    ({"sku": "1", "name": "x", "price": "2e3"}, "price '2e3' is not an amount"),
    ({"sku": "1", "name": "x", "unit_minor": -5}, "unit_minor must be a whole number from 0"),
    ({"sku": "1", "name": "x", "unit_minor": True}, "unit_minor must be a whole number"),
    ({"sku": "1", "name": "x", "unit_minor": 10**12}, "unit_minor must be a whole number"),
    ({"sku": "1", "name": "x", "price": "99999999"}, "price is more than any one item costs"),
    ({"sku": "1", "name": "x", "price": "1", "categories": ["a b"]}, "categories must be"),
    ({"sku": "1", "name": "x", "price": "1", "categories": [str(i) for i in range(21)]},
     "categories must be at most 20"),
    ("not an object", "not a JSON object"),
])
def test_bad_rows_say_why(row: Any, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_product(row, "EUR")
    assert str(caught.value).startswith(reason)


def test_csv_import_counts_lines_and_upserts(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    try:
        text = ("sku,name,price,categories\n8000070,Coffee,7.99,coffee\n\n"
                "5000169,Milk,x,dairy\n8000070,Coffee 1 kg,14.99,coffee;pantry\n"
                "4011,Bananas,1.29,fruit,extra\n")
        report = import_records(store, csv_rows(text.splitlines(keepends=True)),
                                lambda obj: parse_product(obj, "EUR"), upsert_products)
        assert report.imported == 2
        assert report.skipped == [(4, "price 'x' is not an amount like 2.49"),
                                  (6, "more fields than the header names")]
        coffee = find_product(store, "8000070")
        assert coffee is not None and (coffee.name, coffee.unit_minor) == ("Coffee 1 kg", 1499)
        assert known_categories(store) == ["coffee", "pantry"]
        assert find_product(store, "not a code!") is None
    finally:
        store.close()


@pytest.mark.parametrize("header", ["code,name,price", "sku,price", "sku,name,price,colour"])
def test_a_csv_header_we_cannot_read_stops_before_anything(header: str) -> None:
    with pytest.raises(ValueError, match="the first line of a CSV file must name its columns"):
        list(csv_rows([header + "\n", "1,x,1\n"]))
