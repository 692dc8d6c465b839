"""A shopper's own changes made at a store's kiosk reach the CRM: `offer.clipped` puts the
coupon in the customer's wallet at the hub and `consent.changed` their consent, and the
changed record goes to every store of their region (docs/sync.md §1.1).

Played against a real `edge-hub serve` with edges syncing to it; the rogue side is a
genuine store's token and key with plain `requests`, as a stolen store box would give.
"""

# ruff: noqa: F811 (pytest fixtures imported from other test modules are requested by name)
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from edge.app.kiosk import EdgeKioskBackend
from edge.app.service import EdgeService
from kiosk_ui.model import KioskInfo
from store_contract.protocol import format_ts, uuid7
from tests.hubfix import HubServer, event
from tests.test_sync_feed import (
    edges,  # noqa: F401 - a fixture
    hub_cli,
    import_jsonl,
)

pytestmark = pytest.mark.process  # a hub process for every test

OFFER = {"id": "cmp-offer", "name": "Coffee offer", "description": "10% off coffee",
         "disc": {"kind": "percent", "value": 10}, "offer": True}
PLAIN = {"id": "cmp-plain", "name": "5 off", "description": "€5 off your shop",
         "disc": {"kind": "amount", "value_minor": 500, "currency": "EUR"}}
ANNA = {"id": "c-anna", "display_name": "Anna Berg", "tier": "gold", "points": 420,
        "region": "north", "card": "4000 1111 2222 3333",
        "consent": {"personalised": True, "marketing": False}}
BEN = {"id": "c-ben", "display_name": "Ben Kurz", "region": "north", "card": "4000 2222 3333 4444",
       "consent": {"personalised": True}}
SARA = {"id": "c-sara", "display_name": "Sara Lind", "region": "south",
        "card": "4000 3333 4444 5555", "consent": {"personalised": True}}
KIOSK = KioskInfo("k1", "North Street", ("en",), None)


def record(hub: HubServer, customer_id: str) -> dict[str, Any]:
    """The customer's record as the hub keeps it (its database, read from outside)."""
    engine = create_engine(hub.settings.db_url)
    try:
        with engine.connect() as conn:
            raw = conn.execute(text("SELECT record FROM customers WHERE id = :id"),
                               {"id": customer_id}).scalar()
    finally:
        engine.dispose()
    assert raw is not None, customer_id
    loaded: dict[str, Any] = json.loads(raw)
    return loaded


def wallet_coupons(rec: dict[str, Any]) -> list[str]:
    import jwt

    return [jwt.decode(t, options={"verify_signature": False})["jti"]
            for t in rec.get("wallet", [])]


def post(svc: EdgeService, hub: HubServer, *events: dict[str, Any]) -> None:
    """Events posted with the store's own token, as its box (or its thief) would."""
    resp = requests.post(f"{hub.url}/api/v1/stores/{svc.settings.store_id}/events",
                         json={"batch_id": uuid7(), "events": list(events)},
                         headers={"Authorization": f"Bearer {svc.settings.hub_token}"},
                         timeout=10)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["accepted"]) == len(events), resp.text  # filed, every one


@pytest.fixture
def north(hub: HubServer, edges: Any, tmp_path: Path) -> tuple[EdgeService, EdgeService]:
    """Two stores of the north (Anna's and Ben's region), keys published, feed read; Sara
    lives in the south."""
    import_jsonl(hub, tmp_path, "campaigns", OFFER, PLAIN)
    import_jsonl(hub, tmp_path, "customers", ANNA, BEN, SARA)
    one, two = edges("store-n1", "north"), edges("store-n2", "north")
    for svc in (one, two):
        svc.puller.run()
    return one, two


def clip_event(svc: EdgeService, customer: str, campaign: str = "cmp-offer", *,
               coupon: str | None = None, sub: str | None = None, exp: int | None = None,
               token: bool = True) -> dict[str, Any]:
    """An offer.clipped as the kiosk writes it, its coupon signed with the store's key."""
    now = int(time.time())
    coupon = coupon or f"rc:{svc.settings.store_id}:{uuid7()}"
    data: dict[str, Any] = {"customer_id": customer, "campaign": campaign, "coupon": coupon,
                            "kiosk": "k1"}
    if token:
        data["token"] = svc.signing_key.sign(
            {"jti": coupon, "cmp": campaign, "sub": sub or customer, "iat": now,
             "nbf": now, "exp": exp or now + 86400}, "coupon+jwt")
    return event(svc.settings.store_id, "offer.clipped", data=data)


