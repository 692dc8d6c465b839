"""The shopper kiosk's pages (kiosk_ui over edge/app/kiosk.py; docs/kiosk.md): a paired
kiosk browser identifies shoppers by member code, card and phone, shows their points,
wallet and offers, clips, changes consent, and forgets them when they leave.

Most tests drive the pages with the Flask test client as the kiosk's paired browser (its
real credential cookie, from the real pairing); the scanner path and the idle timeout run
in real Chromium against `edge serve` on a real broker.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser, Page, expect

from edge.accounts import add_user
from edge.app import create_app
from edge.app.kiosk import KIOSK_PHONE_LOOKUP
from edge.app.service import EdgeService
from edge.coupons import upsert_campaigns
from edge.customers import upsert_customers
from edge.kiosks import add_kiosk
from edge.products import parse_product, upsert_products
from edge.settings import Settings
from store_contract.campaigns import parse_campaign
from store_contract.customers import parse_customer
from tests import browser as chromium
from tests.conftest import Issuer, wait_until
from tests.test_kiosk_access import paired_browser, staff_client

playwright, browser = chromium.playwright, chromium.browser

MANAGER, MANAGER_PW = "mia", "manager-password-1"
ANNA = {"id": "c-anna", "display_name": "Anna Berg", "tier": "gold", "points": 1240,
        "card": "4000123412341234", "phone": "+4916055501990",
        "consent": {"personalised": True, "marketing": False}}
BEN = {"id": "c-ben", "display_name": "Ben", "tier": "member", "points": 45,
       "card": "4000123456780002", "consent": {"personalised": False}}
PRODUCTS = [{"sku": "0036000291452", "name": "Coffee beans", "price": "8.99",
             "categories": ["coffee"]},
            {"sku": "apples", "name": "Apples", "price": "2.49", "categories": ["fruit"]}]
CAMPAIGNS = [
    {"id": "cmp-gold", "name": "Gold", "description": "5% off for gold members", "offer": True,
     "tiers": ["gold"], "disc": {"kind": "percent", "value": 5}},
    {"id": "cmp-fruit", "name": "Fruit", "description": "€1 off fruit", "offer": True,
     "min_minor": 2000, "cats": ["fruit"],
     "disc": {"kind": "amount", "value_minor": 100, "currency": "EUR"}},
]


def seed(svc: EdgeService) -> None:
    records = [parse_customer(c, svc.lookup) for c in (ANNA, BEN)]
    campaigns = [parse_campaign(c, svc.settings.locale) for c in CAMPAIGNS]
    products = [parse_product(p, svc.settings.currency) for p in PRODUCTS]
    with svc.store.transaction() as db:
        upsert_customers(db, records, svc.coupons.wallet_entry)
        upsert_campaigns(db, campaigns)
        upsert_products(db, products)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    """The edge's app (pages only, no bus) with Anna and Ben, two offers, a manager, and
    kiosks `k1` (English and German) and `k2`."""
    application = create_app(settings)
    svc = application.extensions["edge"]
    seed(svc)
    add_user(svc.store, MANAGER, MANAGER_PW, "manager")
    add_kiosk(settings, svc.datadir, svc.store, "k1", langs=("en", "de"))
    add_kiosk(settings, svc.datadir, svc.store, "k2")
    yield application
    svc.stop()


@pytest.fixture
def k1(app: Flask) -> FlaskClient:
    """Kiosk k1's browser, paired."""
    return paired_browser(app, "k1", staff_client(app, MANAGER, MANAGER_PW))[0]


def identify(kiosk: FlaskClient, **form: str) -> Any:
    return kiosk.post("/kiosk/k1/identify", data=form, headers={"Accept": "application/json"})


def outbox(svc: EdgeService, kind: str) -> list[dict[str, Any]]:
    return [json.loads(r["data"]) for r in svc.store.query(
        "SELECT data FROM outbox WHERE type = ? ORDER BY rowid", (kind,))]


# ---------------------------------------------------------------- identify

def test_a_member_code_card_or_phone_identifies_and_home_shows_only_that_shopper(
        app: Flask, k1: FlaskClient, issuer: Issuer) -> None:
    for form, masked in (({"code": issuer.member("c-anna")}, "Anna"),
                         ({"code": ANNA["card"], "how": "card"}, "Anna · ··34"),
                         ({"phone": "0160 5550 1990"}, "Anna · ··90")):
        answer = identify(k1, **form)
        assert answer.status_code == 200 and answer.get_json() == {
            "ok": True, "next": "/kiosk/k1/home"}, answer.get_data(as_text=True)
        home = k1.get("/kiosk/k1/home").get_data(as_text=True)
        assert "Hello, Anna!" in home and masked in home and "1240" in home
        assert "Berg" not in home and "4000123412341234" not in home
        assert "55501990" not in home and "Ben" not in home
        # With consent: the offers the receipts would pick, gold first.
        assert home.index("5% off for gold members") < home.index("€1 off fruit")
        assert "€1.00 off selected items in a basket of €20.00 or more" in home
    assert [e["method"] for e in outbox(app.extensions["edge"], "kiosk.session")] == [
        "member", "card"]  # each new identification ended the one before ("replaced")


