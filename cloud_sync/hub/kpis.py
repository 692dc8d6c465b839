"""The dashboard's figures: plain queries over the hub's tables, one source of truth for the
page, its live refresh, `/dashboard.json` and the CSV export.

Every function takes the stores the caller may see; the region rule is applied by choosing
those stores (`stores_in`), so a figure can never include a store of another region. Periods
are calendar days in the hub's zone (`HUB_TZ`), half-open: `start_ts <= t < end_ts`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, case, func, or_, select

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.schema import conflicts, events, redemptions, stores
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
        for r in conn.execute(query.order_by(order, conflicts.c.coupon_id)):
            involved = [s for s in json.loads(r.stores) if isinstance(s, str)]
            seen = [s for s in involved if s in mine]
            if not seen:
                continue
            out.append(ConflictRow(r.coupon_id, r.campaign_id, r.max_uses, r.uses, seen,
                                   len(set(involved) - mine), r.detected_ts, r.updated_ts,
                                   r.resolved_ts))
            if len(out) >= limit:
                break
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
