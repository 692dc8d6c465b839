"""Demo data for the hub: two stores of one region, fed through the real ingest path.

Only Harbour Street (store-2) has a past: two weeks of sales, redemptions of coupons the hub
signed, receipts and kiosk visits, so the dashboard has history to compare. The live demo
store (store-1) starts with nothing but the one sale of yesterday whose coupon makes the
offline double spend with Harbour Street: every other figure of it comes from the running
demo."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.ingest import ingest
from cloud_sync.hub.keys import hub_signing_key
from cloud_sync.hub.managers import add_manager
from cloud_sync.hub.settings import HubSettings
from cloud_sync.hub.stores import add_store, list_stores
from store_contract.jws import COUPON_TYP, SigningKey
from store_contract.protocol import format_ts, uuid7

REGION = "north"
# (id, name, sales on an ordinary day of its pre-loaded history; 0: none, the store is live)
DEMO_STORES = [("store-1", "Demo Store", 0), ("store-2", "Harbour Street", 90)]
SHOPPERS = [f"c-{n:03d}" for n in range(120)]
CAMPAIGNS = ["cmp-save10", "cmp-dairy", "cmp-coffee", "cmp-fruit"]
DOUBLE_SPENDER = "c-chloe"  # one of the demo store's shoppers (edge/demo.py)


def _day_of_events(store_id: str, day: datetime, sales: int, rng: random.Random,
                   hub_key: SigningKey) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    expires = int((datetime.now(UTC) + timedelta(days=30)).timestamp())

    def add(type_: str, at: datetime, data: dict[str, Any], device: str = "lane-1") -> None:
        events.append({"event_id": uuid7(), "type": type_, "occurred_at": format_ts(at),
                       "store_id": store_id, "device_id": device, "data": data})

    for n in range(sales):
        at = day + timedelta(hours=8, seconds=rng.randrange(12 * 3600))
        lane = f"lane-{rng.randint(1, 2)}"
        txn = f"h-{store_id}-{day:%m%d}-{n}"
        customer = rng.choice(SHOPPERS) if rng.random() < 0.62 else None
        total = rng.randrange(350, 9500)
        discount = 0
        if customer:
            add("customer.identified", at, {"txn": txn, "customer_id": customer,
                                            "method": "card"}, lane)
            if rng.random() < 0.3:
                discount = rng.choice([100, 200, 300, 500])
                coupon, campaign = f"hist-{uuid7()}", rng.choice(CAMPAIGNS)
                # A coupon the hub signed, as the app's are: the hub believes its use.
                token = hub_key.sign({"jti": coupon, "cmp": campaign, "max": 1,
                                      "exp": expires}, COUPON_TYP)
                add("coupon.redeemed", at, {
                    "redemption": uuid7(), "coupon": coupon, "campaign": campaign,
                    "discount_minor": discount, "currency": "EUR", "customer_id": customer,
                    "txn": txn, "store_id": store_id, "redeemed_at": format_ts(at),
                    "max_uses": 1, "token": token}, lane)
        add("transaction.completed", at, {
            "txn": txn, "customer_id": customer, "total_minor": total - discount,
            "basket_total_minor": total, "discount_minor": discount, "currency": "EUR",
            "completed_at": format_ts(at)}, lane)
        add("receipt.printed", at + timedelta(seconds=2), {
            "job": uuid7(), "txn": txn, "customer_id": customer,
            "personalised": customer is not None}, lane)
    for _ in range(sales // 6):
        at = day + timedelta(hours=9, seconds=rng.randrange(10 * 3600))
        add("kiosk.session", at, {"customer_id": rng.choice(SHOPPERS),
                                  "seconds": rng.randrange(20, 240)}, "kiosk-1")
    return events


def seed(db: HubDB, settings: HubSettings, manager_password: str, days: int = 14,
         seed_value: int = 7) -> dict[str, str]:
    """Register the demo stores and a regional manager, and ingest their history; the
    stores' tokens by id."""
    rng = random.Random(seed_value)
    known = {s["store"] for s in list_stores(db)}
    tokens = {sid: add_store(db, sid, REGION, name, rotate=sid in known)
              for sid, name, _ in DEMO_STORES}
    add_manager(db, "regional", manager_password, REGION, replace=True)
    if known:
        return tokens  # a demo run before this one seeded the history
    today = datetime.now(settings.zone).replace(hour=0, minute=0, second=0, microsecond=0)
    hub_key = hub_signing_key(settings)
    for sid, _, per_day in DEMO_STORES:
        for back in range(days if per_day else 0, 0, -1):
            day = today - timedelta(days=back)
            sales = int(per_day * (1.25 if day.weekday() >= 4 else 1.0) * rng.uniform(.8, 1.2))
            events = _day_of_events(sid, day.astimezone(UTC), sales, rng, hub_key)
            for start in range(0, len(events), settings.max_batch_events):
                ingest(db, settings, sid, {"batch_id": uuid7(),
                                           "events": events[start:start +
                                                            settings.max_batch_events]},
                       hub_key)
    # The same single-use coupon taken at both stores while Harbour Street was offline: a
    # coupon the hub signed, so the hub believes both uses and sees the double spend.
    token = hub_key.sign({"jti": "app-7f3a-single-use", "cmp": "cmp-dairy", "max": 1,
                          "exp": int((today + timedelta(days=30)).timestamp())}, COUPON_TYP)
    for n, sid in enumerate(("store-1", "store-2")):
        at = today - timedelta(days=1, hours=-11, minutes=-47 * n)
        txn, lane = f"{sid}-{at:%m%d}-dairy", f"lane-{n + 1}"
        # Chloé's sale at each store: yoghurt and milk, her app's dairy coupon taken off.
        lines = [{"sku": "5000328", "name": "Greek yoghurt 500 g", "qty": 2, "unit_minor": 219,
                  "total_minor": 438, "categories": ["dairy"]},
                 {"sku": "5000169", "name": "Organic whole milk 1 l", "qty": 2,
                  "unit_minor": 149, "total_minor": 298, "categories": ["dairy", "organic"]}]

        def event(type_: str, data: dict[str, Any], sid: str = sid, at: datetime = at,
                  lane: str = lane) -> dict[str, Any]:
            return {"event_id": uuid7(), "type": type_, "occurred_at": format_ts(at),
                    "store_id": sid, "device_id": lane, "data": data}

        ingest(db, settings, sid, {"batch_id": uuid7(), "events": [
            event("customer.identified", {"txn": txn, "customer_id": DOUBLE_SPENDER,
                                          "method": "member_code"}),
            event("coupon.redeemed", {
                "redemption": uuid7(), "coupon": "app-7f3a-single-use", "campaign": "cmp-dairy",
                "discount_minor": 147, "currency": "EUR", "customer_id": DOUBLE_SPENDER,
                "txn": txn, "store_id": sid, "redeemed_at": format_ts(at), "max_uses": 1,
                "token": token}),
            event("transaction.completed", {
                "txn": txn, "customer_id": DOUBLE_SPENDER, "basket_total_minor": 736,
                "discount_minor": 147, "total_minor": 589, "currency": "EUR", "lines": lines,
                "tenders": [{"kind": "card", "amount_minor": 589}],
                "completed_at": format_ts(at)})]}, hub_key)
    # Harbour Street's edge reports a small, recent queue.
    ingest(db, settings, "store-2", {"batch_id": uuid7(), "events": [{
        "event_id": uuid7(), "type": "device.status", "occurred_at": format_ts(datetime.now(UTC)),
        "store_id": "store-2", "device_id": "printer-1",
        "data": {"kind": "printer", "device": "printer-1", "state": "online"}}],
        "edge": {"queue_depth": 3, "oldest_age_s": 1.5, "dead_letters": 0}})
    return tokens