def consent_event(store_id: str, customer: str, consent: dict[str, bool],
                  proof: str | None = None, at: float | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"customer_id": customer, "consent": consent, "via": "kiosk"}
    if proof is not None:
        data["proof"] = proof
    fields: dict[str, Any] = {"data": data}
    if at is not None:
        from datetime import UTC, datetime

        fields["occurred_at"] = format_ts(datetime.fromtimestamp(at, UTC))
    return event(store_id, "consent.changed", **fields)


# ---------------------------------------------------------------- clipped offers


def test_a_coupon_clipped_at_a_kiosk_is_in_the_wallet_at_the_hub_and_the_regions_stores(
        hub: HubServer, edges: Any, north: tuple[EdgeService, EdgeService]) -> None:
    one, two = north
    south = edges("store-s", "south")
    south.puller.run()
    kiosk = EdgeKioskBackend(one, lambda: None)
    coupon = kiosk.clip(KIOSK, "c-anna", "cmp-offer")
    assert kiosk.clip(KIOSK, "c-anna", "cmp-offer") == coupon  # a double tap
    one.sender.run()
    assert wallet_coupons(record(hub, "c-anna")) == [coupon]
    # The other store of her region hears of it with her record: its till shows it.
    two.puller.run()
    assert [c["coupon"] for c in two.checkout.wallet("c-anna", time.time())] == [coupon]
    # A store of another region is not sent her record for it.
    south.puller.run()
    assert south.store.query_one("SELECT 1 FROM customers WHERE id = 'c-anna'") is None
    # The store that clipped it still holds it after its own pull (hub and edge agree).
    one.puller.run()
    assert [c["coupon"] for c in one.checkout.wallet("c-anna", time.time())] == [coupon]


@pytest.mark.parametrize("case", [
    "another_region", "other_stores_coupon_id", "not_an_offer", "someone_elses_coupon",
    "expired", "no_token", "signed_by_another_store"])
def test_a_stolen_store_box_cannot_fill_wallets(
        hub: HubServer, north: tuple[EdgeService, EdgeService], case: str) -> None:
    one, two = north
    bad = {
        "another_region": lambda: clip_event(one, "c-sara"),
        "other_stores_coupon_id": lambda: clip_event(
            one, "c-anna", coupon=f"rc:store-n2:{uuid7()}"),
        "not_an_offer": lambda: clip_event(one, "c-anna", "cmp-plain"),
        "someone_elses_coupon": lambda: clip_event(one, "c-anna", sub="c-ben"),
        "expired": lambda: clip_event(one, "c-anna", exp=int(time.time()) - 10),
        "no_token": lambda: clip_event(one, "c-anna", token=False),
        # Store n2's genuine coupon for Anna, sent by store n1.
        "signed_by_another_store": lambda: {**clip_event(two, "c-anna"),
                                            "store_id": "store-n1"},
    }[case]()
    customer = bad["data"]["customer_id"]
    before = record(hub, customer)
    post(one, hub, bad)
    assert record(hub, customer) == before
    # The same store's genuine clip is taken: the refusal above was the case's.
    good = clip_event(one, "c-anna")
    post(one, hub, good)
    assert good["data"]["coupon"] in wallet_coupons(record(hub, "c-anna"))


def test_a_wallet_drops_expired_coupons_and_keeps_each_coupon_once(
        hub: HubServer, north: tuple[EdgeService, EdgeService]) -> None:
    one, _ = north
    soon = clip_event(one, "c-anna", exp=int(time.time()) + 2)
    post(one, hub, soon)
    assert wallet_coupons(record(hub, "c-anna")) == [soon["data"]["coupon"]]
    time.sleep(2.5)
    later = clip_event(one, "c-anna")
    post(one, hub, later, {**later, "event_id": uuid7()})  # the same coupon twice
    assert wallet_coupons(record(hub, "c-anna")) == [later["data"]["coupon"]]


# ---------------------------------------------------------------- consent


