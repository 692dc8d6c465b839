"""The camera scanner's decoding (pos_bridge/scanner/decode.py), product codes
(pos_bridge/scanner/codes.py) and the `decode` command, on real images: a fixed sample of
the ZXing corpus in tests/data/scans (README there) and symbols made here with `qrcode`
and zxing-cpp's writer."""

from __future__ import annotations

import base64
import json
import string
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import qrcode
import zxingcpp
from click.testing import CliRunner

from pos_bridge.scanner.__main__ import cli
from pos_bridge.scanner.codes import product_of
from pos_bridge.scanner.decode import Decoded, Decoder, decode_image
from store_contract.scans import parse_scan

DATA = Path(__file__).parent / "data" / "scans"
SAMPLES = sorted(p for p in DATA.glob("*/*/*.png") if p.parent.name != "falsepositives")
FALSE_POSITIVES = sorted((DATA / "barcodes" / "falsepositives").glob("*.png"))
# Every second look, however slow the machine: what is read must not depend on its load.
UNHURRIED = Decoder(budget_ms=60_000)
JWS = ("eyJhbGciOiJFZERTQSIsImtpZCI6ImJlbmNoLTEifQ.eyJjb2RlIjoiU1BSSU5HMTAiLCJleHAiOjE3OTk5"
       "OTk5OTl9.c2lnbmF0dXJlLWJ5dGVzLW9mLXRoZS1jb3Vwb24tLS0tLS0tLS0tLS0tLS0tLS0tLS0tLS0tLQ")


def expected_of(image: Path) -> bytes:
    """The expected payload: N.bin's bytes, else N.txt's UTF-8; line ends as \\n."""
    binary = image.with_suffix(".bin")
    data = binary.read_bytes() if binary.exists() else image.with_suffix(".txt").read_bytes()
    return data.replace(b"\r\n", b"\n")


def payload_of(code: Decoded, image: Path) -> bytes:
    out = code.raw if image.with_suffix(".bin").exists() else code.text.encode("utf-8")
    return out.replace(b"\r\n", b"\n")


def qr_image(data: str | bytes, *, box: int = 4) -> np.ndarray[Any, Any]:
    maker = qrcode.QRCode(border=4, box_size=box,
                          error_correction=qrcode.constants.ERROR_CORRECT_L)
    maker.add_data(data)
    maker.make(fit=True)
    return np.array(maker.make_image().get_image().convert("L"))


def written(content: str, fmt: Any, **options: Any) -> np.ndarray[Any, Any]:
    """A symbol drawn by zxing-cpp's writer, 3 pixels a module, quiet zones around it."""
    barcode = zxingcpp.create_barcode(content, fmt, **options)
    return np.array(barcode.to_image(scale=3, add_quiet_zones=True))


def test_the_sample_is_there_and_follows_its_rule() -> None:
    folders = {p.parent.name for p in SAMPLES}
    assert folders == {"qrcode-1", "qrcode-2", "qrcode-3", "ean13-1", "ean13-2", "upca-1"}
    assert FALSE_POSITIVES and all(expected_of(p) for p in SAMPLES)
    assert sum(p.stat().st_size for p in DATA.rglob("*")) <= 3_000_000


