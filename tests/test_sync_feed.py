"""What the hub feeds the stores, and what only the hub can see, end to end with a real
`edge-hub serve` process and edges on their own data: customers, campaigns, keys and
revocations through the change feed; an erasure request; a single-use coupon redeemed
offline at two stores (one conflict on the dashboard); receipt coupons trusted chain-wide.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edge.app.service import EdgeService
from edge.coupons import CouponRefused
from edge.settings import Settings
from edge.transactions import CustomerUnknown, Tender
from store_contract.basket import parse_basket
from tests.conftest import wait_until
from tests.hubfix import HubServer, run_hub
from tests.test_sync import (
    Proxy,
    add_store,
    edge_for,
    hub_rows,
)

pytestmark = pytest.mark.process  # a hub process for every test

ANNA = {"id": "c-anna", "display_name": "Anna Berg", "tier": "gold", "points": 420,
        "region": "north",
        "card": "4000 1111 2222 3333", "phone": "+49 151 23456789",
        "consent": {"personalised": True, "marketing": False}}
CAMPAIGN = {"id": "cmp-5off", "name": "5 off", "description": "€5 off your shop",
            "disc": {"kind": "amount", "value_minor": 500, "currency": "EUR"},
            "min_minor": 1000}
BASKET = {"currency": "EUR", "lines": [{"sku": "cheese", "qty": 2, "unit_minor": 899,
                                        "categories": ["dairy"]}]}


@pytest.fixture
def edges(settings: Settings, hub: HubServer, tmp_path: Path) -> Iterator[Any]:
    """Factory: an edge of `store_id` registered at the hub (scheduler not started: the
    tests run the sender and the puller when the story needs them)."""
    made: list[EdgeService] = []

    def _edge(store_id: str, region: str = "north", name: str | None = None) -> EdgeService:
        token = add_store(hub.settings, store_id, region, name)
        svc = EdgeService(edge_for(settings, hub.url, token, store_id=store_id,
                                   data_dir=str(tmp_path / store_id), trusted_keys=""))
        made.append(svc)
        return svc

    yield _edge
    for svc in made:
        svc.stop()


def hub_cli(hub: HubServer, *args: str, stdin: str | None = None) -> Any:
    done = run_hub(hub.settings, *args, input=stdin)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


def import_jsonl(hub: HubServer, tmp_path: Path, kind: str, *records: dict[str, Any]) -> None:
    path = tmp_path / f"{kind}-{time.monotonic_ns()}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = hub_cli(hub, kind, "import", str(path))
    assert report["imported"] == len(records), report


def sell(svc: EdgeService, txn: str, *, card: str | None = None, coupon: str | None = None,
         lane: str = "lane-1") -> dict[str, Any]:
    basket = parse_basket(BASKET, "EUR")
    if card is not None:
        svc.checkout.identify(lane, txn, card, None)
    if coupon is not None:
        svc.checkout.apply(lane, txn, coupon, basket)
    return svc.checkout.complete(lane, txn, basket, [Tender("card", 1298)], 1298)


def test_the_store_learns_customers_campaigns_keys_and_revocations_from_the_hub(
        hub: HubServer, edges: Any, tmp_path: Path) -> None:
    import_jsonl(hub, tmp_path, "customers", ANNA)
    import_jsonl(hub, tmp_path, "campaigns", CAMPAIGN)
    coupon = hub_cli(hub, "coupons", "issue", "--campaign", "cmp-5off", "--customer", "c-anna")
    svc = edges("store-a")
    with pytest.raises(CouponRefused) as before:  # nothing from the hub yet
        svc.coupons.read(coupon["token"])
    assert before.value.code == "coupon_forged"

    svc.puller.run()
    assert svc.puller.last_error is None
    cursor = svc.puller.cursor
    # The cursor is the end of the store's feed: read from there, the hub has nothing more.
    end = requests.get(f"{hub.url}/api/v1/stores/store-a/changes", params={"cursor": cursor},
                       headers={"Authorization": f"Bearer {svc.settings.hub_token}"},
                       timeout=10).json()
    assert end == {"cursor": cursor, "changes": [], "more": False}
    # The customer, found by the card number the cashier types (kept only as a hash).
    found = svc.checkout.identify("lane-1", "t-1", "4000111122223333", None)
    assert found["customer"]["display_name"] == "Anna Berg"
    row = svc.store.query_one("SELECT * FROM customer_lookup WHERE customer_id = 'c-anna' "
                              "AND kind = 'card'")
    assert row is not None and "4000" not in row["hash"]
    # The hub's key and the campaign: the hub's coupon now takes €5 off.
    applied = svc.checkout.apply("lane-1", "t-1", coupon["token"], parse_basket(BASKET, "EUR"))
    assert applied["discount_minor"] == 500 and applied["campaign"] == "cmp-5off"
    # Nothing new: the cursor stays, nothing is applied twice.
    svc.puller.run()
    assert svc.puller.cursor == cursor

    hub_cli(hub, "coupons", "revoke", coupon["coupon"], "--reason", "reported stolen")
    svc.puller.run()
    with pytest.raises(CouponRefused) as refused:
        svc.checkout.apply("lane-2", "t-2", coupon["token"], parse_basket(BASKET, "EUR"))
    assert refused.value.code == "coupon_revoked"


def test_an_erasure_request_removes_the_person_from_the_edge_and_its_unsent_events(
        hub: HubServer, edges: Any, tmp_path: Path) -> None:
    import_jsonl(hub, tmp_path, "customers", ANNA)
    svc = edges("store-a")
    svc.puller.run()
    sell(svc, "t-1", card="4000111122223333")
    queued = svc.store.query("SELECT type, data FROM outbox")
    assert any("c-anna" in e["data"] for e in queued)
    job = svc.store.query_one("SELECT document FROM print_jobs WHERE customer_id = 'c-anna'")
    assert job is not None and "Anna Berg" in job["document"]

    hub_cli(hub, "customers", "erase", "c-anna")
    svc.puller.run()
    assert svc.puller.last_error is None
    store = svc.store
    assert store.query_one("SELECT 1 FROM customers WHERE id = 'c-anna'") is None
    assert store.query("SELECT * FROM customer_lookup") == []
    assert store.query("SELECT * FROM wallet WHERE customer_id = 'c-anna'") == []
    for table in ("transactions", "print_jobs", "redemptions", "issued_coupons"):
        assert store.query(f"SELECT 1 FROM {table} WHERE customer_id = 'c-anna'") == []
    docs = [r["document"] for r in store.query("SELECT document FROM print_jobs")]
    assert docs and not any("Anna" in d for d in docs)
    left = store.query("SELECT type, data FROM outbox")
    assert not any("c-anna" in e["data"] or "Anna" in e["data"] for e in left)
    assert "customer.identified" not in {e["type"] for e in left}
    assert "transaction.completed" in {e["type"] for e in left}  # the sale still counts
    # What reaches the hub afterwards knows the sale, not the person.
    svc.sender.run()
    at_hub = hub_rows(hub.settings, "store-a")
    assert at_hub and not any("c-anna" in json.dumps(d) for d in at_hub.values())
    # Identifying by the old card now finds nobody.
    with pytest.raises(CustomerUnknown):
        svc.checkout.identify("lane-1", "t-9", "4000111122223333", None)


def _manager_session(hub: HubServer, region: str = "north") -> requests.Session:
    hub_cli(hub, "managers", "add", f"mgr-{region}", "--region", region, "--password-stdin",
            stdin="a-long-password\n")
    session = requests.Session()
    page = session.get(f"{hub.url}/login", timeout=10)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
    assert token, page.text[:500]
    resp = session.post(f"{hub.url}/login", data={
        "csrf_token": token.group(1), "username": f"mgr-{region}",
        "password": "a-long-password"}, timeout=10)
    assert resp.status_code == 200 and "/login" not in resp.url
    return session


def test_a_single_use_coupon_redeemed_offline_at_two_stores_is_one_conflict(
        hub: HubServer, edges: Any, tmp_path: Path) -> None:
    import_jsonl(hub, tmp_path, "campaigns", CAMPAIGN)
    coupon = hub_cli(hub, "coupons", "issue", "--campaign", "cmp-5off", "--max", "1")
    store_a, store_b = edges("store-a"), edges("store-b", name="Harbour Street")
    for svc in (store_a, store_b):  # A publishes its key first, so B trusts it
        svc.puller.run()
    # A flyer coupon the hub issued for 100 uses: the hub's own record of it tells the hub
    # that two stores using it is no double spend.
    flyer = hub_cli(hub, "coupons", "issue", "--campaign", "cmp-5off", "--max", "100")["token"]
    # Neither store hears of the other meanwhile (the internet is down): both accept it.
    assert sell(store_a, "t-a", coupon=coupon["token"])["redemptions"]
    assert sell(store_b, "t-b", coupon=coupon["token"])["redemptions"]
    # A coupon meant for many uses, used at both: no conflict.
    assert sell(store_a, "t-a3", coupon=flyer)["redemptions"]
    assert sell(store_b, "t-b3", coupon=flyer)["redemptions"]
    for svc in (store_a, store_b):
        svc.sender.run()
        assert svc.health()[1]["queue"]["depth"] == 0

    session = _manager_session(hub)
    board = session.get(f"{hub.url}/dashboard.json", timeout=10).json()
    conflicts = board["conflicts"]
    assert len(conflicts) == 1, conflicts
    assert conflicts[0]["coupon_id"] == coupon["coupon"]
    assert sorted(conflicts[0]["stores"]) == ["store-a", "store-b"]
    assert conflicts[0]["uses"] == 2 and conflicts[0]["max_uses"] == 1

    # Back online, each store learns of the other's use: a third try is refused, with where.
    store_a.puller.run()
    with pytest.raises(CouponRefused) as third:
        store_a.checkout.apply("lane-2", "t-a2", coupon["token"], parse_basket(BASKET, "EUR"))
    assert third.value.code == "coupon_used"
    assert third.value.message.startswith("Coupon already used at Harbour Street on ")


def test_a_receipt_coupon_printed_at_one_store_is_genuine_at_another(
        hub: HubServer, edges: Any, tmp_path: Path) -> None:
    import_jsonl(hub, tmp_path, "campaigns", {**CAMPAIGN, "offer": True})
    store_a, store_b = edges("store-a"), edges("store-b")
    store_a.puller.run()  # publishes store A's public key to the hub
    jwks = requests.get(f"{hub.url}/.well-known/jwks.json", timeout=10).json()
    assert store_a.signing_key.kid in {k["kid"] for k in jwks["keys"]}
    assert all("d" not in k for k in jwks["keys"])  # public keys only
    now = int(time.time())
    token = store_a.signing_key.sign({"jti": "rc:store-a:1", "cmp": "cmp-5off",
                                      "nbf": now - 60, "exp": now + 86400}, "coupon+jwt")
    store_b.puller.run()
    coupon = store_b.coupons.read(token)
    assert (coupon.campaign, coupon.max_uses, coupon.min_minor) == ("cmp-5off", 1, 1000)
    assert coupon.discount.amount_minor == 500


# ---------------------------------------------------------------- what the puller does not take


@pytest.fixture
def proxied(settings: Settings, hub: HubServer, tmp_path: Path) -> Iterator[tuple[Proxy, Any]]:
    """An edge of store-a whose hub is reached through a proxy that can answer for it."""
    token = add_store(hub.settings, "store-a")
    proxy = Proxy(hub.url)
    svc = EdgeService(edge_for(settings, proxy.url, token, store_id="store-a",
                               data_dir=str(tmp_path / "store-a"), trusted_keys=""))
    yield proxy, svc
    svc.stop()
    proxy.close()


def _campaign_ids(svc: EdgeService) -> list[str]:
    return [r["id"] for r in svc.store.query("SELECT id FROM campaigns ORDER BY id")]


def test_a_feed_answer_other_than_200_moves_nothing_and_is_read_again(
        hub: HubServer, proxied: tuple[Proxy, Any], tmp_path: Path) -> None:
    proxy, svc = proxied
    import_jsonl(hub, tmp_path, "campaigns", CAMPAIGN)
    reads = 0
    for status in (500, 503, 401, 403, 404):
        proxy.canned_changes = [(status, {})]
        assert wait_until(lambda: svc.puller.backoff.remaining() == 0, 10)
        svc.puller.run()
        reads += 1
        assert svc.puller.last_error == \
            f"reading the change feed: the hub answered {status}", status
        assert svc.puller.cursor == "" and _campaign_ids(svc) == [], status
        assert svc.puller.backoff.remaining() > 0, status  # it waits before reading again
    assert len([e for e in proxy.log if "/changes" in e["path"]]) == reads
    assert svc.puller.last_success is None
    assert wait_until(lambda: svc.puller.backoff.remaining() == 0, 10)
    svc.puller.run()
    assert svc.puller.last_success is not None and svc.puller.backoff.remaining() == 0
    assert _campaign_ids(svc) == ["cmp-5off"] and svc.puller.cursor


def test_an_unusable_feed_page_moves_nothing_and_a_malformed_change_is_skipped(
        hub: HubServer, proxied: tuple[Proxy, Any], tmp_path: Path) -> None:
    proxy, svc = proxied
    json_type = {"Content-Type": "application/json"}
    good = {"seq": 3, "kind": "campaign", "campaign": {**CAMPAIGN, "id": "cmp-ok"}}
    # Pages that cannot be read at all: nothing applied, the cursor stays.
    for body in [b"not json", b"[]", b'{"changes": [], "more": false}',
                 json.dumps({"cursor": "3", "changes": {"0": good}}).encode()]:
        proxy.canned_changes = [(200, json_type, body)]
        assert wait_until(lambda: svc.puller.backoff.remaining() == 0, 10)
        svc.puller.run()
        assert (svc.puller.last_error or "").startswith(
            "the change feed's answer is not usable"), body
        assert svc.puller.cursor == "" and _campaign_ids(svc) == [], body
    # A page whose records are not all changes: those are skipped, the rest applied.
    page = {"cursor": "3", "more": False,
            "changes": ["not an object", None, 42, [good], good]}
    proxy.canned_changes = [(200, json_type, json.dumps(page).encode())]
    assert svc.puller.last_success is None
    assert wait_until(lambda: svc.puller.backoff.remaining() == 0, 10)
    svc.puller.run()
    assert svc.puller.last_success is not None and svc.puller.backoff.remaining() == 0
    assert svc.puller.cursor == "3" and _campaign_ids(svc) == ["cmp-ok"]
    assert svc.puller.skipped == 4
    assert [s["kind"] for s in svc.puller.recent_skips()] == ["malformed"] * 4
