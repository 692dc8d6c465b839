"""A coupon's `exp` is a hard limit (RFC 7519, with only the clock-skew allowance), and a
coupon meant to last "until 30 Nov" says so in its `until` claim, which each store judges at
its own midnight. The checkout runs in this process with its clock set (`checkout.clock`);
the hub's `coupons issue` runs as the real `edge-hub` command.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jwt
import pytest

from cloud_sync.hub.settings import load_hub_settings
from edge.app.service import EdgeService
from edge.coupons import CouponRefused, upsert_campaigns
from edge.customers import upsert_customers
from edge.settings import Settings
from store_contract.basket import Basket, parse_basket
from store_contract.campaigns import parse_campaign, until_exp
from store_contract.customers import parse_customer
from tests.conftest import Issuer
from tests.hubfix import REPO, hub_cli, hub_env, hub_env_for, run_hub

BASKET = parse_basket({"currency": "EUR", "lines": [
    {"sku": "apples", "qty": 2, "unit_minor": 299, "categories": ["fruit"]},
    {"sku": "tea", "qty": 1, "unit_minor": 648, "categories": ["tea"]}]}, "EUR")  # 12.46
ANNA = {"id": "c-anna", "display_name": "Anna", "tier": "gold", "points": 10,
        "card": "4000123412341234", "consent": {"personalised": True}}
KIRITIMATI = ZoneInfo("Pacific/Kiritimati")  # +14: the first zone to reach a date
FRUIT = {"id": "cmp-fruit", "name": "Fruit", "description": "€1 off fruit", "offer": True,
         "disc": {"kind": "amount", "value_minor": 100, "currency": "EUR"}, "cats": ["fruit"]}


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@pytest.fixture
def stores(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., EdgeService]]:
    """Factory: an edge (not started) in a zone, with its own data dir; stopped afterwards."""
    made: list[EdgeService] = []

    def _store(tz: str, **overrides: Any) -> EdgeService:
        svc = EdgeService(settings.with_overrides(
            tz=tz, data_dir=str(tmp_path / f"data-{len(made)}"), **overrides))
        record = parse_customer(ANNA, svc.lookup)
        with svc.store.transaction() as db:
            upsert_customers(db, [record], svc.coupons.wallet_entry)
            upsert_campaigns(db, [parse_campaign(FRUIT, svc.settings.locale)])
        made.append(svc)
        return svc

    yield _store
    for svc in made:
        svc.stop()


def at(svc: EdgeService, iso: str) -> None:
    moment = ts(iso)
    svc.checkout.clock = lambda: moment


def accepted(svc: EdgeService, code: str, txn: str, bkt: Basket = BASKET) -> bool:
    """Does the checkout take the coupon now? (The hold is released again at once.)"""
    try:
        held = svc.checkout.apply("lane-1", txn, code, bkt)
    except CouponRefused as exc:
        assert exc.code == "coupon_expired", exc.message
        return False
    svc.checkout.remove("lane-1", txn, held["reservation"])
    return True


def refusal(svc: EdgeService, code: str, txn: str = "t-refused") -> CouponRefused:
    with pytest.raises(CouponRefused) as info:
        svc.checkout.apply("lane-1", txn, code, BASKET)
    return info.value


# ---------------------------------------------------------------- exp is a hard limit


def test_a_coupon_whose_exp_passed_an_hour_ago_is_expired(
        stores: Callable[..., EdgeService], issuer: Issuer) -> None:
    # Before: valid to the end of the local day of exp, so this was still accepted.
    lisbon = stores("Europe/Lisbon")
    exp = int(ts("2026-11-22T14:00:00+00:00"))
    coupon = issuer.coupon(exp=exp, nbf=exp - 7 * 86400)
    at(lisbon, "2026-11-22T13:59:00+00:00")
    assert accepted(lisbon, coupon, "t-before")
    at(lisbon, "2026-11-22T15:00:00+00:00")
    exc = refusal(lisbon, coupon)
    assert exc.code == "coupon_expired"
    assert exc.message == "This coupon expired on 22 Nov 2026."
    assert exc.detail == {"expired": "2026-11-22T14:00:00+00:00"}


def test_a_coupon_within_the_clock_skew_of_its_exp_is_accepted(
        stores: Callable[..., EdgeService], issuer: Issuer) -> None:
    helsinki = stores("Europe/Helsinki", clock_skew_s=120)
    exp = int(ts("2026-11-22T14:00:00+02:00"))
    coupon = issuer.coupon(exp=exp, nbf=exp - 86400)
    at(helsinki, "2026-11-22T14:01:30+02:00")  # 90 s past exp: the phone's clock may be ahead
    assert accepted(helsinki, coupon, "t-skew")
    at(helsinki, "2026-11-22T14:02:00+02:00")  # 120 s: on exp, counting the allowance
    assert refusal(helsinki, coupon).code == "coupon_expired"


# ---------------------------------------------------------------- until: a local end date


def test_until_today_works_until_each_stores_own_midnight(
        stores: Callable[..., EdgeService], issuer: Issuer) -> None:
    lisbon, helsinki = stores("Europe/Lisbon"), stores("Europe/Helsinki")
    # One token for the whole chain, as the hub issues it; max 9 so the tries do not
    # use it up.
    coupon = issuer.coupon(until="2026-11-30", exp=until_exp(date(2026, 11, 30)), max=9,
                           nbf=int(ts("2026-11-01T00:00:00Z")))
    for svc, offset in ((lisbon, "+00:00"), (helsinki, "+02:00")):
        at(svc, f"2026-11-30T23:59:30{offset}")
        assert accepted(svc, coupon, "t-last-minute"), svc.settings.tz
        at(svc, f"2026-12-01T00:00:30{offset}")
        exc = refusal(svc, coupon, "t-next-day")
        assert exc.code == "coupon_expired", svc.settings.tz
        assert exc.message == "This coupon expired on 30 Nov 2026."
        assert exc.detail == {"until": "2026-11-30", "expired": datetime.fromisoformat(
            f"2026-12-01T00:00:00{offset}").astimezone(UTC).isoformat()}
    # The same instant is past midnight in Helsinki and still 30 Nov in Lisbon.
    at(lisbon, "2026-11-30T22:00:30+00:00")
    at(helsinki, "2026-11-30T22:00:30+00:00")
    assert accepted(lisbon, coupon, "t-same-instant")
    assert refusal(helsinki, coupon, "t-same-instant").code == "coupon_expired"


def test_until_never_outlasts_exp(stores: Callable[..., EdgeService], issuer: Issuer) -> None:
    lisbon = stores("Europe/Lisbon")
    exp = int(ts("2026-11-30T12:00:00+00:00"))
    coupon = issuer.coupon(until="2026-11-30", exp=exp, nbf=exp - 86400)
    at(lisbon, "2026-11-30T13:00:00+00:00")
    exc = refusal(lisbon, coupon)
    assert exc.code == "coupon_expired"
    assert exc.detail["expired"] == "2026-11-30T12:00:00+00:00"


def test_until_exp_is_the_end_of_the_date_in_utc_minus_12() -> None:
    assert until_exp(date(2026, 11, 30)) == int(ts("2026-12-01T12:00:00+00:00"))
    # Later than that date's end in any zone a store can be in (Pacific/Kiritimati, +14, is
    # the first to end it; Pacific/Pago_Pago, -11, the last inhabited one).
    assert until_exp(date(2026, 11, 30)) > ts("2026-12-01T00:00:00-11:00")


@pytest.mark.parametrize("until", ["2026-11-31", "30 Nov 2026", "2026-11-30T23:59:59",
                                   "2026-1-5", "20261130", " 2026-11-30", "", 20261130,
                                   ["2026-11-30"], True])
def test_a_malformed_until_is_unknown_and_says_why(
        stores: Callable[..., EdgeService], issuer: Issuer, until: Any) -> None:
    lisbon = stores("Europe/Lisbon")
    exc = refusal(lisbon, issuer.coupon(until=until))
    assert exc.code == "coupon_unknown"
    assert exc.detail["reason"] == "claims"
    assert exc.detail["problem"].startswith("until ")
    assert "YYYY-MM-DD" in exc.detail["problem"] or "2026-11-30" in exc.detail["problem"]


def test_a_plain_code_with_until_ends_at_each_stores_midnight(
        stores: Callable[..., EdgeService]) -> None:
    save10 = {"id": "cmp-save10", "name": "Save 10", "code": "SAVE10", "until": "2026-11-30",
              "disc": {"kind": "percent", "value": 10}}
    lisbon, helsinki = stores("Europe/Lisbon"), stores("Europe/Helsinki")
    for svc, offset in ((lisbon, "+00:00"), (helsinki, "+02:00")):
        svc.store.write(lambda db, s=svc: upsert_campaigns(
            db, [parse_campaign(save10, s.settings.locale)]))
        at(svc, f"2026-11-30T23:59:30{offset}")
        assert accepted(svc, "save10", "t-last-minute")
        at(svc, f"2026-12-01T00:00:30{offset}")
        assert refusal(svc, "SAVE10").detail["until"] == "2026-11-30"
    with pytest.raises(ValueError, match="until must be a local date"):
        parse_campaign({**save10, "until": "30/11/2026"}, "en_IE")


def printed_offer(svc: EdgeService) -> dict[str, Any]:
    """The next-visit offer block of the receipt of a sale to the shopper with card 4000…"""
    svc.checkout.identify("lane-1", "t-1", "4000 1234 1234 1234", None)
    svc.checkout.complete("lane-1", "t-1", BASKET, [], BASKET.total_minor)
    row = svc.store.query_one("SELECT document FROM print_jobs")
    assert row is not None
    block: dict[str, Any] = next(b for b in json.loads(row["document"])["blocks"]
                                 if b["type"] == "offer")
    return block


def test_the_receipt_offer_lasts_to_a_local_date_and_prints_it(
        stores: Callable[..., EdgeService]) -> None:
    helsinki = stores("Europe/Helsinki", receipt_offer_days=14)
    # 00:30 on 23 Nov in Helsinki is still 22 Nov in UTC: the date is the store's.
    at(helsinki, "2026-11-23T00:30:00+02:00")
    offer = printed_offer(helsinki)
    assert offer["text"] == "Just for you, until 7 Dec 2026. Show this code at the till."
    claims = jwt.decode(offer["code"], options={"verify_signature": False})
    assert claims["until"] == "2026-12-07"
    assert claims["exp"] == until_exp(date(2026, 12, 7))
    issued = helsinki.store.query_one("SELECT expires_at FROM issued_coupons")
    assert issued == {"expires_at": claims["exp"]}
    # The wallet shows the date, and leaves the coupon out after it ends here.
    at(helsinki, "2026-12-07T23:59:00+02:00")
    wallet = helsinki.checkout.identify("lane-1", "t-2", "4000 1234 1234 1234", None)["wallet"]
    assert [(w["campaign"], w["until"]) for w in wallet] == [("cmp-fruit", "2026-12-07")]
    at(helsinki, "2026-12-08T00:00:01+02:00")
    assert helsinki.checkout.identify("lane-1", "t-3", "4000 1234 1234 1234",
                                      None)["wallet"] == []
    assert not accepted(helsinki, offer["code"], "t-3")


def test_the_receipt_offer_never_outlasts_its_campaign(
        stores: Callable[..., EdgeService]) -> None:
    lisbon = stores("Europe/Lisbon", receipt_offer_days=14)
    ends_at = "2026-12-01T00:00:00+00:00"
    lisbon.store.write(lambda db: upsert_campaigns(db, [parse_campaign(
        {**FRUIT, "ends_at": ends_at}, "en_IE")]))
    at(lisbon, "2026-11-25T10:00:00+00:00")
    offer = printed_offer(lisbon)
    assert offer["text"] == "Just for you, until 30 Nov 2026. Show this code at the till."
    claims = jwt.decode(offer["code"], options={"verify_signature": False})
    assert (claims["until"], claims["exp"]) == ("2026-11-30", int(ts(ends_at)))


# ---------------------------------------------------------------- the hub issues until


def hub_issue(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*hub_cli(), *args], env=env, capture_output=True, text=True,
                           timeout=60, cwd=REPO)


@pytest.mark.process
def test_the_hub_issues_until_coupons_whose_exp_covers_utc_minus_12(
        tmp_path: Path, stores: Callable[..., EdgeService]) -> None:
    settings = load_hub_settings(hub_env_for(tmp_path / "hub-data", "", 0))
    env = {**hub_env(settings), "HUB_TZ": KIRITIMATI.key}
    cmp_path = tmp_path / "cmp.jsonl"
    later = (datetime.now(UTC) + timedelta(days=20)).date()
    cmp_path.write_text("\n".join(json.dumps(c) for c in (
        {"id": "cmp-winter", "name": "Winter", "disc": {"kind": "percent", "value": 10}},
        {"id": "cmp-short", "name": "Short", "disc": {"kind": "percent", "value": 5},
         "until": later.isoformat()})) + "\n")
    assert run_hub(settings, "campaigns", "import", str(cmp_path)).returncode == 0

    def issue(*args: str) -> dict[str, Any]:
        done = hub_issue(env, "coupons", "issue", *args)
        assert done.returncode == 0, done.stderr
        token = json.loads(done.stdout)["token"]
        return dict(jwt.decode(token, options={"verify_signature": False}), token=token)

    target = (datetime.now(UTC) + timedelta(days=40)).date()
    claims = issue("--campaign", "cmp-winter", "--until", target.isoformat())
    assert claims["until"] == target.isoformat()
    assert claims["exp"] == until_exp(target)
    assert claims["exp"] == int(datetime.combine(target + timedelta(days=1),
                                                 datetime.min.time(), UTC).timestamp()) + 43200
    # --days counts from today where the hub is (HUB_TZ), not from UTC.
    before = datetime.now(KIRITIMATI).date()
    days = issue("--campaign", "cmp-winter", "--days", "7")
    after = datetime.now(KIRITIMATI).date()
    assert days["until"] in {(d + timedelta(days=7)).isoformat() for d in (before, after)}
    assert days["exp"] == until_exp(date.fromisoformat(days["until"]))
    # The campaign's own end date bounds the coupon's.
    short = issue("--campaign", "cmp-short", "--until", target.isoformat())
    assert (short["until"], short["exp"]) == (later.isoformat(), until_exp(later))
    # What the hub recorded is the exp it signed.
    from cloud_sync.hub.db import HubDB
    from cloud_sync.hub.schema import issued_coupons

    db = HubDB(settings.db_url)
    try:
        with db.read() as conn:
            recorded = {r.id: r.expires_ts for r in conn.execute(issued_coupons.select())}
    finally:
        db.dispose()
    assert recorded[claims["jti"]] == claims["exp"]
    # Bad dates are refused in one line.
    for args in (("--until", "2026-02-30"), ("--until", "tomorrow"),
                 ("--until", "2000-01-01"), ("--until", target.isoformat(), "--days", "3")):
        done = hub_issue(env, "coupons", "issue", "--campaign", "cmp-winter", *args)
        assert done.returncode == 1 and done.stdout == "", args
        assert done.stderr.startswith("edge-hub: ") and "until" in done.stderr, done.stderr
