"""Customers across the chain without their numbers (issue 11, item 2), against a real
`edge-hub serve`: the feed a rogue store reads carries look-up hashes only, and only its
region's customers; the online look-up finds a shopper of another region within a bound,
is throttled per store and audited; key rotation and expiry; the schema upgrade.
"""
# ruff: noqa: F811 (pytest fixtures imported from other test modules are requested by name)

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, inspect, text

from cloud_sync.hub.db import HubDB, upgrade_schema
from cloud_sync.hub.settings import HubSettings
from edge.customers import forget_customer
from edge.devices import Enrolment
from edge.settings import Settings
from edge.supervise import stop_process
from edge.transactions import CustomerUnknown
from pos_bridge.lane import HttpTransport, Lane, Refused
from store_contract.customers import KeyBundle
from store_contract.errors import EdgeError
from tests.conftest import start_edge, wait_until
from tests.hubfix import BlackHole, HubServer, event, run_hub, serve_hub, stop_hub
from tests.test_sync import add_store, edge_for
from tests.test_sync_feed import edges  # noqa: F401 - a fixture (uses this module's hub)

pytestmark = pytest.mark.process  # a hub process for every test

ANNA = {"id": "c-anna", "display_name": "Anna Berg", "region": "north", "tier": "gold",
        "phone": "+49 1512 3456789", "card": "4000 1111 2222 3333",
        "email": "Anna.Berg@Example.org", "consent": {"personalised": True}}
BEN = {"id": "c-ben", "display_name": "Ben Kurz", "region": "north",
       "phones": ["01521 2345678"], "cards": ["4000-2222-3333-4444"],
       "email": "ben@example.org"}
SARA = {"id": "c-sara", "display_name": "Sara Lind", "region": "south",
        "phone": "+49 160 12345678", "card": "4000 3333 4444 5555",
        "email": "sara.lind@example.net"}
TOM = {"id": "c-tom", "display_name": "Tom Weiss", "region": "south",
       "phone": "0176 12345678", "card": "4000 4444 5555 6666", "email": "tom@example.net"}
NORA = {"id": "c-nora", "display_name": "Nora Ohne", "phone": "+49 170 98765432",
        "card": "4000 5555 6666 7777", "email": "nora@example.com"}  # no home region
EVERYONE = (ANNA, BEN, SARA, TOM, NORA)


def raw_forms(customer: dict[str, Any]) -> list[str]:
    """Every way a raw identifier of `customer` could appear in bytes sent to a store."""
    forms: list[str] = []
    for key in ("phone", "phones"):
        for text_ in ([customer[key]] if key == "phone" else customer[key]) \
                if key in customer else []:
            number = phonenumbers.parse(text_, "DE")
            forms += [text_, text_.replace(" ", "")]
            forms += [phonenumbers.format_number(number, f) for f in (
                phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.NATIONAL,
                phonenumbers.PhoneNumberFormat.INTERNATIONAL)]
            forms.append(str(number.national_number))
    for key in ("card", "cards"):
        for text_ in ([customer[key]] if key == "card" else customer[key]) \
                if key in customer else []:
            forms += [text_, text_.replace(" ", "").replace("-", "")]
    for key in ("email",):
        if key in customer:
            forms += [customer[key], customer[key].lower()]
    return forms


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def hub(hub_sqlite: HubSettings) -> Iterator[HubServer]:
    yield from serve_hub(hub_sqlite, keep_port=True)


