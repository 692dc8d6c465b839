"""The outbox events of store_contract.events (fast: no broker, no database server).

The reference points are what was there before the typed events: the writers' dict literals
(`_old_*` below, copied from the writers as they were) and the hub's if/elif chain of checks
(`_old_check`, copied from cloud_sync/hub/ingest.py parse_event). The outbox's bytes and
the hub's rejection reasons are contracts: both must stay exactly as they were.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.audit import REPRINT, VOID, Actor, record
from edge.devices import _queue_status
from edge.outbox import queue_event
from edge.spool import Spool
from edge.store import Store
from store_contract.events import (  # the field checks: see _old_check
    DROPPABLE,
    EVENT_TYPES,
    REF_MAX,
    BadEvent,
    ConsentChanged,
    CouponRedeemed,
    CouponRedemptionReversed,
    CustomerIdentified,
    DeviceStatus,
    KioskSession,
    OfferClipped,
    OutboxEvent,
    ReceiptPrinted,
    StaffAction,
    TransactionCompleted,
    TransactionVoided,
    _actor,
    _currency,
    _int,
    _ref,
)
from store_contract.protocol import format_ts

REPO = Path(__file__).resolve().parent.parent
AT = "2026-11-22T14:03:05.120Z"


def _bytes(data: dict[str, Any]) -> str:
    """What the outbox stores of an event's data."""
    return json.dumps(data, separators=(",", ":"))


# -- the writers' literals as they were ----------------------------------------------------

def _old_identified(txn: str, customer_id: str | None, kind: str, value: str, found: bool,
                    after: bool) -> dict[str, Any]:
    customer = found
    return {
        "txn": txn, "customer_id": customer_id,
        "method": kind, **({} if customer else {"identifier": value}),
        "after_sale": after}


def _new_identified(txn: str, customer_id: str | None, kind: str, value: str, found: bool,
                    after: bool) -> OutboxEvent:
    customer = found
    return CustomerIdentified(
        txn=txn, customer_id=customer_id, method=kind,
        identifier=None if customer else value, after_sale=after)


def _old_completed(txn: str, customer_id: str | None, kind: str | None,
                   identifier: str | None, discount: int) -> dict[str, Any]:
    lines = [{"sku": "milk", "qty": 2, "unit_minor": 129}, {"sku": "é-bread", "qty": 1,
                                                             "unit_minor": 250}]
    tenders = [{"kind": "card", "amount_minor": 508 - discount}]
    redemptions = [{"redemption": "r-1"}, {"redemption": "r-2"}]
    return {
        "txn": txn, "customer_id": customer_id,
        **({"identifier": {"method": kind, "value": identifier}}
           if customer_id is None and identifier else {}),
        "basket_total_minor": 508, "discount_minor": discount,
        "total_minor": 508 - discount, "currency": "EUR",
        "lines": [{"sku": ln["sku"], "qty": ln["qty"], "unit_minor": ln["unit_minor"]}
                  for ln in lines],
        "tenders": tenders,
        "redemptions": [r["redemption"] for r in redemptions],
        "completed_at": AT}


def _new_completed(txn: str, customer_id: str | None, kind: str | None,
                   identifier: str | None, discount: int) -> OutboxEvent:
    lines = [{"sku": "milk", "qty": 2, "unit_minor": 129}, {"sku": "é-bread", "qty": 1,
                                                             "unit_minor": 250}]
    tenders = [{"kind": "card", "amount_minor": 508 - discount}]
    redemptions = [{"redemption": "r-1"}, {"redemption": "r-2"}]
    return TransactionCompleted(
        txn=txn, customer_id=customer_id,
        identifier={"method": kind, "value": identifier}
        if customer_id is None and identifier else None,
        basket_total_minor=508, discount_minor=discount,
        total_minor=508 - discount, currency="EUR",
        lines=[{"sku": ln["sku"], "qty": ln["qty"], "unit_minor": ln["unit_minor"]}
               for ln in lines],
        tenders=tenders, redemptions=[r["redemption"] for r in redemptions],
        completed_at=AT)


def _old_redeemed(customer_id: str | None, description: str | None,
                  max_uses: int) -> dict[str, Any]:
    entry = {"redemption": "r-1", "reservation": "h-1", "coupon": "cpn-1",
             "campaign": "cmp-1", "description": description,
             "discount_minor": 150, "currency": "EUR"}
    return {
        **entry, "max_uses": max_uses, "token": "eyJ.x.y", "txn": "t-1",
        "customer_id": customer_id,
        "store_id": "store-1", "redeemed_at": AT}


