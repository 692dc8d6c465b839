"""Products from the hub to every store, found by any form of their barcode.

The hub's `edge-hub products import` and `remove` on SQLite and PostgreSQL (good and bad
lines, a re-import that changes nothing, the per-currency rule); the `product` changes
carried by a real `edge-hub serve` to an edge's store; a bad product change skipped and
counted; and `find_product` reading a scan in every GTIN form, and garbage, at the edge.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.schema import changes as hub_changes
from cloud_sync.hub.settings import HubSettings
from edge.app.service import EdgeService
from edge.imports import import_records
from edge.products import find_product, parse_store_product, upsert_products
from edge.settings import Settings
from edge.store import Store
from store_contract.basket import Product
from tests.hubfix import HubServer, run_hub
from tests.test_cli import run_edge
from tests.test_feed_poison import _inject
from tests.test_sync_feed import edges, hub_cli  # noqa: F401 - the edges fixture

UPC = "036000291452"  # a UPC-A; as a GTIN-13 0036000291452, as a GTIN-14 00036000291452
PEN = "4006381333931"  # an EAN-13
EAN8 = "96385074"
UPC_E = "01234565"  # the UPC-E of the UPC-A 012345000065


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def _feed(settings: HubSettings) -> list[tuple[str, dict[str, Any]]]:
    """The hub's product changes, oldest first: (ref, payload)."""
    db = HubDB(settings.db_url)
    try:
        with db.read() as conn:
            rows = conn.execute(select(hub_changes.c.ref, hub_changes.c.payload)
                                .where(hub_changes.c.kind == "product")
                                .order_by(hub_changes.c.seq)).all()
    finally:
        db.dispose()
    return [(row.ref, json.loads(row.payload)) for row in rows]


# ------------------------------------------------------------------ the hub's command


@pytest.mark.process
def test_the_hub_imports_products_skips_bad_lines_and_sends_only_what_changed(
        hub_settings: HubSettings, tmp_path: Path) -> None:
    csv_file = _write(tmp_path / "products.csv",
                      "sku,name,price,categories,currency\n"
                      f"{UPC},Cola 330 ml,1.29,drinks;cold,EUR\n"
                      f"{UPC},Cola 330 ml,1.40,drinks,chf\n"  # the same sku priced in CHF
                      f"{PEN},Pen,abc,office,EUR\n"
                      "bad sku,Thing,1.00,,EUR\n"
                      "8000070,Coffee,7.99,coffee,EURO\n"
                      "8000071,Tea,2.49,tea\n"  # no currency, and no --currency
                      "8000072,Sugar,0.99,,EUR,extra\n")
    done = run_hub(hub_settings, "products", "import", csv_file)
    assert done.returncode == 1, done.stderr  # lines skipped: the good ones are in
    report = json.loads(done.stdout)
    assert (report["imported"], report["unchanged"], report["skipped"]) == (2, 0, 5)
    assert report["problems"] == [
        {"line": 4, "reason": "price 'abc' is not an amount like 2.49"},
        {"line": 5, "reason": "sku missing or not 1-64 of letters, digits and ._:/-"},
        {"line": 6, "reason": "currency must be an ISO 4217 code such as EUR, GBP or USD"},
        {"line": 7, "reason": "currency missing: give a currency column (EUR) or --currency"},
        {"line": 8, "reason": "more fields than the header names"}]
    assert _feed(hub_settings) == [
        (f"EUR:{UPC}", {"product": {"sku": UPC, "name": "Cola 330 ml", "unit_minor": 129,
                                    "categories": ["drinks", "cold"], "currency": "EUR"}}),
        (f"CHF:{UPC}", {"product": {"sku": UPC, "name": "Cola 330 ml", "unit_minor": 140,
                                    "categories": ["drinks"], "currency": "CHF"}})]

    # JSON Lines with --currency for rows without one; the same products again: nothing new.
    jsonl = _write(tmp_path / "products.jsonl", "".join(json.dumps(r) + "\n" for r in [
        {"sku": UPC, "name": "Cola 330 ml", "unit_minor": 129, "categories": ["drinks", "cold"]},
        {"sku": UPC, "name": "Cola 330 ml", "price": "1.40", "categories": ["drinks"],
         "currency": "CHF"}]) + "\n")
    again = run_hub(hub_settings, "products", "import", "--currency", "eur", jsonl)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"imported": 0, "unchanged": 2, "skipped": 0,
                                        "problems": []}
    assert len(_feed(hub_settings)) == 2

    # A new price replaces the older change of that product in the feed; a new product adds.
    newer = _write(tmp_path / "newer.csv", "sku,name,unit_minor,currency\n"
                   f"{UPC},Cola 330 ml,139,EUR\n{PEN},Pen,199,EUR\n{PEN},Pen blue,199,EUR\n")
    done = run_hub(hub_settings, "products", "import", newer)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["imported"] == 2  # the pen's last line wins
    assert [(ref, p["product"].get("unit_minor"), p["product"].get("categories"))
            for ref, p in _feed(hub_settings)] == [
        (f"CHF:{UPC}", 140, ["drinks"]), (f"EUR:{UPC}", 139, []), (f"EUR:{PEN}", 199, [])]

    # Removed in one currency: one change marked deleted, the other currency's price stays.
    removed = run_hub(hub_settings, "products", "remove", UPC, "--currency", "CHF")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout) == {"sku": UPC, "removed": ["CHF"]}
    assert _feed(hub_settings)[-1] == (f"CHF:{UPC}", {"product": {"sku": UPC, "currency": "CHF"},
                                                     "deleted": True})
    assert f"EUR:{UPC}" in dict(_feed(hub_settings))
    every = run_hub(hub_settings, "products", "remove", PEN)
    assert json.loads(every.stdout) == {"sku": PEN, "removed": ["EUR"]}