def hub_cli(hub: HubServer, *args: str) -> Any:
    done = run_hub(hub.settings, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


def import_customers(hub: HubServer, tmp_path: Path, *records: dict[str, Any]) -> None:
    path = tmp_path / f"customers-{time.monotonic_ns()}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = hub_cli(hub, "customers", "import", str(path))
    assert report["imported"] == len(records), report


class Rogue:
    """A store's real token in the hands of someone with plain `requests` (registered here
    unless its token is given)."""

    def __init__(self, hub: HubServer, store_id: str, region: str,
                 token: str | None = None) -> None:
        self.token = token or add_store(hub.settings, store_id, region)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.token}"
        self.base = f"{hub.url}/api/v1/stores/{store_id}"

    def whole_feed(self, limit: int = 3) -> tuple[bytes, list[dict[str, Any]]]:
        """Every page from the start: the raw bytes and the changes."""
        raw, out, cursor = b"", [], ""
        while True:
            resp = self.session.get(f"{self.base}/changes",
                                    params={"cursor": cursor, "limit": limit}, timeout=10)
            assert resp.status_code == 200, resp.text
            raw += resp.content
            page = resp.json()
            out += page["changes"]
            cursor = page["cursor"]
            if not page["more"]:
                return raw, out

    def lookup(self, body: dict[str, Any]) -> requests.Response:
        return self.session.post(f"{self.base}/lookup", json=body, timeout=10)

    def post_events(self, *events: dict[str, Any]) -> None:
        resp = self.session.post(f"{self.base}/events", timeout=10,
                                 json={"batch_id": f"b-{time.monotonic_ns()}",
                                       "events": list(events)})
        assert resp.status_code == 200 and len(resp.json()["accepted"]) == len(events), \
            resp.text


def customers_in(changes: list[dict[str, Any]]) -> set[str]:
    return {c["customer"]["id"] for c in changes if c["kind"] == "customer"}


def audit(hub: HubServer, store_id: str) -> dict[str, int]:
    report = hub_cli(hub, "lookups", "audit", "--store", store_id)
    counts: dict[str, int] = report["stores"].get(store_id, {})
    return counts


# ---------------------------------------------------------------- the feed


def test_a_rogue_store_reading_the_whole_feed_finds_no_raw_identifier_and_only_its_region(
        hub: HubServer, tmp_path: Path) -> None:
    import_customers(hub, tmp_path, *EVERYONE)
    # Registered after the import: its key bundle's change comes after the customers.
    rogue = Rogue(hub, "rogue", "north")
    honest_north = Rogue(hub, "store-n2", "north")
    # Sara (home: south) shops once at another store of the north.
    honest_north.post_events(event("store-n2", "customer.identified",
                                   data={"txn": "t-1", "customer_id": "c-sara",
                                         "method": "card"}))

    raw, changes = rogue.whole_feed()
    text_ = raw.decode()
    leaked = [form for c in EVERYONE for form in raw_forms(c) if form in text_]
    assert leaked == []
    # Home region north, and Sara, seen in the north: nobody else of the south, not Nora.
    assert customers_in(changes) == {"c-anna", "c-ben", "c-sara"}
    bundle = KeyBundle.from_json(next(c for c in changes if c["kind"] == "lookup_key")
                                 ["lookup_key"])
    kinds = [c["kind"] for c in changes]
    # The bundle comes ahead of the customers, so the store can use them as they come.
    assert kinds.index("lookup_key") < kinds.index("customer")
    anna = next(c["customer"] for c in changes if c["kind"] == "customer"
                and c["customer"]["id"] == "c-anna")
    assert anna["key"] == bundle.kid
    # Its hashes are the look-up hashes of Anna's card and phone with the north's key.
    assert {"kind": "card", "hash": bundle.keyed(bundle.stretch("card", "4000111122223333"))} \
        in anna["lookups"]
    assert {"kind": "phone", "hash": bundle.keyed(bundle.stretch("phone", "+4915123456789"))} \
        in anna["lookups"]
    assert set(anna) == {"id", "display_name", "tier", "points", "consent", "segments",
                         "wallet", "lookups", "key"}
    # The south's stores get another key: the north's hashes mean nothing there.
    _, south_changes = Rogue(hub, "store-s2", "south").whole_feed()
    assert customers_in(south_changes) == {"c-sara", "c-tom"}
    south_key = next(c for c in south_changes if c["kind"] == "lookup_key")["lookup_key"]
    assert south_key["kid"] != bundle.kid and south_key["salt"] == bundle.salt