def _new_redeemed(customer_id: str | None, description: str | None,
                  max_uses: int) -> OutboxEvent:
    return CouponRedeemed(
        redemption="r-1", reservation="h-1", coupon="cpn-1", campaign="cmp-1",
        description=description, discount_minor=150, currency="EUR", max_uses=max_uses,
        token="eyJ.x.y", txn="t-1", customer_id=customer_id, store_id="store-1",
        redeemed_at=AT)


def _old_reversed(discount: int) -> dict[str, Any]:
    r = {"id": "r-1", "coupon_id": "cpn-1", "campaign_id": "cmp-1",
         "discount_minor": discount, "currency": "EUR"}
    return {
        "redemption": r["id"], "coupon": r["coupon_id"],
        "campaign": r["campaign_id"], "txn": "t-1",
        "discount_minor": r["discount_minor"], "currency": r["currency"],
        "store_id": "store-1", "reversed_at": AT}


def _new_reversed(discount: int) -> OutboxEvent:
    r: dict[str, Any] = {"id": "r-1", "coupon_id": "cpn-1", "campaign_id": "cmp-1",
                         "discount_minor": discount, "currency": "EUR"}
    return CouponRedemptionReversed(
        redemption=r["id"], coupon=r["coupon_id"], campaign=r["campaign_id"], txn="t-1",
        discount_minor=r["discount_minor"], currency=r["currency"], store_id="store-1",
        reversed_at=AT)


def _old_voided(actor: Actor, reversed_: list[str]) -> dict[str, Any]:
    return {
        "txn": "t-1", "voided_at": AT, "redemptions_reversed": reversed_,
        **{"by": actor.by, "by_kind": actor.kind, "approved_by": actor.approved_by}}


def _new_voided(actor: Actor, reversed_: list[str]) -> OutboxEvent:
    return TransactionVoided(txn="t-1", voided_at=AT, redemptions_reversed=reversed_,
                             **actor.fields())


def _old_staff(action: str, actor: Actor, txn: str | None, job: str | None,
               detail: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "action": action, "lane": "lane-1", "txn": txn, "job": job,
        **{"by": actor.by, "by_kind": actor.kind, "approved_by": actor.approved_by},
        **(detail or {}), "at": AT}


def _old_printed(row: dict[str, Any], offer: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "job": row["job"], "txn": row["txn"], "printer": row["printer"],
        "customer_id": row["customer_id"], "personalised": bool(row["personalised"]),
        "offer": offer, "copy_of": row["copy_of"], "attempts": row["attempts"],
        "printed_at": AT}


def _old_status(kind: str, device_id: str, worth: dict[str, Any],
                changes: int) -> dict[str, Any]:
    return {
        "kind": kind, "device": device_id, **worth,
        **({"changes": changes} if changes > 1 else {})}


CASES: list[tuple[dict[str, Any], OutboxEvent]] = [
    *[(_old_identified(*a), _new_identified(*a)) for a in (
        ("t-1", "c-1", "card", "h-1", True, False),
        ("t-1", None, "phone", "hash-of-phone", False, False),
        ("t-2", None, "member", "sub-9", False, True))],
    *[(_old_completed(*a), _new_completed(*a)) for a in (
        ("t-1", "c-1", "card", "h-1", 0),
        ("t-1", None, "phone", "hash-1", 150),
        ("t-1", None, None, None, 0))],
    *[(_old_redeemed(*a), _new_redeemed(*a)) for a in (
        ("c-1", "10 % off", 1), (None, None, 3))],
    *[(_old_reversed(d), _new_reversed(d)) for d in (0, 150)],
    *[(_old_voided(a, r), _new_voided(a, r)) for a, r in (
        (Actor("lane-1"), []),
        (Actor("ann", "staff", "boss"), ["r-1", "r-2"]))],
]


@pytest.mark.parametrize("old,new", CASES)
def test_a_writer_s_event_is_byte_for_byte_what_it_wrote_before(
        old: dict[str, Any], new: OutboxEvent) -> None:
    assert _bytes(new.to_data()) == _bytes(old)
    assert list(new.to_data()) == list(old)


# -- the writers that can run here, through the real outbox --------------------------------

@pytest.fixture
def edge_store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "edge.sqlite")
    yield s
    s.close()


