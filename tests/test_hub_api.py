"""The hub's store API against a real `edge-hub serve`, on SQLite and on PostgreSQL."""


from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from sqlalchemy import func, select

from cloud_sync.hub.changelog import append_changes
from cloud_sync.hub.db import HubDB
from cloud_sync.hub.schema import changes, conflicts, events, redemptions, stores
from tests.conftest import at_once
from tests.hubfix import HubServer, event, redeemed, run_hub


@pytest.fixture
def db(hub_server: HubServer) -> Iterator[HubDB]:
    """The running hub's database, opened by the test to look at what was stored."""
    hub_db = HubDB(hub_server.settings.db_url)
    yield hub_db
    hub_db.dispose()


def count(db: HubDB, table: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def post(server: HubServer, store: str, token: str | None, body: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return requests.post(f"{server.url}/api/v1/stores/{store}/events", data=data,
                         headers={**headers, "Content-Type": "application/json"}, timeout=30)


def pull(server: HubServer, store: str, token: str, **params: Any) -> requests.Response:
    return requests.get(f"{server.url}/api/v1/stores/{store}/changes", params=params,
                        headers={"Authorization": f"Bearer {token}"}, timeout=10)


def batch(*evs: dict[str, Any], batch_id: str = "b-1", **extra: Any) -> dict[str, Any]:
    return {"batch_id": batch_id, "events": list(evs), **extra}


def assert_error(resp: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def test_health_answers_with_the_database_state(hub_server: HubServer) -> None:
    resp = requests.get(f"{hub_server.url}/healthz", timeout=5)
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "database": {"ok": True}}


def test_store_without_a_known_token_is_refused(hub_server: HubServer, hub_store: Callable,
                                                db: HubDB) -> None:
    hub_store("s1")
    assert_error(post(hub_server, "s1", None, batch(event("s1"))), 401, "unauthorized")
    assert_error(post(hub_server, "s1", "not-a-token", batch(event("s1"))), 401,
                 "unauthorized")
    assert_error(pull(hub_server, "s1", "not-a-token"), 401, "unauthorized")
    assert count(db, events) == 0


def test_token_of_another_store_is_forbidden(hub_server: HubServer, hub_store: Callable,
                                             db: HubDB) -> None:
    hub_store("s1")
    other = hub_store("s2")
    assert_error(post(hub_server, "s1", other, batch(event("s1"))), 403, "wrong_store")
    assert_error(pull(hub_server, "s1", other), 403, "wrong_store")
    assert count(db, events) == 0


def test_batch_is_stored_with_typed_columns_and_the_edges_queue_report(
        hub_server: HubServer, hub_store: Callable, db: HubDB) -> None:
    token = hub_store("s1")
    sale = event("s1", "transaction.completed", data={
        "txn": "t-9", "total_minor": 1999, "discount_minor": 100, "currency": "EUR",
        "customer_id": "c-1"})
    other = event("s1", "kiosk.session", device_id=None, data={"seconds": 40})
    before = time.time()
    resp = post(hub_server, "s1", token, batch(sale, other, edge={
        "queue_depth": 12, "oldest_age_s": 3.5, "dead_letters": 1}))
    after = time.time()
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"accepted": [sale["event_id"], other["event_id"]],
                           "duplicates": [], "rejected": []}
    with db.read() as conn:
        row = conn.execute(select(events).where(events.c.event_id == sale["event_id"])).one()
        store = conn.execute(select(stores).where(stores.c.id == "s1")).one()
    assert (row.store_id, row.type, row.customer_id, row.total_minor, row.discount_minor,
            row.currency) == ("s1", "transaction.completed", "c-1", 1999, 100, "EUR")
    assert json.loads(row.data)["txn"] == "t-9"
    assert (store.queue_depth, store.oldest_age_s, store.dead_letters) == (12, 3.5, 1)
    for stamp in (store.last_batch_ts, store.last_contact_ts, store.reported_ts, row.received_ts):
        assert before <= stamp <= after, (before, stamp, after)


def test_batch_over_the_event_limit_is_refused_whole(hub_server: HubServer,
                                                     hub_store: Callable, db: HubDB) -> None:
    token = hub_store("s1")
    limit = hub_server.settings.max_batch_events
    resp = post(hub_server, "s1", token, batch(*[event("s1") for _ in range(limit + 1)]))
    assert_error(resp, 413, "batch_too_large")
    assert count(db, events) == 0


def test_batch_over_the_byte_limit_is_refused_as_json(hub_server: HubServer,
                                                      hub_store: Callable, db: HubDB) -> None:
    token = hub_store("s1")
    big = "x" * (hub_server.settings.max_batch_bytes + 10)
    resp = post(hub_server, "s1", token, batch(event("s1", data={"pad": big})))
    assert_error(resp, 413, "batch_too_large")
    assert count(db, events) == 0


def test_malformed_json_is_refused(hub_server: HubServer, hub_store: Callable,
                                   db: HubDB) -> None:
    token = hub_store("s1")
    assert_error(post(hub_server, "s1", token, b'{"batch_id": "b-1", "events": [}'), 400,
                 "bad_json")
    assert_error(post(hub_server, "s1", token, {"batch_id": "b-1", "events": []}), 400,
                 "bad_batch")
    assert count(db, events) == 0


def test_unknown_event_type_refuses_the_batch(hub_server: HubServer, hub_store: Callable,
                                              db: HubDB) -> None:
    token = hub_store("s1")
    bad = event("s1", "coupon.stolen")
    error = assert_error(post(hub_server, "s1", token, batch(event("s1"), bad)), 400,
                         "bad_events")
    assert error["detail"]["rejected"] == [
        {"index": 1, "event_id": bad["event_id"], "error": "type: 'coupon.stolen' is not an "
                                                           "event type"}]
    assert count(db, events) == 0


def test_one_invalid_event_is_named_by_index_and_nothing_is_stored(
        hub_server: HubServer, hub_store: Callable, db: HubDB) -> None:
    token = hub_store("s1")
    good = [redeemed("s1", "cpn-a"), event("s1"), event("s1")]
    no_currency = redeemed("s1", "cpn-b")
    del no_currency["data"]["currency"]
    wrong_store = {**event("s1"), "store_id": "s2"}
    no_zone = event("s1", occurred_at="2026-11-22T14:03:05")
    evs = [good[0], no_currency, good[1], wrong_store, good[2], no_zone]
    error = assert_error(post(hub_server, "s1", token, batch(*evs)), 400, "bad_events")
    rejected = error["detail"]["rejected"]
    assert [(r["index"], r["event_id"]) for r in rejected] == [
        (1, no_currency["event_id"]), (3, wrong_store["event_id"]), (5, no_zone["event_id"])]
    assert rejected[0]["error"].startswith("data.currency")
    assert count(db, events) == 0 and count(db, redemptions) == 0


def test_repeated_batch_is_all_duplicates_and_has_its_effect_once(
        hub_server: HubServer, hub_store: Callable, db: HubDB, hub_key: Any) -> None:
    token = hub_store("s1")
    body = batch(redeemed("s1", "cpn-once", signer=hub_key), event("s1"))
    ids = [e["event_id"] for e in body["events"]]
    first = post(hub_server, "s1", token, body).json()
    again = post(hub_server, "s1", token, body).json()
    assert first == {"accepted": ids, "duplicates": [], "rejected": []}
    assert again == {"accepted": [], "duplicates": ids, "rejected": []}
    assert count(db, events) == 2 and count(db, redemptions) == 1
    kinds = [c["kind"] for c in pull(hub_server, "s1", token).json()["changes"]]
    assert kinds.count("redemption") == 1


def test_event_id_already_sent_by_another_store_is_rejected(
        hub_server: HubServer, hub_store: Callable, db: HubDB) -> None:
    t1, t2 = hub_store("s1"), hub_store("s2")
    ev = event("s1")
    assert post(hub_server, "s1", t1, batch(ev)).json()["accepted"] == [ev["event_id"]]
    theirs = {**ev, "store_id": "s2"}
    mine = event("s2")
    resp = post(hub_server, "s2", t2, batch(theirs, mine))
    assert resp.status_code == 200
    assert resp.json() == {"accepted": [mine["event_id"]], "duplicates": [],
                           "rejected": [{"event_id": ev["event_id"],
                                         "error": "event_id_taken"}]}
    with db.read() as conn:
        owner = conn.execute(select(events.c.store_id)
                             .where(events.c.event_id == ev["event_id"])).scalar()
    assert owner == "s1"


def test_single_use_coupon_redeemed_at_two_stores_is_one_conflict_until_reversed(
        hub_server: HubServer, hub_store: Callable, db: HubDB, hub_key: Any) -> None:
    t1, t2 = hub_store("s1"), hub_store("s2")
    at_s1 = redeemed("s1", "cpn-double", signer=hub_key)
    at_s2 = redeemed("s2", "cpn-double", signer=hub_key)
    shared_a, shared_b = redeemed("s1", "code:SAVE10"), redeemed("s2", "code:SAVE10")
    assert post(hub_server, "s1", t1, batch(at_s1, shared_a)).status_code == 200
    with db.read() as conn:
        assert conn.execute(select(conflicts)).all() == []
    assert post(hub_server, "s2", t2, batch(at_s2, shared_b)).status_code == 200
    with db.read() as conn:
        rows = conn.execute(select(conflicts)).all()
    assert len(rows) == 1
    row = rows[0]
    assert (row.coupon_id, row.uses, row.max_uses, row.resolved_ts) == ("cpn-double", 2, 1, None)
    assert json.loads(row.stores) == ["s1", "s2"]
    assert sorted(json.loads(row.redemptions)) == sorted(
        [at_s1["data"]["redemption"], at_s2["data"]["redemption"]])
    # The second store gives the money back: the coupon is within its one use again.
    reversal = event("s2", "coupon.redemption_reversed", data={
        "redemption": at_s2["data"]["redemption"], "coupon": "cpn-double"})
    assert post(hub_server, "s2", t2, batch(reversal, batch_id="b-2")).status_code == 200
    with db.read() as conn:
        after = conn.execute(select(conflicts)).one()
    assert after.resolved_ts is not None and after.uses == 1
    assert after.detected_ts == row.detected_ts
    # Other stores learn every use and its reversal through the feed.
    feed = pull(hub_server, "s1", t1).json()["changes"]
    uses = [c["redemption"] for c in feed if c["kind"] == "redemption"
            and c["redemption"]["coupon"] == "cpn-double"]
    assert [u["store_id"] for u in uses] == ["s1", "s2", "s2"]
    assert uses[-1]["reversed_at"] == reversal["occurred_at"]


def test_change_feed_pages_by_cursor_and_filters_per_store(
        hub_server: HubServer, hub_store: Callable, db: HubDB, tmp_path: Any) -> None:
    t1, t2 = hub_store("s1"), hub_store("s2")
    lines = [json.dumps({"id": f"c-{i}", "display_name": f"Shopper {i}", "region": "north"})
             for i in range(5)]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    done = run_hub(hub_server.settings, "customers", "import", str(tmp_path / "c.jsonl"))
    assert done.returncode == 0, done.stderr
    with db.write() as conn:
        append_changes(conn, [("revocation", "coupon:x", {"scope": "coupon", "id": "x",
                                                          "reason": "only s2"}, "s2")])
    pages, cursor = [], ""
    while True:
        resp = pull(hub_server, "s1", t1, cursor=cursor, limit=2)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages.append([c["kind"] for c in body["changes"]])
        cursor = body["cursor"]
        if not body["more"]:
            break
    # keys (published at start-up), the store's own look-up key bundle, then the five
    # customers of its region, two at a time.
    assert pages == [["keys", "lookup_key"], ["customer", "customer"], ["customer", "customer"],
                     ["customer"]]
    end = pull(hub_server, "s1", t1, cursor=cursor).json()
    assert end == {"cursor": cursor, "changes": [], "more": False}
    s2 = pull(hub_server, "s2", t2, limit=1000).json()["changes"]
    assert [c["kind"] for c in s2][-1] == "revocation" and len(s2) == 8
    customers = [c for c in s2 if c["kind"] == "customer"]
    bundle = next(c["lookup_key"] for c in s2 if c["kind"] == "lookup_key")
    assert customers[0]["customer"] == {
        "id": "c-0", "display_name": "Shopper 0", "tier": "member", "points": 0,
        "consent": {"personalised": False, "marketing": False}, "segments": [], "wallet": [],
        "lookups": [], "key": bundle["kid"]}
    seqs = [c["seq"] for c in s2]
    assert all(type(seq) is int for seq in seqs) and seqs == sorted(set(seqs))  # rising
    for params in ({"cursor": "abc"}, {"limit": "0"}, {"limit": "1001"}, {"limit": "x"}):
        code = "bad_cursor" if "cursor" in params else "bad_limit"
        assert_error(pull(hub_server, "s1", t1, **params), 400, code)


def test_erasure_drops_the_customers_changes_and_anonymises_events(
        hub_server: HubServer, hub_store: Callable, db: HubDB, tmp_path: Any) -> None:
    token = hub_store("s1")
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"id": "c-gone", "display_name": "Ann", "phones": ["+49 30 901820"],
                    "region": "north"}) + "\n"
        + json.dumps({"id": "c-stays", "display_name": "Bob", "region": "north"}) + "\n")
    assert run_hub(hub_server.settings, "customers", "import",
                   str(tmp_path / "c.jsonl")).returncode == 0
    sale = event("s1", "transaction.completed", data={
        "txn": "t-1", "total_minor": 500, "currency": "EUR", "customer_id": "c-gone",
        "identifier": {"method": "phone", "value": "+49 30 901820"}})
    use = redeemed("s1", "cpn-1")
    use["data"]["customer_id"] = "c-gone"
    assert post(hub_server, "s1", token, batch(sale, use)).status_code == 200
    done = run_hub(hub_server.settings, "customers", "erase", "c-gone")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events_anonymised"] == 2
    feed = pull(hub_server, "s1", token).json()["changes"]
    assert [c["customer"]["id"] for c in feed if c["kind"] == "customer"] == ["c-stays"]
    assert [c for c in feed if c["kind"] == "erasure"][0]["customer_id"] == "c-gone"
    assert "901820" not in json.dumps(feed)
    with db.read() as conn:
        rows = conn.execute(select(events.c.customer_id, events.c.data)).all()
        assert conn.execute(select(redemptions.c.customer_id)).scalar() is None
        assert conn.execute(select(func.count()).select_from(changes)
                            .where(changes.c.ref == "c-gone")).scalar() == 1  # the erasure
    assert all(r.customer_id is None for r in rows)
    assert "c-gone" not in json.dumps([r.data for r in rows])
    assert "901820" not in json.dumps([r.data for r in rows])


