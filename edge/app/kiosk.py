"""The edge behind the kiosk pages: `kiosk_ui.KioskBackend` over the edge's own parts.

The kiosk package imports nothing of the edge (docs/architecture.md); this adapter is the
one place that decides what of the store a kiosk screen may see: the kiosk of the paired
browser's credential, the shopper that kiosk's session identified — by the checkout's own
reading of member codes, cards and phone numbers (`Checkout.recognise`) — their points,
wallet and, with consent, the offers the receipts' ranking picks (`Receipts.ranked`), and
the kiosk's own scanner. Nothing else: no other shopper, no staff page, no POS method.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from babel.dates import format_date
from babel.numbers import format_percent
from flask import Flask

from edge.app.service import EdgeService
from edge.audit import Actor, record
from edge.customers import USABLE_IN_WALLET, Customer, get_customer
from edge.outbox import queue_event
from edge.products import find_product
from edge.receipts import Receipt
from edge.scanfeed import Listener
from edge.scanners import Target, page_key
from edge.spool import COUPON_SLIP
from edge.transactions import CustomerUnknown
from kiosk_ui.model import (
    Coupon,
    Home,
    KioskInfo,
    Offer,
    OfferDetail,
    Price,
    Refused,
    ScanFeed,
    Shopper,
    Terms,
)
from store_contract.basket import Basket
from store_contract.campaigns import coupon_from_terms
from store_contract.errors import BadRequest
from store_contract.events import ConsentChanged, KioskSession, OfferClipped
from store_contract.protocol import format_ts, uuid7
from store_contract.wording import money

log = logging.getLogger(__name__)

KIOSK_PHONE_LOOKUP = "kiosk.phone_lookup"  # the till audit trail's action
# What a shopper may choose on the kiosk: personalised receipts and offers, marketing contact.
CONSENTS = ("personalised", "marketing")

# The checkout's reasons for not knowing a member code, as the kiosk words them.
_REASONS = {"forged": "forged", "claims": "forged", "lifetime": "forged", "expired": "expired",
            "used": "used"}


# How many of an offer's products the offer page names (then "and more").
PRODUCTS_SHOWN = 8


class EdgeKioskBackend:
    """`KioskBackend` for one edge. `current` gives the kiosk of the request's credential
    (an object with `id`, `langs`, `printer`), or None."""

    def __init__(self, svc: EdgeService, current: Callable[[], Any]) -> None:
        self.svc = svc
        self.current = current

    # ------------------------------------------------------------ the kiosk

    def kiosk(self) -> KioskInfo | None:
        found = self.current()
        if found is None:
            return None
        s = self.svc.settings
        langs = tuple(found.langs) or (s.locale.split("_")[0],)
        return KioskInfo(found.id, s.store_name, langs, found.printer)

    # ------------------------------------------------------------ the shopper

    def identify(self, kiosk: KioskInfo, session: str, *, code: str | None = None,
                 phone: str | None = None) -> Shopper:
        try:
            customer, method = self.svc.checkout.recognise(
                code, phone, device=f"kiosk:{kiosk.id}", visit="kiosk")
        except CustomerUnknown as exc:
            reason = (exc.detail or {}).get("reason")
            raise Refused(_REASONS.get(str(reason), "unknown"), exc.message) from None
        except BadRequest as exc:
            raise Refused("not_phone" if phone else "bad_input", exc.message) from None
        return self._shopper(customer, method, code or phone or "")

    def _shopper(self, customer: Customer, method: str, typed: str) -> Shopper:
        first = customer.display_name.split()[0] if customer.display_name.split() else "?"
        digits = [ch for ch in typed if ch.isdigit()]
        if method in ("card", "phone") and len(digits) >= 4:
            # The last two digits of what they typed or scanned: enough to notice a wrong
            # account, too little to tell anyone the number.
            masked = f"{first} · ··{''.join(digits[-2:])}"
        else:
            masked = first
        return Shopper(customer.id, first, masked, customer.tier, customer.points,
                       customer.personalised, method, dict(customer.consent))

    def home(self, kiosk: KioskInfo, shopper_id: str, lang: str) -> Home:
        customer = get_customer(self.svc.store, shopper_id)
        if customer is None:  # erased or forgotten meanwhile
            raise Refused("unknown", "the shopper is no longer known here")
        now = time.time()
        wallet = tuple(self._coupon(entry, lang) for entry in
                       self.svc.checkout.wallet(customer.id, now))
        offers: tuple[Offer, ...] = ()
        if customer.personalised:
            rows = self.svc.receipts.ranked(self.svc.store.reader, customer,
                                            Basket(self.svc.settings.currency, ()), now)
            offers = tuple(o for o in (self._offer(r, lang) for r in rows) if o is not None)
        return Home(self._shopper(customer, "", ""), wallet, offers)

    def _coupon(self, entry: Mapping[str, Any], lang: str) -> Coupon:
        coupon = self.svc.coupons.read(entry["code"])
        ends = entry.get("until") or (entry["expires"][:10] if entry.get("expires") else None)
        return Coupon(entry["coupon"], entry["campaign"], entry["description"],
                      self._terms(coupon.rule, coupon.min_minor, lang), self._day(ends, lang))

    def _offer(self, row: Any, lang: str) -> Offer | None:
        terms = json.loads(row["terms"])
        try:
            coupon = coupon_from_terms(terms, coupon_id="offer", campaign=row["id"],
                                       plain=True, description=row["description"],
                                       locale=self.svc.settings.locale)
        except ValueError:
            log.warning("offer campaign %s has terms the kiosk cannot show; left out",
                        row["id"])
            return None
        ends = terms.get("until")
        if ends is None and row["ends_at"] is not None:
            ends = datetime.fromtimestamp(row["ends_at"] - 1e-6, self.svc.settings.zone) \
                .date().isoformat()
        return Offer(row["id"], row["description"] or row["name"],
                     self._terms(coupon.rule, coupon.min_minor, lang), self._day(ends, lang))

    def _terms(self, rule: Any, min_minor: int | None, lang: str) -> Terms:
        currency = self.svc.settings.currency
        disc = rule.discount
        if disc.kind == "percent":
            value = format_percent(disc.percent / 100, locale=lang)
        else:
            value = money(disc.amount_minor, disc.currency or currency, lang)
        minimum = money(min_minor, currency, lang) if min_minor else None
        return Terms(value, minimum, bool(rule.skus or rule.cats))

    def _day(self, iso: str | None, lang: str) -> str | None:
        if not iso:
            return None
        try:
            return format_date(date.fromisoformat(iso), "full", locale=lang)
        except ValueError:
            return None

    def clip(self, kiosk: KioskInfo, shopper_id: str, campaign: str) -> str:
        """Put one of the shopper's offers in their wallet: a coupon of that campaign
        signed for them with the store's key (as a receipt's next-visit offer is), and an
        `offer.clipped` event so the hub, the app and the tills hear of it. Clipping what is
        already in the wallet gives that coupon again: a double tap clips once."""
        now = time.time()
        with self.svc.store.transaction() as db:
            conn = db.conn
            customer = get_customer(self.svc.store, shopper_id)
            if customer is None:
                raise Refused("unknown", "the shopper is no longer known here")
            if not customer.personalised:
                raise Refused("no_consent", "no consent to personal offers")
            held = conn.execute(
                f"SELECT w.coupon_id FROM wallet w WHERE {USABLE_IN_WALLET} AND "
                "w.campaign_id = ? ORDER BY w.clipped_at, w.coupon_id LIMIT 1",
                (customer.id, now, campaign)).fetchone()
            if held is not None:
                return str(held[0])
            row = next((r for r in self.svc.receipts.ranked(
                conn, customer, Basket(self.svc.settings.currency, ()), now)
                if r["id"] == campaign), None)
            if row is None:
                raise Refused("not_offered", "not an offer for this shopper now")
            offer = self.svc.receipts.issue(conn, customer, row, device=f"kiosk:{kiosk.id}",
                                            txn=None, now=now)
            queue_event(conn, OfferClipped(
                customer_id=customer.id, campaign=campaign, coupon=offer.coupon,
                token=offer.token,
                expires_at=format_ts(datetime.fromtimestamp(offer.expires_at, UTC)),
                until=offer.until.isoformat(), kiosk=kiosk.id), device_id=kiosk.id)
        return offer.coupon

    def print_offer(self, kiosk: KioskInfo, shopper_id: str, campaign: str,
                    lines: Sequence[str]) -> str:
        """Clip the offer (if it is not in the wallet yet) and print its coupon on the
        kiosk's printer through the spool: the `lines` the kiosk wrote for it, in the
        shopper's language, and the signed coupon as a QR the tills accept. The job's id."""
        if kiosk.printer is None:
            raise Refused("no_printer", "this kiosk has no printer")
        coupon = self.clip(kiosk, shopper_id, campaign)
        job = uuid7()
        with self.svc.store.transaction() as db:
            conn = db.conn
            row = conn.execute("SELECT token, description FROM wallet WHERE customer_id = ? "
                               "AND coupon_id = ?", (shopper_id, coupon)).fetchone()
            if row is None:
                raise Refused("not_offered", "the coupon is not in the wallet")
            texts = [str(line)[:200] for line in lines][:6]
            document = {"v": 1, "kind": COUPON_SLIP, "job": job, "copy": False,
                        "personalised": True, "blocks": [
                            {"type": "header", "title": self.svc.settings.store_name},
                            {"type": "offer", "title": texts[0] if texts else
                             row["description"], "text": "\n".join(texts[1:]),
                             "code": row["token"]},
                            {"type": "footer", "lines": [f"{kiosk.id} · {job}"]}]}
            self.svc.spool.create(conn, job, kiosk.id, None, Receipt(document, None),
                                  shopper_id, printer=kiosk.printer)
        self.svc.spool.send_now(job)
        return job

    def print_state(self, kiosk: KioskInfo, job: str) -> tuple[str, str | None]:
        """(state, reason) of one of this kiosk's print jobs: "queued", "sending",
        "held" ("paper_empty", "cover_open", "offline"), "printed" or "failed"."""
        row = self.svc.store.query_one("SELECT state, reason FROM print_jobs WHERE job = ? "
                                       "AND device_id = ?", (job, kiosk.id))
        if row is None:
            raise Refused("unknown", "no such print job at this kiosk")
        return row["state"], row["reason"]

    def set_consent(self, kiosk: KioskInfo, shopper_id: str, choices: Mapping[str, bool],
                    proof: str | None = None) -> None:
        """The shopper's own choices (`CONSENTS`), applied at the edge at once (the next
        receipt and screen follow them) and sent to the hub as `consent.changed`, with the
        member code they identified with (`proof`), without which the hub takes a "no" but
        not a "yes" (docs/kiosk.md, "Consent")."""
        wanted = {k: bool(v) for k, v in choices.items() if k in CONSENTS}
        with self.svc.store.transaction() as db:
            conn = db.conn
            row = conn.execute("SELECT consent FROM customers WHERE id = ?",
                               (shopper_id,)).fetchone()
            if row is None:
                raise Refused("unknown", "the shopper is no longer known here")
            before = json.loads(row["consent"] or "{}")
            after = {**before, **wanted}
            if after == before:
                return
            now = format_ts(datetime.now(UTC))
            conn.execute("UPDATE customers SET consent = ?, updated_at = ? WHERE id = ?",
                         (json.dumps(after, sort_keys=True), now, shopper_id))
            changed = sorted(k for k in after if after.get(k) != before.get(k))
            granted = any(after[k] for k in changed)
            queue_event(conn, ConsentChanged(
                customer_id=shopper_id, consent=after, changed=changed, via="kiosk",
                kiosk=kiosk.id, at=now, proof=proof if granted else None), device_id=kiosk.id)

    def price(self, kiosk: KioskInfo, code: str, symbology: str | None,
              shopper_id: str | None, lang: str) -> Price:
        """The product of a barcode in any GTIN form (`find_product`), its price in the
        shopper's language, and the identified shopper's coupons and offers made for it
        (for its product or category)."""
        product = find_product(self.svc.store, code, symbology)
        if product is None:
            raise Refused("unknown_product", "the store does not know this product")
        currency = self.svc.settings.currency
        titles: list[str] = []
        customer = get_customer(self.svc.store, shopper_id) if shopper_id else None
        if customer is not None:
            home = self.home(kiosk, customer.id, lang)
            items: list[Coupon | Offer] = [*home.wallet, *home.offers]
            for item in items:
                if item.terms.selected_items and self._covers(item.campaign, product):
                    titles.append(item.title)
        return Price(product.name, money(product.unit_minor, currency, lang),
                     tuple(dict.fromkeys(titles)))

    def _scope(self, campaign: str) -> tuple[list[str], list[str]]:
        """The products (skus) and categories a campaign's coupons are for; both empty: the
        whole basket."""
        row = self.svc.store.query_one("SELECT terms FROM campaigns WHERE id = ?", (campaign,))
        terms = json.loads(row["terms"]) if row is not None else {}
        return list(terms.get("skus") or []), list(terms.get("cats") or [])

    def _covers(self, campaign: str, product: Any) -> bool:
        """Is `product` one a campaign's coupons are for (its skus or categories)?"""
        skus, cats = self._scope(campaign)
        return product.sku in skus or bool(set(product.categories) & set(cats))

    def offer(self, kiosk: KioskInfo, shopper_id: str, campaign: str, lang: str
              ) -> OfferDetail:
        """A coupon of the shopper's wallet or an offer of their home (`home`: what they may
        see), and up to PRODUCTS_SHOWN of this store's products it is for, by name."""
        view = self.home(kiosk, shopper_id, lang)
        held = next((c for c in view.wallet if c.campaign == campaign), None)
        item: Offer | Coupon | None = held or next(
            (o for o in view.offers if o.campaign == campaign), None)
        if item is None:
            raise Refused("not_offered", "not an offer or coupon of this shopper")
        names: list[str] = []
        if item.terms.selected_items:
            skus, cats = self._scope(campaign)
            names = [row["name"] for row in self.svc.store.query(
                "SELECT name FROM products p WHERE p.sku IN (SELECT value FROM json_each(?)) "
                "OR EXISTS (SELECT 1 FROM json_each(p.categories) c WHERE c.value IN "
                "(SELECT value FROM json_each(?))) ORDER BY name, sku LIMIT ?",
                (json.dumps(skus), json.dumps(cats), PRODUCTS_SHOWN + 1))]
        return OfferDetail(item, held is not None, tuple(names[:PRODUCTS_SHOWN]),
                           len(names) > PRODUCTS_SHOWN)

    # ------------------------------------------------------------ audit, scans, sessions

    def audit_phone(self, kiosk: KioskInfo, outcome: str, number: str) -> None:
        """One entry in the till audit trail per phone look-up at a kiosk (the staff audit
        page shows them): the outcome and the store's keyed, stretched hash of what was
        typed — one number tried again and again shows as one hash — never the number."""
        typed = self.svc.lookup.hash("phone", number[:64])[:16]
        now = format_ts(datetime.now(UTC))
        with self.svc.store.transaction() as db:
            record(db.conn, KIOSK_PHONE_LOOKUP, Actor(by=f"kiosk:{kiosk.id}"), lane=kiosk.id,
                   at=now, detail={"outcome": outcome, "typed": typed}, event=False)

    def listen(self, kiosk: KioskInfo) -> ScanFeed | None:
        return self.svc.live_scans.listen(page_key(Target("kiosk", kiosk.id)), only=True)

    def leave(self, feed: ScanFeed) -> None:
        assert isinstance(feed, Listener)
        self.svc.live_scans.leave(feed)

    def session_ended(self, kiosk: KioskInfo, summary: Mapping[str, Any]) -> None:
        """The session's `kiosk.session` event for the hub (docs/sync.md): how the shopper
        identified, how long, what they did; their id for erasure, nothing else of them."""
        with self.svc.store.transaction() as db:
            queue_event(db.conn, KioskSession(kiosk=kiosk.id, extra=summary),
                        device_id=kiosk.id)