def _rows(store: Store) -> list[tuple[str, str]]:
    return [(str(r["type"]), str(r["data"]))
            for r in store.query("SELECT type, data FROM outbox ORDER BY seq")]


def test_the_audit_trail_queues_staff_action_as_before(edge_store: Store) -> None:
    calls: list[tuple[str, Actor, str | None, str | None, dict[str, Any] | None]] = [
        (VOID, Actor("lane-1"), "t-1", None, {"was": "open", "reversed": 0}),
        (REPRINT, Actor("ann", "staff", "boss"), "t-1", "j-1",
         {"copy": True, "new_job": "j-2"}),
        (REPRINT, Actor("edge"), None, "j-3", None),
        # A detail naming a field already there keeps that field's place, with its value.
        (VOID, Actor("bob", "staff"), "t-2", None, {"txn": "t-9", "at": "later", "x": 1}),
    ]
    with edge_store.transaction() as db:
        for action, actor, txn, job, detail in calls:
            record(db.conn, action, actor, lane="lane-1", at=AT, txn=txn, job=job,
                   detail=detail)
    assert _rows(edge_store) == [("staff.action", _bytes(_old_staff(*c))) for c in calls]


def test_device_status_is_queued_as_before(edge_store: Store) -> None:
    calls: list[tuple[str, str, dict[str, Any], int]] = [
        ("printer", "printer-1", {"state": "online", "paper": "ok", "cover": "closed"}, 1),
        ("pos", "lane-1", {"state": "offline"}, 5),
        ("kiosk", "kiosk-1", {}, 2),
        ("printer", "printer-2", {"state": "online", "paper": None}, 0)]
    with edge_store.transaction() as db:
        for kind, device, worth, changes in calls:
            assert _queue_status(db, kind, device, worth, changes, AT, 0.0)
    assert _rows(edge_store) == [("device.status", _bytes(_old_status(*c))) for c in calls]


def test_receipt_printed_is_queued_as_before(edge_store: Store) -> None:
    with edge_store.transaction() as db:
        db.conn.execute("INSERT INTO issued_coupons (id, campaign_id, customer_id, issued_at, "
                        "expires_at) VALUES ('rcpt:store-1:x', 'cmp-offer', 'c-1', 0, "
                        "1795000000)")
    rows: list[dict[str, Any]] = [
        {"job": "j-1", "txn": "t-1", "printer": "printer-1", "customer_id": "c-1",
         "personalised": 1, "offer_coupon": "rcpt:store-1:x", "copy_of": None,
         "attempts": 2, "device_id": "lane-1"},
        {"job": "j-2", "txn": None, "printer": "printer-1", "customer_id": None,
         "personalised": 0, "offer_coupon": None, "copy_of": "j-1", "attempts": 1,
         "device_id": "lane-1"}]
    with edge_store.transaction() as db:
        for row in rows:
            Spool._printed_event(None, db.conn, row, AT)  # type: ignore[arg-type]
    offer = {"coupon": "rcpt:store-1:x", "campaign": "cmp-offer",
             "expires_at": format_ts(datetime.fromtimestamp(1795000000, UTC))}
    assert _rows(edge_store) == [("receipt.printed", _bytes(_old_printed(rows[0], offer))),
                   ("receipt.printed", _bytes(_old_printed(rows[1], None)))]


def test_queue_event_stores_the_type_and_to_data(edge_store: Store) -> None:
    ev = _new_completed("t-1", None, "phone", "hash-1", 150)
    with edge_store.transaction() as db:
        assert queue_event(db.conn, ev, device_id="lane-1", occurred_at=AT)
    assert _rows(edge_store) == [("transaction.completed", _bytes(ev.to_data()))]


# -- round trips ---------------------------------------------------------------------------

