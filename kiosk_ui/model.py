"""What the kiosk pages show and ask, and the one interface they ask it through.

The kiosk reaches the edge only through `KioskBackend`, which the edge's composition
implements (docs/kiosk.md, "How the kiosk talks to the edge"): this package imports nothing
of the edge, so the pages can never read more of a shopper, or of the store, than the
backend hands them. Every value here is already what a shopper may see on a shared screen:
a first name, a masked identity, points, their own coupons and offers in plain words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class KioskInfo:
    """The kiosk a request comes from (its paired browser's credential)."""

    id: str
    store_name: str
    langs: tuple[str, ...]  # offered, first = default (e.g. ("de", "en"))
    printer: str | None  # where its coupons print; None: no printing at this kiosk


@dataclass(frozen=True)
class Shopper:
    """The identified shopper, as the kiosk may show them."""

    id: str
    first_name: str
    masked: str  # how the screen names who is identified: "Anna · card ··34"
    tier: str
    points: int
    personalised: bool  # consented to personal offers (else: points and wallet only)
    method: str = ""  # how they identified: "member", "card", "phone"
    consent: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Terms:
    """What a coupon gives, each part already written in the shopper's language; the kiosk
    puts them into a sentence ("10 % off selected items in a basket of 20,00 € or more")."""

    value: str  # "10 %", "5,00 €"
    min_basket: str | None = None  # "20,00 €"
    selected_items: bool = False  # only some products or categories


@dataclass(frozen=True)
class Coupon:
    """A coupon in the shopper's wallet."""

    id: str
    campaign: str
    title: str
    terms: Terms
    ends: str | None  # the last day, in the shopper's language: "Sunday, 6 December"


@dataclass(frozen=True)
class Offer:
    """A personal offer the shopper may clip."""

    campaign: str
    title: str
    terms: Terms
    ends: str | None


@dataclass(frozen=True)
class OfferDetail:
    """One of the shopper's offers or wallet coupons, whole (the offer page)."""

    item: Offer | Coupon
    in_wallet: bool  # a coupon they hold (else an offer they may clip)
    products: tuple[str, ...] = ()  # names of this store's products it is for (a few)
    more_products: bool = False  # and others besides


@dataclass(frozen=True)
class Home:
    """Everything the shopper's home screen shows."""

    shopper: Shopper
    wallet: tuple[Coupon, ...]
    offers: tuple[Offer, ...]  # empty without consent to personal offers


@dataclass(frozen=True)
class Price:
    """A product a shopper scanned, as the price check shows it."""

    name: str
    price: str  # in the shopper's language: "13,99 €"
    offers: tuple[str, ...] = ()  # titles of this shopper's offers and coupons for it


class Refused(Exception):
    """The backend's no, in words a shopper can read (`message`), with a `reason` the page
    and the tests can tell apart ("unknown", "expired", "forged", "other_store", "used",
    "bad_input", "locked", "unavailable")."""

    def __init__(self, reason: str, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.detail = detail


class ScanFeed(Protocol):
    """One open page's live scans (from the kiosk's scanner)."""

    def next(self, timeout: float) -> Mapping[str, Any] | None: ...


class KioskBackend(Protocol):
    """What the kiosk pages ask the edge. Every call names the kiosk; a call for a shopper
    names the shopper the kiosk's own session identified."""

    def kiosk(self) -> KioskInfo | None:
        """The kiosk of the current request (its credential), None without a valid one."""

    def identify(self, kiosk: KioskInfo, session: str, *, code: str | None = None,
                 phone: str | None = None) -> Shopper:
        """The shopper of a scanned or typed code (member QR, loyalty card) or a typed phone
        number; `Refused` when there is none, in words a shopper can read."""

    def home(self, kiosk: KioskInfo, shopper_id: str, lang: str) -> Home:
        """The shopper's points, wallet and (with consent) personal offers, worded in
        `lang`."""

    def offer(self, kiosk: KioskInfo, shopper_id: str, campaign: str, lang: str
              ) -> OfferDetail:
        """One campaign of the shopper's home (a coupon they hold, else an offer made to
        them), with the products of this store it is for; `Refused("not_offered")` for any
        other campaign."""

    def clip(self, kiosk: KioskInfo, shopper_id: str, campaign: str) -> str:
        """Put one of the shopper's personal offers in their wallet (the app's too); the
        coupon's id. Clipping it again gives the same coupon. `Refused` ("not_offered",
        "no_consent", "unknown") otherwise."""

    def print_offer(self, kiosk: KioskInfo, shopper_id: str, campaign: str,
                    lines: Sequence[str]) -> str:
        """Clip the offer if need be and print its coupon on the kiosk's printer (`lines`:
        its title and terms as the kiosk words them; the backend adds the signed QR); the
        print job's id. `Refused` ("no_printer", "not_offered", ...) otherwise."""

    def print_state(self, kiosk: KioskInfo, job: str) -> tuple[str, str | None]:
        """(state, reason) of a print job of this kiosk: "queued", "sending", "printed",
        "failed", or "held" with "paper_empty", "cover_open" or "offline"."""

    def set_consent(self, kiosk: KioskInfo, shopper_id: str, choices: Mapping[str, bool],
                    proof: str | None = None) -> None:
        """Apply the shopper's choices ("personalised": personal receipts and offers,
        "marketing": contact about offers) at once, and tell the hub; `proof` is the app's
        member code the shopper identified with, if they did (the chain takes a "yes" from
        the app's shopper only)."""

    def price(self, kiosk: KioskInfo, code: str, symbology: str | None,
              shopper_id: str | None, lang: str) -> Price:
        """The product of a scanned or typed barcode (any GTIN form) with its price, and
        the identified shopper's offers for it; `Refused("unknown_product")` when the store
        does not know it."""

    def audit_phone(self, kiosk: KioskInfo, outcome: str, number: str) -> None:
        """Record a phone look-up attempt (`outcome`: "found", "unknown", "invalid",
        "locked") without the number in clear."""

    def listen(self, kiosk: KioskInfo) -> ScanFeed | None:
        """A live feed of the kiosk's scans; None when too many pages listen already."""

    def leave(self, feed: ScanFeed) -> None:
        """Close a feed from `listen`."""

    def session_ended(self, kiosk: KioskInfo, summary: Mapping[str, Any]) -> None:
        """A shopper's session is over: queue its `kiosk.session` event (how they
        identified, how long, what they did)."""
