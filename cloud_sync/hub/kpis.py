"""The dashboard's figures: plain queries over the hub's tables, one source of truth for the
page, its live refresh, `/dashboard.json` and the CSV export.

Every function takes the stores the caller may see; the region rule is applied by choosing
those stores (`stores_in`), so a figure can never include a store of another region. Periods
are calendar days in the hub's zone (`HUB_TZ`), half-open: `start_ts <= t < end_ts`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, case, func, or_, select

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.schema import campaigns as campaigns_table
from cloud_sync.hub.schema import conflicts, events, redemptions, stores
from cloud_sync.hub.schema import customers as customers_table
from cloud_sync.hub.schema import suspect_redemptions as suspects_table

COMPLETED = "transaction.completed"
VOIDED = "transaction.voided"
KIOSK = "kiosk.session"
RECEIPT = "receipt.printed"
PERIODS = {"today": "Today", "7d": "Last 7 days", "30d": "Last 30 days", "custom": "Custom"}
DEFAULT_PERIOD = "7d"
MAX_CUSTOM_DAYS = 366


@dataclass(frozen=True)
class StoreRef:
    """A store as the dashboard names it."""

    id: str
    region: str
    name: str


@dataclass(frozen=True)
class Period:
    """Whole local days `first`..`last` (inclusive), as epoch seconds `start_ts`..`end_ts`."""

    key: str
    first: date
    last: date
    start_ts: float
    end_ts: float

    @property
    def label(self) -> str:
        return PERIODS[self.key]

    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]


class PeriodError(ValueError):
    """A custom period that cannot be used; the message says why, for people."""


def _midnight(day: date, zone: ZoneInfo) -> float:
    return datetime.combine(day, time(0), tzinfo=zone).timestamp()


def period_of(key: str, zone: ZoneInfo, now: float, first: str = "", last: str = "") -> Period:
    """The period `key` (today, 7d, 30d, custom with ISO dates `first`/`last`) around `now`.

    Raises PeriodError for an unknown key or unusable custom dates.
    """
    today = datetime.fromtimestamp(now, zone).date()
    if key == "today":
        start = end = today
    elif key in ("7d", "30d"):
        end, start = today, today - timedelta(days=int(key[:-1]) - 1)
    elif key == "custom":
        try:
            start, end = date.fromisoformat(first.strip()), date.fromisoformat(last.strip())
        except ValueError:
            raise PeriodError("Dates must look like 2026-11-22 (year-month-day).") from None
        if end < start:
            raise PeriodError("The period ends before it starts.")
        if (end - start).days >= MAX_CUSTOM_DAYS:
            raise PeriodError(f"A period can be at most {MAX_CUSTOM_DAYS} days long.")
    else:
        raise PeriodError(f"Unknown period {key!r}.")
    return Period(key, start, end, _midnight(start, zone),
                  _midnight(end + timedelta(days=1), zone))


def regions(db: HubDB) -> list[str]:
    """Every region that has a store, sorted."""
    with db.read() as conn:
        return list(conn.execute(select(stores.c.region).distinct()
                                 .order_by(stores.c.region)).scalars())


def stores_in(db: HubDB, region: str | None) -> list[StoreRef]:
    """The stores of `region` (None: of every region), by region then name."""
    query = select(stores.c.id, stores.c.region, stores.c.name)
    if region is not None:
        query = query.where(stores.c.region == region)
    with db.read() as conn:
        rows = conn.execute(query.order_by(stores.c.region, stores.c.name, stores.c.id)).all()
    return [StoreRef(r.id, r.region, r.name) for r in rows]


def get_store(db: HubDB, store_id: str) -> StoreRef | None:
    """One store, or None."""
    with db.read() as conn:
        row = conn.execute(select(stores.c.id, stores.c.region, stores.c.name)
                           .where(stores.c.id == store_id)).first()
    return StoreRef(row.id, row.region, row.name) if row else None


@dataclass
class StoreKpis:
    """A store's figures over a period (or, with `store_id` "", the sum of several stores)."""

    store_id: str
    name: str
    region: str
    transactions: int = 0          # transaction.completed events
    identified: int = 0            # ... of them with a customer
    voids: int = 0                 # transaction.voided events
    sales: dict[str, int] = field(default_factory=dict)     # currency -> total_minor
    redemptions: int = 0           # coupon redemptions not reversed
    discount: dict[str, int] = field(default_factory=dict)  # currency -> discount_minor
    kiosk_sessions: int = 0
    receipts: int = 0              # receipt.printed events

    @property
    def identified_pct(self) -> float | None:
        """Share of completed sales with an identified customer, in %, one decimal."""
        if not self.transactions:
            return None
        return round(100 * self.identified / self.transactions, 1)

    def add(self, other: StoreKpis) -> None:
        """Add another row's figures to this one (the totals row)."""
        for name in ("transactions", "identified", "voids", "redemptions", "kiosk_sessions",
                     "receipts"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in ((self.sales, other.sales), (self.discount, other.discount)):
            for currency, minor in theirs.items():
                mine[currency] = mine.get(currency, 0) + minor


def _tuples(result: Iterable[Any]) -> list[tuple[Any, ...]]:
    """Result rows as plain tuples (aggregate columns are untyped to the type checker)."""
    return [tuple(row) for row in result]


def _in_period(ts: ColumnElement[float], start_ts: float, end_ts: float
               ) -> ColumnElement[bool]:
    return (ts >= start_ts) & (ts < end_ts)


def store_kpis(db: HubDB, visible: Sequence[StoreRef], start_ts: float, end_ts: float
               ) -> list[StoreKpis]:
    """The figures of each store in `visible` for `start_ts <= occurred < end_ts`, in order."""
    rows = {s.id: StoreKpis(s.id, s.name, s.region) for s in visible}
    if not rows:
        return []
    ids = list(rows)
    counted = (COMPLETED, VOIDED, KIOSK, RECEIPT)
    in_scope = events.c.store_id.in_(ids) & _in_period(events.c.occurred_ts, start_ts, end_ts)
    with db.read() as conn:
        counts = _tuples(conn.execute(
            select(events.c.store_id, events.c.type, func.count(),
                   func.count(events.c.customer_id))
            .where(in_scope, events.c.type.in_(counted))
            .group_by(events.c.store_id, events.c.type)))
        sales = _tuples(conn.execute(
            select(events.c.store_id, events.c.currency, func.sum(events.c.total_minor))
            .where(in_scope, events.c.type == COMPLETED, events.c.currency.is_not(None))
            .group_by(events.c.store_id, events.c.currency)))
        # The use ledger, not the events: a redemption reversed later no longer counts.
        redeemed = _tuples(conn.execute(
            select(redemptions.c.store_id, redemptions.c.currency, func.count(),
                   func.sum(redemptions.c.discount_minor))
            .where(redemptions.c.store_id.in_(ids), redemptions.c.reversed_at.is_(None),
                   _in_period(redemptions.c.redeemed_ts, start_ts, end_ts))
            .group_by(redemptions.c.store_id, redemptions.c.currency)))
    for store_id, kind, n, with_customer in counts:
        row = rows[store_id]
        if kind == COMPLETED:
            row.transactions, row.identified = n, with_customer
        elif kind == VOIDED:
            row.voids = n
        elif kind == KIOSK:
            row.kiosk_sessions = n
        else:
            row.receipts = n
    for store_id, currency, total in sales:
        rows[store_id].sales[currency] = int(total or 0)
    for store_id, currency, n, discount in redeemed:
        row = rows[store_id]
        row.redemptions += n
        row.discount[currency] = int(discount or 0)
    return list(rows.values())


def totals(rows: Sequence[StoreKpis], name: str = "Total") -> StoreKpis:
    """One row adding up `rows` (the identified share is recomputed, not averaged)."""
    total = StoreKpis("", name, "")
    for row in rows:
        total.add(row)
    return total


@dataclass(frozen=True)
class DailySeries:
    """Per local day of a period (per hour when the period is one day): completed sales and
    live redemptions, per store."""

    days: list[date]
    transactions: dict[str, list[int]]
    redemptions: dict[str, list[int]]
    # The local start of each hour when the counts are per hour (a one-day period; 23 or 25
    # of them on a clock change), else empty: the counts are per day.
    hours: list[datetime] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)  # each bucket's start (Unix time)

    def begun(self, now: float) -> int:
        """How many buckets (hours or days) have begun by `now`: the later ones have no
        figures yet, and a chart should not draw them as zeros."""
        return sum(1 for t in self.starts if t <= now)