SAMPLES: list[OutboxEvent] = [
    _new_identified("t-1", None, "phone", "hash-1", False, True),
    _new_completed("t-1", None, "phone", "hash-1", 150),
    _new_redeemed("c-1", "10 % off", 2),
    _new_reversed(150),
    _new_voided(Actor("ann", "staff", "boss"), ["r-1"]),
    StaffAction(action="receipt.reprint", lane="lane-1", txn=None, job="j-1", by="ann",
                by_kind="staff", approved_by=None, detail={"copy": False, "new_job": "j-1"},
                at=AT),
    ReceiptPrinted(job="j-1", txn="t-1", printer="printer-1", customer_id="c-1",
                   personalised=True, offer={"coupon": "x", "campaign": "y",
                                             "expires_at": AT},
                   copy_of=None, attempts=1, printed_at=AT),
    DeviceStatus(kind="printer", device="printer-1", status={"state": "online"}, changes=4),
    KioskSession(kiosk="k1", extra={"customer_id": "c-1", "duration_s": 40.5}),
    OfferClipped(customer_id="c-1", campaign="cmp-1", coupon="rc:s:1", token="x.y.z",
                 expires_at=AT, until="2026-12-31", kiosk="k1"),
    ConsentChanged(customer_id="c-1", consent={"personalised": True, "marketing": False},
                   changed=["personalised"], via="kiosk", kiosk="k1", at=AT, proof="a.b.c"),
]


def test_there_is_a_sample_of_every_type() -> None:
    assert {ev.TYPE for ev in SAMPLES} == set(EVENT_TYPES)


@pytest.mark.parametrize("ev", SAMPLES, ids=lambda ev: ev.TYPE)
def test_round_trip(ev: OutboxEvent) -> None:
    data = ev.to_data()
    back = EVENT_TYPES[ev.TYPE].from_data(json.loads(_bytes(data)))
    assert back == ev
    assert _bytes(back.to_data()) == _bytes(data)


@pytest.mark.parametrize("old,new", CASES)
def test_the_writers_data_reads_back_as_the_same_event(
        old: dict[str, Any], new: OutboxEvent) -> None:
    assert type(new).from_data(old) == new


def test_unknown_keys_are_accepted_and_kept() -> None:
    data = {**_old_completed("t-1", "c-1", None, None, 0), "loyalty_points": 12}
    ev = TransactionCompleted.from_data(data)
    assert ev.extra == {"loyalty_points": 12}
    assert _bytes(ev.to_data()) == _bytes(data)
    staff = StaffAction.from_data({"action": "txn.void", "by": "lane-1", "by_kind": "device",
                                   "was": "open", "reversed": 0, "new_thing": [1]})
    assert staff.detail == {"was": "open", "reversed": 0, "new_thing": [1]}


def test_events_of_older_edges_still_read() -> None:
    # transaction.voided before roles at the till: no `by`.
    ev = TransactionVoided.from_data({"txn": "t-1", "voided_at": AT,
                                      "redemptions_reversed": []})
    assert ev.by is None
    # The hub's own test fixtures (tests/hubfix.py event(), redeemed()).
    assert DeviceStatus.from_data({}).to_data() == {"kind": None, "device": None}
    red = CouponRedeemed.from_data({"redemption": "r-1", "coupon": "cpn-1",
                                    "campaign": "cmp-test", "discount_minor": 250,
                                    "currency": "EUR", "customer_id": None, "txn": "t-1"})
    assert (red.coupon, red.max_uses, red.token) == ("cpn-1", None, None)


def test_droppable_is_what_the_doc_says_a_full_outbox_drops() -> None:
    text = (REPO / "docs" / "sync.md").read_text()
    said = re.search(r"is full, new `([a-z_.]+)` and `([a-z_.]+)` events are dropped", text)
    assert said is not None
    assert set(said.groups()) == DROPPABLE
    assert set(EVENT_TYPES) >= DROPPABLE


def test_event_types_are_the_documented_ones() -> None:
    text = (REPO / "docs" / "sync.md").read_text()
    section = text[text.index("## 1. What is sent"):text.index("### 1.1")]
    table = [ln for ln in section.splitlines() if ln.startswith("| `")]
    documented = {name for ln in table for name in re.findall(r"`([a-z_.]+)`",
                                                                  ln.split("|")[1])}
    assert documented == set(EVENT_TYPES)
    for name, cls in EVENT_TYPES.items():
        assert name == cls.TYPE


# -- the hub's checks, as they were ----------------------------------------------------------
# The old if/elif chain below is the reference for which rules run in which order; its field
# checks are the contract's own (`_ref`, `_int`, `_currency`, `_actor`), whose every reason
# is pinned word for word by REASONS further down.

_Bad = BadEvent
_STAFF_ACTIONS = ("txn.void", "receipt.reprint")