@pytest.mark.parametrize(("make", "reason", "words"), [
    (lambda issuer: issuer.member("c-anna", iat=int(time.time()) - 600), "expired",
     "has expired"),
    (lambda issuer: _forged(issuer), "forged", "not one of ours"),
    (lambda issuer: issuer.member("c-nobody"), "unknown", "could not find your account"),
    (lambda issuer: "4000999999999999", "unknown", "could not find your account"),
    (lambda issuer: "\x00\x1b[31m" + "x" * 9000, "bad_input", "not a code the kiosk can read"),
    (lambda issuer: issuer.coupon(), "bad_input", "not a code the kiosk can read"),
])
def test_a_bad_code_is_a_friendly_refusal_with_nothing_of_anyone(
        k1: FlaskClient, issuer: Issuer, make: Any, reason: str, words: str) -> None:
    answer = identify(k1, code=make(issuer))
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["ok"] is False and body["reason"] == reason and words in body["message"]
    assert "Anna" not in answer.get_data(as_text=True)
    page = k1.post("/kiosk/k1/identify", data={"code": make(issuer)})
    assert page.status_code == 400 and words in page.get_data(as_text=True)
    assert k1.get("/kiosk/k1/home").status_code == 302  # no session


def test_a_member_code_signed_by_a_store_key_is_refused_as_not_ours(
        app: Flask, k1: FlaskClient) -> None:
    """A store's key signs receipt offers, never who a shopper is: a member code it signed
    (this store's, or one a thief made with a stolen store key) identifies nobody."""
    now = int(time.time())
    code = app.extensions["edge"].signing_key.sign(
        {"sub": "c-anna", "iat": now, "exp": now + 120}, "member+jwt")
    answer = identify(k1, code=code)
    assert answer.status_code == 400 and answer.get_json()["reason"] == "forged"
    assert "Anna" not in answer.get_data(as_text=True)
    assert k1.get("/kiosk/k1/home").status_code == 302  # no session


def _forged(issuer: Issuer) -> str:
    """A member code for Anna signed by a key nobody trusts, under the trusted key's id."""
    import tempfile
    from pathlib import Path

    forger = Issuer(Path(tempfile.mkdtemp()), kid=issuer.kid)
    return forger.member("c-anna")


def test_a_member_code_used_at_a_till_is_refused_at_the_kiosk_and_vice_versa(
        app: Flask, k1: FlaskClient, issuer: Issuer) -> None:
    code = issuer.member("c-anna")
    assert identify(k1, code=code).status_code == 200
    assert identify(k1, code=code).status_code == 200  # the same kiosk again: fine
    checkout = app.extensions["edge"].checkout
    from edge.transactions import CustomerUnknown

    with pytest.raises(CustomerUnknown):
        checkout.identify("lane-1", "t-1", code, None)


def test_six_wrong_phone_numbers_lock_the_look_up_and_the_audit_keeps_no_number(
        app: Flask, k1: FlaskClient) -> None:
    for n in range(6):
        answer = identify(k1, phone=f"0160 555 000{n}")
        assert answer.status_code == (423 if n == 5 else 400), (n, answer.get_json())
    assert answer.get_json()["reason"] == "locked"
    seventh = identify(k1, phone="0160 5550 1990")  # Anna's, right, but locked
    assert seventh.status_code == 423 and "paused" in seventh.get_json()["message"]
    assert k1.get("/kiosk/k1/home").status_code == 302
    # The card still works while the phone look-up is locked.
    assert identify(k1, code=ANNA["card"], how="card").status_code == 200
    svc = app.extensions["edge"]
    rows = svc.store.query("SELECT * FROM till_audit WHERE action = ? ORDER BY id",
                           (KIOSK_PHONE_LOOKUP,))
    assert [json.loads(r["detail"])["outcome"] for r in rows] == [
        "unknown"] * 5 + ["locked", "locked"]
    dump = json.dumps(rows)
    for typed in ("0160 555 000", "16055500", "5550199", "55501990"):
        assert typed not in dump
    assert all(r["lane"] == "k1" and r["by"] == "kiosk:k1" for r in rows)


# ---------------------------------------------------------------- home