def test_a_no_is_taken_from_any_store_a_yes_only_with_the_shoppers_app_code(
        hub: HubServer, north: tuple[EdgeService, EdgeService]) -> None:
    one, two = north
    # A "yes" to marketing with no proof, with a "no" to personalised in the same change.
    post(one, hub, consent_event("store-n1", "c-anna",
                                 {"personalised": False, "marketing": True}))
    assert record(hub, "c-anna")["consent"] == {"personalised": False, "marketing": False}
    # Proof that is not hers, or not from the app: still no.
    bens = hub_cli(hub, "members", "issue", "c-ben")["token"]
    now = int(time.time())
    stores_own = one.signing_key.sign({"sub": "c-anna", "iat": now, "exp": now + 120},
                                      "member+jwt")
    for proof in (bens, stores_own, "not-a-token"):
        post(one, hub, consent_event("store-n1", "c-anna", {"marketing": True}, proof))
        assert record(hub, "c-anna")["consent"]["marketing"] is False
    # Her own app code, as the kiosk sends it when she identified with it.
    annas = hub_cli(hub, "members", "issue", "c-anna")["token"]
    post(one, hub, consent_event("store-n1", "c-anna", {"marketing": True}, annas))
    assert record(hub, "c-anna")["consent"] == {"personalised": False, "marketing": True}
    # The region's other store takes her record with it.
    two.puller.run()
    row = two.store.query_one("SELECT consent FROM customers WHERE id = 'c-anna'")
    assert row is not None and json.loads(row["consent"]) == {"personalised": False,
                                                              "marketing": True}


def test_an_old_change_arriving_late_does_not_undo_a_newer_one(
        hub: HubServer, north: tuple[EdgeService, EdgeService]) -> None:
    one, two = north
    now = time.time()
    post(two, hub, consent_event("store-n2", "c-anna", {"personalised": False}, at=now))
    # Store n1 was offline for an hour with an older "no" to marketing... and a "yes" to
    # personalised from before the newer "no".
    annas = hub_cli(hub, "members", "issue", "c-anna")["token"]
    post(one, hub, consent_event("store-n1", "c-anna", {"personalised": True}, annas,
                                 at=now - 60))
    assert record(hub, "c-anna")["consent"]["personalised"] is False


def test_consent_of_a_shopper_of_another_region_is_not_touched(
        hub: HubServer, north: tuple[EdgeService, EdgeService]) -> None:
    one, _ = north
    before = record(hub, "c-sara")
    post(one, hub, consent_event("store-n1", "c-sara", {"personalised": False}))
    assert record(hub, "c-sara") == before


def test_a_bad_consent_event_is_refused_with_its_field(
        hub: HubServer, north: tuple[EdgeService, EdgeService]) -> None:
    one, _ = north
    for data, field in (({"customer_id": "c-anna", "consent": {"spam": True}}, "consent"),
                        ({"customer_id": "c-anna", "consent": {"marketing": "yes"}},
                         "consent"),
                        ({"consent": {"marketing": False}}, "customer_id"),
                        ({"customer_id": "c-anna", "consent": {"marketing": True},
                          "proof": 7}, "proof")):
        resp = requests.post(
            f"{hub.url}/api/v1/stores/store-n1/events",
            json={"batch_id": uuid7(), "events": [event("store-n1", "consent.changed",
                                                        data=data)]},
            headers={"Authorization": f"Bearer {one.settings.hub_token}"}, timeout=10)
        assert resp.status_code == 400, resp.text  # nothing of the batch is stored
        [rejected] = resp.json()["error"]["detail"]["rejected"]
        assert rejected["error"].startswith(f"data.{field}:"), rejected
    assert record(hub, "c-anna")["consent"] == ANNA["consent"]


def test_an_erasure_leaves_no_coupon_or_member_code_of_the_shopper_in_the_events(
        hub: HubServer, north: tuple[EdgeService, EdgeService]) -> None:
    one, _ = north
    annas = hub_cli(hub, "members", "issue", "c-anna")["token"]
    post(one, hub, clip_event(one, "c-anna"),
         consent_event("store-n1", "c-anna", {"marketing": True}, annas))
    hub_cli(hub, "customers", "erase", "c-anna")
    engine = create_engine(hub.settings.db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT customer_id, data FROM events WHERE type IN "
                "('offer.clipped', 'consent.changed')")).all()
    finally:
        engine.dispose()
    assert len(rows) == 2
    for customer_id, data in rows:
        assert customer_id is None and "c-anna" not in data
        assert annas not in data and '"token"' not in data and '"proof"' not in data