def _old_check(type_: str, data: dict[str, Any]) -> tuple[Any, ...]:
    """(customer_id, total, discount, currency, coupon) as the hub's ingest read them."""
    customer_id = total = discount = currency = coupon = None
    if type_ == "coupon.redeemed":
        _ref(data, "redemption")
        coupon = _ref(data, "coupon")
        _ref(data, "campaign")
        discount = _int(data, "discount_minor", low=0)
        currency = _currency(data)
        _int(data, "max_uses", low=1, required=False)
        customer_id = _ref(data, "customer_id", required=False)
    elif type_ == "coupon.redemption_reversed":
        _ref(data, "redemption")
        coupon = _ref(data, "coupon")
    elif type_ == "transaction.completed":
        _ref(data, "txn")
        total = _int(data, "total_minor")
        currency = _currency(data)
        customer_id = _ref(data, "customer_id", required=False)
        discount = _int(data, "discount_minor", low=0, required=False)
    elif type_ == "customer.identified":
        _ref(data, "txn")
        customer_id = _ref(data, "customer_id", required=False)
    elif type_ == "receipt.printed":
        _ref(data, "job")
        customer_id = _ref(data, "customer_id", required=False)
    elif type_ == "transaction.voided":
        _ref(data, "txn")
        _actor(data, required=False)
    elif type_ == "staff.action":
        if data.get("action") not in _STAFF_ACTIONS:
            raise _Bad(f"data.action: not one of {', '.join(_STAFF_ACTIONS)}")
        _actor(data, required=True)
        _ref(data, "txn", required=False)
        _ref(data, "job", required=False)
    elif type_ == "offer.clipped":  # checked since the kiosk (issue 16)
        customer_id = _ref(data, "customer_id")
        _ref(data, "campaign")
        _ref(data, "coupon")
        token = data.get("token")
        if token is not None and (not isinstance(token, str) or not 0 < len(token) <= 8192):
            raise _Bad("data.token: not a coupon token")
    elif type_ == "consent.changed":  # checked since the kiosk (issue 16)
        customer_id = _ref(data, "customer_id")
        flags = data.get("consent")
        if not isinstance(flags, dict) or not flags or not all(
                k in ("personalised", "marketing") and isinstance(v, bool)
                for k, v in flags.items()):
            raise _Bad("data.consent: not an object of true/false flags "
                       "(personalised, marketing)")
        proof = data.get("proof")
        if proof is not None and (not isinstance(proof, str) or not 0 < len(proof) <= 8192):
            raise _Bad("data.proof: not a member code")
    else:
        cid = data.get("customer_id")
        customer_id = cid if isinstance(cid, str) and 0 < len(cid) <= 64 else None
    return customer_id, total, discount, currency, coupon


def _new_check(type_: str, data: dict[str, Any]) -> tuple[Any, ...]:
    """The same, read the way the hub's ingest does now."""
    from cloud_sync.hub.ingest import parse_event

    ev = parse_event({"event_id": "evt-00000001", "type": type_, "occurred_at": AT,
                      "store_id": "store-1", "device_id": "lane-1", "data": data}, "store-1")
    assert ev.data is data  # stored as the edge sent it
    return ev.customer_id, ev.total_minor, ev.discount_minor, ev.currency, ev.coupon_id


def _outcome(check: Any, type_: str, data: dict[str, Any]) -> tuple[Any, ...]:
    try:
        return ("ok", *check(type_, data))
    except (_Bad, BadEvent) as exc:
        return ("bad", str(exc))


GOOD = {t: type(ev).from_data(ev.to_data()).to_data() for t, ev in
        ((ev.TYPE, ev) for ev in SAMPLES)}
GOOD["staff.action"] = {"action": "txn.void", "lane": "lane-1", "txn": "t-1", "job": None,
                        "by": "ann", "by_kind": "staff", "approved_by": "boss", "was": "open",
                        "reversed": 0, "at": AT}
BAD_VALUES: list[Any] = [None, "", "x" * 128, "x" * 129, 0, -1, 1, True, False, 2.5, "EUR",
                         "eur", "EURO", "lane-1", "bad id!", [], {}, ["x"], "txn.void",
                         "staff", "device", "c" * 64, "c" * 65]
CHECKED = ("redemption", "coupon", "campaign", "discount_minor", "currency", "max_uses",
           "customer_id", "txn", "total_minor", "job", "action", "by", "by_kind",
           "approved_by", "token", "consent", "proof")
