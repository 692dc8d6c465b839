"""The change feed never freezes: a record an edge cannot apply is skipped, counted, shown to
staff and logged without personal data, and the rest of the page is applied and the cursor
moves on. Poisoned rows are written straight into a real hub's `changes` table (as a
broken or compromised hub process would) and read by an edge over HTTP.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from cloud_sync.hub.changelog import append_changes
from cloud_sync.hub.db import HubDB
from cloud_sync.hub.schema import changes as hub_changes
from edge.app.service import EdgeService
from edge.coupons import CouponRefused
from edge.transactions import CustomerUnknown
from store_contract.basket import parse_basket
from store_contract.jws import SigningKey
from tests.hubfix import HubServer
from tests.test_sync import _staff_client
from tests.test_sync_feed import (  # noqa: F401 - fixtures
    ANNA,
    BASKET,
    CAMPAIGN,
    edges,
    hub_cli,
    import_jsonl,
)

BOB = {"id": "c-bob", "display_name": "Bob Brandt", "tier": "member", "region": "north",
       "phone": "+49 151 11122233"}
CARL = {"id": "c-carl", "display_name": "Carl Clemens", "tier": "member",
        "card": "4000 5555 6666 7777"}
# Everything personal in the poisoned customer; the e-mail address is what fails (and an
# IdentifierError quotes it), after the phone number was read.
PETRA = {"id": "c-petra", "display_name": "Petra Poisonous", "tier": "gold",
         "phone": "+49 1517 7766 5544", "email": "petra.poisonous@@example.org",
         "card": "4000 9999 8888 7777"}
PII = ("Petra", "Poisonous", "petra.poisonous", "7766", "5544", "4000 9999", "4000999988887777")
CODED = {"id": "cmp-save5", "name": "Save 5", "code": "SAVE5",
         "disc": {"kind": "amount", "value_minor": 500, "currency": "EUR"}}


def _inject(server: HubServer, items: list[tuple[str, str, dict[str, Any], str | None]]
            ) -> int:
    """Write feed rows as the hub would, in one go; the last seq."""
    db = HubDB(server.settings.db_url)
    try:
        with db.write() as conn:
            append_changes(conn, items)
        with db.read() as conn:
            return int(conn.execute(select(func.max(hub_changes.c.seq))).scalar_one())
    finally:
        db.dispose()


def _redemption(rid: str, coupon: str, store: str, **more: Any) -> dict[str, Any]:
    return {"redemption": {"id": rid, "coupon": coupon, "campaign": "cmp-5off",
                           "store_id": store, "store_name": "Harbour Street",
                           "redeemed_at": "2026-11-20T10:00:00.000Z", **more}}


@pytest.mark.process
def test_a_feed_page_with_one_poisoned_record_of_each_kind_applies_the_rest(
        hub: HubServer, edges: Any, tmp_path: Path,  # noqa: F811 - the imported fixtures
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    import_jsonl(hub, tmp_path, "customers", ANNA, BOB)
    import_jsonl(hub, tmp_path, "campaigns", CAMPAIGN, CODED)
    anna_coupon = hub_cli(hub, "coupons", "issue", "--campaign", "cmp-5off", "--customer",
                          "c-anna")
    stolen = hub_cli(hub, "coupons", "issue", "--campaign", "cmp-5off")
    used = hub_cli(hub, "coupons", "issue", "--campaign", "cmp-5off", "--max", "1")
    svc: EdgeService = edges("store-a")
    svc.puller.run()  # publishes the store's key and reads what the hub has so far
    assert svc.puller.last_error is None
    assert svc.checkout.identify("lane-1", "t-0", None, "+49 151 11122233")

    hub_keys = requests.get(f"{hub.url}/.well-known/jwks.json", timeout=10).json()["keys"]
    hub_key = next(k for k in hub_keys if k["kid"] == "hub-1")
    app_key = SigningKey("chain-app-1", Ed25519PrivateKey.generate())
    rogue = SigningKey("hub-1", Ed25519PrivateKey.generate())  # the hub's kid, another key
    key_set = [*hub_keys, app_key.public_jwk(), rogue.public_jwk(),
               {"kty": "EC", "crv": "P-256", "kid": "ec-1", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8"
                "Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
               {"kty": "OKP", "crv": "Ed25519", "kid": "garbage-x", "x": "!!not base64!!"},
               "not a key",
               {"kty": "OKP", "crv": "Ed25519", "x": hub_key["x"]}]  # no kid
    poisoned = [
        ("customer", "c-petra", {"customer": PETRA}, None),
        ("customer", "c-carl", {"customer": CARL}, None),
        ("campaign", "cmp-bad", {"campaign": {"id": "cmp-bad", "name": "Bad",
                                              "disc": {"kind": "percent", "value": 0}}}, None),
        # Valid on its own, but its code is another campaign's: a UNIQUE constraint fails.
        ("campaign", "cmp-clash", {"campaign": {**CODED, "id": "cmp-clash", "code": "save5"}},
         None),
        ("campaign", "cmp-new", {"campaign": {**CAMPAIGN, "id": "cmp-new", "name": "New"}},
         None),
        ("revocation", "everything:x", {"scope": "everything", "id": "x"}, None),
        ("revocation", f"coupon:{stolen['coupon']}",
         {"scope": "coupon", "id": stolen["coupon"], "reason": "reported stolen"}, None),
        ("keys", "jwks-poisoned", {"jwks": {"keys": key_set}}, None),
        ("erasure", "nobody", {"customer_id": 42}, None),
        ("erasure", "c-bob", {"customer_id": "c-bob"}, None),
        ("redemption", "r-bad", {"redemption": {"id": "r-bad", "coupon": used["coupon"]}}, None),
        # Writes the store's name, then the ledger row fails (an integer SQLite cannot hold):
        # the name must go too, with the record.
        ("redemption", "r-huge", _redemption("r-huge", used["coupon"], "store-z",
                                             store_name="Poison Street",
                                             discount_minor=10 ** 30), None),
        ("redemption", "r-good", _redemption("r-good", used["coupon"], "store-b"), None),
        ("loyalty-points", "c-anna", {"points": 5, "phone": PETRA["phone"]}, None),
    ]
    last_seq = _inject(hub, poisoned)
    caplog.clear()
    svc.puller.run()

    assert svc.puller.last_error is None
    assert svc.puller.cursor == str(last_seq)  # the feed moved past every poisoned record
    # Every good record of the page is applied.
    basket = parse_basket(BASKET, "EUR")
    assert svc.checkout.identify("lane-1", "t-1", "4000555566667777", None)["customer"][
        "display_name"] == "Carl Clemens"
    assert svc.store.query_one("SELECT 1 FROM campaigns WHERE id = 'cmp-new'")
    with pytest.raises(CouponRefused) as revoked:
        svc.checkout.apply("lane-1", "t-2", stolen["token"], basket)
    assert revoked.value.code == "coupon_revoked"
    # Erased here (the row was written into the feed by hand: the hub itself still has Bob,
    # so only the edge's own cache is asked, with the hub link taken offline).
    svc.hub.last_contact = None
    with pytest.raises(CustomerUnknown):
        svc.checkout.identify("lane-1", "t-3", None, "+49 151 11122233")
    with pytest.raises(CouponRefused) as spent:
        svc.checkout.apply("lane-1", "t-4", used["token"], basket)
    assert spent.value.code == "coupon_used"
    # The key set, key by key: the hub's key stays (the first of its kid), the app's new key
    # is trusted, the rogue key under the hub's kid is not.
    assert svc.coupons.read(anna_coupon["token"]).campaign == "cmp-5off"
    now = int(time.time())
    claims = {"jti": "app-1", "cmp": "cmp-5off", "nbf": now - 60, "exp": now + 3600,
              "max": 1, "disc": CAMPAIGN["disc"]}
    assert svc.coupons.read(app_key.sign(claims, "coupon+jwt")).campaign == "cmp-5off"
    with pytest.raises(CouponRefused) as forged:
        svc.coupons.read(rogue.sign({**claims, "jti": "rogue-1"}, "coupon+jwt"))
    assert forged.value.code == "coupon_forged"
    kids = sorted(r["kid"] for r in svc.store.query("SELECT kid FROM trusted_keys"))
    assert kids == sorted({k["kid"] for k in hub_keys} | {"chain-app-1"})
    # Nothing of the poisoned records stays, not even half of one.
    assert svc.store.query_one("SELECT 1 FROM customers WHERE id = 'c-petra'") is None
    assert svc.store.query_one("SELECT 1 FROM campaigns WHERE id IN ('cmp-bad', 'cmp-clash')"
                               ) is None
    assert svc.store.query_one("SELECT 1 FROM stores WHERE id = 'store-z'") is None
    assert svc.store.query_one("SELECT 1 FROM redemptions WHERE id IN ('r-bad', 'r-huge')"
                               ) is None

    # Counted and kept, by kind: 1 customer, 2 campaigns, 1 revocation, 5 keys, 1 erasure,
    # 2 redemptions, 1 unknown kind.
    skips = svc.puller.recent_skips()
    by_kind: dict[str, int] = {}
    for s in skips:
        by_kind[s["kind"]] = by_kind.get(s["kind"], 0) + 1
    assert by_kind == {"customer": 1, "campaign": 2, "revocation": 1, "keys": 5,
                       "erasure": 1, "redemption": 2, "unknown": 1}
    assert svc.puller.skipped == 13
    seqs = {s["seq"] for s in skips}
    assert None not in seqs and max(seqs) == last_seq
    clash = next(s for s in skips if s["kind"] == "campaign" and "IntegrityError" in s["reason"])
    huge = next(s for s in skips if s["kind"] == "redemption" and "Overflow" in s["reason"])
    assert clash and huge
    assert any("same kid" in s["reason"] for s in skips)
    metric = svc.metrics.registry.get_sample_value("edge_sync_changes_skipped_total",
                                                   {"kind": "keys"})
    assert metric == 5
    # Logged with seq, kind and reason, and never anything of the record's values.
    lines = [r.getMessage() for r in caplog.records]
    assert sum("skipped change" in line for line in lines) == 13
    everything = "\n".join(lines + [json.dumps(skips)])
    for secret in PII:
        assert secret not in everything, secret

    # Visible to staff (after a restart: the skips are in the database) and in /healthz.
    svc.stop()
    app, manager = _staff_client(svc.settings, "mia", "manager")
    try:
        page = manager.get("/staff/sync/").get_data(as_text=True)
        assert 'id="feed-skips"' in page and 'id="feed-skipped">(13)' in page
        assert f'data-seq="{last_seq}"' in page and "a kind of change this store does not know" \
            in page
        assert "the campaign change could not be applied (IntegrityError)" in page
        for secret in PII:
            assert secret not in page, secret
        health = manager.get("/healthz").get_json()
        pull = health["queue"]["pull"]
        assert pull["skipped"] == 13 and pull["cursor"] == str(last_seq)
        assert pull["last_skip"]["seq"] == last_seq and pull["last_skip"]["kind"] == "unknown"
    finally:
        app.extensions["edge"].stop()


def test_applying_a_page_directly_skips_what_is_not_a_change_and_keeps_the_rest(
        edge: EdgeService) -> None:
    puller = edge.puller
    page = [
        "not an object",
        {"seq": 2, "customer": CARL},  # no kind
        {"seq": 3, "kind": "keys", "jwks": ["not", "a", "set"]},
        {"seq": 4, "kind": "customer", "customer": PETRA},
        {"seq": 5, "kind": "customer", "customer": CARL},
        {"seq": 6, "kind": "redemption", "redemption": "r-1"},
    ]
    counts = puller.apply(page, "", "6")
    assert counts == {"skipped": 5, "customer": 1}
    assert puller.cursor == "6"
    assert [(s["seq"], s["kind"]) for s in reversed(puller.recent_skips())] == [
        (3, "keys"), (None, "malformed"), (2, "unknown"), (4, "customer"), (6, "redemption")]
    # A key set that is not one leaves the keys held before.
    assert edge.store.query_one("SELECT 1 FROM customers WHERE id = 'c-carl'")


def test_a_failing_database_stops_the_page_instead_of_skipping_its_records(
        edge: EdgeService, monkeypatch: pytest.MonkeyPatch) -> None:
    puller = edge.puller
    real = puller._apply_one

    def disk_full(db: Any, kind: Any, change: Any) -> None:
        if change.get("seq") == 2:
            exc = sqlite3.OperationalError("database or disk is full")
            exc.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
            raise exc
        real(db, kind, change)

    monkeypatch.setattr(puller, "_apply_one", disk_full)
    page = [{"seq": 1, "kind": "customer", "customer": CARL},
            {"seq": 2, "kind": "customer", "customer": BOB}]
    with pytest.raises(sqlite3.OperationalError):
        puller.apply(page, "", "2")
    # Nothing of the page, no skip, the cursor where it was: the page is read again later.
    assert puller.cursor == "" and puller.skipped == 0
    assert edge.store.query_one("SELECT 1 FROM customers WHERE id = 'c-carl'") is None

    monkeypatch.setattr(puller, "_apply_one", real)  # the disk has room again
    assert puller.apply(page, "", "2") == {"customer": 2}
    assert puller.cursor == "2" and puller.skipped == 0


def test_only_the_newest_hundred_skips_are_listed_but_all_are_counted(
        edge: EdgeService) -> None:
    page = [{"seq": n, "kind": "mystery"} for n in range(1, 131)]
    edge.puller.apply(page, "", "130")
    skips = edge.puller.recent_skips()
    assert len(skips) == 100 and skips[0]["seq"] == 130 and skips[-1]["seq"] == 31
    assert edge.puller.skipped == 130
    assert edge.puller.state()["last_skip"]["seq"] == 130