@pytest.mark.parametrize("image", SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_code_read_from_the_corpus_is_exactly_the_expected_one(image: Path) -> None:
    frame = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
    codes = UNHURRIED.decode(frame)
    # Read or not read, never misread. One picture may hold a second symbol (qrcode-2/16 is
    # a QR inside a QR): then the expected one must be among the codes read.
    assert not codes or expected_of(image) in [payload_of(code, image) for code in codes]
    for code in codes:
        assert code.symbology in ("]Q1", "]E0")
        if image.parent.name == "upca-1":
            assert code.format == "UPCA" and len(code.text) == 12


def test_most_of_the_corpus_sample_is_read() -> None:
    """The decode rate is measured on the whole corpus by bench/scan.py; this is a floor
    under it on the sample, so a decoder that reads nothing cannot pass the test above."""
    read = [p for p in SAMPLES
            if expected_of(p) in [payload_of(c, p) for c in UNHURRIED.decode(cv2.imread(str(p)))]]
    assert len(read) >= 0.85 * len(SAMPLES), [p.name for p in SAMPLES if p not in read]


@pytest.mark.parametrize("image", FALSE_POSITIVES, ids=lambda p: p.name)
def test_nothing_is_read_where_there_is_no_code(image: Path) -> None:
    assert UNHURRIED.decode(cv2.imread(str(image))) == []


def test_a_binary_qr_payload_is_delivered_byte_for_byte() -> None:
    payload = bytes(range(256))
    (code,) = decode_image(qr_image(payload))
    assert code.raw == payload and code.format == "QRCode"
    data = code.to_scan(seq=3).to_data()
    assert base64.b64decode(data["raw_b64"]) == payload
    scan = parse_scan(data)
    assert scan.payload == payload and scan.seq == 3 and scan.source == "camera"


def test_a_4_kb_qr_is_delivered_whole() -> None:
    alphabet = string.ascii_uppercase + string.digits + " $%*+-./:"
    text = "".join(alphabet[(i * 7) % len(alphabet)] for i in range(4000))
    (code,) = decode_image(qr_image(text, box=3))
    assert code.text == text and code.raw == text.encode()
    assert parse_scan(code.to_scan().to_data()).code == text


def test_control_characters_are_delivered_exactly() -> None:
    text = "MEMBER\t42\x1dGS\rCR\nLF"
    (code,) = decode_image(qr_image(text))
    assert code.text == text and code.raw == text.encode()
    assert parse_scan(code.to_scan().to_data()).payload == text.encode()


def test_a_latin1_qr_keeps_its_bytes_beside_its_text() -> None:
    payload = "Grüße aus Köln".encode("latin-1")
    (code,) = decode_image(qr_image(payload))
    assert code.raw == payload and code.text == "Grüße aus Köln"
    scan = parse_scan(code.to_scan().to_data())
    assert scan.payload == payload and scan.code == "Grüße aus Köln"


@pytest.mark.parametrize(("content", "fmt", "text", "symbology", "name", "gtin"), [
    ("4006381333931", zxingcpp.BarcodeFormat.EAN13, "4006381333931", "]E0", "EAN13",
     "04006381333931"),
    ("036000291452", zxingcpp.BarcodeFormat.UPCA, "036000291452", "]E0", "UPCA",
     "00036000291452"),
    ("0036000291452", zxingcpp.BarcodeFormat.EAN13, "036000291452", "]E0", "UPCA",
     "00036000291452"),  # a UPC-A drawn as an EAN-13 reads as the same UPC-A
    ("96385074", zxingcpp.BarcodeFormat.EAN8, "96385074", "]E4", "EAN8", "00000096385074"),
    ("01234565", zxingcpp.BarcodeFormat.UPCE, "012345000065", "]E0", "UPCE",
     "00012345000065"),
])
def test_retail_barcodes_read_as_their_product(content: str, fmt: Any, text: str,
                                               symbology: str, name: str, gtin: str) -> None:
    (code,) = decode_image(written(content, fmt))
    assert (code.text, code.symbology, code.format) == (text, symbology, name)
    scan = code.to_scan(seq=1)
    assert scan.product is not None and scan.product.gtin == gtin
    assert parse_scan(scan.to_data()) == scan


@pytest.mark.parametrize(("fmt", "symbology"), [
    (zxingcpp.BarcodeFormat.Code128, "]C1"),
    (zxingcpp.BarcodeFormat.DataMatrix, "]d2"),
    (zxingcpp.BarcodeFormat.QRCode, "]Q3"),
])
def test_gs1_symbols_keep_their_separators_and_give_their_element_strings(
        fmt: Any, symbology: str) -> None:
    (code,) = decode_image(written("(01)04006381333931(10)LOT7(17)261231", fmt, gs1=True))
    assert code.symbology == symbology
    assert code.text == "0104006381333931" "10LOT7\x1d" "17261231"
    product = code.to_scan().product
    assert product is not None and product.gtin == "04006381333931"
    assert dict(product.ai) == {"01": "04006381333931", "10": "LOT7", "17": "261231"}


def test_a_plain_code128_is_text_not_a_product() -> None:
    (code,) = decode_image(written("LOYALTY-000123", zxingcpp.BarcodeFormat.Code128))
    assert (code.text, code.symbology, code.format) == ("LOYALTY-000123", "]C0", "Code128")
    assert code.to_scan().product is None


def test_gray_bgr_and_bgra_frames_read_alike_and_a_non_image_is_refused() -> None:
    gray = qr_image("https://example.org/member/ABC")
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    bgra = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA)
    assert decode_image(gray) == decode_image(bgr) == decode_image(bgra) != []
    assert decode_image(gray[:, :, None]) == decode_image(gray)
    for bad in (np.zeros((0, 0), np.uint8), np.zeros((4, 4), np.float32),
                np.zeros((4, 4, 2), np.uint8), "picture.png"):
        with pytest.raises(ValueError, match="not an 8-bit gray, BGR or BGRA image"):
            decode_image(bad)  # type: ignore[arg-type]


def test_an_unknown_second_look_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown second looks: sharpen"):
        Decoder(fallbacks=["sharpen"])
    assert Decoder(fallbacks=[]).decode(qr_image("first look")) != []


# ------------------------------------------------------------------ product codes
UPC = "036000291452"