def _store_jwk(store: str, n: int = 1) -> dict[str, Any]:
    private = json.loads(OKPAlgorithm.to_jwk(Ed25519PrivateKey.generate()))
    return {**private, "kid": f"store-{store}-{n}"}


def test_store_key_is_published_in_the_jwks_and_the_feed(
        hub_server: HubServer, hub_store: Callable) -> None:
    token = hub_store("s1")
    url = f"{hub_server.url}/api/v1/stores/s1/key"
    auth = {"Authorization": f"Bearer {token}"}
    private = _store_jwk("s1")
    public = {k: v for k, v in private.items() if k != "d"}
    assert_error(requests.put(url, json=private, headers=auth, timeout=5), 400, "bad_key")
    assert_error(requests.put(url, json={**public, "kid": "store-s2-1"}, headers=auth,
                              timeout=5), 400, "bad_key")
    assert_error(requests.put(url, json={"kty": "RSA", "n": "x", "e": "AQAB",
                                         "kid": "store-s1-1"}, headers=auth, timeout=5),
                 400, "bad_key")
    resp = requests.put(url, json=public, headers=auth, timeout=5)
    assert resp.status_code == 200 and resp.json()["changed"] is True
    assert requests.put(url, json=public, headers=auth, timeout=5).json()["changed"] is False
    jwks = requests.get(f"{hub_server.url}/.well-known/jwks.json", timeout=5).json()
    assert [k["kid"] for k in jwks["keys"]] == ["hub-1", "store-s1-1"]
    assert all("d" not in k for k in jwks["keys"])
    feed = pull(hub_server, "s1", token).json()["changes"]
    key_changes = [c for c in feed if c["kind"] == "keys"]
    assert len(key_changes) == 1 and key_changes[0]["jwks"] == jwks


