"""The outbox events: one frozen dataclass per event type (docs/sync.md §1).

The edge's writers build these and queue them (`edge.outbox.queue_event`), the hub's ingest
reads them back with `from_data`, and a connector uses the same classes. Two directions:

* `to_data()` is the event's `data` exactly as the edge writes it: the same keys in the same
  order, keys that are always written are written even when null, and the few a writer only
  adds when it has them (e.g. `identifier` for an unknown shopper) are left out when None.
* `from_data(data)` checks what the hub checks, in the same order, and raises `BadEvent`
  with the same reason (`data.<field>: ...`): the hub answers those reasons to the edge, so
  they are a contract. Fields the hub does not check are taken as sent; keys a class does
  not name (an edge of another version) are accepted and kept in the class's open mapping
  (`extra`, or `status` of a `device.status`, `detail` of a `staff.action`), which
  `to_data()` writes back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from store_contract.basket import CURRENCY_RE
from store_contract.customers import CONSENTS
from store_contract.protocol import ID_RE

REF_MAX = 128
STAFF_ACTIONS = ("txn.void", "receipt.reprint")
ACTOR_KINDS = ("staff", "device")


class BadEvent(ValueError):
    """An event's first problem, as `field: reason` (the hub's `rejected[].error`)."""


# -- the hub's checks, one per kind of field ---------------------------------------------

def _ref(data: Mapping[str, Any], key: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= REF_MAX:
        raise BadEvent(f"data.{key}: {'missing or ' if required else ''}not text of 1-"
                       f"{REF_MAX} characters")
    return value


def _req_ref(data: Mapping[str, Any], key: str) -> str:
    value = _ref(data, key)
    assert value is not None
    return value


def _int(data: Mapping[str, Any], key: str, *, low: int | None = None,
         required: bool = True) -> int | None:
    value = data.get(key)
    if value is None and not required:
        return None
    # bool is an int in Python, but true is not an amount of money.
    if not isinstance(value, int) or isinstance(value, bool) or (
            low is not None and value < low):
        more = f", {low} or more" if low is not None else ""
        raise BadEvent(f"data.{key}: {'missing or ' if required else ''}not a whole number"
                       f"{more}")
    return value


def _req_int(data: Mapping[str, Any], key: str, *, low: int | None = None) -> int:
    value = _int(data, key, low=low)
    assert value is not None
    return value


def _currency(data: Mapping[str, Any]) -> str:
    value = data.get("currency")
    if not isinstance(value, str) or not CURRENCY_RE.match(value):
        raise BadEvent("data.currency: not an ISO 4217 code such as EUR")
    return value


def _actor(data: Mapping[str, Any], required: bool) -> None:
    """Who did it at the till: `by` (a staff user name or a lane's device id), `by_kind`,
    and the approving manager `approved_by` (null when none was needed)."""
    by = data.get("by")
    if by is None and not required:
        return
    if not isinstance(by, str) or not ID_RE.match(by):
        raise BadEvent("data.by: missing or not a staff user name or device id")
    if data.get("by_kind") not in ACTOR_KINDS:
        raise BadEvent(f"data.by_kind: not one of {', '.join(ACTOR_KINDS)}")
    approved = data.get("approved_by")
    if approved is not None and (not isinstance(approved, str) or not ID_RE.match(approved)):
        raise BadEvent("data.approved_by: not a staff user name")


def _loose_customer(value: Any) -> str | None:
    """A customer id on an event the hub does not check: kept when it looks like one."""
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


# -- the field kinds of `to_data` ---------------------------------------------------------

def _always(default: Any = None) -> Any:
    """Written even when None (the writer always writes it)."""
    return field(default=default)


def _if_set() -> Any:
    """Left out when None (the writer adds it only when it has it)."""
    return field(default=None, metadata={"omit_none": True})


def _spread() -> Any:
    """An open mapping whose keys are written in its place, in its order."""
    return field(default_factory=dict, metadata={"spread": True})


_ALWAYS, _IF_SET, _SPREAD = "always", "if_set", "spread"


@dataclass(frozen=True)
class _Layout:
    """How a class's fields map to its `data`, worked out once per class (reading
    `dataclasses.fields` for every event cost the hub's ingest a third of its speed)."""

    fields: tuple[tuple[str, str], ...]  # (name, _ALWAYS | _IF_SET | _SPREAD), in order
    named: frozenset[str]
    spread: str | None


_LAYOUTS: dict[type, _Layout] = {}


def _layout(cls: type) -> _Layout:
    layout = _LAYOUTS.get(cls)
    if layout is None:
        fields = tuple((f.name, _SPREAD if f.metadata.get("spread") else
                        _IF_SET if f.metadata.get("omit_none") else _ALWAYS)
                       for f in dataclasses.fields(cls))
        spread = [name for name, how in fields if how is _SPREAD]
        layout = _LAYOUTS[cls] = _Layout(
            fields, frozenset(name for name, how in fields if how is not _SPREAD),
            spread[0] if spread else None)
    return layout


@dataclass(frozen=True, kw_only=True)
class OutboxEvent:
    """Base of the event types; `TYPE` is the event's `type`."""

    TYPE: ClassVar[str]
    # Where the shopper the event is about comes from: "checked" (the type checks its
    # `customer_id`), "loose" (an unchecked `customer_id`, kept when it looks like one), or
    # None (the type names no shopper).
    CUSTOMER: ClassVar[str | None] = None

    def to_data(self) -> dict[str, Any]:
        """The event's `data`, as the edge writes it (see the module doc)."""
        out: dict[str, Any] = {}
        for name, how in _layout(type(self)).fields:
            value = getattr(self, name)
            if how is _SPREAD:
                out.update(value)
            elif value is not None or how is not _IF_SET:
                out[name] = value
        return out

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Self:
        """The event of `data` as the hub accepts it; BadEvent with the first problem."""
        return cls._build(data, cls.check(data))

    @classmethod
    def check(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """The hub's checks of this type, in order; the fields they produced (the hub's
        ingest files those without building the event). BadEvent with the first problem."""
        return {}

    @classmethod
    def customer_in(cls, data: Mapping[str, Any], checked: Mapping[str, Any]) -> str | None:
        """The shopper `data` is about, as the hub files it (erasure, per-customer reports),
        given what `check` produced: None when there is none."""
        if cls.CUSTOMER == "checked":
            value: str | None = checked.get("customer_id")
            return value
        return _loose_customer(data.get("customer_id")) if cls.CUSTOMER == "loose" else None

    @classmethod
    def _build(cls, data: Mapping[str, Any], checked: dict[str, Any]) -> Self:
        layout = _layout(cls)
        values = {name: data.get(name) for name in layout.named}
        values.update(checked)
        if layout.spread is not None:
            values[layout.spread] = {k: v for k, v in data.items() if k not in layout.named}
        return cls(**values)

    def customer_ref(self) -> str | None:
        """The shopper this event is about, as the hub files it (`customer_in`)."""
        data = self.to_data()
        return type(self).customer_in(data, data)


@dataclass(frozen=True, kw_only=True)
class CustomerIdentified(OutboxEvent):
    """A lane identified a shopper (or tried to: `customer_id` None when nobody matched)."""

    TYPE: ClassVar[str] = "customer.identified"
    CUSTOMER: ClassVar[str | None] = "checked"
    txn: str
    customer_id: str | None = _always()
    method: str | None = _always()  # card, phone, member
    identifier: str | None = _if_set()  # only when nobody was found
    after_sale: bool | None = _always()
    extra: Mapping[str, Any] = _spread()

    @classmethod
    def check(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        return {"txn": _req_ref(data, "txn"),
                "customer_id": _ref(data, "customer_id", required=False)}



@dataclass(frozen=True, kw_only=True)
class CouponRedeemed(OutboxEvent):
    """A sale's completion turned a reservation into a redemption."""

    TYPE: ClassVar[str] = "coupon.redeemed"
    CUSTOMER: ClassVar[str | None] = "checked"
    redemption: str
    reservation: str | None = _always()
    coupon: str
    campaign: str
    description: str | None = _always()
    discount_minor: int
    currency: str
    max_uses: int | None = _always()  # what the store believed
    token: str | None = _always()  # the coupon as scanned
    txn: str | None = _always()
    customer_id: str | None = _always()
    store_id: str | None = _always()
    redeemed_at: str | None = _always()
    extra: Mapping[str, Any] = _spread()

    @classmethod
    def check(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        return {"redemption": _req_ref(data, "redemption"),
                "coupon": _req_ref(data, "coupon"),
                "campaign": _req_ref(data, "campaign"),
                "discount_minor": _req_int(data, "discount_minor", low=0),
                "currency": _currency(data),
                "max_uses": _int(data, "max_uses", low=1, required=False),
                "customer_id": _ref(data, "customer_id", required=False)}



@dataclass(frozen=True, kw_only=True)
class CouponRedemptionReversed(OutboxEvent):
    """A completed sale's void gave a redemption back."""

    TYPE: ClassVar[str] = "coupon.redemption_reversed"
    redemption: str
    coupon: str
    campaign: str | None = _always()
    txn: str | None = _always()
    discount_minor: int | None = _always()
    currency: str | None = _always()
    store_id: str | None = _always()
    reversed_at: str | None = _always()
    extra: Mapping[str, Any] = _spread()

    @classmethod
    def check(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        return {"redemption": _req_ref(data, "redemption"), "coupon": _req_ref(data, "coupon")}


@dataclass(frozen=True, kw_only=True)
class TransactionCompleted(OutboxEvent):
    """A sale completed."""

    TYPE: ClassVar[str] = "transaction.completed"
    CUSTOMER: ClassVar[str | None] = "checked"
    txn: str
    customer_id: str | None = _always()
    identifier: Mapping[str, Any] | None = _if_set()  # {method, value}: unknown shoppers
    basket_total_minor: int | None = _always()
    discount_minor: int | None = _always()
    total_minor: int
    currency: str
    lines: list[dict[str, Any]] | None = _always()
    tenders: list[dict[str, Any]] | None = _always()
    redemptions: list[str] | None = _always()
    completed_at: str | None = _always()
    extra: Mapping[str, Any] = _spread()

    @classmethod
    def check(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        return {"txn": _req_ref(data, "txn"),
                "total_minor": _req_int(data, "total_minor"),
                "currency": _currency(data),
                "customer_id": _ref(data, "customer_id", required=False),
                "discount_minor": _int(data, "discount_minor", low=0, required=False)}



@dataclass(frozen=True, kw_only=True)
class TransactionVoided(OutboxEvent):
    """A completed sale was voided (a return); who did it (docs/sync.md §1.1)."""

    TYPE: ClassVar[str] = "transaction.voided"
    txn: str
    voided_at: str | None = _always()
    redemptions_reversed: list[str] | None = _always()
    # Edges from before roles at the till did not say who.
    by: str | None = _always()
    by_kind: str | None = _always()
    approved_by: str | None = _always()
    extra: Mapping[str, Any] = _spread()

    @classmethod
    def check(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        checked = {"txn": _req_ref(data, "txn")}
        _actor(data, required=False)
        return checked


@dataclass(frozen=True, kw_only=True)
class StaffAction(OutboxEvent):
    """A void of an open sale or a reprint at a till (edge/audit.py); `detail` holds the
    action's own fields (`was`, `reversed`; `copy`, `new_job`)."""

    TYPE: ClassVar[str] = "staff.action"
    action: str  # one of STAFF_ACTIONS
    lane: str | None = _always()
    txn: str | None = _always()
    job: str | None = _always()
    by: str
    by_kind: str
    approved_by: str | None = _always()
    detail: Mapping[str, Any] = _spread()
    at: str | None = _always()

    @classmethod
    def check(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        if data.get("action") not in STAFF_ACTIONS:
            raise BadEvent(f"data.action: not one of {', '.join(STAFF_ACTIONS)}")
        _actor(data, required=True)
        return {"txn": _ref(data, "txn", required=False),
                "job": _ref(data, "job", required=False)}


@dataclass(frozen=True, kw_only=True)
class ReceiptPrinted(OutboxEvent):
    """The printer confirmed a receipt; `offer` is the next-visit coupon printed on it."""

    TYPE: ClassVar[str] = "receipt.printed"
    CUSTOMER: ClassVar[str | None] = "checked"
    job: str
    txn: str | None = _always()
    printer: str | None = _always()
    customer_id: str | None = _always()
    personalised: bool | None = _always()
    offer: Mapping[str, Any] | None = _always()  # {coupon, campaign, expires_at}
    copy_of: str | None = _always()
    attempts: int | None = _always()
    printed_at: str | None = _always()
    extra: Mapping[str, Any] = _spread()

    @classmethod
    def check(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        return {"job": _req_ref(data, "job"),
                "customer_id": _ref(data, "customer_id", required=False)}



@dataclass(frozen=True, kw_only=True)
class DeviceStatus(OutboxEvent):
    """A device's presence or paper/cover state changed; `status` holds what of it is
    worth syncing (`state`, `printer`, `paper`, `cover`, `model`, `sw`), `changes` how many
    changes the event stands for when more than one. The hub does not check it."""

    TYPE: ClassVar[str] = "device.status"
    kind: str | None = _always()
    device: str | None = _always()
    status: Mapping[str, Any] = _spread()
    changes: int | None = _if_set()

    CUSTOMER: ClassVar[str | None] = "loose"


@dataclass(frozen=True, kw_only=True)
class KioskSession(OutboxEvent):
    """A shopper's visit to a kiosk ended (docs/kiosk.md): how they identified, how long,
    what they did (`extra`: `customer_id`, `method`, `lang`, `duration_s`, `ended`,
    `actions`). Telemetry for the dashboard: the hub does not check it; the shopper's id,
    if any, is filed for erasure and per-customer reports."""

    TYPE: ClassVar[str] = "kiosk.session"
    CUSTOMER: ClassVar[str | None] = "loose"
    kiosk: str | None = _always()
    extra: Mapping[str, Any] = _spread()


@dataclass(frozen=True, kw_only=True)
class OfferClipped(OutboxEvent):
    """A shopper clipped a personal offer at a kiosk: `token` is the coupon the store
    signed for them (docs/sync.md §1.1); the hub puts it in their wallet when it believes
    it (cloud_sync/hub/shoppers.py)."""

    TYPE: ClassVar[str] = "offer.clipped"
    CUSTOMER: ClassVar[str | None] = "checked"
    customer_id: str
    campaign: str
    coupon: str
    token: str | None = _always()
    expires_at: str | None = _always()
    until: str | None = _always()
    kiosk: str | None = _always()
    extra: Mapping[str, Any] = _spread()

    @classmethod
    def check(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        checked = {"customer_id": _req_ref(data, "customer_id"),
                   "campaign": _req_ref(data, "campaign"),
                   "coupon": _req_ref(data, "coupon")}
        token = data.get("token")
        if token is not None and (not isinstance(token, str) or not 0 < len(token) <= 8192):
            raise BadEvent("data.token: not a coupon token")
        return checked


@dataclass(frozen=True, kw_only=True)
class ConsentChanged(OutboxEvent):
    """A shopper changed their consent (`consent`: every flag as it now is; `changed`: the
    flags that moved). `proof` is the member code they identified with, when they did so
    with the app: the hub takes a "yes" only with it (docs/sync.md §1.1)."""

    TYPE: ClassVar[str] = "consent.changed"
    CUSTOMER: ClassVar[str | None] = "checked"
    customer_id: str
    consent: Mapping[str, bool]
    changed: list[str] | None = _always()
    via: str | None = _always()
    kiosk: str | None = _always()
    at: str | None = _always()
    proof: str | None = _if_set()
    extra: Mapping[str, Any] = _spread()

    @classmethod
    def check(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        customer = _req_ref(data, "customer_id")
        consent = data.get("consent")
        if not isinstance(consent, Mapping) or not consent or not all(
                k in CONSENTS and isinstance(v, bool) for k, v in consent.items()):
            raise BadEvent(f"data.consent: not an object of true/false flags "
                           f"({', '.join(CONSENTS)})")
        proof = data.get("proof")
        if proof is not None and (not isinstance(proof, str) or not 0 < len(proof) <= 8192):
            raise BadEvent("data.proof: not a member code")
        return {"customer_id": customer, "consent": dict(consent)}


EVENT_TYPES: Mapping[str, type[OutboxEvent]] = {cls.TYPE: cls for cls in (
    CustomerIdentified, CouponRedeemed, CouponRedemptionReversed, TransactionCompleted,
    TransactionVoided, ReceiptPrinted, KioskSession, OfferClipped, ConsentChanged,
    DeviceStatus, StaffAction)}
# What a full outbox drops: telemetry the hub can do without (a device's presence is
# re-sent as its latest state once there is room; a kiosk session is a visit count). Never
# sales, redemptions, shoppers, consent, clipped offers, the till's audit (staff.action), or
# receipt.printed (it tells the hub of the next-visit coupon issued on the receipt).
DROPPABLE = frozenset({DeviceStatus.TYPE, KioskSession.TYPE})