def test_without_consent_points_and_wallet_only_and_the_choice_applies_at_once(
        app: Flask, k1: FlaskClient) -> None:
    identify(k1, code=BEN["card"], how="card")
    home = k1.get("/kiosk/k1/home").get_data(as_text=True)
    assert "Hello, Ben!" in home and "45" in home and "Picked for you" not in home
    assert "only with your consent" in home and "5% off" not in home
    answer = k1.post("/kiosk/k1/choices", data={"personalised": "yes", "marketing": "no"})
    assert answer.status_code == 302
    home = k1.get("/kiosk/k1/home").get_data(as_text=True)
    assert "Picked for you" in home and "€1 off fruit" in home
    svc = app.extensions["edge"]
    [event] = outbox(svc, "consent.changed")
    assert event["customer_id"] == "c-ben" and event["changed"] == ["personalised"]
    assert event["consent"] == {"personalised": True, "marketing": False}
    # Identified by card: no app code goes with the "yes", and the page says what that means.
    assert "proof" not in event
    assert "counts in this store only" in k1.get("/kiosk/k1/choices").get_data(as_text=True)
    # The next receipt follows it: the customer cache says so at once.
    from edge.customers import get_customer

    customer = get_customer(svc.store, "c-ben")
    assert customer is not None and customer.personalised


def test_a_yes_given_after_the_app_code_carries_it_to_the_hub(
        app: Flask, k1: FlaskClient, issuer: Issuer) -> None:
    code = issuer.member("c-ben")
    identify(k1, code=code)
    assert "counts in this store only" not in k1.get("/kiosk/k1/choices").get_data(
        as_text=True)
    k1.post("/kiosk/k1/choices", data={"personalised": "no", "marketing": "yes"})
    k1.post("/kiosk/k1/choices", data={"marketing": "no"})
    granted, withdrawn = outbox(app.extensions["edge"], "consent.changed")
    assert granted["changed"] == ["marketing"] and granted["proof"] == code
    assert withdrawn["changed"] == ["marketing"] and "proof" not in withdrawn  # a "no"
    # The next shopper's session does not inherit it.
    k1.post("/kiosk/k1/done")
    identify(k1, code=BEN["card"], how="card")
    k1.post("/kiosk/k1/choices", data={"marketing": "yes"})
    assert "proof" not in outbox(app.extensions["edge"], "consent.changed")[-1]


def test_an_offer_already_in_the_wallet_from_the_app_is_not_offered_or_clipped_again(
        app: Flask, k1: FlaskClient, issuer: Issuer) -> None:
    svc = app.extensions["edge"]
    # The app put a chain-signed coupon of the gold offer in Anna's wallet (through the hub).
    token = issuer.coupon(cmp="cmp-gold", sub="c-anna")
    record = parse_customer({**ANNA, "wallet": [token]}, svc.lookup)
    with svc.store.transaction() as db:
        upsert_customers(db, [record], svc.coupons.wallet_entry)
    identify(k1, code=ANNA["card"], how="card")
    home = k1.get("/kiosk/k1/home").get_data(as_text=True)
    picked = home.split("Picked for you", 1)[1]
    assert "5% off for gold members" not in picked and "€1 off fruit" in picked
    answer = k1.post("/kiosk/k1/clip", data={"campaign": "cmp-gold"},
                     headers={"Accept": "application/json"})
    held = svc.coupons.read(token).id
    assert answer.get_json() == {"ok": True, "coupon": held}  # the one she holds
    assert outbox(svc, "offer.clipped") == []
    # Used up at a till (here, another store's use as the feed brings it), the offer may be
    # made again.
    with svc.store.transaction() as db:
        db.conn.execute("INSERT INTO redemptions (id, coupon_id, campaign_id, store_id, txn, "
                        "discount_minor, currency, redeemed_at) VALUES ('r-1', ?, "
                        "'cmp-gold', 'store-x', 't-1', 100, 'EUR', '2026-12-01T10:00:00Z')",
                        (held,))
    assert "5% off for gold members" in k1.get("/kiosk/k1/home").get_data(
        as_text=True).split("Picked for you", 1)[1]


def test_a_wallet_coupon_that_came_before_its_campaign_shows_the_campaigns_words(
        app: Flask, k1: FlaskClient, issuer: Issuer) -> None:
    svc = app.extensions["edge"]
    token = issuer.coupon(cmp="cmp-bread", sub="c-anna",
                          disc={"kind": "amount", "value_minor": 200, "currency": "EUR"})
    with svc.store.transaction() as db:  # the feed's customer change, then the campaign's
        upsert_customers(db, [parse_customer({**ANNA, "wallet": [token]}, svc.lookup)],
                         svc.coupons.wallet_entry)
    identify(k1, code=ANNA["card"], how="card")
    assert "€2 off bread" not in k1.get("/kiosk/k1/home").get_data(as_text=True)
    with svc.store.transaction() as db:
        upsert_campaigns(db, [parse_campaign(
            {"id": "cmp-bread", "name": "Bread", "description": "€2 off bread",
             "disc": {"kind": "amount", "value_minor": 200, "currency": "EUR"}},
            svc.settings.locale)])
    wallet = k1.get("/kiosk/k1/home").get_data(as_text=True).split("Your coupons", 1)[1]
    assert "€2 off bread" in wallet.split("Picked for you", 1)[0]