# Every reason the hub gives, so a changed wording fails here by name.
REASONS = {
    "data.redemption: missing or not text of 1-128 characters",
    "data.coupon: missing or not text of 1-128 characters",
    "data.campaign: missing or not text of 1-128 characters",
    "data.txn: missing or not text of 1-128 characters",
    "data.job: missing or not text of 1-128 characters",
    "data.customer_id: not text of 1-128 characters",
    "data.txn: not text of 1-128 characters",
    "data.job: not text of 1-128 characters",
    "data.discount_minor: missing or not a whole number, 0 or more",
    "data.discount_minor: not a whole number, 0 or more",
    "data.total_minor: missing or not a whole number",
    "data.max_uses: not a whole number, 1 or more",
    "data.currency: not an ISO 4217 code such as EUR",
    "data.action: not one of txn.void, receipt.reprint",
    "data.by: missing or not a staff user name or device id",
    "data.by_kind: not one of staff, device",
    "data.approved_by: not a staff user name",
    "data.customer_id: missing or not text of 1-128 characters",
    "data.token: not a coupon token",
    "data.consent: not an object of true/false flags (personalised, marketing)",
    "data.proof: not a member code",
}


def test_every_rule_gives_the_reason_it_gave_before() -> None:
    seen: set[str] = set()
    for type_, good in GOOD.items():
        assert _outcome(_new_check, type_, dict(good)) == _outcome(_old_check, type_, good)
        assert _outcome(_new_check, type_, dict(good))[0] == "ok"
        for key in CHECKED:
            for value in BAD_VALUES:
                data = {**good, key: value}
                old = _outcome(_old_check, type_, data)
                assert _outcome(_new_check, type_, data) == old, (type_, key, value)
                if old[0] == "bad":
                    seen.add(old[1])
            data = {k: v for k, v in good.items() if k != key}
            assert _outcome(_new_check, type_, data) == _outcome(_old_check, type_, data)
    assert seen == REASONS


def test_the_rules_are_checked_in_the_order_they_were() -> None:
    # 2.5 breaks every rule: with two broken fields, the first checked is the reason.
    for type_, good in GOOD.items():
        for i, first in enumerate(CHECKED):
            for second in CHECKED[i + 1:]:
                data = {**good, first: 2.5, second: 2.5}
                assert _outcome(_new_check, type_, data) == _outcome(_old_check, type_, data)


_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(
    ["", "EUR", "eur", "r-1", "ann", "staff", "device", "txn.void", "receipt.reprint",
     "bad id!", "x" * 129]), st.lists(st.integers(), max_size=1))


@settings(max_examples=300, deadline=None)
@given(type_=st.sampled_from(sorted(EVENT_TYPES)),
       data=st.dictionaries(st.sampled_from([*CHECKED, "other"]), _values))
def test_any_data_is_judged_as_before(type_: str, data: dict[str, Any]) -> None:
    assert _outcome(_new_check, type_, data) == _outcome(_old_check, type_, data)


@pytest.mark.parametrize("type_", sorted(EVENT_TYPES))
@pytest.mark.parametrize("customer", ["c-1", None, "", "x" * 65, 7])
def test_the_hub_files_the_shopper_the_event_itself_names(type_: str, customer: Any) -> None:
    """The hub files an event's shopper from the checked fields (`customer_in`) without
    building the event; a connector asks the built event (`customer_ref`). Both agree, and
    only types that name a shopper give one."""
    from cloud_sync.hub.ingest import parse_event

    kind = EVENT_TYPES[type_]
    data = {"txn": "t-1", "redemption": "r-1", "coupon": "cpn-1", "campaign": "cmp-1",
            "discount_minor": 100, "currency": "EUR", "total_minor": 900, "job": "j-1",
            "action": "txn.void", "by": "mia", "by_kind": "staff", "state": "online",
            "consent": {"marketing": False}, "customer_id": customer}
    try:
        event = kind.from_data(data)
    except BadEvent as exc:  # a bad checked id (or none, where one is required)
        assert kind.CUSTOMER == "checked" and str(exc).startswith("data.customer_id:")
        return
    filed = parse_event({"event_id": "0123456789ab", "type": type_, "occurred_at": AT,
                         "store_id": "store-1", "data": data}, "store-1").customer_id
    assert filed == event.customer_ref()
    longest = {"checked": REF_MAX, "loose": 64, None: -1}[kind.CUSTOMER]
    names_one = isinstance(customer, str) and 0 < len(customer) <= longest
    assert filed == (customer if names_one else None)