def test_api_errors_keep_the_json_shape(hub_server: HubServer, hub_store: Callable) -> None:
    token = hub_store("s1")
    assert_error(requests.get(f"{hub_server.url}/api/v1/nothing", timeout=5), 404, "not_found")
    resp = requests.get(f"{hub_server.url}/api/v1/stores/s1/events",
                        headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert_error(resp, 405, "method_not_allowed")


def _store_figures(db: HubDB, store_id: str) -> tuple[Any, ...]:
    with db.read() as conn:
        row = conn.execute(select(stores).where(stores.c.id == store_id)).one()
    return (row.queue_depth, row.oldest_age_s, row.dead_letters)


def test_an_unusable_edge_report_never_costs_the_batch_its_events(
        hub_server: HubServer, hub_store: Callable, db: HubDB) -> None:
    token = hub_store("s1")
    good = post(hub_server, "s1", token, batch(event("s1"), edge={
        "queue_depth": 12, "oldest_age_s": 3.5, "dead_letters": 1}))
    assert good.status_code == 200, good.text
    assert _store_figures(db, "s1") == (12, 3.5, 1)
    # Not an object: ignored, the stored figures stay.
    for n, report in enumerate(["garbage", [1, 2], 7, True]):
        ev = event("s1")
        resp = post(hub_server, "s1", token, batch(ev, batch_id=f"b-x{n}", edge=report))
        assert resp.status_code == 200, (report, resp.text)
        assert resp.json()["accepted"] == [ev["event_id"]], report
        assert _store_figures(db, "s1") == (12, 3.5, 1), report
    # Figures out of range or of the wrong type are left out one by one.
    ev = event("s1")
    resp = post(hub_server, "s1", token, batch(ev, batch_id="b-y", edge={
        "queue_depth": "13", "dead_letters": 2 ** 31, "oldest_age_s": 1e300}))
    assert resp.json()["accepted"] == [ev["event_id"]]
    assert _store_figures(db, "s1") == (12, 3.5, 1)
    resp = post(hub_server, "s1", token, batch(event("s1"), batch_id="b-z", edge={
        "queue_depth": True, "dead_letters": 4, "oldest_age_s": -30}))
    assert resp.status_code == 200, resp.text
    assert _store_figures(db, "s1") == (12, 0.0, 4)  # a clock that stepped back: age 0
    assert count(db, events) == 7


def test_one_event_id_twice_in_one_batch_is_stored_once_as_first_sent(
        hub_server: HubServer, hub_store: Callable, db: HubDB, hub_key: Any) -> None:
    token = hub_store("s1")
    use = redeemed("s1", "cpn-twice", signer=hub_key)
    copy = {**use, "data": {**use["data"], "discount_minor": 999}}  # same id, other content
    resp = post(hub_server, "s1", token, batch(use, copy))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"accepted": [use["event_id"]], "duplicates": [use["event_id"]],
                           "rejected": []}
    assert count(db, events) == 1 and count(db, redemptions) == 1
    with db.read() as conn:
        row = conn.execute(select(events).where(events.c.event_id == use["event_id"])).one()
    assert json.loads(row.data)["discount_minor"] == 250 and row.discount_minor == 250
    kinds = [c["kind"] for c in pull(hub_server, "s1", token).json()["changes"]]
    assert kinds.count("redemption") == 1