@pytest.mark.process
@pytest.mark.parametrize(("args", "says"), [
    (("remove", "8000070"), "edge-hub: the hub has no product 8000070"),
    (("remove", "8000070", "--currency", "XYZ"), "edge-hub: --currency: currency must be"),
    (("remove", "no good"), "edge-hub: 'no good' is not a sku"),
    (("import", "{csv}", "--currency", "euros"), "edge-hub: --currency: currency must be"),
    (("import", "{header}"), "the first line of a CSV file must name its columns: sku, name"),
    (("import", "{missing}"), "edge-hub: cannot read"),
])
def test_a_product_command_it_cannot_do_says_why_in_one_line(
        hub_settings: HubSettings, tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    files = {"{csv}": _write(tmp_path / "ok.csv", "sku,name,price\n1,x,1\n"),
             "{header}": _write(tmp_path / "header.csv", "code,title\n1,x\n"),
             "{missing}": str(tmp_path / "missing.csv")}
    done = run_hub(hub_settings, "products", *(files.get(a, a) for a in args))
    assert done.returncode in (1, 2)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert done.stdout == ""  # nothing imported, nothing printed as done
    assert _feed(hub_settings) == []


# ------------------------------------------------------------------ through the feed


@pytest.mark.process
def test_products_reach_a_store_through_the_feed_in_its_own_currency_only(
        hub: HubServer, edges: Any, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    run = _write(tmp_path / "chain.csv", "sku,name,price,categories,currency\n"
                 f"0{UPC},Cola 330 ml,1.29,drinks,EUR\n"
                 f"0{UPC},Cola 330 ml,1.40,drinks,CHF\n"
                 f"{PEN},Pen,1.99,office,EUR\n"
                 "8000070,Swiss chocolate,3.50,sweets,CHF\n")
    assert hub_cli(hub, "products", "import", run)["imported"] == 4
    svc: EdgeService = edges("store-a")  # an EUR store
    assert svc.settings.currency == "EUR"
    svc.puller.run()
    assert svc.puller.last_error is None and svc.puller.skipped == 0

    # The EUR prices are the store's; the CHF-only product is not in it.
    cola = find_product(svc.store, UPC, "]E0")  # the UPC-A the scanner read
    assert cola == Product(f"0{UPC}", "Cola 330 ml", 129, ("drinks",))
    assert find_product(svc.store, "8000070") is None
    assert svc.store.query_one("SELECT COUNT(*) AS n FROM products")["n"] == 2  # type: ignore[index]

    # A new price, a removal in CHF (not this store's: the EUR product stays), a removal.
    hub_cli(hub, "products", "import", _write(tmp_path / "price.csv",
            "sku,name,price,currency\n" f"0{UPC},Cola 330 ml,1.19,EUR\n"))
    hub_cli(hub, "products", "remove", f"0{UPC}", "--currency", "CHF")
    hub_cli(hub, "products", "remove", PEN)
    svc.puller.run()
    assert svc.puller.last_error is None and svc.puller.skipped == 0
    cola = find_product(svc.store, f"00{UPC}")  # its GTIN-14, typed
    assert cola is not None and cola.unit_minor == 119
    assert find_product(svc.store, PEN) is None


@pytest.mark.process
def test_a_bad_product_change_is_skipped_and_counted_and_the_rest_applied(
        hub: HubServer, edges: Any) -> None:  # noqa: F811 - the fixture
    svc: EdgeService = edges("store-a")
    svc.puller.run()
    before = svc.puller.skipped
    good = {"sku": PEN, "name": "Pen", "unit_minor": 199, "categories": [], "currency": "EUR"}
    last = _inject(hub, [
        ("product", "EUR:x1", {"product": {**good, "sku": "x1", "unit_minor": -5}}, None),
        ("product", "EUR:x2", {"product": "Pen"}, None),
        ("product", "EUR:x3", {"product": {**good, "sku": "x3", "currency": "euro"}}, None),
        ("product", "EUR:x4", {"product": {"sku": "a b", "currency": "EUR"}, "deleted": True},
         None),
        ("product", "EUR:x5", {"product": {**good, "sku": "x5", "name": ""}}, None),
        ("product", f"EUR:{PEN}", {"product": good}, None),
    ])
    svc.puller.run()
    assert svc.puller.last_error is None
    assert svc.puller.cursor == str(last)  # the feed moved past every bad one
    assert svc.puller.skipped == before + 5
    assert [(s["kind"], s["reason"]) for s in reversed(svc.puller.recent_skips(5))] == [
        ("product", "a product whose sku, name, price or categories are not valid"),
        ("product", "a product change without a product object"),
        ("product", "a product without a valid currency"),
        ("product", "a product removal without a valid sku"),
        ("product", "a product whose sku, name, price or categories are not valid")]
    assert find_product(svc.store, PEN) == Product(PEN, "Pen", 199, ())
    assert svc.store.query_one("SELECT 1 FROM products WHERE sku IN ('x1', 'x3', 'x5')") is None
    assert svc.metrics.registry.get_sample_value(
        "edge_sync_changes_skipped_total", {"kind": "product"}) == 5


# ------------------------------------------------------------------ finding a product


@pytest.fixture
def shelf(tmp_path: Path) -> Any:
    store = Store(tmp_path / "edge.db")
    store.write(lambda db: upsert_products(db, [
        Product(f"0{UPC}", "Cola 330 ml", 129, ("drinks",)),  # imported as its GTIN-13
        Product(PEN, "Pen", 199, ()),
        Product(EAN8, "Gum", 99, ()),
        Product("012345000065", "Mints", 149, ()),  # the UPC-A of a UPC-E
        Product("8000070", "Coffee", 799, ("coffee",)),  # not a GTIN (wrong check digit)
    ]))
    yield store
    store.close()


@pytest.mark.parametrize(("code", "symbology", "sku"), [
    (f"0{UPC}", None, f"0{UPC}"),  # the sku itself
    (f" 0{UPC}\r\n", None, f"0{UPC}"),  # as a keyboard-wedge scanner ends it
    (UPC, "]E0", f"0{UPC}"),  # the UPC-A on the can
    (UPC, None, f"0{UPC}"),  # the same, from a scanner without AIM identifiers
    (f"00{UPC}", None, f"0{UPC}"),  # its GTIN-14
    (f"0100{UPC}17261231", "]C1", f"0{UPC}"),  # a GS1-128 with (01)
    (f"0{PEN}", None, PEN),  # the EAN-13 as a GTIN-14
    (f"000000{EAN8}", None, EAN8),  # the EAN-8 as a GTIN-14
    (EAN8, "]E4", EAN8),
    (UPC_E, "]E0", "012345000065"),  # the UPC-E printed on a small pack
    ("8000070", None, "8000070"),  # a code that is no GTIN: its exact sku
])
def test_a_product_is_found_by_any_form_of_its_gtin(shelf: Store, code: str,
                                                    symbology: str | None, sku: str) -> None:
    found = find_product(shelf, code, symbology)
    assert found is not None and found.sku == sku


@pytest.mark.parametrize(("code", "symbology"), [
    ("036000291453", "]E0"),  # the UPC-A with a wrong check digit
    ("0036000291453", None),
    (UPC_E, None),  # 8 digits without ]E0 are an EAN-8, not this UPC-E
    (UPC, "]Q1"),  # the same digits in a plain QR: a card number, not a product
    ("eyJhbGciOiJFZERTQSIsImtpZCI6Imh1Yi0xIn0.eyJzdWIiOiJjLTEifQ.c2ln", "]Q1"),  # member QR
    ("x" * 8192, None), ("7" * 9000, None), ("0" * 14, None),
    ("\x00\x1b[2J\x07", None), ("036000\x00291452", None), ("\x1d\x1d", None),
    ("", None), ("   ", None), ("]E0", None), ("٠٣٦٠٠٠٢٩١٤٥٢", None),  # Arabic digits
])
def test_what_is_no_product_of_the_store_finds_nothing_and_never_raises(
        shelf: Store, code: str, symbology: str | None) -> None:
    assert find_product(shelf, code, symbology) is None


def test_a_store_made_before_gtins_were_kept_gets_them_for_its_products(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    Store(path).close()
    conn = sqlite3.connect(path)  # the store as migration 0013 left it, with two products
    conn.executescript(
        "DROP INDEX products_gtin; ALTER TABLE products DROP COLUMN gtin; "
        "DELETE FROM _sqlite_migrations WHERE name = '0014_product_gtin'; "
        f"INSERT INTO products (sku, name, unit_minor, updated_at) VALUES ('0{UPC}', 'Cola', "
        "129, 'then'), ('8000070', 'Coffee', 799, 'then');")
    conn.close()
    store = Store(path)
    try:
        assert store.query("SELECT sku, gtin FROM products ORDER BY sku") == [
            {"sku": f"0{UPC}", "gtin": f"00{UPC}"}, {"sku": "8000070", "gtin": None}]
        found = find_product(store, UPC, "]E0")
        assert found is not None and found.sku == f"0{UPC}"
        plan = store.query(f"EXPLAIN QUERY PLAN SELECT * FROM products WHERE gtin = '00{UPC}'")
        assert any("products_gtin" in str(row["detail"]) for row in plan)
    finally:
        store.close()


# ------------------------------------------------------------------ the edge's own import


def test_a_row_in_another_currency_is_refused_by_the_store(tmp_path: Path) -> None:
    assert parse_store_product({"sku": "1", "name": "x", "price": "1.50",
                                "currency": "eur"}, "EUR").unit_minor == 150
    with pytest.raises(ValueError, match=r"^currency USD is not this store's currency \(EUR\)$"):
        parse_store_product({"sku": "1", "name": "x", "price": "1.50", "currency": "USD"}, "EUR")
    store = Store(tmp_path / "edge.db")
    try:
        rows = [(2, {"sku": "1", "name": "x", "price": "1", "currency": "JPY"}),
                (3, {"sku": "2", "name": "y", "price": "1", "currency": ""})]
        report = import_records(store, rows, lambda r: parse_store_product(r, "EUR"),
                                upsert_products)
        assert report.imported == 1
        assert report.skipped == [(2, "currency JPY is not this store's currency (EUR)")]
    finally:
        store.close()


@pytest.mark.process
def test_edge_products_import_reads_the_currency_column(settings: Settings,
                                                        tmp_path: Path) -> None:
    path = _write(tmp_path / "products.csv", "sku,name,price,currency\n"
                  f"{UPC},Cola,1.29,EUR\n{PEN},Pen,1.99,USD\n")
    done = run_edge(settings, "products", "import", path)
    assert done.returncode == 1
    assert json.loads(done.stdout)["problems"] == [
        {"line": 3, "reason": "currency USD is not this store's currency (EUR)"}]
    store = Store(settings.data_path / "edge.db")
    try:
        found = find_product(store, f"00{UPC}")
        assert found is not None and found.unit_minor == 129
    finally:
        store.close()