@pytest.mark.parametrize(("text", "symbology", "gtin", "gtin13", "upc"), [
    ("4006381333931", "]E0", "04006381333931", "4006381333931", None),  # EAN-13
    (UPC, "]E0", "00" + UPC, "0" + UPC, UPC),  # UPC-A: as UPC, GTIN-13 and GTIN-14
    ("0" + UPC, "]E0", "00" + UPC, "0" + UPC, UPC),  # the same UPC-A as 13 digits
    ("01234565", "]E0", "00012345000065", "0012345000065", "012345000065"),  # UPC-E
    ("4006381333931", None, "04006381333931", "4006381333931", None),  # HID: no AIM id
    ("10614141000415", None, "10614141000415", None, None),  # a GTIN-14
])
def test_gtins_are_understood(text: str, symbology: str | None, gtin: str,
                              gtin13: str | None, upc: str | None) -> None:
    product = product_of(text, symbology)
    assert product is not None
    assert (product.gtin, product.gtin13, product.upc) == (gtin, gtin13, upc)
    assert dict(product.ai) == {}


def test_an_ean8_is_its_gtin_padded_to_14_digits() -> None:
    product = product_of("96385074", "]E4")
    assert product is not None and product.gtin == "00000096385074"


def test_a_gs1_128_gives_its_application_identifiers() -> None:
    text = "0104006381333931" "17261231" "10BATCH-9"
    product = product_of(text, "]C1")
    assert product is not None and product.gtin == "04006381333931"
    assert dict(product.ai) == {"01": "04006381333931", "17": "261231", "10": "BATCH-9"}
    # A keyboard-wedge scanner sends no AIM id: the GS separator says it is GS1.
    no_aim = product_of("0104006381333931" "10BATCH-9\x1d" "17261231", None)
    assert no_aim is not None and dict(no_aim.ai)["10"] == "BATCH-9"


@pytest.mark.parametrize(("text", "symbology"), [
    ("4006381333932", "]E0"),  # EAN-13, wrong check digit
    ("036000291453", "]E0"),  # UPC-A, wrong check digit
    ("96385075", "]E4"),  # EAN-8, wrong check digit
    ("4006381333932", None),
    ("0104006381333932" "17261231" "10X", "]C1"),  # GS1-128 whose (01) is wrong
])
def test_a_wrong_check_digit_gives_no_product_but_the_scan_goes_through(
        text: str, symbology: str | None) -> None:
    assert product_of(text, symbology) is None
    scan = Decoded(text=text, raw=text.encode(), symbology=symbology or "]E0",
                   format="EAN13").to_scan(seq=1)
    assert scan.code == text and scan.product is None
    assert parse_scan(scan.to_data()).code == text


@pytest.mark.parametrize(("text", "symbology"), [
    (JWS, "]Q1"), (JWS, None), (JWS, "]C0"),
    ("MEMBER:7Q2X-99", "]Q1"),
    ("123456789012", "]Q1"),  # all digits, but a plain QR: a card number, not a UPC
    ("123456789012", "]C0"),
    ("https://example.org/01/04006381333931", "]Q1"),
    ("", None), ("\x1d", None), ("]E0", None), ("٤٠٠٦٣٨١٣٣٣٩٣١", None),  # Arabic digits
    ("0104006381333931", "]X9"),
])
def test_what_is_not_a_product_passes_through_untouched(text: str,
                                                        symbology: str | None) -> None:
    assert product_of(text, symbology) is None
    if text:
        code = Decoded(text=text, raw=text.encode(), symbology=symbology, format="QRCode")
        assert parse_scan(code.to_scan().to_data()).code == text


# ------------------------------------------------------------------ the decode command
def test_the_decode_command_prints_one_json_line_per_image(tmp_path: Path) -> None:
    binary = tmp_path / "binary.png"
    cv2.imwrite(str(binary), qr_image(bytes(range(256))))
    ean = tmp_path / "ean.png"
    cv2.imwrite(str(ean), written("4006381333931", zxingcpp.BarcodeFormat.EAN13))
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.full((48, 64), 255, np.uint8))
    result = CliRunner().invoke(cli, ["decode", str(binary), str(ean), str(empty)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["image"] for line in lines] == [str(binary), str(ean), str(empty)]
    (qr,) = lines[0]["codes"]
    assert base64.b64decode(qr["raw_b64"]) == bytes(range(256))
    assert (qr["symbology"], qr["format"]) == ("]Q1", "QRCode")
    assert lines[1]["codes"] == [{"text": "4006381333931", "symbology": "]E0",
                                  "format": "EAN13"}]
    assert lines[2]["codes"] == []
    assert all(isinstance(line["ms"], float) and line["ms"] >= 0 for line in lines)


def test_an_unreadable_image_is_an_error_line_and_exit_status_1(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), qr_image("after the bad ones"))
    missing = tmp_path / "missing.png"
    result = CliRunner().invoke(cli, ["decode", str(text), str(missing), str(empty), str(good)])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["image"] for line in lines] == [str(text), str(missing), str(empty), str(good)]
    assert lines[0]["error"] == "not an image OpenCV can read" and "codes" not in lines[0]
    assert lines[1]["error"].startswith("cannot read the file")
    assert lines[2]["error"] == "not an image OpenCV can read"
    assert [c["text"] for c in lines[3]["codes"]] == ["after the bad ones"]


def test_the_command_is_a_group_with_decode() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "decode" in result.output
    assert CliRunner().invoke(cli, ["decode"]).exit_code == 2  # no image named
