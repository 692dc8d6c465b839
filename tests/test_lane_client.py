"""The POS lane client: baskets, retries under one request id, refusals, the HTTP transport.

These tests need no edge. `ScriptedTransport` stands in for the network (it is where
timeouts happen); the HTTP tests use a real HTTP server on a free port.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from pos_bridge.lane import (
    EdgeUnreachable,
    HttpTransport,
    Lane,
    NotAllowed,
    Refused,
    basket,
    new_txn_id,
    tender,
)
from pos_bridge.simulator import member_code, scripted_checkout
from store_contract.protocol import is_uuid, parse_envelope, reply_error, reply_ok

Outcome = dict[str, Any] | BaseException


class ScriptedTransport:
    """Answers each send with the next scripted outcome (a reply, or an exception to raise)."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[tuple[str, dict[str, Any], str]] = []

    def send(self, method: str, data: dict[str, Any], request_id: str,
             timeout: float) -> dict[str, Any]:
        self.sent.append((method, json.loads(json.dumps(data)), request_id))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


EGGS = {"sku": "5000112", "qty": 2, "unit_minor": 389, "categories": ["eggs"]}
MILK = {"sku": "5000169", "unit_minor": 149}


def test_basket_total_is_the_sum_of_qty_times_unit_price() -> None:
    b = basket([EGGS, MILK], "EUR")
    assert b["total_minor"] == 2 * 389 + 149
    assert b["currency"] == "EUR"
    assert b["lines"][1] == {"sku": "5000169", "qty": 1, "unit_minor": 149, "categories": []}


def test_empty_basket_totals_zero() -> None:
    assert basket([], "EUR") == {"currency": "EUR", "lines": [], "total_minor": 0}


@pytest.mark.parametrize("bad", [{"unit_minor": 2.49}, {"unit_minor": True}, {"qty": 0},
                                 {"qty": 1.5}, {"unit_minor": -1}, {"sku": ""}])
def test_basket_rejects_prices_and_quantities_that_are_not_whole_minor_units(
        bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        basket([{**EGGS, **bad}], "EUR")


def test_txn_ids_are_uuids_and_unique() -> None:
    ids = {new_txn_id() for _ in range(100)}
    assert len(ids) == 100 and all(is_uuid(i) for i in ids)


def test_retry_after_timeouts_resends_the_same_request_id_and_data() -> None:
    ok = reply_ok(None, {"coupon": "c1", "discount_minor": 78, "reservation": "r1"})
    transport = ScriptedTransport(TimeoutError("no reply"), TimeoutError("no reply"), ok)
    lane = Lane(transport, backoff=0)
    items = basket([EGGS], "EUR")

    data = lane.apply_coupon("t1", "SAVE10", items)

    assert data["reservation"] == "r1"
    assert len(transport.sent) == 3
    assert len({request_id for _, _, request_id in transport.sent}) == 1
    assert all(sent == transport.sent[0] for sent in transport.sent)
    assert transport.sent[0][:2] == ("coupon.apply", {"txn": "t1", "code": "SAVE10",
                                                      "basket": items})


def test_dropped_connection_is_retried_like_a_timeout() -> None:
    transport = ScriptedTransport(ConnectionError("reset"), reply_ok(None, {}))
    assert Lane(transport, backoff=0).void("t1") == {}
    assert transport.sent[0][2] == transport.sent[1][2]


def test_each_call_gets_its_own_request_id() -> None:
    transport = ScriptedTransport(reply_ok(None, {}), reply_ok(None, {}))
    lane = Lane(transport, backoff=0)
    lane.void("t1")
    lane.void("t1")
    assert transport.sent[0][2] != transport.sent[1][2]


def test_refusal_raises_refused_with_the_cashier_sentence_and_is_not_retried() -> None:
    refusal = reply_error(None, {"code": "coupon_min_spend",
                                 "message": "Spend €3.20 more to use this coupon",
                                 "detail": {"missing_minor": 320}})
    transport = ScriptedTransport(refusal, reply_ok(None, {}))
    lane = Lane(transport, backoff=0)

    with pytest.raises(Refused) as caught:
        lane.apply_coupon("t1", "SAVE10", basket([MILK], "EUR"))

    assert caught.value.code == "coupon_min_spend"
    assert caught.value.message == "Spend €3.20 more to use this coupon"
    assert caught.value.detail == {"missing_minor": 320}
    assert len(transport.sent) == 1


def test_no_answer_after_every_retry_raises_edge_unreachable() -> None:
    transport = ScriptedTransport(*[TimeoutError("no reply")] * 3)
    with pytest.raises(EdgeUnreachable) as caught:
        Lane(transport, retries=2, backoff=0).identify("t1", phone="+353861234567")
    assert caught.value.attempts == 3
    assert len(transport.sent) == 3


def test_identify_takes_exactly_one_of_code_or_phone() -> None:
    lane = Lane(ScriptedTransport())
    with pytest.raises(ValueError):
        lane.identify("t1")
    with pytest.raises(ValueError):
        lane.identify("t1", code="123", phone="+353861234567")


def test_complete_defaults_total_to_the_tenders_and_currency_to_the_basket() -> None:
    transport = ScriptedTransport(reply_ok(None, {"redemptions": [], "receipt": {"job": "j"}}))
    items = basket([EGGS], "EUR")
    Lane(transport).complete("t1", items, [tender("card", 700), tender("cash", 50)])
    _, data, _ = transport.sent[0]
    assert data["total_minor"] == 750
    assert data["currency"] == "EUR"
    assert data["tenders"] == [{"kind": "card", "amount_minor": 700},
                               {"kind": "cash", "amount_minor": 50}]


# ---------------------------------------------------------------- HTTP transport


class FakeEdge(BaseHTTPRequestHandler):
    """Answers with the server's queued (status, body) pairs and records each request."""

    def do_POST(self) -> None:
        server: Any = self.server
        length = int(self.headers["Content-Length"])
        server.seen.append((self.path, self.headers.get("Authorization"),
                            json.loads(self.rfile.read(length))))
        status, body = server.answers.pop(0)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def http_edge() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), FakeEdge)
    server.seen, server.answers = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def http_lane(server: Any) -> tuple[Lane, HttpTransport]:
    transport = HttpTransport(f"http://127.0.0.1:{server.server_port}/", "lane-1", "s3cret")
    return Lane(transport, backoff=0), transport