def _day_bucket(ts: ColumnElement[float], edges: Sequence[float]) -> ColumnElement[int]:
    # Local midnights computed here (DST days are 23 or 25 hours), compared in SQL: the
    # same expression on SQLite and PostgreSQL, no date functions of either.
    return case(*[(ts < edge, i) for i, edge in enumerate(edges[1:])], else_=len(edges) - 1)


def daily_series(db: HubDB, store_ids: Sequence[str], period: Period, zone: ZoneInfo
                 ) -> DailySeries:
    """Counts per day of `period` in `zone` for each store id (zeros where nothing happened);
    per hour when the period is a single day, so "today" is a curve and not a dot."""
    days = period.days()
    hours: list[datetime] = []
    if len(days) == 1:
        starts = [period.start_ts + 3600 * k
                  for k in range(round((period.end_ts - period.start_ts) / 3600))]
        hours = [datetime.fromtimestamp(t, zone) for t in starts]
        edges = [*starts, period.end_ts]
    else:
        edges = [_midnight(d, zone) for d in days] + [period.end_ts]
    buckets = len(edges) - 1
    txn = {s: [0] * buckets for s in store_ids}
    red = {s: [0] * buckets for s in store_ids}
    if store_ids:
        ev_day = _day_bucket(events.c.occurred_ts, edges).label("day")
        red_day = _day_bucket(redemptions.c.redeemed_ts, edges).label("day")
        with db.read() as conn:
            for store_id, day, n in _tuples(conn.execute(
                    select(events.c.store_id, ev_day, func.count())
                    .where(events.c.store_id.in_(store_ids), events.c.type == COMPLETED,
                           _in_period(events.c.occurred_ts, period.start_ts, period.end_ts))
                    .group_by(events.c.store_id, ev_day))):
                txn[store_id][day] = n
            for store_id, day, n in _tuples(conn.execute(
                    select(redemptions.c.store_id, red_day, func.count())
                    .where(redemptions.c.store_id.in_(store_ids),
                           redemptions.c.reversed_at.is_(None),
                           _in_period(redemptions.c.redeemed_ts, period.start_ts,
                                      period.end_ts))
                    .group_by(redemptions.c.store_id, red_day))):
                red[store_id][day] = n
    return DailySeries(days, txn, red, hours, edges[:-1])