def init_app(app: Flask) -> None:
    """Serve the kiosk pages (`/kiosk/ID/...`) over this edge, for the browsers paired with
    a kiosk (`kiosk_access.current_kiosk`). Their posts carry no CSRF token: the kiosk's
    cookies are SameSite=Strict and the pages refuse a post from another origin."""
    from edge.app import kiosk_access, staff
    from kiosk_ui import create_blueprint

    svc: EdgeService = app.extensions["edge"]
    backend = EdgeKioskBackend(svc, kiosk_access.current_kiosk)
    blueprint = create_blueprint(backend, idle_s=svc.settings.kiosk_idle_s)
    app.register_blueprint(blueprint)
    staff.csrf.exempt(blueprint)
    sessions = app.extensions["kiosk_ui"]["sessions"]

    def sweep() -> None:
        """End the sessions of screens nobody touched (a browser closed mid-session)."""
        for gone in sessions.expired():
            kiosk = svc.store.query_one("SELECT id FROM kiosks WHERE id = ?", (gone.kiosk,))
            if kiosk is not None:
                backend.session_ended(KioskInfo(gone.kiosk, svc.settings.store_name, (), None),
                                      gone.summary(gone.last + sessions.idle_s, "timeout"))

    svc.scheduler.add_job(sweep, "interval", seconds=15, id="kiosk_sessions_sweep",
                          coalesce=True, max_instances=1)