def test_ten_thousand_guessed_phone_numbers_are_throttled_and_show_in_the_audit(
        hub: HubServer, tmp_path: Path) -> None:
    import_customers(hub, tmp_path, ANNA, SARA)
    rogue = Rogue(hub, "rogue", "north")
    statuses: dict[int, int] = {}
    found: list[int] = []
    started = time.monotonic()
    for i in range(10_000):
        # Sara's real number among the guesses: within the limit, and just past it.
        value = "+4916012345678" if i in (3, 100) else f"+49151{i:08d}"
        resp = rogue.lookup({"kind": "phone", "value": value})
        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
        if resp.status_code == 200:
            found.append(i)
        if resp.status_code == 429:
            assert resp.json()["error"]["code"] == "too_many_lookups"
            assert 1 <= int(resp.headers["Retry-After"]) <= 60
    minutes = 1 + int((time.monotonic() - started) // 60)  # each new minute allows 30 more
    assert found == [3]  # the guess past the limit found nobody
    answered = statuses.get(200, 0) + statuses.get(404, 0)
    assert 30 <= answered <= 30 * minutes
    assert set(statuses) == {200, 404, 429} and statuses[429] == 10_000 - answered
    assert wait_until(lambda: audit(hub, "rogue").get("throttled") == statuses[429], 10)
    counts = audit(hub, "rogue")
    assert counts["found"] == 1 and counts["not_found"] == answered - 1


def test_a_member_code_signed_by_a_store_key_is_refused_by_the_hub_look_up(
        hub: HubServer, tmp_path: Path, edges: Any) -> None:
    import_customers(hub, tmp_path, SARA)
    svc = edges("store-n", "north")
    svc.puller.run()  # publishes the store's key: it is in the chain's JWK Set
    now = int(time.time())
    forged = svc.signing_key.sign({"sub": "c-sara", "iat": now, "exp": now + 120},
                                  "member+jwt")
    resp = requests.post(f"{hub.url}/api/v1/stores/store-n/lookup",
                         json={"kind": "member", "token": forged},
                         headers={"Authorization": f"Bearer {svc.settings.hub_token}"},
                         timeout=10)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "bad_member_code"
    assert "Sara" not in resp.text
    # The hub's own code for her is good.
    genuine = hub_cli(hub, "members", "issue", "c-sara")["token"]
    resp = requests.post(f"{hub.url}/api/v1/stores/store-n/lookup",
                         json={"kind": "member", "token": genuine},
                         headers={"Authorization": f"Bearer {svc.settings.hub_token}"},
                         timeout=10)
    assert resp.status_code == 200 and resp.json()["customer"]["id"] == "c-sara"
    assert audit(hub, "store-n") == {"total": 2, "bad": 1, "found": 1}


# ---------------------------------------------------------------- the till


def test_a_member_code_of_a_shopper_the_store_does_not_hold_is_found_online(
        hub: HubServer, tmp_path: Path, edges: Any) -> None:
    import_customers(hub, tmp_path, SARA)
    svc = edges("store-n", "north")
    svc.puller.run()  # the hub's key (member codes), the north's bundle; the hub is online
    assert svc.store.query_one("SELECT 1 FROM customers WHERE id = 'c-sara'") is None
    code = hub_cli(hub, "members", "issue", "c-sara")["token"]
    who = svc.checkout.identify("lane-1", "t-1", code, None)
    assert who["customer"]["display_name"] == "Sara Lind"
    sale = svc.store.query_one("SELECT customer_id FROM transactions WHERE txn = 't-1'")
    assert sale is not None and sale["customer_id"] == "c-sara"
    # Cached with her look-up hashes: her card works here from now on, hub or not.
    svc.hub.last_contact = None
    assert svc.checkout.identify("lane-1", "t-2", "4000333344445555", None)[
        "customer"]["id"] == "c-sara"


def test_the_link_offline_means_no_online_look_up_at_all(
        hub: HubServer, tmp_path: Path, edges: Any) -> None:
    import_customers(hub, tmp_path, SARA)
    svc = edges("store-n", "north")
    svc.puller.run()
    svc.hub.last_contact = None  # nothing heard from the hub for hub_offline_after_s
    with pytest.raises(CustomerUnknown):
        svc.checkout.identify("lane-1", "t-1", "4000333344445555", None)
    assert audit(hub, "store-n") == {}  # the hub was never asked


def test_cards_and_phones_are_found_after_a_pull_through_hashes_only(
        hub: HubServer, tmp_path: Path, edges: Any) -> None:
    import_customers(hub, tmp_path, ANNA, BEN)
    svc = edges("store-n", "north")
    svc.puller.run()
    assert svc.puller.last_error is None
    assert svc.checkout.identify("lane-1", "t-1", "4000 1111 2222 3333", None)[
        "customer"]["id"] == "c-anna"
    assert svc.checkout.identify("lane-1", "t-2", None, "0152 12345678")[
        "customer"]["id"] == "c-ben"
    assert svc.checkout.identify("lane-1", "t-3", None, "+49 1512 3456789")[
        "customer"]["id"] == "c-anna"
    assert audit(hub, "store-n") == {}  # all found locally
    svc.store.checkpoint()
    data = b"".join(p.read_bytes() for p in Path(svc.datadir.root).rglob("edge.db*"))
    assert not [f for c in (ANNA, BEN) for f in raw_forms(c) if f.encode() in data]
    assert len(svc.store.query("SELECT * FROM customer_lookup")) == 6


def test_a_new_region_key_clears_the_look_ups_and_the_replay_restores_them(
        hub: HubServer, tmp_path: Path, edges: Any) -> None:
    import_customers(hub, tmp_path, ANNA)
    svc = edges("store-n", "north")
    svc.puller.run()
    old_kid = svc.lookup.kid
    before = {r["hash"] for r in svc.store.query("SELECT hash FROM customer_lookup")}
    assert len(before) == 3

    rotated = hub_cli(hub, "lookups", "rotate-key", "north")
    assert rotated["kid"] != old_kid and rotated["stores"] == 1
    assert svc.puller.pull_page()  # the page with the new bundle: read the feed again
    assert svc.puller.cursor == ""
    assert svc.lookup.kid == rotated["kid"]
    saved = json.loads((svc.datadir.secrets / "lookup-key.json").read_text())
    assert saved["kid"] == rotated["kid"]
    assert (svc.datadir.secrets / "lookup-key.json").stat().st_mode & 0o777 == 0o600
    svc.puller.run()
    after = {r["hash"] for r in svc.store.query("SELECT hash FROM customer_lookup")}
    assert len(after) == 3 and not after & before
    assert svc.checkout.identify("lane-1", "t-1", "4000111122223333", None)[
        "customer"]["id"] == "c-anna"


def test_a_shopper_not_seen_in_a_region_for_the_window_is_forgotten_there_not_their_sales(
        hub: HubServer, tmp_path: Path, edges: Any) -> None:
    import_customers(hub, tmp_path, ANNA, SARA)
    svc = edges("store-n", "north")
    svc.puller.run()
    # Sara shops in the north (found online), and the sale goes to the hub.
    assert svc.checkout.identify("lane-1", "t-1", "4000333344445555", None)[
        "customer"]["id"] == "c-sara"
    svc.sender.run()
    report = hub_cli(hub, "customers", "expire-regions", "--days", "0")
    assert report["regions"] == {"north": 1}  # Sara's sighting; Anna lives here
    svc.puller.run()
    assert svc.store.query_one("SELECT 1 FROM customers WHERE id = 'c-sara'") is None
    assert svc.store.query("SELECT * FROM customer_lookup WHERE customer_id = 'c-sara'") == []
    sale = svc.store.query_one("SELECT customer_id FROM transactions WHERE txn = 't-1'")
    assert sale is not None and sale["customer_id"] == "c-sara"
    assert svc.store.query_one("SELECT 1 FROM customers WHERE id = 'c-anna'") is not None
    with svc.store.transaction() as db:  # forgetting a stranger is no error
        assert forget_customer(db.conn, "c-nobody") == 0


def test_an_erasure_removes_the_customer_from_the_feed_of_every_region(
        hub: HubServer, tmp_path: Path) -> None:
    import_customers(hub, tmp_path, ANNA, SARA)
    north, south = Rogue(hub, "store-n", "north"), Rogue(hub, "store-s", "south")
    south.post_events(event("store-s", "transaction.completed",
                            data={"txn": "t-1", "customer_id": "c-anna", "total_minor": 100,
                                  "currency": "EUR"}))
    assert "c-anna" in customers_in(south.whole_feed()[1])
    hub_cli(hub, "customers", "erase", "c-anna")
    for store in (north, south):
        raw, changes = store.whole_feed()
        assert "c-anna" not in customers_in(changes)
        assert [c["customer_id"] for c in changes if c["kind"] == "erasure"] == ["c-anna"]
        assert b"Anna" not in raw
    # Not found online either.
    assert north.lookup({"kind": "card", "value": "4000111122223333"}).status_code == 404


# ---------------------------------------------------------------- a real edge serve


def test_a_shopper_of_another_region_is_found_at_the_till_within_the_bound(
        hub: HubServer, tmp_path: Path, settings: Settings,
        enrolled: Callable[[str, str], Enrolment]) -> None:
    import_customers(hub, tmp_path, ANNA, SARA, TOM)
    token = add_store(hub.settings, "store-n", "north")
    edge_settings = edge_for(settings, hub.url, token, store_id="store-n",
                             sync_pull_interval_s=3600, hub_lookup_timeout_ms=800,
                             http_port=0)  # the edge picks its port and reports it
    lane_login = enrolled("pos", "lane-1")
    proc = start_edge(edge_settings)
    hole: BlackHole | None = None
    try:
        health = f"http://127.0.0.1:{proc.http_port}/healthz"
        assert wait_until(lambda: requests.get(health, timeout=2).json()["queue"]["pull"][
            "cursor"], 20), "the edge did not read the feed"
        lane = Lane(HttpTransport(f"http://127.0.0.1:{proc.http_port}", "lane-1",
                                  lane_login.password))
        assert lane.identify("t-1", code="4000111122223333")["customer"]["id"] == "c-anna"
        # Sara lives in the south: not in this store, found at the hub.
        assert lane.identify("t-2", code="4000 3333 4444 5555")["customer"][
            "display_name"] == "Sara Lind"
        assert audit(hub, "store-n") == {"total": 1, "found": 1}
        # The north's feed now carries her (hashed with the north's key).
        north = Rogue(hub, "store-n", "north", token)
        assert "c-sara" in customers_in(north.whole_feed()[1])

        stop_hub(hub)
        # Cached: her phone finds her with the hub gone.
        assert lane.identify("t-3", phone="+49 160 12345678")["customer"]["id"] == "c-sara"

        # The hub's address swallows connections: the till still answers, unknown.
        hole = BlackHole(hub.settings.http_port)
        with pytest.raises(Refused) as unknown:
            lane.identify("t-4", code="4000 4444 5555 6666")  # Tom: south, not cached
        assert unknown.value.code == "customer_unknown"
        metrics = requests.get(f"http://127.0.0.1:{proc.http_port}/metrics",
                               timeout=5).text
        assert 'edge_hub_lookups_total{outcome="timeout"} 1.0' in metrics
    finally:
        if hole is not None:
            hole.close()
        stop_process(proc)


# ---------------------------------------------------------------- the hub's schema


def test_upgrade_schema_adds_the_region_column_to_an_old_changes_table(
        tmp_path: Path, hub_db_url: str) -> None:
    url = hub_db_url or f"sqlite:///{tmp_path / 'old.db'}"
    db_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE changes (seq INTEGER PRIMARY KEY, kind VARCHAR(20) "
                          "NOT NULL, ref VARCHAR(128) NOT NULL, payload TEXT NOT NULL, "
                          "store_id VARCHAR(64), created_ts FLOAT NOT NULL)"))
        conn.execute(text("INSERT INTO changes VALUES (1, 'customer', 'c-1', "
                          "'{\"customer\": {\"phone\": \"+4915123456789\"}}', NULL, 1), "
                          "(2, 'campaign', 'cmp-1', '{}', NULL, 1)"))
    engine.dispose()
    db = HubDB(url)
    try:
        columns = {c["name"] for c in inspect(db.engine).get_columns("changes")}
        assert "region" in columns
        with db.read() as conn:
            kinds = [r[0] for r in conn.execute(text("SELECT kind FROM changes"))]
        assert kinds == ["campaign"]  # the raw customer record left the feed
        assert upgrade_schema(db.engine) == []  # nothing more to add
    finally:
        db.dispose()