@dataclass(frozen=True)
class SyncHealth:
    """What the hub knows of a store's sync: its last contact and the queue it reported."""

    store_id: str
    name: str
    last_contact_ts: float | None
    last_batch_ts: float | None
    queue_depth: int | None
    oldest_age_s: float | None
    dead_letters: int | None
    reported_ts: float | None
    stale: bool  # no contact within stale_after_s, or never


def sync_health(db: HubDB, visible: Sequence[StoreRef], now: float, stale_after_s: float
                ) -> list[SyncHealth]:
    """Each store's sync state, in the order of `visible`."""
    if not visible:
        return []
    with db.read() as conn:
        found = {r.id: r for r in conn.execute(
            select(stores).where(stores.c.id.in_([s.id for s in visible])))}
    out = []
    for ref in visible:
        r = found.get(ref.id)
        if r is None:
            continue
        contact = r.last_contact_ts
        out.append(SyncHealth(
            ref.id, ref.name, contact, r.last_batch_ts, r.queue_depth, r.oldest_age_s,
            r.dead_letters, r.reported_ts,
            stale=contact is None or now - contact > stale_after_s))
    return out


@dataclass(frozen=True)
class ConflictUse:
    """One use of a conflicting coupon at one of the caller's stores: the sale it was in."""

    redemption_id: str
    store_id: str
    device: str | None
    txn: str | None
    redeemed_ts: float
    discount_minor: int
    currency: str
    reversed: bool


@dataclass(frozen=True)
class ConflictRow:
    """A coupon used more often than it may be, as far as the caller's stores go."""

    coupon_id: str
    campaign_id: str
    max_uses: int
    uses: int
    stores: list[str]   # the caller's stores involved
    other_stores: int   # stores of other regions involved (not named)
    detected_ts: float
    updated_ts: float
    resolved_ts: float | None
    campaign_name: str = ""
    customer_id: str | None = None
    customer_name: str | None = None
    # What the uses at the caller's stores gave away, per currency, and those uses.
    discount: dict[str, int] = field(default_factory=dict)
    used: list[ConflictUse] = field(default_factory=list)


def _record_names(conn: Any, table: Any, ids: set[str], field_name: str) -> dict[str, str]:
    """`field_name` of the JSON records of `table` with these ids (campaign or customer)."""
    if not ids:
        return {}
    out = {}
    for row in conn.execute(select(table.c.id, table.c.record).where(table.c.id.in_(ids))):
        try:
            value = json.loads(row.record).get(field_name)
        except (ValueError, AttributeError):
            continue
        if isinstance(value, str) and value:
            out[row.id] = value
    return out