def test_a_clip_and_a_consent_apply_on_either_database(
        hub_server: HubServer, tmp_path: Path) -> None:
    """The same rules on PostgreSQL (rows locked while a record changes) and SQLite: a store
    with its own published key, no edge, plain HTTP."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from store_contract.jws import SigningKey

    hub = hub_server
    import_jsonl(hub, tmp_path, "campaigns", OFFER)
    import_jsonl(hub, tmp_path, "customers", ANNA)
    token = hub.add_store("store-pg", "north")
    key = SigningKey("store-store-pg-1", Ed25519PrivateKey.generate())
    auth = {"Authorization": f"Bearer {token}"}
    put = requests.put(f"{hub.url}/api/v1/stores/store-pg/key", json=key.public_jwk(),
                       headers=auth, timeout=10)
    assert put.status_code == 200, put.text
    now = int(time.time())
    coupon = f"rc:store-pg:{uuid7()}"
    signed = key.sign({"jti": coupon, "cmp": "cmp-offer", "sub": "c-anna", "iat": now,
                       "nbf": now, "exp": now + 86400}, "coupon+jwt")
    annas = hub_cli(hub, "members", "issue", "c-anna")["token"]
    events = [event("store-pg", "offer.clipped", data={
                  "customer_id": "c-anna", "campaign": "cmp-offer", "coupon": coupon,
                  "token": signed}),
              consent_event("store-pg", "c-anna", {"marketing": True}, annas)]
    resp = requests.post(f"{hub.url}/api/v1/stores/store-pg/events", headers=auth,
                         json={"batch_id": uuid7(), "events": events}, timeout=10)
    assert resp.status_code == 200 and len(resp.json()["accepted"]) == 2, resp.text
    rec = record(hub, "c-anna")
    assert wallet_coupons(rec) == [coupon] and rec["consent"]["marketing"] is True
    # The store's feed carries her record with both.
    feed = requests.get(f"{hub.url}/api/v1/stores/store-pg/changes", headers=auth,
                        timeout=10).json()["changes"]
    [sent] = [c["customer"] for c in feed if c["kind"] == "customer"]
    assert sent["consent"]["marketing"] is True and sent["wallet"] == [signed]


def test_a_change_dated_in_the_future_does_not_freeze_the_shoppers_consent(
        hub: HubServer, north: tuple[EdgeService, EdgeService]) -> None:
    one, two = north
    # A stolen box dates its "no" a century ahead...
    post(one, hub, consent_event("store-n1", "c-anna", {"personalised": False},
                                 at=time.time() + 100 * 365 * 86400))
    assert record(hub, "c-anna")["consent"]["personalised"] is False
    # ...and the shopper's own "yes" at the other store a moment later still counts.
    annas = hub_cli(hub, "members", "issue", "c-anna")["token"]
    post(two, hub, consent_event("store-n2", "c-anna", {"personalised": True}, annas,
                                 at=time.time() + 1))
    assert record(hub, "c-anna")["consent"]["personalised"] is True


def test_a_member_code_a_store_saw_long_ago_proves_nothing_now(
        hub: HubServer, north: tuple[EdgeService, EdgeService]) -> None:
    from cloud_sync.hub.keys import hub_signing_key

    one, _ = north
    key = hub_signing_key(hub.settings)

    def seen(days_ago: float) -> dict[str, Any]:
        """A "yes" dated when the shopper's app code was shown, `days_ago` days back."""
        then = int(time.time() - days_ago * 86400)
        code = key.sign({"sub": "c-anna", "iat": then, "exp": then + 120}, "member+jwt")
        return consent_event("store-n1", "c-anna", {"marketing": True}, code, at=then + 60)

    post(one, hub, seen(8))  # replayed a week and more later: not taken
    assert record(hub, "c-anna")["consent"]["marketing"] is False
    post(one, hub, seen(1))  # a store that was offline for a day: taken
    assert record(hub, "c-anna")["consent"]["marketing"] is True


def test_only_the_choices_the_shopper_moved_are_taken_not_the_stores_old_copy(
        hub: HubServer, north: tuple[EdgeService, EdgeService]) -> None:
    one, _ = north
    annas = hub_cli(hub, "members", "issue", "c-anna")["token"]
    post(one, hub, consent_event("store-n1", "c-anna", {"marketing": True}, annas))
    # The store still held marketing "no" when she moved only "personalised".
    change = consent_event("store-n1", "c-anna", {"personalised": False, "marketing": False})
    change["data"]["changed"] = ["personalised"]
    post(one, hub, change)
    assert record(hub, "c-anna")["consent"] == {"personalised": False, "marketing": True}
