"""Checkout over the real bus: lanes identify shoppers, apply and redeem app coupons through a
real Mosquitto, with the edge in this process. Exactly-once under repeats and races, holds
that lapse, and bad input that never stops the lanes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from edge.app.service import EdgeService
from edge.customers import upsert_customers
from pos_bridge.device import DeviceClient
from store_contract.customers import parse_customer
from tests.conftest import Issuer, at_once, wait_until

Lanes = Callable[[int], list[DeviceClient]]
BASKET = {"currency": "EUR", "total_minor": 986, "lines": [
    {"sku": "milk", "qty": 2, "unit_minor": 119, "categories": ["dairy"]},
    {"sku": "bread", "qty": 1, "unit_minor": 249, "categories": ["bakery"]},
    {"sku": "cheese", "qty": 1, "unit_minor": 499, "categories": ["dairy"]}]}
ANNA = {"id": "c-1", "display_name": "Anna", "tier": "gold", "points": 120,
        "card": "4000123412341234", "phone": "0151 23456789", "email": "Anna@Example.org"}


@pytest.fixture
def lanes(device: Callable[..., DeviceClient]) -> Lanes:
    def _lanes(n: int) -> list[DeviceClient]:
        return [device("pos", f"lane-{i + 1}") for i in range(n)]

    return _lanes


@pytest.fixture
def seeded(edge: EdgeService, issuer: Issuer) -> EdgeService:
    record = parse_customer({**ANNA, "wallet": [issuer.coupon(jti="cpn-wallet", sub="c-1")]},
                            edge.lookup)
    edge.store.write(lambda db: upsert_customers(db, [record], edge.coupons.wallet_entry))
    return edge


def ok(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["ok"], reply
    data: dict[str, Any] = reply["data"]
    return data


def refused(reply: dict[str, Any], code: str) -> str:
    assert not reply["ok"], reply
    assert reply["error"]["code"] == code, reply
    message: str = reply["error"]["message"]
    assert message
    return message


def complete(lane: DeviceClient, txn: str, paid: int, **kw: Any) -> dict[str, Any]:
    return lane.request("txn.complete", {"txn": txn, "basket": BASKET, "total_minor": paid,
                                         "currency": "EUR",
                                         "tenders": [{"kind": "card", "amount_minor": paid}]},
                        **kw)


# ---------------------------------------------------------------- the happy path


def test_a_sale_with_an_app_coupon_from_scan_to_redemption(seeded: EdgeService, lanes: Lanes,
                                                           issuer: Issuer) -> None:
    lane = lanes(1)[0]
    who = ok(lane.request("identify", {"txn": "s-1", "code": "4000 1234 1234 1234"}))
    assert who["customer"] == {"id": "c-1", "display_name": "Anna", "tier": "gold",
                               "points": 120}
    assert [w["coupon"] for w in who["wallet"]] == ["cpn-wallet"]
    applied = ok(lane.request("coupon.apply", {"txn": "s-1", "code": who["wallet"][0]["code"],
                                               "basket": BASKET}))
    assert (applied["coupon"], applied["discount_minor"], applied["currency"]) == \
        ("cpn-wallet", 99, "EUR")
    done = ok(complete(lane, "s-1", 887))
    assert [r["coupon"] for r in done["redemptions"]] == ["cpn-wallet"]
    receipt = seeded.store.query_one("SELECT device_id, txn, customer_id FROM print_jobs "
                                     "WHERE job = ?", (done["receipt"]["job"],))
    assert receipt == {"device_id": "lane-1", "txn": "s-1", "customer_id": "c-1"}
    rows = seeded.store.query("SELECT coupon_id, customer_id, discount_minor FROM redemptions")
    assert rows == [{"coupon_id": "cpn-wallet", "customer_id": "c-1", "discount_minor": 99}]
    events = [r["type"] for r in seeded.store.query(
        "SELECT type FROM outbox WHERE type != 'device.status' ORDER BY seq")]
    assert events == ["customer.identified", "coupon.redeemed", "transaction.completed"]
    # The redeemed coupon leaves the wallet, and a second use is refused with where and when.
    again = ok(lane.request("identify", {"txn": "s-2", "phone": "+49 151 23456789"}))
    assert again["wallet"] == []
    message = refused(lane.request("coupon.apply", {"txn": "s-2", "code": who["wallet"][0]["code"],
                                                    "basket": BASKET}), "coupon_used")
    assert message.startswith("Coupon already used at Demo Store on ")


def test_unknown_shopper_is_refused_and_the_identifier_kept_hashed(seeded: EdgeService,
                                                                  lanes: Lanes) -> None:
    lane = lanes(1)[0]
    refused(lane.request("identify", {"txn": "s-1", "phone": "+49 30 901820"}),
            "customer_unknown")
    row = seeded.store.query_one("SELECT customer_id, identifier_kind, identifier "
                                 "FROM transactions WHERE txn = 's-1'")
    assert row is not None and row["customer_id"] is None and row["identifier_kind"] == "phone"
    assert row["identifier"] == seeded.lookup.phone("+4930901820")
    assert "901820" not in row["identifier"]
    ok(complete(lane, "s-1", 986))
    event = seeded.store.query_one("SELECT data FROM outbox WHERE type = 'transaction.completed'")
    assert event is not None
    assert json.loads(event["data"])["identifier"] == {"method": "phone",
                                                       "value": row["identifier"]}


def test_void_after_completion_reverses_the_redemption(seeded: EdgeService, lanes: Lanes,
                                                       issuer: Issuer) -> None:
    lane = lanes(1)[0]
    code = issuer.coupon()
    ok(lane.request("coupon.apply", {"txn": "s-1", "code": code, "basket": BASKET}))
    ok(complete(lane, "s-1", 887))
    voided = ok(lane.request("txn.void", {"txn": "s-1"}))
    assert len(voided["reversed"]) == 1
    assert ok(lane.request("txn.void", {"txn": "s-1"})) == voided  # once, however often asked
    ok(lane.request("coupon.apply", {"txn": "s-2", "code": code, "basket": BASKET}))
    refused(lane.request("txn.void", {"txn": "never-was"}), "txn_unknown")
    types = [r["type"] for r in seeded.store.query(
        "SELECT type FROM outbox WHERE type != 'device.status' ORDER BY seq")]
    assert types.count("coupon.redemption_reversed") == 1


def test_removed_coupon_is_free_for_another_lane(seeded: EdgeService, lanes: Lanes,
                                                 issuer: Issuer) -> None:
    one, two = lanes(2)
    code = issuer.coupon()
    held = ok(one.request("coupon.apply", {"txn": "s-1", "code": code, "basket": BASKET}))
    message = refused(two.request("coupon.apply", {"txn": "s-9", "code": code,
                                                   "basket": BASKET}), "coupon_reserved")
    assert "lane-1" in message
    ok(one.request("coupon.remove", {"txn": "s-1", "reservation": held["reservation"]}))
    ok(two.request("coupon.apply", {"txn": "s-9", "code": code, "basket": BASKET}))
    assert ok(complete(one, "s-1", 986))["redemptions"] == []


# ---------------------------------------------------------------- exactly once


def test_repeated_request_id_has_its_effect_once(seeded: EdgeService, lanes: Lanes,
                                                 issuer: Issuer) -> None:
    lane = lanes(1)[0]
    code = issuer.coupon()
    first = lane.request("coupon.apply", {"txn": "s-1", "code": code, "basket": BASKET},
                         request_id="01890a5d-ac96-774b-bcce-b302099a8057")
    second = lane.request("coupon.apply", {"txn": "s-1", "code": code, "basket": BASKET},
                          request_id="01890a5d-ac96-774b-bcce-b302099a8057")
    assert first == second
    done = complete(lane, "s-1", 887, request_id="01890a5d-ac96-774b-bcce-b302099a8058")
    assert complete(lane, "s-1", 887, request_id="01890a5d-ac96-774b-bcce-b302099a8058") == done
    # A new request id for the same sale (the lane restarted) gets the first result too.
    assert ok(complete(lane, "s-1", 887))["redemptions"] == ok(done)["redemptions"]
    assert len(seeded.store.query("SELECT * FROM reservations")) == 1
    assert len(seeded.store.query("SELECT * FROM redemptions")) == 1
    assert len(seeded.store.query("SELECT * FROM outbox WHERE type = 'coupon.redeemed'")) == 1


def race(lanes: list[DeviceClient], code: str, round_: int) -> list[dict[str, Any]]:
    """Every lane applies `code` at the same instant; the replies in lane order."""
    return at_once([lambda i=i, lane=lane: lane.request(  # type: ignore[misc]
        "coupon.apply", {"txn": f"r{round_}-{i}", "code": code, "basket": BASKET}, timeout=15)
        for i, lane in enumerate(lanes)], timeout=30)


def test_second_lane_cannot_reserve_a_single_use_coupon_twenty_lanes_fifty_times(
        seeded: EdgeService, lanes: Lanes, issuer: Issuer) -> None:
    twenty = lanes(20)
    for round_ in range(50):
        code = issuer.coupon(jti=f"cpn-race-{round_}")
        replies = race(twenty, code, round_)
        winners = [r for r in replies if r.get("ok")]
        assert len(winners) == 1, (round_, replies)
        assert all(r["error"]["code"] == "coupon_reserved" for r in replies if not r["ok"])
        held = seeded.store.query("SELECT COUNT(*) AS n FROM reservations WHERE coupon_id = ? "
                                  "AND state = 'held'", (f"cpn-race-{round_}",))
        assert held[0]["n"] == 1


def test_coupon_with_three_uses_is_reserved_exactly_three_times_under_ten_lanes(
        seeded: EdgeService, lanes: Lanes, issuer: Issuer) -> None:
    ten = lanes(10)
    for round_ in range(10):
        code = issuer.coupon(jti=f"cpn-three-{round_}", max=3)
        replies = race(ten, code, round_)
        assert sum(1 for r in replies if r["ok"]) == 3, replies
    # And once redeemed, the three uses are spent for good.
    code = issuer.coupon(jti="cpn-three-spent", max=3)
    for i, lane in enumerate(ten[:3]):
        ok(lane.request("coupon.apply", {"txn": f"t-{i}", "code": code, "basket": BASKET}))
        ok(complete(lane, f"t-{i}", 887))
    message = refused(ten[3].request("coupon.apply", {"txn": "t-x", "code": code,
                                                      "basket": BASKET}), "coupon_used")
    assert "3 times" in message


# Holds of 1 s, marked lapsed by the edge's own scheduled sweep every second.
short_hold = pytest.mark.edge_settings(reservation_ttl_s=1, reservation_sweep_s=1)


def reservation_states(edge: EdgeService) -> list[str]:
    return [r["state"] for r in edge.store.query("SELECT state FROM reservations ORDER BY rowid")]


@short_hold
def test_abandoned_basket_hold_lapses_and_the_coupon_is_usable_again(
        edge: EdgeService, lanes: Lanes, issuer: Issuer) -> None:
    one, two = lanes(2)
    code = issuer.coupon(jti="cpn-abandoned")
    ok(one.request("coupon.apply", {"txn": "s-1", "code": code, "basket": BASKET}))
    refused(two.request("coupon.apply", {"txn": "s-2", "code": code, "basket": BASKET}),
            "coupon_reserved")
    # Nobody calls the sweep here: the edge's scheduled job marks the hold lapsed.
    job = edge.scheduler.get_job("reservation_sweep")
    assert job is not None and job.trigger.interval.total_seconds() == 1
    assert wait_until(lambda: reservation_states(edge) == ["expired"], timeout=10)
    ok(two.request("coupon.apply", {"txn": "s-2", "code": code, "basket": BASKET}))
    # The abandoned sale comes back and completes: its coupon is no longer its to redeem.
    late = ok(complete(one, "s-1", 887))
    assert late["redemptions"] == []
    assert [r["code"] for r in late["released"]] == ["coupon_reserved"]
    assert len(ok(complete(two, "s-2", 887))["redemptions"]) == 1


@short_hold
def test_lapsed_hold_still_redeems_when_nobody_took_the_coupon(
        edge: EdgeService, lanes: Lanes, issuer: Issuer) -> None:
    lane = lanes(1)[0]
    ok(lane.request("coupon.apply", {"txn": "s-1", "code": issuer.coupon(), "basket": BASKET}))
    assert wait_until(lambda: reservation_states(edge) == ["expired"], timeout=10)
    assert len(ok(complete(lane, "s-1", 887))["redemptions"]) == 1


# ---------------------------------------------------------------- bad input


def test_bad_checkout_requests_get_clear_errors_and_lanes_keep_working(
        seeded: EdgeService, lanes: Lanes, issuer: Issuer) -> None:
    lane, other = lanes(2)
    bad: list[tuple[str, dict[str, Any], str]] = [
        ("identify", {"txn": "s-1"}, "bad_request"),
        ("identify", {"txn": "s-1", "code": "x", "phone": "1"}, "bad_request"),
        ("identify", {"txn": "s-1", "phone": "12"}, "bad_request"),
        ("identify", {"txn": "s 1 with spaces", "code": "4000123412341234"}, "bad_request"),
        ("coupon.apply", {"txn": "s-1", "code": issuer.coupon()}, "bad_request"),
        ("coupon.apply", {"txn": "s-1", "code": issuer.coupon(),
                          "basket": {**BASKET, "total_minor": 5}}, "bad_request"),
        ("coupon.apply", {"txn": "s-1", "code": issuer.coupon(),
                          "basket": {**BASKET, "lines": [{"sku": "a", "qty": 1.5,
                                                          "unit_minor": 100}]}}, "bad_request"),
        ("coupon.apply", {"txn": "s-1", "code": "garbage!!", "basket": BASKET}, "coupon_forged"),
        ("coupon.apply", {"txn": "s-1", "code": issuer.coupon()[:-5], "basket": BASKET},
         "coupon_forged"),
        ("coupon.remove", {"txn": "s-1", "reservation": "nope"}, "txn_unknown"),
        ("txn.complete", {"txn": "s-1", "basket": BASKET, "total_minor": -1}, "bad_request"),
        ("txn.complete", {"txn": "s-1", "basket": BASKET, "total_minor": 1,
                          "tenders": [{"kind": "card", "amount_minor": "1"}]}, "bad_request"),
        ("txn.void", {}, "bad_request"),
    ]
    for method, data, code in bad:
        refused(lane.request(method, data), code)
    ok(other.request("coupon.apply", {"txn": "s-9", "code": issuer.coupon(), "basket": BASKET}))
    ok(lane.request("coupon.apply", {"txn": "s-2", "code": issuer.coupon(), "basket": BASKET}))


def test_kiosk_cannot_call_pos_methods(seeded: EdgeService, device: Callable[..., DeviceClient],
                                       issuer: Issuer) -> None:
    # The broker's ACL drops a kiosk's req/coupon.apply; the edge would refuse it as well.
    from edge.dispatch import Caller
    from store_contract.protocol import new_envelope

    envelope = new_envelope("coupon.apply", {"txn": "k-1", "code": issuer.coupon(),
                                             "basket": BASKET})
    reply = json.loads(seeded.dispatcher.handle_request(Caller("kiosk", "kiosk-1"),
                                                        "coupon.apply", envelope.to_json()).body)
    assert reply["error"]["code"] == "forbidden"
    assert seeded.store.query("SELECT * FROM reservations") == []


def test_a_lane_identifies_by_a_phone_number_scanned_or_typed_into_code(
        seeded: EdgeService, lanes: Lanes) -> None:
    """The lanes read `code` with the same rules as the checkout page (edge.codes)."""
    lane = lanes(1)[0]
    for i, code in enumerate(["+49 151 23456789", "0151 23456789", "4000-1234-1234-1234"]):
        who = ok(lane.request("identify", {"txn": f"p-{i}", "code": code}))
        assert who["customer"]["id"] == "c-1"
    row = seeded.store.query_one("SELECT identifier_kind FROM transactions WHERE txn = 'p-1'")
    assert row is not None and row["identifier_kind"] == "phone"
    message = refused(lane.request("identify", {"txn": "p-9", "code": "hello world"}),
                      "bad_request")
    assert message == "That is neither a member code, a loyalty-card number nor a phone number."


# ---------------------------------------------------------------- closed sales and wrong holds


def detail(reply: dict[str, Any]) -> dict[str, Any]:
    assert not reply["ok"], reply
    found: dict[str, Any] = reply["error"].get("detail") or {}
    return found


def identified(edge: EdgeService, txn: str) -> list[dict[str, Any]]:
    return [json.loads(r["data"]) for r in edge.store.query(
        "SELECT data FROM outbox WHERE type = 'customer.identified' ORDER BY seq")
        if json.loads(r["data"])["txn"] == txn]


def test_a_completed_sale_takes_no_coupon_but_still_a_shopper(
        seeded: EdgeService, lanes: Lanes, issuer: Issuer) -> None:
    lane = lanes(1)[0]
    ok(complete(lane, "s-1", 986))
    code = issuer.coupon()
    message = refused(lane.request("coupon.apply", {"txn": "s-1", "code": code,
                                                    "basket": BASKET}), "bad_request")
    assert message == "Sale s-1 is already completed; start a new sale."
    assert detail(lane.request("coupon.apply", {"txn": "s-1", "code": code, "basket": BASKET})
                  ) == {"reason": "txn_closed", "state": "completed"}
    assert seeded.store.query("SELECT * FROM reservations") == []
    # A shopper who shows their card after paying is linked to the sale (after_sale).
    who = ok(lane.request("identify", {"txn": "s-1", "code": "4000 1234 1234 1234"}))
    assert who["customer"]["id"] == "c-1"
    assert [(e["customer_id"], e["after_sale"]) for e in identified(seeded, "s-1")] == [
        ("c-1", True)]
    # The coupon refused on the closed sale was not taken: a new sale uses it.
    ok(lane.request("coupon.apply", {"txn": "s-2", "code": code, "basket": BASKET}))


def test_a_voided_sale_takes_neither_a_coupon_nor_a_shopper(
        seeded: EdgeService, lanes: Lanes, issuer: Issuer) -> None:
    lane = lanes(1)[0]
    ok(lane.request("coupon.apply", {"txn": "s-1", "code": issuer.coupon(), "basket": BASKET}))
    assert ok(lane.request("txn.void", {"txn": "s-1"}))["was"] == "open"
    refused(lane.request("coupon.apply", {"txn": "s-1", "code": issuer.coupon(),
                                          "basket": BASKET}), "bad_request")
    assert detail(lane.request("coupon.apply", {"txn": "s-1", "code": issuer.coupon(),
                                                "basket": BASKET})
                  ) == {"reason": "txn_closed", "state": "voided"}
    reply = lane.request("identify", {"txn": "s-1", "code": "4000 1234 1234 1234"})
    assert detail(reply) == {"reason": "txn_closed", "state": "voided"}
    row = seeded.store.query_one("SELECT state, customer_id FROM transactions WHERE txn = 's-1'")
    assert row is not None and (row["state"], row["customer_id"]) == ("voided", None)
    assert identified(seeded, "s-1") == []


def test_completing_a_voided_sale_is_refused_and_redeems_nothing(
        seeded: EdgeService, lanes: Lanes, issuer: Issuer) -> None:
    lane = lanes(1)[0]
    code = issuer.coupon()
    ok(lane.request("coupon.apply", {"txn": "s-1", "code": code, "basket": BASKET}))
    voided = ok(lane.request("txn.void", {"txn": "s-1"}))
    assert len(voided["released"]) == 1
    reply = complete(lane, "s-1", 887)
    assert refused(reply, "bad_request") == "Sale s-1 was voided and cannot be completed."
    assert detail(reply) == {"reason": "txn_closed", "state": "voided"}
    assert seeded.store.query("SELECT * FROM redemptions") == []
    assert seeded.store.query("SELECT * FROM outbox WHERE type IN ('coupon.redeemed', "
                              "'transaction.completed')") == []
    # The void gave the coupon back: another sale redeems it.
    ok(lane.request("coupon.apply", {"txn": "s-2", "code": code, "basket": BASKET}))
    assert len(ok(complete(lane, "s-2", 887))["redemptions"]) == 1


def test_removing_a_hold_the_sale_does_not_have_or_has_redeemed_is_refused(
        seeded: EdgeService, lanes: Lanes, issuer: Issuer) -> None:
    lane = lanes(1)[0]
    mine = ok(lane.request("coupon.apply", {"txn": "s-1", "code": issuer.coupon(),
                                            "basket": BASKET}))
    other = ok(lane.request("coupon.apply", {"txn": "s-2", "code": issuer.coupon(),
                                             "basket": BASKET}))
    for reservation in ["01890a5d-ac96-774b-bcce-b302099a8000", other["reservation"]]:
        reply = lane.request("coupon.remove", {"txn": "s-1", "reservation": reservation})
        assert refused(reply, "bad_request") == "This sale holds no such coupon."
        assert detail(reply) == {"reason": "reservation_unknown"}
    # Neither hold was touched by the refused removals.
    states = {r["id"]: r["state"] for r in seeded.store.query("SELECT id, state FROM reservations")}
    assert states == {mine["reservation"]: "held", other["reservation"]: "held"}
    done = ok(complete(lane, "s-1", 887))
    reply = lane.request("coupon.remove", {"txn": "s-1", "reservation": mine["reservation"]})
    assert refused(reply, "bad_request") == ("This coupon was redeemed when the sale completed; "
                                            "void the sale to give it back.")
    assert detail(reply) == {"reason": "redeemed"}
    redemption = done["redemptions"][0]["redemption"]
    row = seeded.store.query_one("SELECT reversed_at FROM redemptions WHERE id = ?",
                                 (redemption,))
    assert row is not None and row["reversed_at"] is None
    assert seeded.store.query_one("SELECT state FROM reservations WHERE id = ?",
                                  (mine["reservation"],)) == {"state": "redeemed"}


def test_a_coupon_scanned_as_a_member_code_is_refused_and_links_nobody(
        seeded: EdgeService, lanes: Lanes, issuer: Issuer) -> None:
    lane = lanes(1)[0]
    code = issuer.coupon()
    reply = lane.request("identify", {"txn": "s-1", "code": code})
    assert refused(reply, "bad_request") == \
        "This is a coupon, not a member code: scan it as a coupon."
    assert detail(reply)["reason"] == "coupon"
    assert identified(seeded, "s-1") == []
    row = seeded.store.query_one("SELECT customer_id FROM transactions WHERE txn = 's-1'")
    assert row is None or row["customer_id"] is None
    # The coupon itself is untouched: it applies as a coupon.
    ok(lane.request("coupon.apply", {"txn": "s-1", "code": code, "basket": BASKET}))


def test_unreadable_campaign_terms_refuse_the_code_and_the_lane_goes_on(
        seeded: EdgeService, lanes: Lanes, issuer: Issuer) -> None:
    lane = lanes(1)[0]
    # A campaign whose terms this edge cannot read (a discount kind it does not know),
    # written as a newer hub's feed might have left it.
    seeded.store.write(lambda db: db.conn.execute(
        "INSERT INTO campaigns (id, name, code, terms, updated_at) VALUES "
        "('cmp-odd', 'Odd', 'ODD10', ?, '2026-01-01T00:00:00Z')",
        (json.dumps({"disc": {"kind": "bogo", "value": 1}}),)))
    reply = lane.request("coupon.apply", {"txn": "s-1", "code": "odd10", "basket": BASKET})
    assert refused(reply, "coupon_unknown") == "This campaign's terms are not readable here."
    assert detail(reply)["reason"] == "campaign_terms"
    assert detail(reply)["problem"]
    # A signed coupon with terms it cannot read is refused the same way (reason claims).
    reply = lane.request("coupon.apply", {"txn": "s-1", "basket": BASKET, "code": issuer.coupon(
        disc={"kind": "bogo", "value": 1})})
    assert refused(reply, "coupon_unknown").startswith("This coupon's terms are not readable")
    assert detail(reply)["reason"] == "claims"
    assert seeded.store.query("SELECT * FROM reservations") == []
    ok(lane.request("coupon.apply", {"txn": "s-1", "code": issuer.coupon(), "basket": BASKET}))