def _conflict_uses(conn: Any, redemption_ids: set[str], mine: set[str]
                   ) -> dict[str, tuple[ConflictUse, str | None]]:
    """The uses (with their customer id) among `redemption_ids` at the stores in `mine`, by
    redemption id: two queries for every conflict of a page, not two per conflict."""
    if not redemption_ids:
        return {}
    rows = list(conn.execute(select(redemptions).where(redemptions.c.id.in_(redemption_ids),
                                                       redemptions.c.store_id.in_(mine))))
    sent = {r.event_id: r for r in conn.execute(
        select(events.c.event_id, events.c.device_id, events.c.data)
        .where(events.c.event_id.in_([row.event_id for row in rows])))} if rows else {}
    out = {}
    for row in rows:
        event = sent.get(row.event_id)
        txn = _txn_of(event.data) if event is not None else None
        out[row.id] = (ConflictUse(row.id, row.store_id, event.device_id if event else None,
                                   txn, row.redeemed_ts, int(row.discount_minor), row.currency,
                                   row.reversed_at is not None), row.customer_id)
    return out


def _conflicts(db: HubDB, store_ids: Sequence[str], resolved: bool, limit: int
               ) -> list[ConflictRow]:
    if not store_ids:
        return []
    mine = set(store_ids)
    query = select(conflicts).where(conflicts.c.resolved_ts.is_not(None) if resolved
                                    else conflicts.c.resolved_ts.is_(None))
    if len(mine) <= 50:
        # `stores` is a JSON list of ids ([a-z0-9-], so the quoting is exact): a LIKE narrows
        # in SQL on either database, the JSON decides. Many stores: the JSON alone decides.
        query = query.where(or_(*[conflicts.c.stores.like(f'%"{s}"%') for s in mine]))
    order = conflicts.c.resolved_ts.desc() if resolved else conflicts.c.detected_ts.desc()
    out: list[ConflictRow] = []
    with db.read() as conn:
        listed: list[tuple[Any, list[str], int, list[str]]] = []
        for r in conn.execute(query.order_by(order, conflicts.c.coupon_id)):
            involved = [s for s in json.loads(r.stores) if isinstance(s, str)]
            seen = [s for s in involved if s in mine]
            if not seen:
                continue
            ids = [i for i in json.loads(r.redemptions) if isinstance(i, str)]
            listed.append((r, seen, len(set(involved) - mine), ids))
            if len(listed) >= limit:
                break
        by_id = _conflict_uses(conn, {i for *_, ids in listed for i in ids}, mine)
        found = [(r, seen, others, sorted((by_id[i] for i in ids if i in by_id),
                                          key=lambda use: use[0].redeemed_ts))
                 for r, seen, others, ids in listed]
        campaign_names = _record_names(conn, campaigns_table,
                                       {r.campaign_id for r, *_ in found}, "name")
        customers = {c for *_, uses in found for _, c in uses if c}
        customer_names = _record_names(conn, customers_table, customers, "display_name")
        for r, seen, others, uses in found:
            shopper = next((c for _, c in uses if c), None)
            discount: dict[str, int] = {}
            for use, _ in uses:
                if not use.reversed:
                    discount[use.currency] = discount.get(use.currency, 0) + use.discount_minor
            out.append(ConflictRow(
                r.coupon_id, r.campaign_id, r.max_uses, r.uses, seen, others, r.detected_ts,
                r.updated_ts, r.resolved_ts, campaign_names.get(r.campaign_id, r.campaign_id),
                shopper, customer_names.get(shopper) if shopper else None, discount,
                [use for use, _ in uses]))
    return out


def open_conflicts(db: HubDB, store_ids: Sequence[str], limit: int = 200
                   ) -> list[ConflictRow]:
    """Unresolved conflicts involving any of `store_ids`, newest first."""
    return _conflicts(db, store_ids, False, limit)


def resolved_conflicts(db: HubDB, store_ids: Sequence[str], limit: int = 20
                       ) -> list[ConflictRow]:
    """The most recently resolved conflicts involving any of `store_ids`."""
    return _conflicts(db, store_ids, True, limit)


@dataclass(frozen=True)
class SuspectRow:
    """A redemption a store reported that the hub does not believe (ingest `_believe`)."""

    redemption_id: str
    store_id: str
    coupon_id: str
    campaign_id: str
    reason: str
    redeemed_at: str
    received_ts: float


def suspect_redemptions(db: HubDB, store_ids: Sequence[str], limit: int = 50
                        ) -> list[SuspectRow]:
    """The newest redemptions of `store_ids` that the hub did not believe: no effect on
    other stores or on conflicts, listed for the manager to look into."""
    if not store_ids:
        return []
    with db.read() as conn:
        rows = conn.execute(
            select(suspects_table).where(suspects_table.c.store_id.in_(store_ids))
            .order_by(suspects_table.c.received_ts.desc(), suspects_table.c.id)
            .limit(limit)).all()
    return [SuspectRow(r.id, r.store_id, r.coupon_id, r.campaign_id, r.reason,
                       r.redeemed_at, r.received_ts) for r in rows]


