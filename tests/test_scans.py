"""The scan record shared by the scanner service and the edge (store_contract/scans.py)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from store_contract.scans import MAX_CODE_CHARS, MAX_RAW_BYTES, Product, Scan, gtin_ok, parse_scan

UPC = "036000291452"  # a UPC-A with its check digit


def test_a_scan_goes_out_and_comes_back_the_same() -> None:
    scan = Scan(code="QR\x1dwith a GS\r\n", source="camera", symbology="]Q1", format="QRCode",
                raw=bytes(range(256)), seq=7, product=Product("00" + UPC, {"01": "00" + UPC}))
    data = scan.to_data()
    assert base64.b64decode(data["raw_b64"]) == bytes(range(256))
    assert parse_scan(data) == scan
    forwarded = scan.forward_data("scan-1")
    assert forwarded["scanner"] == "scan-1" and parse_scan(forwarded) == scan


def test_raw_bytes_travel_only_when_the_text_does_not_carry_them() -> None:
    assert "raw_b64" not in Scan("Grüße", "hid", raw="Grüße".encode()).to_data()
    latin1 = Scan("Grüße", "camera", raw="Grüße".encode("latin-1"))
    assert parse_scan(latin1.to_data()).payload == "Grüße".encode("latin-1")
    assert Scan("Grüße", "serial").payload == "Grüße".encode()


def test_a_upc_a_is_reported_as_upc_gtin13_and_gtin14() -> None:
    product = Product("00" + UPC)
    assert product.to_data() == {"gtin": "00" + UPC, "gtin13": "0" + UPC, "upc": UPC}
    ean = Product("04006381333931")
    assert (ean.gtin13, ean.upc) == ("4006381333931", None)
    ean8 = Product("00000040154008")  # an EAN-8 is no UPC, though its GTIN-14 starts "00"
    assert (ean8.gtin13, ean8.upc) == ("0000040154008", None)


@pytest.mark.parametrize(("change", "reason"), [
    ({"code": ""}, "data.code: missing or not 1-"),
    ({"code": 42}, "data.code: missing"),
    ({"code": "x" * (MAX_CODE_CHARS + 1)}, "data.code: missing or not 1-"),
    ({"source": "keyboard"}, "data.source: not one of hid, serial, camera"),
    ({"symbology": "Q1"}, "data.symbology: not an AIM symbology identifier"),
    ({"symbology": "]Q12"}, "data.symbology: not an AIM"),
    ({"format": "<script>"}, "data.format: not a symbology name"),
    ({"raw_b64": "not base64!"}, "data.raw_b64: not base64"),
    ({"raw_b64": base64.b64encode(b"x" * (MAX_RAW_BYTES + 1)).decode()},
     "data.raw_b64: more than"),
    ({"seq": 0}, "data.seq: not a whole number from 1"),
    ({"seq": True}, "data.seq"),
    ({"seq": "3"}, "data.seq"),
    ({"product": []}, "data.product: not an object"),
    ({"product": {"gtin": "00" + UPC[:-1] + "3"}}, "data.product.gtin: not a GTIN-14"),
    ({"product": {"gtin": UPC}}, "data.product.gtin: not a GTIN-14"),
    ({"product": {"gtin": "00" + UPC, "ai": {"X1": "a"}}}, "data.product.ai"),
    ({"product": {"gtin": "00" + UPC, "ai": {"10": 5}}}, "data.product.ai"),
])
def test_what_does_not_fit_is_refused_with_the_field_named(
        change: dict[str, Any], reason: str) -> None:
    data = {**Scan("4006381333931", "hid", symbology="]E0").to_data(), **change}
    with pytest.raises(ValueError) as err:
        parse_scan(data)
    assert str(err.value).startswith(reason)


@pytest.mark.parametrize("data", [None, [], "code"])
def test_a_scan_that_is_not_an_object_is_refused(data: Any) -> None:
    with pytest.raises(ValueError, match="data: not an object"):
        parse_scan(data)


@pytest.mark.parametrize(("digits", "ok"), [
    ("4006381333931", True), ("4006381333932", False),  # EAN-13 (GS1 Germany)
    ("036000291452", True), ("036000291450", False),  # UPC-A
    ("96385074", True), ("96385075", False),  # EAN-8
    ("00036000291452", True), ("10036000291459", True),  # GTIN-14, packaging level 1
    ("12345", False), ("40063813339a1", False), ("", False),
])
def test_check_digits(digits: str, ok: bool) -> None:
    assert gtin_ok(digits) is ok