def test_an_offer_page_shows_the_whole_offer_and_only_the_shoppers_own(
        app: Flask, k1: FlaskClient) -> None:
    assert k1.get("/kiosk/k1/offer/cmp-fruit").location.endswith("/kiosk/k1/")  # nobody
    identify(k1, code=ANNA["card"], how="card")
    page = k1.get("/kiosk/k1/offer/cmp-fruit").get_data(as_text=True)
    assert "€1 off fruit" in page and "€1.00 off selected items in a basket of €20.00" in page
    assert "Apples" in page and "Coffee beans" not in page  # the fruit, from the products
    assert "Add to my coupons" in page and "Anna · ··34" in page
    assert 'id="idle-warning"' in page and 'id="done-form"' in page
    clipped = k1.post("/kiosk/k1/clip", data={"campaign": "cmp-fruit", "back": "offer"})
    assert clipped.location.endswith("/kiosk/k1/offer/cmp-fruit")
    page = k1.get("/kiosk/k1/offer/cmp-fruit").get_data(as_text=True)
    assert "Your coupon" in page and "Add to my coupons" not in page  # held now
    gold = k1.get("/kiosk/k1/offer/cmp-gold").get_data(as_text=True)
    assert "Everything in your basket." in gold
    # Any other campaign id (unknown, markup, too long): her home.
    for other in ("cmp-nothing", "<script>", "x" * 300):
        answer = k1.get(f"/kiosk/k1/offer/{other}")
        assert answer.status_code == 302 and answer.location.endswith("/kiosk/k1/home")
    k1.get("/kiosk/k1/lang/de")
    assert "Wofür er gilt" in k1.get("/kiosk/k1/offer/cmp-gold").get_data(as_text=True)


def test_a_double_tap_on_clip_clips_once(app: Flask, k1: FlaskClient) -> None:
    identify(k1, code=ANNA["card"], how="card")
    first = k1.post("/kiosk/k1/clip", data={"campaign": "cmp-gold"},
                    headers={"Accept": "application/json"})
    second = k1.post("/kiosk/k1/clip", data={"campaign": "cmp-gold"},
                     headers={"Accept": "application/json"})
    assert first.get_json()["ok"] and second.get_json() == first.get_json()
    svc = app.extensions["edge"]
    [clipped] = outbox(svc, "offer.clipped")
    assert clipped["campaign"] == "cmp-gold" and clipped["customer_id"] == "c-anna"
    assert clipped["coupon"] == first.get_json()["coupon"]
    home = k1.get("/kiosk/k1/home").get_data(as_text=True)
    wallet = home[home.index("Your coupons"):home.index("Picked for you")]
    assert wallet.count('<p class="title">5% off for gold members</p>') == 1
    # The till sees the coupon in Anna's wallet and accepts it.
    assert [w["coupon"] for w in svc.checkout.wallet("c-anna", time.time())] == [
        clipped["coupon"]]
    refused = k1.post("/kiosk/k1/clip", data={"campaign": "cmp-silver"},
                      headers={"Accept": "application/json"})
    assert refused.status_code == 409 and refused.get_json()["reason"] == "not_offered"


def test_a_scanned_product_shows_its_price_and_the_shoppers_offers_for_it(
        k1: FlaskClient) -> None:
    def scan(code: str, symbology: str = "") -> Any:
        return k1.post("/kiosk/k1/scan", data={"code": code, "symbology": symbology},
                       headers={"Accept": "application/json"})

    # Before anyone identifies: name and price. A UPC-A finds the product kept as EAN-13.
    answer = scan("036000291452", "]E0")
    assert answer.status_code == 200 and answer.get_json() == {
        "ok": True, "kind": "price", "name": "Coffee beans", "price": "€8.99", "offers": []}
    identify(k1, code=ANNA["card"], how="card")
    apples = scan("apples").get_json()
    assert apples["price"] == "€2.49" and apples["offers"] == ["€1 off fruit"]
    for code, symbology in (("4006381333931", "]E0"), ("96385074", "")):
        unknown = scan(code, symbology)
        assert unknown.status_code == 404 and unknown.get_json()["reason"] == "unknown_product"
        assert "ask a member of staff" in unknown.get_json()["message"]
    garbage = scan("\x00\x07 <script>alert(1)</script>", "]Q1")
    assert garbage.status_code == 400 and garbage.get_json()["reason"] == "bad_input"
    assert "<script>" not in garbage.get_data(as_text=True)
    assert scan("x" * 9000).status_code == 400
    # The kiosk is still Anna's, and usable.
    assert "Hello, Anna!" in k1.get("/kiosk/k1/home").get_data(as_text=True)