def money_columns(rows: Sequence[StoreKpis]) -> list[str]:
    """The currencies in `rows`, sorted (one sales/discount column pair each in the CSV)."""
    seen: set[str] = set()
    for row in rows:
        seen.update(row.sales, row.discount)
    return sorted(seen)


def as_dict(row: StoreKpis) -> Mapping[str, object]:
    """A row as plain JSON values (money stays integer minor units per currency)."""
    return {"store_id": row.store_id, "name": row.name, "region": row.region,
            "transactions": row.transactions, "identified": row.identified,
            "identified_pct": row.identified_pct, "voids": row.voids,
            "sales_minor": dict(row.sales), "redemptions": row.redemptions,
            "discount_minor": dict(row.discount), "kiosk_sessions": row.kiosk_sessions,
            "receipts_printed": row.receipts}


@dataclass(frozen=True)
class SaleDetail:
    """What the hub holds of the sale a redemption was part of (the events of that sale)."""

    store_id: str
    txn: str | None
    device: str | None
    customer_id: str | None
    customer_name: str | None
    completed: dict[str, Any] | None       # transaction.completed's data, when it arrived
    completed_ts: float | None
    redeemed: list[dict[str, Any]]         # the sale's redemptions, with "campaign_name"
    others: list[tuple[str, float, dict[str, Any]]]  # (type, occurred_ts, data) of the rest


SALE_WINDOW_S = 3600.0  # a sale's events are this close to its redemption
AFTER_WINDOW_S = 90 * 86400.0  # a void or reprint may come weeks later
LATER_TYPES = ("transaction.voided", "staff.action", "coupon.redemption_reversed")
SALE_TYPES = ("transaction.completed", "coupon.redeemed", "customer.identified",
              "receipt.printed")


def sale_of_redemption(db: HubDB, store_id: str, redemption_id: str) -> SaleDetail | None:
    """The sale of one redemption at `store_id` (None when there is no such redemption
    there). Read through the events index: the sale's own events within an hour of the
    redemption, voids, reversals and reprints of it within 90 days after."""
    with db.read() as conn:
        red = conn.execute(select(redemptions).where(redemptions.c.id == redemption_id,
                                                     redemptions.c.store_id == store_id)
                           ).first()
        if red is None:
            return None
        own = conn.execute(select(events.c.device_id, events.c.data)
                           .where(events.c.event_id == red.event_id)).first()
        txn = _txn_of(own.data) if own is not None else None
        found: list[tuple[str, float, dict[str, Any]]] = []
        if txn is not None:
            at = red.redeemed_ts
            for types, start, end in ((SALE_TYPES, at - SALE_WINDOW_S, at + SALE_WINDOW_S),
                                      (LATER_TYPES, at - SALE_WINDOW_S, at + AFTER_WINDOW_S)):
                for row in conn.execute(
                        select(events.c.type, events.c.occurred_ts, events.c.data)
                        .where(events.c.store_id == store_id, events.c.type.in_(types),
                               events.c.occurred_ts >= start, events.c.occurred_ts <= end)
                        .order_by(events.c.occurred_ts)):
                    with contextlib.suppress(ValueError):
                        data = json.loads(row.data)
                        if isinstance(data, dict) and data.get("txn") == txn:
                            found.append((row.type, row.occurred_ts, data))
        completed = next(((ts, d) for t, ts, d in found if t == "transaction.completed"), None)
        redeemed = [d for t, _, d in found if t == "coupon.redeemed"] or \
            ([json.loads(own.data)] if own is not None else [])
        names = _record_names(conn, campaigns_table,
                              {str(d.get("campaign")) for d in redeemed}, "name")
        customer = red.customer_id or (completed[1].get("customer_id") if completed else None)
        customer = customer if isinstance(customer, str) else None
        shopper = _record_names(conn, customers_table, {customer} if customer else set(),
                                "display_name")
    return SaleDetail(
        store_id, txn, own.device_id if own is not None else None, customer,
        shopper.get(customer) if customer else None,
        completed[1] if completed else None, completed[0] if completed else None,
        [{**d, "campaign_name": names.get(str(d.get("campaign")), d.get("campaign"))}
         for d in redeemed],
        [(t, ts, d) for t, ts, d in found if t not in ("transaction.completed",
                                                        "coupon.redeemed")])


def _txn_of(data: str) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        txn = json.loads(data).get("txn")
        return txn if isinstance(txn, str) else None
    return None