def test_http_posts_the_envelope_with_the_device_password_as_bearer_token(http_edge: Any) -> None:
    http_edge.answers.append((200, reply_ok(None, {"customer": {"id": "c1"}, "wallet": []})))
    lane, transport = http_lane(http_edge)
    try:
        data = lane.identify("t1", code="4000123")
    finally:
        transport.close()
    assert data["customer"]["id"] == "c1"
    path, auth, body = http_edge.seen[0]
    assert path == "/api/v1/pos/lane-1/identify"
    assert auth == "Bearer s3cret"
    envelope = parse_envelope(body, expected_type="identify")
    assert envelope.data == {"txn": "t1", "code": "4000123"}


def test_http_busy_edge_is_retried_with_the_same_request_id(http_edge: Any) -> None:
    busy = {"error": {"code": "unavailable", "message": "busy"}}
    http_edge.answers += [(503, busy), (200, reply_ok(None, {"receipt": {"job": "j1"}}))]
    lane, transport = http_lane(http_edge)
    try:
        assert lane.void("t1") == {"receipt": {"job": "j1"}}
    finally:
        transport.close()
    assert http_edge.seen[0][2]["id"] == http_edge.seen[1][2]["id"]


def test_http_error_envelope_is_a_refusal(http_edge: Any) -> None:
    http_edge.answers.append((200, reply_error(None, {"code": "coupon_used",
                                                      "message": "Coupon already used"})))
    lane, transport = http_lane(http_edge)
    try:
        with pytest.raises(Refused) as caught:
            lane.apply_coupon("t1", "X", basket([MILK], "EUR"))
    finally:
        transport.close()
    assert caught.value.code == "coupon_used"


def test_http_wrong_password_is_not_allowed_and_not_retried(http_edge: Any) -> None:
    http_edge.answers.append((401, {"error": {"code": "unauthorized", "message": "Sign in."}}))
    lane, transport = http_lane(http_edge)
    try:
        with pytest.raises(NotAllowed) as caught:
            lane.void("t1")
    finally:
        transport.close()
    assert (caught.value.code, caught.value.status) == ("unauthorized", 401)
    assert len(http_edge.seen) == 1


def test_http_nobody_listening_is_edge_unreachable() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEdge)
    port = server.server_port
    server.server_close()
    transport = HttpTransport(f"http://127.0.0.1:{port}", "lane-1", "s3cret")
    try:
        with pytest.raises(EdgeUnreachable):
            Lane(transport, retries=1, backoff=0, timeout=1).void("t1")
    finally:
        transport.close()


# ---------------------------------------------------------------- simulator


def test_member_code_is_a_member_jwt_signed_with_the_shoppers_key() -> None:
    private = Ed25519PrivateKey.generate()
    jwk = json.loads(OKPAlgorithm.to_jwk(private))
    code = member_code(jwk, "cust-1", kid="k1")
    header = jwt.get_unverified_header(code)
    assert header == {"alg": "EdDSA", "typ": "member+jwt", "kid": "k1"}
    claims = jwt.decode(code, private.public_key(), algorithms=["EdDSA"])
    assert claims["sub"] == "cust-1"
    assert claims["exp"] - claims["iat"] == 120
    assert is_uuid(claims["jti"])


def test_scripted_checkout_pays_the_basket_less_the_coupon_by_card() -> None:
    class Edge:
        def __init__(self) -> None:
            self.complete: dict[str, Any] = {}

        def send(self, method: str, data: dict[str, Any], request_id: str,
                 timeout: float) -> dict[str, Any]:
            if method == "identify":
                return reply_ok(request_id, {
                    "customer": {"id": "c1", "display_name": "Aoife", "tier": "gold"},
                    "wallet": [{"code": "W1", "description": "10% off"}], "offers": []})
            if method == "coupon.apply":
                if data["code"] == "W1":
                    return reply_ok(request_id, {"discount_minor": 50, "reservation": "r1",
                                                 "description": "10% off"})
                return reply_error(request_id, {"code": "coupon_not_stackable",
                                                "message": "Only one coupon per sale"})
            self.complete = data
            return reply_ok(request_id, {"redemptions": [{}], "receipt": {"job": "j1"}})

    edge = Edge()
    # Retry seeds until the script identifies the shopper and pays (not the 5 % walk-out).
    for seed in range(50):
        line = scripted_checkout("lane-1", Lane(edge), random.Random(seed), [{"card": "4000"}],
                                 ["SAVE10"])
        if "Aoife" in line and "-€0.50" in line and "paid" in line:
            break
    else:
        pytest.fail("no seed produced an identified, discounted, paid checkout")
    total = edge.complete["basket"]["total_minor"]
    assert edge.complete["total_minor"] == total - 50
    assert edge.complete["tenders"] == [{"kind": "card", "amount_minor": total - 50}]
    assert "lane lane-1: Aoife (gold)" in line
