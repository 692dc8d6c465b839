"""Receipt documents: what the shopper reads on paper, built once from the completed sale.

A document is JSON blocks (docs/receipts.md §1) worded here, at the edge, in the store's
locale and time zone, so the printer, the staff preview and the CRM all show the same words.
A shopper who consented to personalisation gets a greeting, today's savings, their points,
a survey QR and one next-visit offer chosen for them: a coupon this store signs with its own
Ed25519 key, which the checkout (and every store that trusts this store's key) accepts on
a later visit. Anyone else gets a plain receipt that says nothing about them.

The document and the offer are written inside `txn.complete`'s transaction, so a sale,
its receipt job and the coupon it printed exist together or not at all.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from babel.numbers import format_decimal

from edge.coupons import OFFER_TERMS, CouponBook
from edge.customers import USABLE_IN_WALLET, Customer, add_to_wallet
from edge.settings import Settings
from store_contract.basket import Basket
from store_contract.campaigns import RECEIPT_COUPON_PREFIX, parse_until, until_exp
from store_contract.jws import COUPON_TYP, SigningKey
from store_contract.protocol import format_ts, uuid7
from store_contract.wording import calendar_day, moment, money

RECENT_DAYS = 90
RECENT_SALES = 20
# Terms a campaign passes on to the coupons printed for it (the claims of docs/checkout.md §8).
TENDER_LABELS = {"card": "Card", "cash": "Cash", "voucher": "Voucher", "gift_card": "Gift card",
                 "mobile": "Mobile payment"}


@dataclass(frozen=True)
class Offer:
    """A next-visit coupon printed on a receipt."""

    coupon: str
    campaign: str
    token: str
    expires_at: float
    what: str  # the campaign's description (or name), as the receipt words it
    until: date  # the last local date it may be used (in each store's zone)


@dataclass(frozen=True)
class Receipt:
    document: dict[str, Any]
    offer: Offer | None

    @property
    def personalised(self) -> bool:
        return bool(self.document["personalised"])


class Receipts:
    """Builds receipt documents and picks and signs the next-visit offer."""

    def __init__(self, settings: Settings, book: CouponBook, key: SigningKey) -> None:
        self.settings = settings
        self.book = book
        self.key = key

    # ------------------------------------------------------------ the document

    def build(self, conn: sqlite3.Connection, *, job: str, device: str, txn: str,
              customer: Customer | None, basket: Basket, tenders: list[dict[str, Any]],
              total_minor: int, redemptions: list[dict[str, Any]], now: float) -> Receipt:
        s = self.settings
        cur, loc = basket.currency, s.locale

        def fmt(minor: int) -> str:
            return money(minor, cur, loc)

        items = []
        for line in basket.lines:
            item: dict[str, Any] = {"name": line.name or line.sku,
                                    "amount": fmt(line.total_minor)}
            if line.qty != 1:
                item["qty"] = f"{line.qty} \u00d7 {fmt(line.unit_minor)}"
            items.append(item)
        blocks: list[dict[str, Any]] = [
            {"type": "header", "title": s.store_name, "logo": True,
             "lines": [p.strip() for p in s.store_address.split("|") if p.strip()]},
            {"type": "lines", "items": items},
        ]
        # As receipts usually read: the lines, their subtotal, the discounts taken off it,
        # then the total that was paid.
        discount = sum(r["discount_minor"] for r in redemptions)
        if redemptions:
            blocks.append({"type": "totals", "rows": [
                {"label": "Subtotal", "amount": fmt(basket.total_minor)}]})
            blocks.append({"type": "discounts", "items": [
                {"name": r["description"], "amount": fmt(-r["discount_minor"])}
                for r in redemptions]})
        rows: list[dict[str, Any]] = [
            {"label": "Total", "amount": fmt(total_minor), "strong": True}]
        paid = 0
        for t in tenders:
            rows.append({"label": TENDER_LABELS.get(t["kind"], t["kind"].replace("_", " ")
                                                    .capitalize()),
                         "amount": fmt(t["amount_minor"])})
            paid += t["amount_minor"]
        if paid > total_minor and any(t["kind"] == "cash" for t in tenders):
            rows.append({"label": "Change", "amount": fmt(paid - total_minor)})
        blocks.append({"type": "totals", "rows": rows})

        personal = customer is not None and customer.personalised
        offer = None
        if personal:
            assert customer is not None
            if discount:
                blocks.append({"type": "savings", "text": f"You saved {fmt(discount)} today"})
            blocks.append({"type": "customer", "greeting": f"Thank you, {customer.display_name}!",
                           "rows": [{"label": "Points", "value": format_decimal(
                               customer.points, locale=loc)},
                               {"label": "Tier", "value": customer.tier.capitalize()}]})
            offer = self.offer_for(conn, customer, basket, device=device, txn=txn, now=now)
            if offer is not None:
                until = calendar_day(offer.until, loc)
                blocks.append({"type": "offer", "title": f"Next visit: {offer.what}",
                               "text": f"Just for you, until {until}. Show this code at the till.",
                               "code": offer.token})
            if s.survey_url:
                blocks.append({"type": "qr", "caption": "How did we do today? Tell us:",
                               "data": f"{s.survey_url}?{urlencode({'s': s.store_id, 't': txn})}"})
        when = moment(datetime.fromtimestamp(now, UTC), s.zone, loc)
        footer = [f"{device} \u00b7 {txn} \u00b7 {when}", f"Receipt {job}"]
        if not personal:
            footer.insert(0, f"Thank you for shopping at {s.store_name}")
        blocks.append({"type": "footer", "lines": footer})
        document = {"v": 1, "kind": "receipt", "job": job, "copy": False,
                    "personalised": personal, "blocks": blocks}
        return Receipt(document, offer)

    # ------------------------------------------------------------ the next-visit offer

    def offer_for(self, conn: sqlite3.Connection, customer: Customer, basket: Basket, *,
                  device: str, txn: str, now: float) -> Offer | None:
        """Choose, sign and record one coupon for the shopper's next visit (or None)."""
        if self.settings.receipt_offer_days == 0:
            return None
        campaign = self.choose(conn, customer, basket, now)
        if campaign is None:
            return None
        return self.issue(conn, customer, campaign, device=device, txn=txn, now=now)

    def issue(self, conn: sqlite3.Connection, customer: Customer, campaign: sqlite3.Row, *,
              device: str, txn: str | None, now: float) -> Offer:
        """Sign one coupon of an offer campaign (a row of `ranked`) for this shopper with
        the store's key, record it as issued and put it in their wallet: a receipt's
        next-visit offer, or an offer the shopper clipped at a kiosk (`txn` None). Valid
        `receipt_offer_days` days (at least one), never past the campaign."""
        zone = self.settings.zone
        terms = json.loads(campaign["terms"])
        # Valid to the end of a local date (here, then wherever it is scanned), never past
        # the campaign: its own `until`, and the local date its `ends_at` falls on.
        last = datetime.fromtimestamp(now, zone).date() + timedelta(
            days=max(1, self.settings.receipt_offer_days))
        if campaign["ends_at"] is not None:
            last = min(last, datetime.fromtimestamp(campaign["ends_at"] - 1e-6, zone).date())
        if campaign_until := parse_until(terms.get("until")):
            last = min(last, campaign_until)
        expires = until_exp(last)
        if campaign["ends_at"] is not None:
            expires = min(expires, int(campaign["ends_at"]))
        coupon_id = f"{RECEIPT_COUPON_PREFIX}{self.settings.store_id}:{uuid7()}"
        claims = {"jti": coupon_id, "cmp": campaign["id"], "sub": customer.id,
                  "iss": f"store:{self.settings.store_id}", "iat": int(now), "nbf": int(now),
                  "exp": expires, "until": last.isoformat(),
                  **{k: terms[k] for k in OFFER_TERMS if k in terms}}
        token = self.key.sign(claims, COUPON_TYP)
        conn.execute("INSERT INTO issued_coupons (id, campaign_id, customer_id, device_id, txn, "
                     "issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (coupon_id, campaign["id"], customer.id, device, txn, now, expires))
        # In the shopper's wallet too, so the app and the kiosk show what the paper shows.
        entry = self.book.wallet_entry(customer.id, token)
        if entry is not None:
            add_to_wallet(conn, customer.id, entry, token,
                          format_ts(datetime.fromtimestamp(now, UTC)))
        return Offer(coupon_id, campaign["id"], token, expires,
                     campaign["description"] or campaign["name"], last)

    def choose(self, conn: sqlite3.Connection, customer: Customer, basket: Basket,
               now: float) -> sqlite3.Row | None:
        """The best current offer campaign for this shopper (`ranked`'s first), or None."""
        ranked = self.ranked(conn, customer, basket, now)
        return ranked[0] if ranked else None

    def ranked(self, conn: sqlite3.Connection, customer: Customer, basket: Basket,
               now: float) -> list[sqlite3.Row]:
        """The current offer campaigns for this shopper, best first: what a receipt offers
        (the first) and what the kiosk shows (all of them).

        Only campaigns marked `offer`, running now, not withdrawn, for the shopper's tier and
        segments (when the campaign names any), and not already in the shopper's hands: from
        an earlier receipt, or a coupon of it in their wallet (clipped at a kiosk, or in the
        app) that can still be used. Among those, a campaign for what the shopper buys
        (categories or products of this basket and their recent sales here) beats one for
        their segment, which beats one for their tier, which beats one for everybody; ties
        go by id.
        """
        at = datetime.fromtimestamp(now, UTC)
        rows = conn.execute(
            "SELECT id, name, description, terms, tiers, segments, ends_at FROM campaigns "
            "WHERE offer = 1 AND (starts_at IS NULL OR starts_at <= ?) AND id NOT IN ("
            "SELECT campaign_id FROM issued_coupons WHERE customer_id = ? AND expires_at > ? "
            "AND id NOT IN (SELECT coupon_id FROM redemptions WHERE reversed_at IS NULL)) "
            "AND id NOT IN (SELECT w.campaign_id FROM wallet w WHERE "
            f"{USABLE_IN_WALLET}) ORDER BY id",
            (now, customer.id, now, customer.id, now)).fetchall()
        if not rows:
            return []
        cats, skus = self._buys(conn, customer, basket, now)
        scored: list[tuple[int, sqlite3.Row]] = []
        for row in rows:
            tiers = json.loads(row["tiers"]) if row["tiers"] else None
            segments = json.loads(row["segments"]) if row["segments"] else None
            if tiers and customer.tier not in tiers:
                continue
            if segments and not set(segments) & set(customer.segments):
                continue
            if self.book.campaign_ended(row, at):
                continue
            if self.book.revoked(None, row["id"]):
                continue
            terms = json.loads(row["terms"])
            for_products = set(terms.get("cats", [])) | set(terms.get("skus", []))
            # What the shopper buys first; a campaign for products they never buy is poor.
            bought = 8 if for_products & (cats | skus) else (-1 if for_products else 0)
            scored.append((bought + (4 if segments else 0) + (2 if tiers else 0), row))
        # Best first; ties by id (the rows come in id order and the sort is stable).
        scored.sort(key=lambda pair: -pair[0])
        return [row for _, row in scored]

    def _buys(self, conn: sqlite3.Connection, customer: Customer, basket: Basket,
              now: float) -> tuple[set[str], set[str]]:
        """Categories and products in this basket and the shopper's recent sales here."""
        cats = {c for line in basket.lines for c in line.categories}
        skus = {line.sku for line in basket.lines}
        since = format_ts(datetime.fromtimestamp(now - RECENT_DAYS * 86400, UTC))
        for (raw,) in conn.execute(
                "SELECT basket FROM transactions WHERE customer_id = ? AND state = 'completed' "
                "AND completed_at >= ? ORDER BY completed_at DESC LIMIT ?",
                (customer.id, since, RECENT_SALES)):
            for line in json.loads(raw or "{}").get("lines", []):
                skus.add(line.get("sku", ""))
                cats.update(line.get("categories", []))
        return cats, skus


PERSONAL_BLOCKS = frozenset({"savings", "customer", "offer"})


def anonymise_document(document: dict[str, Any]) -> dict[str, Any]:
    """A receipt document without the shopper's parts (erasure): greeting, points, savings
    and the coupon signed for them; the sale itself stays as it was."""
    blocks = [b for b in document.get("blocks", []) if b.get("type") not in PERSONAL_BLOCKS]
    return {**document, "personalised": False, "blocks": blocks}