def test_the_same_batch_sent_twice_at_once_is_stored_once(
        hub_server: HubServer, hub_store: Callable, db: HubDB, hub_key: Any) -> None:
    token = hub_store("s1")
    for round_ in range(10):
        body = batch(redeemed("s1", f"cpn-dup-{round_}", signer=hub_key), event("s1"),
                     batch_id=f"b-{round_}")
        ids = [e["event_id"] for e in body["events"]]
        one, two = at_once([lambda b=body: post(hub_server, "s1", token, b),  # type: ignore
                            lambda b=body: post(hub_server, "s1", token, b)])  # type: ignore
        assert one.status_code == two.status_code == 200, (one.text, two.text)
        answers = [one.json(), two.json()]
        # Each event is accepted by exactly one of the two and a duplicate in the other.
        for eid in ids:
            assert sorted(eid in a["accepted"] for a in answers) == [False, True], answers
            assert sorted(eid in a["duplicates"] for a in answers) == [False, True], answers
    assert count(db, events) == 20 and count(db, redemptions) == 10


def test_two_stores_racing_for_a_single_use_coupon_always_make_a_conflict(
        hub_server: HubServer, hub_store: Callable, db: HubDB, hub_key: Any) -> None:
    """On PostgreSQL the advisory lock makes the second batch wait for the first and see
    its redemption; without it both would count one use and no conflict would be seen."""
    t1, t2 = hub_store("s1"), hub_store("s2")
    rounds = 15
    for round_ in range(rounds):
        coupon = f"cpn-race-{round_}"
        a = batch(redeemed("s1", coupon, signer=hub_key), batch_id=f"a-{round_}")
        b = batch(redeemed("s2", coupon, signer=hub_key), batch_id=f"b-{round_}")
        answers = at_once([lambda: post(hub_server, "s1", t1, a),  # noqa: B023 - joined here
                           lambda: post(hub_server, "s2", t2, b)])  # noqa: B023
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    with db.read() as conn:
        rows = conn.execute(select(conflicts)).all()
    assert sorted(r.coupon_id for r in rows) == sorted(f"cpn-race-{i}" for i in range(rounds))
    assert {(r.uses, r.max_uses) for r in rows} == {(2, 1)}
    assert {r.stores for r in rows} == {json.dumps(["s1", "s2"])}