def test_the_region_rule_and_the_look_up_limit_on_either_database(
        tmp_path: Path, hub_db_url: str) -> None:
    from cloud_sync.hub import feed, lookups
    from cloud_sync.hub.settings import load_hub_settings
    from cloud_sync.hub.stores import add_store as register
    from store_contract.jws import SigningKey

    settings = load_hub_settings({"HUB_DATA_DIR": str(tmp_path / "hub"),
                                  "HUB_DATABASE_URL": hub_db_url,
                                  "HUB_LOOKUP_PER_MINUTE": "3"})
    db = HubDB(settings.db_url)
    try:
        register(db, "n1", "north")
        register(db, "s1", "south")
        report = feed.import_customers(db, [json.dumps(c) for c in (ANNA, SARA, NORA)])
        assert report["imported"] == 3
        hub_key = SigningKey("hub-1", Ed25519PrivateKey.generate())
        now = time.time()
        found = lookups.online_lookup(db, settings, hub_key, "n1",
                                      {"kind": "card", "value": "4000 3333 4444 5555"},
                                      now=now)
        assert found["customer"]["id"] == "c-sara"
        # Nora has no home region: seen by the south from a sale.
        with db.write() as conn:
            assert lookups.record_sightings(conn, "south", ["c-nora", "c-none"], now) == \
                ["c-nora"]
            assert lookups.record_sightings(conn, "south", ["c-nora"], now) == []
        north = customers_in(feed.read_changes(db, "n1", None, "1000")["changes"])
        south = customers_in(feed.read_changes(db, "s1", None, "1000")["changes"])
        assert (north, south) == ({"c-anna", "c-sara"}, {"c-sara", "c-nora"})
        with pytest.raises(EdgeError) as unknown:
            lookups.online_lookup(db, settings, hub_key, "n1",
                                  {"kind": "phone", "value": "+4915100000042"}, now=now)
        assert unknown.value.code == "customer_unknown"
        with pytest.raises(EdgeError) as bad:
            lookups.online_lookup(db, settings, hub_key, "n1",
                                  {"kind": "phone", "value": "0151 2345"}, now=now)
        assert bad.value.code == "bad_lookup"
        with pytest.raises(lookups.TooManyLookups) as limited:  # 3 a minute
            lookups.online_lookup(db, settings, hub_key, "n1",
                                  {"kind": "card", "value": "4000 1111 2222 3333"}, now=now)
        assert 1 <= limited.value.retry_after <= 60
        later = now + 61  # the window rolled on
        assert lookups.online_lookup(db, settings, hub_key, "n1", {
            "kind": "card", "value": "4000 1111 2222 3333"}, now=later)["customer"]["id"] == \
            "c-anna"
        report = lookups.audit_report(db, "n1", now=later)["stores"]["n1"]
        assert report == {"total": 5, "bad": 1, "found": 2, "not_found": 1, "throttled": 1}
        # Sara's sighting in the north expires; her home (south) never does.
        expired = lookups.expire_regions(db, 90, now=now + 91 * 86400)
        assert expired["regions"] == {"north": 1, "south": 1}  # Sara, Nora
        changes = feed.read_changes(db, "n1", None, "1000")["changes"]
        assert customers_in(changes) == {"c-anna"}
        assert [c["customer_id"] for c in changes if c["kind"] == "forget"] == ["c-sara"]
    finally:
        db.dispose()
