"""The coupon engine on its own: forged tokens, dates in the store's time zone, basket rules,
stacking, revocation, plain campaign codes, the online-only flag, and the discount arithmetic
(with hypothesis). These call the checkout domain directly; the bus and HTTP paths to it are
tested in test_checkout.py and test_pos_http.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import date, datetime
from fractions import Fraction
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from edge.app.service import EdgeService
from edge.basket import Pricing
from edge.coupons import CouponRefused, revoke, upsert_campaigns
from edge.customers import upsert_customers
from edge.settings import Settings
from edge.transactions import CustomerUnknown
from store_contract.basket import Basket, Line, Rule, parse_basket, parse_discount
from store_contract.campaigns import parse_campaign, until_exp
from store_contract.customers import parse_customer
from store_contract.errors import BadRequest
from tests.conftest import Issuer

CUSTOMER = {"id": "c-1", "display_name": "Anna", "tier": "gold", "points": 120,
            "card": "4000123412341234"}


def basket(*lines: tuple[str, int, int, list[str]], currency: str = "EUR") -> Basket:
    return parse_basket({"currency": currency, "lines": [
        {"sku": s, "qty": q, "unit_minor": u, "categories": c} for s, q, u, c in lines]},
        currency)


BASKET = basket(("milk", 2, 119, ["dairy"]), ("bread", 1, 249, ["bakery"]),
                ("cheese", 1, 499, ["dairy"]))  # 9.86 in all, 7.37 of it dairy


def make_service(settings: Settings) -> EdgeService:
    svc = EdgeService(settings)
    record = parse_customer(CUSTOMER, svc.lookup)
    svc.store.write(lambda db: upsert_customers(db, [record], svc.coupons.wallet_entry))
    return svc


@pytest.fixture
def svc(settings: Settings) -> Iterator[EdgeService]:
    service = make_service(settings)
    yield service
    service.stop()


def refusal(svc: EdgeService, code: str, txn: str = "t-1", lane: str = "lane-1",
            bkt: Basket = BASKET) -> CouponRefused:
    with pytest.raises(CouponRefused) as info:
        svc.checkout.apply(lane, txn, code, bkt)
    return info.value


def b64(obj: Any) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ---------------------------------------------------------------- forged coupons


def forged_variants(issuer: Issuer) -> dict[str, str]:
    good = issuer.coupon(jti="cpn-genuine")
    head, payload, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    richer = {**claims, "disc": {"kind": "percent", "value": 90}}
    other_key = Ed25519PrivateKey.generate()
    public_x = issuer.jwk["x"]
    hs_head = b64({"alg": "HS256", "typ": "coupon+jwt", "kid": issuer.kid})
    hs_input = f"{hs_head}.{payload}".encode()
    hs_sig = b64(hmac.new(base64.urlsafe_b64decode(public_x + "=="), hs_input,
                          hashlib.sha256).digest())
    hs_sig_text = b64(hmac.new(public_x.encode(), hs_input, hashlib.sha256).digest())
    def odd_kid(kid: Any) -> str:  # signed by the right key, only the kid is odd
        odd_head = b64({"alg": "EdDSA", "typ": "coupon+jwt", "kid": kid})
        return f"{odd_head}.{payload}.{b64(issuer.private.sign(f'{odd_head}.{payload}'.encode()))}"

    return {
        "kid a number": odd_kid(123),
        "kid a list": odd_kid([issuer.kid]),
        "kid an object": odd_kid({"kid": issuer.kid}),
        "kid null": odd_kid(None),
        "kid with a trailing newline": odd_kid(issuer.kid + "\n"),
        "payload edited": f"{head}.{b64(richer)}.{sig}",
        "signed by an unknown key, our kid": jwt.encode(
            claims, other_key, algorithm="EdDSA",
            headers={"typ": "coupon+jwt", "kid": issuer.kid}),
        "signed by an unknown key and kid": jwt.encode(
            claims, other_key, algorithm="EdDSA", headers={"typ": "coupon+jwt", "kid": "evil"}),
        "alg none": f"{b64({'alg': 'none', 'typ': 'coupon+jwt', 'kid': issuer.kid})}."
                    f"{payload}.",
        "HS256 with the public key bytes as secret": f"{hs_head}.{payload}.{hs_sig}",
        "HS256 with the public key text as secret": f"{hs_head}.{payload}.{hs_sig_text}",
        "wrong typ (JWT)": issuer.sign(claims, typ="JWT"),
        "wrong typ (member code)": issuer.member("c-1"),
        "no typ": jwt.encode(claims, issuer.private, algorithm="EdDSA",
                             headers={"kid": issuer.kid}),
        "truncated signature": good[:-12],
        "truncated to two parts": f"{head}.{payload}",
        "cut in half": good[: len(good) // 2],
        "garbage with dots": "a.b.c",
        "garbage text": "this is no coupon!!",
        "binary-ish text": "\u0000\u00ff\ufffd.\u2603",
        "very long": "x." * 3000,
    }


def test_every_kind_of_forged_coupon_is_refused_as_forged(svc: EdgeService,
                                                          issuer: Issuer) -> None:
    for name, token in forged_variants(issuer).items():
        exc = refusal(svc, token)
        assert exc.code == "coupon_forged", name
        assert exc.message and "not" in exc.message, name
    # None of it left a reservation behind, and the genuine coupon still works.
    assert svc.store.query("SELECT * FROM reservations") == []
    assert svc.checkout.apply("lane-1", "t-1", issuer.coupon(), BASKET)["discount_minor"] == 99


def test_member_code_scanned_as_coupon_says_what_it_is(svc: EdgeService, issuer: Issuer) -> None:
    exc = refusal(svc, issuer.member("c-1"))
    assert exc.code == "coupon_forged"
    assert "member code" in exc.message


def test_malformed_claims_from_a_trusted_issuer_are_unknown_not_forged(
        svc: EdgeService, issuer: Issuer) -> None:
    exc = refusal(svc, issuer.coupon(disc={"kind": "bogus"}))
    assert exc.code == "coupon_unknown"
    assert exc.detail["reason"] == "claims"


# ---------------------------------------------------------------- dates in the store's zone


@pytest.fixture
def auckland(settings: Settings) -> Iterator[EdgeService]:
    service = make_service(settings.with_overrides(tz="Pacific/Auckland", clock_skew_s=60))
    yield service
    service.stop()


def at(svc: EdgeService, iso: str) -> None:
    moment = datetime.fromisoformat(iso).timestamp()
    svc.checkout.clock = lambda: moment


def test_coupon_until_a_local_date_works_until_that_midnight_here(auckland: EdgeService,
                                                                   issuer: Issuer) -> None:
    # Until 22 Nov: Auckland (+13:00) reaches its midnight a day before UTC-12 does, so it
    # is the store's own midnight that ends it, with no clock-skew allowance.
    coupon = issuer.coupon(until="2026-11-22", exp=until_exp(date(2026, 11, 22)),
                           nbf=int(datetime.fromisoformat("2026-11-01T00:00:00Z").timestamp()))
    at(auckland, "2026-11-22T23:30:00+13:00")
    assert auckland.checkout.apply("lane-1", "t-late", coupon, BASKET)["discount_minor"] == 99
    auckland.checkout.remove("lane-1", "t-late",
                             auckland.store.query("SELECT id FROM reservations")[0]["id"])
    at(auckland, "2026-11-23T00:00:30+13:00")
    exc = refusal(auckland, coupon, txn="t-next-day")
    assert exc.code == "coupon_expired"
    assert exc.message == "This coupon expired on 22 Nov 2026."
    assert exc.detail == {"expired": "2026-11-22T11:00:00+00:00", "until": "2026-11-22"}


def test_clock_skew_allowance_is_honoured_at_both_ends(auckland: EdgeService,
                                                       issuer: Issuer) -> None:
    exp = int(datetime.fromisoformat("2026-11-22T10:00:00+13:00").timestamp())
    nbf = int(datetime.fromisoformat("2026-11-20T09:00:00+13:00").timestamp())
    coupon = issuer.coupon(exp=exp, nbf=nbf)
    at(auckland, "2026-11-22T10:00:30+13:00")  # 30 s past exp: within 60 s
    auckland.checkout.apply("lane-1", "t-a", coupon, BASKET)
    at(auckland, "2026-11-22T10:01:00+13:00")  # 60 s past exp: the allowance is used up
    assert refusal(auckland, issuer.coupon(exp=exp, nbf=nbf), txn="t-d").code == \
        "coupon_expired"
    at(auckland, "2026-11-20T08:58:30+13:00")  # 90 s early: outside 60 s
    exc = refusal(auckland, issuer.coupon(exp=exp, nbf=nbf), txn="t-b")
    assert exc.code == "coupon_not_yet_valid"
    assert exc.message == "This coupon can be used from 20 Nov 2026."
    at(auckland, "2026-11-20T08:59:30+13:00")  # 30 s early: allowed
    auckland.checkout.apply("lane-1", "t-c", issuer.coupon(exp=exp, nbf=nbf), BASKET)


# ---------------------------------------------------------------- basket rules


def test_min_spend_says_how_much_more_to_spend(svc: EdgeService, issuer: Issuer) -> None:
    exc = refusal(svc, issuer.coupon(min_minor=1500))
    assert exc.code == "coupon_min_spend"
    assert exc.message.startswith("Spend €5.14 more to use this coupon")
    assert exc.detail["short_minor"] == 514


def test_discount_applies_to_eligible_lines_only(svc: EdgeService, issuer: Issuer) -> None:
    dairy = svc.checkout.apply("lane-1", "t-1", issuer.coupon(
        cats=["dairy"], disc={"kind": "percent", "value": 50}, stack=True), BASKET)
    assert dairy["discount_minor"] == 369  # half of 7.37, rounded half up
    bread = svc.checkout.apply("lane-1", "t-1", issuer.coupon(
        skus=["bread"], disc={"kind": "amount", "value_minor": 1000, "currency": "EUR"},
        stack=True), BASKET)
    assert bread["discount_minor"] == 249  # never more than the eligible line


def test_coupon_for_items_not_in_the_basket_is_not_applicable(svc: EdgeService,
                                                              issuer: Issuer) -> None:
    exc = refusal(svc, issuer.coupon(cats=["wine"]))
    assert exc.code == "coupon_not_applicable"
    assert "None of the items" in exc.message


def test_coupon_on_free_items_says_there_is_nothing_to_take_off(svc: EdgeService,
                                                                issuer: Issuer) -> None:
    exc = refusal(svc, issuer.coupon(), bkt=basket(("bag", 1, 0, [])))
    assert (exc.code, exc.detail["reason"]) == ("coupon_not_applicable", "nothing_to_discount")


def test_amount_coupon_in_another_currency_is_not_applicable(svc: EdgeService,
                                                             issuer: Issuer) -> None:
    exc = refusal(svc, issuer.coupon(disc={"kind": "amount", "value_minor": 500,
                                           "currency": "GBP"}))
    assert exc.code == "coupon_not_applicable"
    assert "GBP" in exc.message


def test_non_stackable_coupons_do_not_combine(svc: EdgeService, issuer: Issuer) -> None:
    svc.checkout.apply("lane-1", "t-1", issuer.coupon(stack=True), BASKET)
    exc = refusal(svc, issuer.coupon())  # stack defaults to false
    assert exc.code == "coupon_not_stackable"
    assert "cannot be combined" in exc.message
    svc.checkout.apply("lane-1", "t-1", issuer.coupon(stack=True), BASKET)


def test_stacked_coupons_never_take_more_than_the_basket(svc: EdgeService,
                                                         issuer: Issuer) -> None:
    total = 0
    for _ in range(2):
        total += svc.checkout.apply("lane-1", "t-1", issuer.coupon(
            stack=True, disc={"kind": "amount", "value_minor": 600, "currency": "EUR"}),
            BASKET)["discount_minor"]
    assert total == BASKET.total_minor  # 6.00 + 3.86, not 12.00
    exc = refusal(svc, issuer.coupon(stack=True))
    assert exc.code == "coupon_not_applicable"
    assert exc.detail["reason"] == "nothing_left"


# ---------------------------------------------------------------- customer binding


def test_personal_coupon_needs_its_customer(svc: EdgeService, issuer: Issuer) -> None:
    coupon = issuer.coupon(sub="c-1")
    exc = refusal(svc, coupon)
    assert (exc.code, exc.detail["reason"]) == ("coupon_wrong_customer", "not_identified")
    svc.checkout.identify("lane-1", "t-1", "4000 1234 1234 1234", None)
    assert svc.checkout.apply("lane-1", "t-1", coupon, BASKET)["discount_minor"] == 99
    svc.checkout.identify("lane-1", "t-2", issuer.member("c-1"), None)
    exc = refusal(svc, issuer.coupon(sub="c-2"), txn="t-2")
    assert (exc.code, exc.detail["reason"]) == ("coupon_wrong_customer", "other_customer")


# ---------------------------------------------------------------- revocation, plain codes, offline


def test_revoked_coupon_and_withdrawn_campaign_are_refused(svc: EdgeService,
                                                           issuer: Issuer) -> None:
    svc.store.write(lambda db: revoke(db, "coupon", "cpn-stolen", "reported stolen"))
    svc.store.write(lambda db: revoke(db, "campaign", "cmp-recalled", None))
    exc = refusal(svc, issuer.coupon(jti="cpn-stolen"))
    assert exc.code == "coupon_revoked"
    assert exc.detail["reason"] == "reported stolen"
    exc = refusal(svc, issuer.coupon(cmp="cmp-recalled"))
    assert exc.code == "coupon_revoked"
    assert "campaign" in exc.message


def test_plain_campaign_code_works_once_per_sale_for_everyone(svc: EdgeService) -> None:
    campaign = parse_campaign({"id": "cmp-save10", "name": "Save 10", "code": "save10",
                               "disc": {"kind": "percent", "value": 10}}, "en_IE")
    svc.store.write(lambda db: upsert_campaigns(db, [campaign]))
    first = svc.checkout.apply("lane-1", "t-1", "SAVE10", BASKET)
    again = svc.checkout.apply("lane-1", "t-1", "save10", BASKET)
    assert first["reservation"] == again["reservation"]
    svc.checkout.complete("lane-1", "t-1", BASKET, [], BASKET.total_minor - 99)
    assert svc.checkout.apply("lane-2", "t-9", "SAVE10", BASKET)["discount_minor"] == 99
    exc = refusal(svc, "NOSUCH1")
    assert exc.code == "coupon_unknown"


def test_online_only_coupon_is_refused_while_the_hub_is_unreachable(
        settings: Settings, issuer: Issuer) -> None:
    service = make_service(settings.with_overrides(hub_url="http://127.0.0.1:9",
                                                  hub_token="t0ken"))
    try:
        exc = refusal(service, issuer.coupon(off=False))
        assert (exc.code, exc.detail["reason"]) == ("coupon_not_applicable", "offline")
        assert "connected" in exc.message
        service.checkout.apply("lane-1", "t-1", issuer.coupon(), BASKET)  # off defaults true
        service.hub.record_contact()  # the sync sender heard from the hub
        service.checkout.apply("lane-1", "t-2", issuer.coupon(off=False), BASKET)
    finally:
        service.stop()


# ---------------------------------------------------------------- arithmetic, with hypothesis

CATS = ["dairy", "bakery", "wine", "fruit"]
line_st = st.builds(
    lambda i, q, u, c: (f"sku-{i}", q, u, c),
    st.integers(0, 5), st.integers(1, 50), st.integers(0, 200_000),
    st.lists(st.sampled_from(CATS), max_size=2, unique=True))
disc_st = st.one_of(
    st.builds(lambda v: {"kind": "percent", "value": v},
              st.decimals(min_value="0.01", max_value="100", places=2).map(float)),
    st.builds(lambda v: {"kind": "amount", "value_minor": v, "currency": "EUR"},
              st.integers(1, 2_000_000)))
rule_st = st.builds(
    lambda d, skus, cats: Rule(parse_discount(d), frozenset(skus), frozenset(cats)),
    disc_st, st.lists(st.sampled_from([f"sku-{i}" for i in range(6)]), max_size=2),
    st.lists(st.sampled_from(CATS), max_size=2))


@hyp_settings(max_examples=400, deadline=None)
@given(st.lists(line_st, min_size=1, max_size=8), st.lists(rule_st, min_size=1, max_size=4))
def test_discounts_are_whole_non_negative_and_never_exceed_eligible_lines(
        lines: list[tuple[str, int, int, list[str]]], rules: list[Rule]) -> None:
    bkt = Basket("EUR", tuple(Line(s, q, u, frozenset(c)) for s, q, u, c in lines))
    pricing = Pricing.start(bkt)
    taken = 0
    for rule in rules:
        eligible_before = pricing.eligible_minor(rule)
        discount = pricing.take(rule)
        assert isinstance(discount, int) and not isinstance(discount, bool)
        assert 0 <= discount <= eligible_before
        if rule.discount.kind == "percent":
            exact = Fraction(eligible_before) * Fraction(str(rule.discount.percent)) / 100
            expected = int(exact) + (1 if exact - int(exact) >= Fraction(1, 2) else 0)
            assert discount == min(expected, eligible_before)
        else:
            assert discount == min(rule.discount.amount_minor, eligible_before)
        taken += discount
        # What is left of a line is never negative, and only eligible lines lose value.
        for left, line in zip(pricing.remaining, bkt.lines, strict=True):
            assert 0 <= left <= line.total_minor
            if not any(r.eligible(line) for r in rules):
                assert left == line.total_minor
    assert taken == bkt.total_minor - sum(pricing.remaining)
    assert taken <= bkt.total_minor


@given(st.one_of(st.floats(allow_nan=True), st.text(max_size=5), st.integers(-5, -1),
                 st.just(True), st.none()))
def test_basket_money_must_be_whole_minor_units(value: Any) -> None:
    with pytest.raises(BadRequest):
        parse_basket({"currency": "EUR", "lines": [
            {"sku": "a", "qty": 1, "unit_minor": value}]}, "EUR")


def test_basket_total_must_match_its_lines_and_currency() -> None:
    lines = [{"sku": "a", "qty": 2, "unit_minor": 150, "categories": []}]
    assert parse_basket({"currency": "EUR", "lines": lines, "total_minor": 300},
                        "EUR").total_minor == 300
    with pytest.raises(BadRequest, match="does not match"):
        parse_basket({"currency": "EUR", "lines": lines, "total_minor": 299}, "EUR")
    with pytest.raises(BadRequest, match="sells in EUR"):
        parse_basket({"currency": "USD", "lines": lines}, "EUR")


def test_member_code_lifetime_and_expiry_are_honoured(svc: EdgeService, issuer: Issuer) -> None:
    now = int(time.time())
    ok = svc.checkout.identify("lane-1", "t-1", issuer.member("c-1"), None)
    assert ok["customer"]["display_name"] == "Anna"
    for token, reason in [(issuer.member("c-1", iat=now - 600), "expired"),
                          (issuer.member("c-1", life=3600), "lifetime"),
                          (issuer.member("c-1", iat=now + 900), "lifetime")]:
        with pytest.raises(CustomerUnknown) as info:
            svc.checkout.identify("lane-1", "t-2", token, None)
        assert info.value.code == "customer_unknown"
        assert info.value.detail["reason"] == reason


def test_a_member_code_identifies_one_sale(svc: EdgeService, issuer: Issuer) -> None:
    code = issuer.member("c-1")
    assert svc.checkout.identify("lane-1", "t-1", code, None)["customer"]["id"] == "c-1"
    # Scanned again for the same sale: the same identification.
    assert svc.checkout.identify("lane-1", "t-1", code, None)["customer"]["id"] == "c-1"
    # A photo of the shopper's screen at another lane, or for the next sale: refused.
    for lane, txn in (("lane-2", "t-9"), ("lane-1", "t-2")):
        with pytest.raises(CustomerUnknown) as info:
            svc.checkout.identify(lane, txn, code, None)
        assert info.value.detail["reason"] == "used"
        assert "already used" in info.value.message
    assert svc.store.query_one("SELECT customer_id FROM transactions WHERE txn = 't-9'") is None
    # A fresh code from the app works at once.
    assert svc.checkout.identify("lane-2", "t-9", issuer.member("c-1"), None)["customer"]
    # A code without a jti cannot be told apart from its copies: not accepted.
    now = int(time.time())
    bare = issuer.sign({"sub": "c-1", "iat": now, "exp": now + 60}, typ="member+jwt")
    with pytest.raises(CustomerUnknown) as info:
        svc.checkout.identify("lane-3", "t-3", bare, None)
    assert info.value.detail["reason"] == "claims"


def test_used_member_codes_are_forgotten_once_expired(svc: EdgeService,
                                                      issuer: Issuer) -> None:
    now = int(time.time())
    svc.checkout.identify("lane-1", "t-1", issuer.member("c-1", iat=now - 100, life=120), None)
    svc.checkout.identify("lane-1", "t-2", issuer.member("c-1"), None)
    rows = svc.store.query("SELECT exp FROM member_codes_used ORDER BY exp")
    assert len(rows) == 2
    svc.checkout.clock = lambda: now + 400  # past both codes' exp and the clock skew
    svc.checkout.identify("lane-1", "t-3", issuer.member("c-1", iat=now + 390), None)
    assert [r["exp"] for r in svc.store.query("SELECT exp FROM member_codes_used")] == [
        float(now + 390 + 120)]


def test_coupon_revoked_after_it_was_applied_is_not_redeemed(svc: EdgeService,
                                                             issuer: Issuer) -> None:
    svc.checkout.apply("lane-1", "t-1", issuer.coupon(jti="cpn-late-revoke"), BASKET)
    svc.store.write(lambda db: revoke(db, "coupon", "cpn-late-revoke", "reported stolen"))
    done = svc.checkout.complete("lane-1", "t-1", BASKET, [], BASKET.total_minor)
    assert done["redemptions"] == []
    assert [r["code"] for r in done["released"]] == ["coupon_revoked"]


def test_identifying_the_same_shopper_twice_is_one_identification(svc: EdgeService) -> None:
    for _ in range(2):
        svc.checkout.identify("lane-1", "t-1", "4000123412341234", None)
    events = svc.store.query("SELECT type FROM outbox WHERE type = 'customer.identified'")
    assert len(events) == 1


def test_wallet_leaves_out_revoked_coupons(settings: Settings, issuer: Issuer) -> None:
    svc = EdgeService(settings)
    try:
        record = parse_customer({**CUSTOMER, "wallet": [
            issuer.coupon(jti="cpn-keep", sub="c-1"),
            issuer.coupon(jti="cpn-gone", sub="c-1")]}, svc.lookup)
        svc.store.write(lambda db: upsert_customers(db, [record], svc.coupons.wallet_entry))
        svc.store.write(lambda db: revoke(db, "coupon", "cpn-gone", None))
        wallet = svc.checkout.identify("lane-1", "t-1", "4000123412341234", None)["wallet"]
        assert [w["coupon"] for w in wallet] == ["cpn-keep"]
    finally:
        svc.stop()


def test_reapplying_a_coupon_prices_it_in_the_order_it_was_first_applied(
        svc: EdgeService, issuer: Issuer) -> None:
    half = issuer.coupon(stack=True, disc={"kind": "percent", "value": 50})
    five = issuer.coupon(stack=True, disc={"kind": "amount", "value_minor": 500,
                                           "currency": "EUR"})
    first = svc.checkout.apply("lane-1", "t-1", half, BASKET)["discount_minor"]
    svc.checkout.apply("lane-1", "t-1", five, BASKET)
    again = svc.checkout.apply("lane-1", "t-1", half, BASKET)["discount_minor"]
    assert first == again == 493  # half of 9.86, before the 5.00 coupon applied after it
    done = svc.checkout.complete("lane-1", "t-1", BASKET, [], 0)
    assert [r["discount_minor"] for r in done["redemptions"]] == [493, 493]