# ---------------------------------------------------------------- leaving

def test_done_forgets_the_shopper_and_the_old_token_is_dead(app: Flask, k1: FlaskClient
                                                           ) -> None:
    identify(k1, code=ANNA["card"], how="card")
    cookie = k1.get_cookie("kiosk_shopper", path="/kiosk/k1")
    assert cookie is not None
    old = cookie.value
    done = k1.post("/kiosk/k1/done", data={"why": "done"})
    assert done.status_code == 302 and done.headers["Location"].endswith("/kiosk/k1/")
    assert done.headers["Clear-Site-Data"] == '"cache", "storage"'
    assert k1.get_cookie("kiosk_shopper", path="/kiosk/k1") is None
    k1.set_cookie("kiosk_shopper", old, path="/kiosk/k1")  # replayed
    assert k1.post("/kiosk/k1/alive").status_code == 401
    assert k1.get("/kiosk/k1/home").status_code == 302
    assert k1.post("/kiosk/k1/clip", data={"campaign": "cmp-gold"}).status_code == 401
    [session] = outbox(app.extensions["edge"], "kiosk.session")
    assert session["ended"] == "done" and session["method"] == "card"
    assert session["customer_id"] == "c-anna" and "Anna" not in json.dumps(session)


def test_pages_are_not_cached_and_answer_only_their_own_kiosk(app: Flask,
                                                              k1: FlaskClient) -> None:
    identify(k1, code=ANNA["card"], how="card")
    home = k1.get("/kiosk/k1/home")
    assert home.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in home.headers["Content-Security-Policy"]
    assert k1.get("/kiosk/k2/").status_code == 403
    assert k1.get("/kiosk/k2/home").status_code == 403
    stranger = app.test_client()
    to_pairing = stranger.get("/kiosk/k1/home", headers={"Accept": "text/html"})
    assert to_pairing.status_code == 302 and to_pairing.headers["Location"].endswith(
        "/kiosk/pair")
    assert stranger.get("/kiosk/k1/home").status_code == 401
    assert stranger.post("/kiosk/k1/identify", data={"code": ANNA["card"]}).status_code == 401
    cross = k1.post("/kiosk/k1/identify", data={"code": ANNA["card"]},
                    headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403


def test_everything_lower_down_is_a_choice_that_ends_with_the_session(
        k1: FlaskClient) -> None:
    assert 'aria-pressed="false"' in k1.get("/kiosk/k1/").get_data(as_text=True)
    answer = k1.post("/kiosk/k1/low", data={"next": "/kiosk/k1/identify"})
    assert answer.status_code == 303 and answer.location.endswith("/kiosk/k1/identify")
    page = k1.get("/kiosk/k1/identify").get_data(as_text=True)
    assert 'class="kiosk identify low"' in page and 'aria-pressed="true"' in page
    identify(k1, code=ANNA["card"], how="card")
    assert " low" in k1.get("/kiosk/k1/home").get_data(as_text=True).split("<body", 1)[1][:40]
    k1.post("/kiosk/k1/done")
    assert 'aria-pressed="false"' in k1.get("/kiosk/k1/").get_data(as_text=True)
    # Pressed again, it is off again; and it sends the browser only to this kiosk's pages.
    k1.post("/kiosk/k1/low", data={"next": "/kiosk/k1/"})
    for elsewhere in ("https://evil.example/", "//evil.example/kiosk/k1/", "/staff/",
                      "/kiosk/k1/\\evil.example", "/kiosk/k2/", "/kiosk/k1/../../staff/"):
        answer = k1.post("/kiosk/k1/low", data={"next": elsewhere})
        assert answer.location.endswith("/kiosk/k1/"), elsewhere


def test_the_language_switch_and_german_words(k1: FlaskClient) -> None:
    assert "Welcome!" in k1.get("/kiosk/k1/").get_data(as_text=True)
    k1.get("/kiosk/k1/lang/de")
    page = k1.get("/kiosk/k1/").get_data(as_text=True)
    assert "Willkommen!" in page and 'lang="de"' in page
    identify(k1, code=ANNA["card"], how="card")
    home = k1.get("/kiosk/k1/home").get_data(as_text=True).replace("\xa0", " ")
    assert "Hallo, Anna!" in home
    assert "1,00 € Rabatt auf ausgewählte Artikel bei einem Einkauf ab 20,00 €" in home
    k1.post("/kiosk/k1/done")
    assert "Welcome!" in k1.get("/kiosk/k1/").get_data(as_text=True)  # the next shopper


# ---------------------------------------------------------------- in Chromium

@pytest.fixture
def kiosk_served(settings: Settings, broker: Any, tmp_path: Any) -> Iterator[dict[str, Any]]:
    """`edge serve` (30 s idle, the least allowed) with Anna, the offers, kiosk k1 and its
    scanner `ks` enrolled and assigned before it starts."""
    from edge.scanners import Target, add_scanner
    from edge.supervise import stop_process
    from tests.conftest import start_edge

    settings = settings.with_overrides(http_port=0, kiosk_idle_s=30)
    app = create_app(settings)
    svc = app.extensions["edge"]
    seed(svc)
    add_kiosk(settings, svc.datadir, svc.store, "k1", langs=("en", "de"))
    _, login = add_scanner(settings, svc.datadir, svc.store, "ks", Target("kiosk", "k1"))
    svc.stop()
    proc = start_edge(settings, {"EDGE_KIOSK_IDLE_S": "30"})
    base = f"http://127.0.0.1:{proc.http_port}"
    import requests

    assert wait_until(lambda: requests.get(f"{base}/healthz", timeout=2).json()["broker"]
                      ["connected"], 15)
    yield {"base": base, "login": login, "settings": settings}
    stop_process(proc)


def paired_screen(browser: Browser, served: dict[str, Any], **size: int) -> Page:
    """A kiosk screen: Chromium opens /kiosk/, shows its code, IT pairs it with the
    command, and the screen goes on to its attract page by itself."""
    from tests.test_kiosk_access import edge_command

    context = browser.new_context(viewport={"width": size.get("width", 1080),
                                            "height": size.get("height", 1920)},
                                  bypass_csp=bool(size.get("axe", 0)))
    context.set_default_timeout(chromium.TIMEOUT_MS)
    screen = context.new_page()
    screen.goto(f"{served['base']}/kiosk/")
    code = screen.locator("#code")
    expect(code).to_have_text(re.compile(r"^\d{4} \d{4}$"))
    paired = edge_command(served["settings"], "kiosks", "pair", "k1", code.inner_text())
    assert paired.returncode == 0, paired.stderr
    expect(screen).to_have_url(f"{served['base']}/kiosk/k1/")
    return screen


def test_a_member_code_shown_to_the_kiosks_scanner_greets_the_shopper(
        kiosk_served: dict[str, Any], browser: Browser, issuer: Issuer) -> None:
    from pos_bridge.device import DeviceClient
    from store_contract.scans import Scan

    screen = paired_screen(browser, kiosk_served)
    errors: list[str] = []
    screen.on("pageerror", lambda err: errors.append(str(err)))
    login = kiosk_served["login"]
    scanner = DeviceClient("store-t", "scanner", "ks", kiosk_served["settings"].mqtt_url,
                           login.username, login.password)
    scanner.connect()
    try:
        expect(screen.locator("h1")).to_have_text("Welcome!")
        screen.wait_for_timeout(300)  # the page's live stream is open
        scanner.event("scan", Scan(issuer.member("c-anna", iat=int(time.time()) - 900),
                                   "camera", "]Q1", seq=1).to_data())
        expect(screen.locator("#scan-status")).to_contain_text("has expired")
        expect(screen).to_have_url(re.compile(r"/kiosk/k1/$"))
        scanner.event("scan", Scan("garbage \x1b[2J", "camera", "]Q1", seq=2).to_data())
        expect(screen.locator("#scan-status")).to_contain_text("not a code the kiosk can read")
        scanner.event("scan", Scan(issuer.member("c-anna"), "camera", "]Q1", seq=3).to_data())
        expect(screen.locator("h1")).to_have_text("Hello, Anna!", timeout=5000)
        assert "Berg" not in screen.content()
    finally:
        scanner.close()
    assert errors == []


def test_idle_timeout_leaves_nothing_of_the_shopper(kiosk_served: dict[str, Any],
                                                    browser: Browser) -> None:
    screen = paired_screen(browser, kiosk_served)
    screen.get_by_role("link", name="Start").click()
    screen.get_by_role("link", name="Type my card number").click()
    for digit in ANNA["card"]:
        screen.locator(f'.key[data-key="{digit}"]').click()
    screen.get_by_role("button", name="Find me").click()
    expect(screen.locator("h1")).to_have_text("Hello, Anna!")
    old = {c["name"]: c["value"] for c in screen.context.cookies()}["kiosk_shopper"]
    # The warning comes 20 s before the end; More time gives the full time again.
    warning = screen.get_by_role("alertdialog")
    expect(warning).to_be_visible(timeout=15_000)
    screen.get_by_role("button", name="More time").click()
    expect(warning).to_be_hidden()
    expect(warning).to_be_visible(timeout=15_000)
    expect(screen).to_have_url(re.compile(r"/kiosk/k1/$"), timeout=25_000)
    expect(screen.locator("h1")).to_have_text("Welcome!")
    html = screen.content()
    assert "Anna" not in html and "1240" not in html
    stored = screen.evaluate("""async () => ({
        local: localStorage.length, session: sessionStorage.length,
        idb: (await indexedDB.databases()).length, cookie: document.cookie})""")
    assert stored == {"local": 0, "session": 0, "idb": 0, "cookie": ""}
    assert "kiosk_shopper" not in {c["name"] for c in screen.context.cookies()}
    # The old session's requests, replayed with its token: refused.
    replay = screen.context.request.post(
        f"{kiosk_served['base']}/kiosk/k1/alive",
        headers={"Cookie": f"kiosk={_credential(screen)}; kiosk_shopper={old}"})
    assert replay.status == 401


def _credential(screen: Page) -> str:
    return str({c["name"]: c["value"] for c in screen.context.cookies()}["kiosk"])


# ---------------------------------------------------------------- printing

@pytest.fixture
def printing(settings: Settings, broker: Any, virtual_printer: Any
             ) -> Iterator[tuple[Flask, Any, FlaskClient]]:
    """A running edge (on the bus) whose kiosk k1 prints on a virtual network printer `kp`,
    and k1's paired browser."""
    from edge.app.printers import add_printer
    from tests.conftest import running_edge

    app = create_app(settings)
    svc = app.extensions["edge"]
    seed(svc)
    add_user(svc.store, MANAGER, MANAGER_PW, "manager")
    vp = virtual_printer("TM-T20II")
    add_printer(settings, svc.datadir, svc.store, "kp", lanes=[], connection=vp.address,
                profile="TM-T20II")
    add_kiosk(settings, svc.datadir, svc.store, "k1", printer="kp")
    with running_edge(settings, svc):
        svc.printers.refresh()
        assert wait_until(lambda: "kp" in svc.printers.services
                          and svc.printers.services["kp"][1] is not None
                          and svc.printers.services["kp"][1].device.connected.is_set(), 15)
        yield app, vp, paired_browser(app, "k1", staff_client(app, MANAGER, MANAGER_PW))[0]


def test_a_coupon_prints_once_paper_out_said_on_screen_and_the_till_takes_it(
        printing: tuple[Flask, Any, FlaskClient]) -> None:
    import zxingcpp

    app, vp, k1 = printing
    svc = app.extensions["edge"]
    identify(k1, code=ANNA["card"], how="card")
    vp.set_paper("empty")

    def press() -> dict[str, Any]:
        answer = k1.post("/kiosk/k1/print", data={"campaign": "cmp-gold"},
                         headers={"Accept": "application/json"})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        body: dict[str, Any] = answer.get_json()
        return body

    first, second = press(), press()  # a double tap
    assert first["job"] == second["job"]

    def status() -> dict[str, Any]:
        body: dict[str, Any] = k1.get(first["status"]).get_json()
        return body

    assert wait_until(lambda: status()["state"] == "held", 15)
    assert "out of paper" in status()["message"] and vp.printouts == []
    vp.set_paper("ok")
    assert wait_until(lambda: status()["state"] == "printed", 15)
    assert "take it from the printer" in status()["message"]
    [slip] = vp.wait_printouts(1)
    text = "\n".join(slip.text)
    assert "5% off for gold members" in text and "5% off your shopping" in text
    codes = [r.text for image in slip.images for r in zxingcpp.read_barcodes(image)]
    [wallet] = svc.checkout.wallet("c-anna", time.time())
    assert codes == [wallet["code"]]  # the signed coupon, as the till reads it
    assert press()["job"] == first["job"]  # once per offer in the session
    time.sleep(1)
    assert len(vp.printouts) == 1
    # No receipt.printed for a coupon slip; one offer.clipped.
    assert outbox(svc, "receipt.printed") == [] and len(outbox(svc, "offer.clipped")) == 1
    coupon = svc.coupons.read(wallet["code"])
    assert coupon.customer == "c-anna" and coupon.campaign == "cmp-gold"


@pytest.mark.process
def test_a_kiosk_printer_is_set_up_with_no_lane(settings: Settings) -> None:
    from tests.test_kiosk_access import edge_command

    added = edge_command(settings, "printers", "add", "prn-k1", "--connect",
                         "tcp://127.0.0.1:9100", "--profile", "TM-T20II")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["lanes"] == []
    kiosk = edge_command(settings, "kiosks", "add", "k1", "--printer", "prn-k1")
    assert kiosk.returncode == 0, kiosk.stderr
    assert json.loads(kiosk.stdout)["printer"] == "prn-k1"


# What a finger touches: links, buttons, keys, and a radio button's whole label.
SMALL_TARGETS = """() => [...document.querySelectorAll('a, button, .key, label.choice-option')]
    .filter((e) => e.offsetParent !== null)
    .map((e) => [e.textContent.trim() || e.getAttribute('aria-label') || e.name,
                 e.getBoundingClientRect()])
    .filter(([_, r]) => r.width < 44 || r.height < 44)
    .map(([name, r]) => `${name}: ${Math.round(r.width)}x${Math.round(r.height)}`)"""


@pytest.mark.parametrize(("width", "height"), [(1080, 1920), (1920, 1080)])
def test_every_kiosk_page_is_accessible_and_touchable_portrait_and_landscape(
        kiosk_served: dict[str, Any], browser: Browser, tmp_path: Any, width: int,
        height: int) -> None:
    """axe-core (serious and critical, WCAG A/AA) and 44x44 px touch targets on every
    page and dialog, as a shopper walks through them; screenshots in tmp_path (or in
    $KIOSK_SCREENSHOTS, for docs)."""
    import os
    from pathlib import Path

    from pos_bridge.device import DeviceClient
    from store_contract.scans import Scan
    from tests.axe import Findings

    shots = Path(os.environ.get("KIOSK_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    screen = paired_screen(browser, kiosk_served, width=width, height=height, axe=1)
    findings = Findings(screen)
    small: dict[str, list[str]] = {}

    def check(name: str) -> None:
        findings.check(name)
        small[name] = screen.evaluate(SMALL_TARGETS)
        screen.screenshot(path=str(shots / f"kiosk-{name}-{width}x{height}.png"))

    expect(screen.locator("h1")).to_have_text("Welcome!")
    check("attract")
    screen.get_by_role("link", name="Deutsch").click()
    expect(screen.locator("h1")).to_have_text("Willkommen!")
    check("attract-de")
    screen.get_by_role("link", name="English").click()
    screen.get_by_role("link", name="Start").click()
    check("identify")
    screen.get_by_role("link", name="Use my phone number").click()
    check("identify-phone")
    for key in "0160":
        screen.locator(f'.key[data-key="{key}"]').click()
    screen.get_by_role("button", name="Find me").click()
    expect(screen.get_by_role("alert")).to_contain_text("not a phone number")
    check("identify-refused")
    screen.goto(f"{kiosk_served['base']}/kiosk/k1/identify?how=card")
    for digit in ANNA["card"]:
        screen.locator(f'.key[data-key="{digit}"]').click()
    check("identify-card")
    screen.get_by_role("button", name="Find me").click()
    expect(screen.locator("h1")).to_have_text("Hello, Anna!")
    check("home")
    login = kiosk_served["login"]
    scanner = DeviceClient("store-t", "scanner", "ks", kiosk_served["settings"].mqtt_url,
                           login.username, login.password)
    scanner.connect()
    try:
        expect(screen.locator("body")).to_have_attribute("data-live", "on")
        scanner.event("scan", Scan("0036000291452", "camera", "]E0", seq=1).to_data())
        expect(screen.get_by_role("dialog")).to_contain_text("Coffee beans")
        check("price")
    finally:
        scanner.close()
    screen.get_by_role("button", name="OK").click()
    screen.get_by_role("link", name="Your choices").click()
    check("choices")
    screen.get_by_role("button", name="Save").click()
    expect(screen.locator("h1")).to_have_text("Hello, Anna!")
    # Everything lower down: the bar with Done comes down to the foot, the greeting and the
    # wallet sit just above it, in the lower part of the screen.
    low = screen.get_by_role("button", name="Everything lower down")
    assert low.bounding_box()["y"] > height * 0.85  # type: ignore[index]
    low.click()
    expect(low).to_have_attribute("aria-pressed", "true")
    expect(screen.locator("h1")).to_have_text("Hello, Anna!")
    done_box = screen.get_by_role("button", name="Done").bounding_box()
    greeting = screen.locator("h1").bounding_box()
    content = screen.locator("main").bounding_box()
    bar = screen.locator(".bar").bounding_box()
    assert done_box and greeting and content and bar
    assert done_box["y"] > height * 0.8
    # The content ends where the bar begins, and on a tall screen nothing is at the top.
    assert abs(bar["y"] - (content["y"] + content["height"])) < 2
    if width < height:
        assert greeting["y"] > height * 0.25
    check("home-low")
    # An offer's own page; the idle timeout watches every page of the shopper's.
    screen.get_by_role("link", name=re.compile(r"^Details\W+€1 off fruit$")).click()
    expect(screen.locator("h1")).to_have_text("€1 off fruit")
    expect(screen.locator(".products")).to_contain_text("Apples")
    check("offer")
    expect(screen.get_by_role("alertdialog")).to_be_visible(timeout=15_000)
    check("idle-warning")
    screen.get_by_role("alertdialog").get_by_role("button", name="I’m done").click()
    expect(screen.locator("h1")).to_have_text("Welcome!")
    # The next person finds the screen as it stands.
    expect(screen.get_by_role("button", name="Everything lower down")).to_have_attribute(
        "aria-pressed", "false")
    findings.assert_none()
    assert {name: found for name, found in small.items() if found} == {}
