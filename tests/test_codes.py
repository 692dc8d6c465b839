"""The one reading of a scanned code, used by the lanes' `identify` and the checkout page."""

from __future__ import annotations

import pytest

from edge.codes import classify_code
from tests.conftest import Issuer


@pytest.mark.parametrize("code", [
    "+49 160 5550199", "+491605550199", "0049 160 5550199", "0160 5550199", "01605550199",
    "0160-5550199", "0160/5550199", "(0160) 555 0199", "+49 (0)160 5550199", " 0160 5550199 "])
def test_phone_numbers_in_national_and_international_form(code: str) -> None:
    scanned = classify_code(code, "DE")
    assert (scanned.kind, scanned.value) == ("phone", "+491605550199")
    assert scanned.names_shopper


@pytest.mark.parametrize("code", ["4000 1234 1234 1234", "4000-1234-1234-1234",
                                  "4000123412341234", "4000  1234 1234  1234"])
def test_cards_in_any_common_spacing(code: str) -> None:
    scanned = classify_code(code, "DE")
    assert (scanned.kind, scanned.value) == ("card", "4000123412341234")


def test_national_form_is_read_in_the_stores_country() -> None:
    assert classify_code("020 7946 0958", "GB").value == "+442079460958"
    assert classify_code("+44 20 7946 0958", "DE").value == "+442079460958"


def test_a_number_starting_with_0_that_is_no_phone_number_is_a_card() -> None:
    assert classify_code("0123 4567 8901 2345", "DE").kind == "card"


def test_an_invalid_international_number_is_unreadable_and_says_phone() -> None:
    scanned = classify_code("+49 123", "DE")
    assert (scanned.kind, scanned.hint) == ("unreadable", "phone")
    assert not scanned.names_shopper


def test_signed_tokens_by_their_header(issuer: Issuer) -> None:
    member = issuer.member("c-1")
    assert classify_code(member, "DE").kind == "member"
    assert classify_code(issuer.coupon(), "DE").kind == "coupon"
    assert classify_code("not.a.token", "DE").kind == "coupon"  # the domain refuses it


@pytest.mark.parametrize(("code", "kind"), [
    ("SAVE10", "plain"), ("save-10", "plain"), ("123", "plain"), ("hello world", "unreadable"),
    ("SAVE10!", "unreadable"), ("", "unreadable")])
def test_plain_codes_and_the_rest(code: str, kind: str) -> None:
    assert classify_code(code, "DE").kind == kind
