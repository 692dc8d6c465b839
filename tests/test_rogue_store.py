"""A rogue store: one store's hub token and data in the wrong hands, played against a real
`edge-hub serve` and a second store running as a real `edge serve` process.

The rogue is plain HTTP with its own (genuine) token and a signing key it made itself; the
victim store is checked only through its POS HTTP API, as a lane sees it. What a store's
key may sign, the key-id namespace, revoking and retiring, and what the hub believes of a
store's redemptions (docs/sync.md, "Trust between stores and the hub").
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from edge.devices import Enrolment
from edge.settings import Settings
from edge.supervise import stop_process
from pos_bridge.lane import HttpTransport, Lane, Refused, basket
from tests.conftest import start_edge, wait_until
from tests.hubfix import HubServer, run_hub
from tests.test_sync import add_store, edge_for
from tests.test_sync_feed import _manager_session, import_jsonl

OFFER = {"id": "cmp-offer", "name": "Coffee offer", "description": "10% off coffee",
         "disc": {"kind": "percent", "value": 10}, "offer": True}
PLAIN = {"id": "cmp-5off", "name": "5 off", "description": "€5 off your shop",
         "disc": {"kind": "amount", "value_minor": 500, "currency": "EUR"}}
ANNA = {"id": "c-anna", "display_name": "Anna Berg", "tier": "gold", "points": 420,
        "region": "north", "card": "4000 1111 2222 3333",
        "consent": {"personalised": True, "marketing": False}}
ITEMS = basket([{"sku": "coffee", "qty": 2, "unit_minor": 1000, "categories": ["coffee"]}],
               "EUR")
PAY = [{"kind": "card", "amount_minor": 2000}]


class Rogue:
    """A store's genuine token and a key of its own: everything one stolen box gives."""

    def __init__(self, hub: HubServer, store_id: str) -> None:
        self.hub, self.id = hub, store_id
        self.token = add_store(hub.settings, store_id)
        self.private = Ed25519PrivateKey.generate()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def jwk(self, kid: str) -> dict[str, Any]:
        jwk = json.loads(OKPAlgorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": kid}

    def publish(self, kid: str) -> requests.Response:
        return self.session.put(f"{self.hub.url}/api/v1/stores/{self.id}/key",
                                json=self.jwk(kid), timeout=10)

    def sign(self, claims: dict[str, Any], kid: str, typ: str = "coupon+jwt") -> str:
        now = int(time.time())
        body = {"nbf": now - 60, "exp": now + 86400, **claims}
        return jwt.encode(body, self.private, algorithm="EdDSA",
                          headers={"typ": typ, "kid": kid})

    def post(self, *events: dict[str, Any]) -> requests.Response:
        return self.session.post(f"{self.hub.url}/api/v1/stores/{self.id}/events",
                                 json={"batch_id": uuid.uuid4().hex, "events": list(events)},
                                 timeout=10)

    def redeemed(self, coupon: str, campaign: str, **data: Any) -> dict[str, Any]:
        now = datetime.now().astimezone().isoformat(timespec="milliseconds")
        return {"event_id": str(uuid.uuid4()), "type": "coupon.redeemed", "occurred_at": now,
                "store_id": self.id, "device_id": "lane-1",
                "data": {"redemption": str(uuid.uuid4()), "coupon": coupon,
                         "campaign": campaign, "discount_minor": 500, "currency": "EUR",
                         "customer_id": None, "txn": "t-rogue", **data}}


@dataclass
class Victim:
    """Another store: a real `edge serve` pulling every second, and one lane over HTTP."""

    settings: Settings
    lane: Lane
    proc: subprocess.Popen[bytes]

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = requests.get(
            f"http://127.0.0.1:{self.settings.http_port}/healthz", timeout=5).json()
        return body

    def pulled(self) -> None:
        """Wait for a whole pull that started after now (so it saw what the test did): the
        second pull to finish from here on."""

        def last() -> Any:
            return (self.health()["queue"].get("pull") or {}).get("last_success")

        for _ in range(2):
            before = last()
            assert wait_until(lambda before=before: last() != before, 30), self.health()

    def refusal(self, code: str, txn: str | None = None) -> Refused:
        with pytest.raises(Refused) as info:
            self.lane.apply_coupon(txn or uuid.uuid4().hex[:10], code, ITEMS)
        return info.value


@pytest.fixture
def victim(settings: Settings, hub: HubServer, broker: Any,
           enrolled: Callable[[str, str], Enrolment]) -> Iterator[Victim]:
    token = add_store(hub.settings, settings.store_id, name="Harbour Street")
    victim_settings = edge_for(settings, hub.url, token, sync_pull_interval_s=1,
                               trusted_keys="")
    login = enrolled("pos", "lane-1")
    proc = start_edge(victim_settings)
    lane = Lane(HttpTransport(f"http://127.0.0.1:{victim_settings.http_port}", "lane-1",
                              login.password))
    yield Victim(victim_settings, lane, proc)
    stop_process(proc)


@pytest.fixture
def chain(hub: HubServer, tmp_path: Path) -> HubServer:
    """The chain's master data: an offer campaign, a plain campaign and a shopper."""
    import_jsonl(hub, tmp_path, "campaigns", OFFER, PLAIN)
    import_jsonl(hub, tmp_path, "customers", ANNA)
    return hub


def edited(token: str) -> str:
    """The token with one claim changed and the signature kept: no longer genuine."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["max"] = 99
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.{signature}"


def hub_cli(hub: HubServer, *args: str) -> Any:
    done = run_hub(hub.settings, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ---------------------------------------------------------------- what a store key may sign


def test_a_rogue_stores_key_signs_only_its_own_receipt_offers_at_the_campaigns_terms(
        chain: HubServer, victim: Victim) -> None:
    rogue = Rogue(chain, "rogue")
    kid = "store-rogue-1"
    assert rogue.publish(kid).status_code == 200
    victim.pulled()
    # What an honest store prints: one use of the offer, at the offer's terms. It is honoured,
    # which also shows the victim holds the rogue's key (the refusals below are not just an
    # unknown key).
    honest = rogue.sign({"jti": "rc:rogue:1", "cmp": "cmp-offer",
                         "disc": OFFER["disc"]}, kid)
    assert victim.lane.apply_coupon("t-honest", honest, ITEMS)["discount_minor"] == 200

    forgeries = {
        "100 % off a campaign that does not exist": {
            "jti": "rc:rogue:2", "cmp": "cmp-free", "disc": {"kind": "percent", "value": 100}},
        "a bigger discount than the campaign's": {
            "jti": "rc:rogue:3", "cmp": "cmp-offer", "disc": {"kind": "percent", "value": 100}},
        "more uses than the campaign's one": {"jti": "rc:rogue:4", "cmp": "cmp-offer",
                                              "max": 1000},
        "a campaign that is no receipt offer": {"jti": "rc:rogue:5", "cmp": "cmp-5off"},
        "another store's coupon id": {"jti": "rc:store-t:5", "cmp": "cmp-offer"},
        "a coupon id of the chain's app": {"jti": "app-7f3a", "cmp": "cmp-offer"},
    }
    for what, claims in forgeries.items():
        refused = victim.refusal(rogue.sign(claims, kid))
        assert refused.code == "coupon_forged", what
        assert refused.detail.get("reason") == "key_scope", (what, refused.detail)

    # A member code for a real shopper, signed by the store key: nobody is identified and
    # nothing of the shopper's wallet is shown.
    now = int(time.time())
    member = rogue.sign({"sub": "c-anna", "iat": now, "exp": now + 120, "jti": "m-1"}, kid,
                        typ="member+jwt")
    with pytest.raises(Refused) as info:
        victim.lane.identify("t-member", code=member)
    assert info.value.code == "customer_unknown"
    assert "c-anna" not in json.dumps(info.value.detail) and "Anna" not in info.value.message


def test_a_store_cannot_publish_a_key_in_another_stores_namespace(
        chain: HubServer, victim: Victim) -> None:
    rogue = Rogue(chain, "a")
    neighbour = Rogue(chain, "a-b")
    for kid in ("store-a-b-1", "store-t-1", "hub-1", "store-a-1x", "store-a-", "store-a-1\n"):
        resp = rogue.publish(kid)
        assert resp.status_code == 400, kid
        assert resp.json()["error"]["code"] == "bad_key"
    assert neighbour.publish("store-a-b-1").status_code == 200
    assert rogue.publish("store-a-7").status_code == 200
    jwks = requests.get(f"{chain.url}/.well-known/jwks.json", timeout=10).json()["keys"]
    owners = {k["kid"]: k.get("store") for k in jwks}
    assert owners["store-a-b-1"] == "a-b" and owners["store-a-7"] == "a"
    # The victim's feed keeps moving: the neighbour's honest receipt offer is honoured.
    victim.pulled()
    offer = neighbour.sign({"jti": "rc:a-b:1", "cmp": "cmp-offer"}, "store-a-b-1")
    assert victim.lane.apply_coupon("t-ab", offer, ITEMS)["discount_minor"] == 200
    assert victim.health()["queue"]["pull"]["last_error"] is None


def test_revoking_a_key_or_retiring_a_store_takes_its_key_out_of_every_store(
        chain: HubServer, victim: Victim) -> None:
    rogue = Rogue(chain, "rogue")
    assert rogue.publish("store-rogue-1").status_code == 200
    victim.pulled()
    first = rogue.sign({"jti": "rc:rogue:1", "cmp": "cmp-offer"}, "store-rogue-1")
    assert victim.lane.apply_coupon("t-1", first, ITEMS)["discount_minor"] == 200

    revoked = hub_cli(chain, "keys", "revoke", "store-rogue-1", "--reason", "box stolen")
    assert revoked == {"kid": "store-rogue-1", "store": "rogue", "revoked": True}
    victim.pulled()
    refused = victim.refusal(rogue.sign({"jti": "rc:rogue:2", "cmp": "cmp-offer"},
                                        "store-rogue-1"))
    assert (refused.code, refused.detail.get("reason")) == ("coupon_forged", "unknown_key")
    # The thief cannot put the revoked key back; a new key of a new kid is accepted.
    again = rogue.publish("store-rogue-1")
    assert again.status_code == 409 and again.json()["error"]["code"] == "key_revoked"
    assert rogue.publish("store-rogue-2").status_code == 200
    victim.pulled()
    second = rogue.sign({"jti": "rc:rogue:3", "cmp": "cmp-offer"}, "store-rogue-2")
    assert victim.lane.apply_coupon("t-2", second, ITEMS)["discount_minor"] == 200

    assert hub_cli(chain, "stores", "retire", "rogue")["retired"] is True
    assert rogue.post(rogue.redeemed("x", "cmp-offer")).status_code == 401
    jwks = requests.get(f"{chain.url}/.well-known/jwks.json", timeout=10).json()["keys"]
    assert not any(k["kid"].startswith("store-rogue-") for k in jwks)
    victim.pulled()
    refused = victim.refusal(rogue.sign({"jti": "rc:rogue:4", "cmp": "cmp-offer"},
                                        "store-rogue-2"))
    assert (refused.code, refused.detail.get("reason")) == ("coupon_forged", "unknown_key")
    listed = {s["store"]: s for s in hub_cli(chain, "stores", "list")}
    assert listed["rogue"]["retired"] is True and listed["rogue"]["has_key"] is False


# ---------------------------------------------------------------- what the hub believes


def test_a_rogue_store_cannot_use_up_a_shoppers_coupon_it_never_saw(
        chain: HubServer, victim: Victim) -> None:
    coupon = hub_cli(chain, "coupons", "issue", "--campaign", "cmp-5off")
    rogue = Rogue(chain, "rogue")
    assert rogue.publish("store-rogue-1").status_code == 200
    forged = rogue.sign({"jti": coupon["coupon"], "cmp": "cmp-5off"}, "store-rogue-1")
    answer = rogue.post(
        rogue.redeemed(coupon["coupon"], "cmp-5off"),                    # no coupon at all
        rogue.redeemed(coupon["coupon"], "cmp-5off", token=forged),      # its own signature
        rogue.redeemed(coupon["coupon"], "cmp-5off", token="a.b.c"),     # not a token
        rogue.redeemed(coupon["coupon"], "cmp-5off", token=edited(coupon["token"])))
    assert answer.status_code == 200 and len(answer.json()["accepted"]) == 4
    victim.pulled()
    # The shopper's coupon still works at the other store.
    assert victim.lane.apply_coupon("t-anna", coupon["token"], ITEMS)["discount_minor"] == 500
    victim.lane.complete("t-anna", ITEMS, PAY, total_minor=1500)
    # ...and the dashboard shows no double spend the rogue made up.
    session = _manager_session(chain)
    board = session.get(f"{chain.url}/dashboard.json", timeout=10).json()
    assert board["conflicts"] == []
    # The made-up uses are kept and flagged for the manager, each with why.
    flagged = {(r["store_id"], r["coupon_id"], r["reason"])
               for r in board["suspect_redemptions"]}
    assert flagged == {("rogue", coupon["coupon"], why)
                       for why in ("no_token", "key_scope", "malformed", "signature")}


def test_a_rogue_store_cannot_hide_a_real_double_spend_or_resolve_it(
        chain: HubServer, victim: Victim) -> None:
    coupon = hub_cli(chain, "coupons", "issue", "--campaign", "cmp-5off")
    # The victim redeems the single-use coupon and syncs it.
    assert victim.lane.apply_coupon("t-1", coupon["token"], ITEMS)["discount_minor"] == 500
    done = victim.lane.complete("t-1", ITEMS, PAY, total_minor=1500)
    redemption = done["redemptions"][0]["redemption"]
    assert wait_until(lambda: victim.health()["queue"]["depth"] == 0, 30)
    # The rogue store took the same coupon offline (it did see it) and claims it allows a
    # million uses; then it tries to reverse the victim's redemption.
    rogue = Rogue(chain, "rogue")
    answer = rogue.post(rogue.redeemed(coupon["coupon"], "cmp-5off", token=coupon["token"],
                                       max_uses=1_000_000))
    assert answer.status_code == 200, answer.text
    session = _manager_session(chain)
    conflicts = session.get(f"{chain.url}/dashboard.json", timeout=10).json()["conflicts"]
    assert len(conflicts) == 1, conflicts
    assert (conflicts[0]["uses"], conflicts[0]["max_uses"]) == (2, 1)
    assert sorted(conflicts[0]["stores"]) == ["rogue", victim.settings.store_id]
    now = datetime.now().astimezone().isoformat(timespec="milliseconds")
    reversal = {"event_id": str(uuid.uuid4()), "type": "coupon.redemption_reversed",
                "occurred_at": now, "store_id": "rogue", "device_id": "lane-1",
                "data": {"redemption": redemption, "coupon": coupon["coupon"]}}
    assert rogue.post(reversal).status_code == 200
    conflicts = session.get(f"{chain.url}/dashboard.json", timeout=10).json()["conflicts"]
    assert len(conflicts) == 1 and conflicts[0]["uses"] == 2


def test_a_receipt_offer_redeemed_where_it_was_printed_is_believed_by_the_hub(
        chain: HubServer, victim: Victim) -> None:
    """The honest case of the rules above: a store's own receipt offer, redeemed at that
    store, reaches other stores as a use (so it cannot be used twice elsewhere)."""
    rogue = Rogue(chain, "other")
    assert rogue.publish("store-other-1").status_code == 200
    offer = rogue.sign({"jti": "rc:other:9", "cmp": "cmp-offer"}, "store-other-1")
    assert rogue.post(rogue.redeemed("rc:other:9", "cmp-offer", token=offer)
                      ).status_code == 200
    victim.pulled()
    refused = victim.refusal(offer)
    assert refused.code == "coupon_used"


# ---------------------------------------------------------------- the honest store's keys


@pytest.mark.process
def test_a_store_whose_token_was_rotated_or_key_revoked_is_trusted_again_with_a_new_key(
        hub: HubServer, settings: Settings, tmp_path: Path) -> None:
    """The box that lost its token or key to a thief: it publishes its key again with the new
    token, and after `edge keys rotate` a new kid that the hub and other stores accept."""
    from edge.app.service import EdgeService
    from tests.conftest import edge_cli, edge_env
    from tests.test_sync import _staff_client

    token = add_store(hub.settings, "store-a")
    store_settings = edge_for(settings, hub.url, token, store_id="store-a",
                              data_dir=str(tmp_path / "store-a"), trusted_keys="")

    def kids() -> set[str]:
        jwks = requests.get(f"{hub.url}/.well-known/jwks.json", timeout=10).json()
        return {k["kid"] for k in jwks["keys"]}

    svc = EdgeService(store_settings)
    try:
        svc.puller.run()
        first = svc.signing_key.kid
        assert first == "store-store-a-1" and first in kids()
    finally:
        svc.stop()

    rotated = hub_cli(hub, "stores", "add", "store-a", "--region", "north", "--rotate")
    assert first not in kids()  # the old token's holder may hold the key too
    store_settings = store_settings.with_overrides(hub_token=rotated["token"])
    svc = EdgeService(store_settings)
    try:
        svc.puller.run()
        assert first in kids() and svc.puller.key_error is None
    finally:
        svc.stop()

    hub_cli(hub, "keys", "revoke", first)
    app, client = _staff_client(store_settings, "mia", "manager")
    svc = app.extensions["edge"]
    try:
        svc.puller.run()
        assert first not in kids()
        assert svc.puller.last_error is None  # the feed is still read
        assert "edge keys rotate" in (svc.puller.key_error or "")
        page = client.get("/staff/sync/").get_data(as_text=True)
        assert 'id="key-error"' in page and "edge keys rotate" in page
    finally:
        svc.stop()

    done = subprocess.run([*edge_cli(), "keys", "rotate"], env=edge_env(store_settings),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    new = json.loads(done.stdout)["kid"]
    assert new != first and new.startswith("store-store-a-")
    svc = EdgeService(store_settings)
    try:
        assert svc.signing_key.kid == new
        svc.puller.run()
        assert new in kids() and first not in kids() and svc.puller.key_error is None
    finally:
        svc.stop()


@pytest.mark.process
def test_the_chains_app_keys_are_published_and_their_coupons_believed(
        chain: HubServer, tmp_path: Path) -> None:
    app = Rogue(chain, "app-signer")  # only its key is used: the app's, given to the hub
    other = Rogue(chain, "store-c")
    for bad in ({**app.jwk("hub-1")}, {**app.jwk("store-x-1")},
                {**app.jwk("app-1"), "d": "secret"}, {"kty": "RSA", "kid": "app-1"}):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        done = run_hub(chain.settings, "keys", "add", str(tmp_path / "bad.json"))
        assert done.returncode == 1 and done.stderr.startswith("edge-hub: "), bad
    (tmp_path / "app.json").write_text(json.dumps({"keys": [app.jwk("app-2026-1")]}))
    assert hub_cli(chain, "keys", "add", str(tmp_path / "app.json")) == {"added": ["app-2026-1"]}
    jwks = requests.get(f"{chain.url}/.well-known/jwks.json", timeout=10).json()["keys"]
    assert [k for k in jwks if k["kid"] == "app-2026-1"][0].get("store") is None
    # A coupon the app signed for three uses, used four times at two stores: believed, sent
    # to the stores, and one conflict with the app's `max`.
    token = app.sign({"jti": "app-cpn-1", "cmp": "cmp-5off", "max": 3}, "app-2026-1")
    uses = [app.redeemed("app-cpn-1", "cmp-5off", token=token) for _ in range(2)]
    assert app.post(*uses).status_code == 200
    assert other.post(*[other.redeemed("app-cpn-1", "cmp-5off", token=token, max_uses=9)
                        for _ in range(2)]).status_code == 200
    feed = other.session.get(f"{chain.url}/api/v1/stores/store-c/changes", timeout=10).json()
    assert sum(1 for c in feed["changes"] if c["kind"] == "redemption") == 4
    session = _manager_session(chain)
    conflicts = session.get(f"{chain.url}/dashboard.json", timeout=10).json()["conflicts"]
    assert [(c["coupon_id"], c["uses"], c["max_uses"]) for c in conflicts] == [
        ("app-cpn-1", 4, 3)]
    # Revoked: out of the key set, and its coupons no longer believed.
    assert hub_cli(chain, "keys", "revoke", "app-2026-1")["revoked"] is True
    jwks = requests.get(f"{chain.url}/.well-known/jwks.json", timeout=10).json()["keys"]
    assert "app-2026-1" not in {k["kid"] for k in jwks}
    later = app.sign({"jti": "app-cpn-2", "cmp": "cmp-5off"}, "app-2026-1")
    assert app.post(app.redeemed("app-cpn-2", "cmp-5off", token=later)).status_code == 200
    feed = other.session.get(f"{chain.url}/api/v1/stores/store-c/changes", timeout=10).json()
    assert not any(c["kind"] == "redemption" and c["redemption"]["coupon"] == "app-cpn-2"
                   for c in feed["changes"])
