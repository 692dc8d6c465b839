"""The staff checkout page: a browser lane for tills without integration.

The page is just another lane. Every action it offers becomes a POS request envelope that
goes through the one dispatcher as `Caller("pos", lane)`, exactly like a lane's MQTT
`req/{method}`, so coupons are checked, held, redeemed and refused by the same code with
the same sentences. The views only decide which method a scan is and build its data.

Roles at the till (docs/operations.md §16.3): the page works for its own lane `staff-web`
and for enrolled POS lanes. A cashier's sign-in belongs to the first lane they open the page
for (HTTP Basic: `staff-web`); a manager may open any lane. Voiding a completed sale needs
a manager, or a manager's approval typed into this page (`/approve`), good for one void.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from functools import wraps
from typing import Any, TypeVar, cast

from babel.numbers import get_currency_precision, get_currency_symbol
from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    render_template,
    request,
    session,
)

from edge.accounts import StaffUser
from edge.app.service import EdgeService
from edge.app.staff.auth import client_address, csrf, current_user, require_staff
from edge.approvals import APPROVAL_SECONDS, consume, grant
from edge.audit import VOID, Actor
from edge.codes import Scanned, classify_code
from edge.dispatch import Caller
from edge.products import find_product, known_categories
from edge.transactions import TXN_RE
from store_contract.basket import MAX_LINES, MAX_QTY, Line
from store_contract.errors import BadRequest, Forbidden, NotFound, Unauthorized, Unavailable
from store_contract.protocol import ID_RE, new_envelope
from store_contract.web import scan_stream
from store_contract.wording import device_name, money

F = TypeVar("F", bound=Callable[..., Any])
bp = Blueprint("checkout", __name__, url_prefix="/staff/checkout")

DEFAULT_LANE = "staff-web"
BASKET_SKU = "BASKET"
# A line typed by category: at most this much for one item, in major units (a typo guard).
MAX_LINE_MAJOR = 10_000
QTY_RE = re.compile(r"^[0-9]{1,6}\Z")
SHOPPER_WORDS = {"card": "loyalty card", "phone": "phone number", "member": "member code"}
# A live-scan stream ends after this long and the browser opens it again at once: the
# session (signed out, idle, password changed) is checked anew and the thread is freed.
# What a cashier types as the basket total: "23.50" or "23,50"; no thousands separators.
AMOUNT_RE = re.compile(r"^[0-9]{1,7}([.,][0-9]*)?\Z")


def _service() -> EdgeService:
    svc: EdgeService = current_app.extensions["edge"]
    return svc


def _lane() -> str:
    """The lane the request names: the page's own lane or an enrolled POS lane."""
    lane = request.args.get("lane", DEFAULT_LANE)
    if not ID_RE.match(lane):
        raise BadRequest("A lane id is 1-32 lower-case letters, digits or '-', e.g. lane-4.",
                         detail={"field": "lane"})
    if lane != DEFAULT_LANE and _service().store.query_one(
            "SELECT 1 FROM devices WHERE kind = 'pos' AND id = ?", (lane,)) is None:
        raise NotFound(f"There is no lane {lane} at this store: the checkout page works for "
                       f"{DEFAULT_LANE} and the enrolled POS lanes.",
                       detail={"field": "lane", "reason": "lane_unknown", "lane": lane})
    return lane


def _user() -> StaffUser:
    user = current_user()
    assert user is not None  # the views run behind require_staff
    return user


def _bound_lane() -> str | None:
    """The lane this cashier's sign-in belongs to (None: no page opened yet). HTTP Basic
    has no session to remember a lane in: it is the page's own lane."""
    if g.get("staff_via") != "session":
        return DEFAULT_LANE
    lane = session.get("lane")
    return lane if isinstance(lane, str) else None


def _not_your_lane(lane: str, bound: str) -> Forbidden:
    return Forbidden(f"You are signed in at {device_name('pos', bound)} and can only work "
                     f"on that lane, not on {lane}. To work at another lane, sign out and "
                     "sign in there, or ask a manager.",
                     detail={"reason": "other_lane", "lane": lane, "signed_in_at": bound})


def _open_lane() -> str:
    """The lane the page is opened for; a cashier's first one becomes theirs."""
    lane, user = _lane(), _user()
    bound = _bound_lane()
    if user.role != "manager" and bound is not None and bound != lane:
        raise _not_your_lane(lane, bound)
    if g.get("staff_via") == "session":
        session["lane"] = lane  # a manager switches lanes by opening another
    return lane


def _acting_lane() -> str:
    """The lane of an action: for a cashier, only the lane their sign-in belongs to (before
    any page was opened, the page's own lane, which the first action then binds)."""
    lane, user = _lane(), _user()
    bound = _bound_lane()
    if user.role != "manager":
        if lane != (bound or DEFAULT_LANE):
            raise _not_your_lane(lane, bound or DEFAULT_LANE)
        if bound is None:
            session["lane"] = lane
    return lane


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("Send a JSON object.", detail={"reason": "shape"})
    return body


def to_minor(text: Any, currency: str) -> int:
    """What the cashier typed as the basket total ("12,50" or "12.50") in minor units."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("Scan the items or type the basket total first, e.g. 23.50.",
                         detail={"field": "total"})
    return _minor_units(text.strip(), currency, "total", "the basket total like 23.50")


def _minor_units(typed: str, currency: str, field: str, example: str) -> int:
    """An amount typed as "12,50" or "12.50" in minor units of `currency`; a BadRequest on
    `field` that shows `example` when it is not one."""
    if not AMOUNT_RE.match(typed):
        raise BadRequest(f"{typed!r} is not an amount: type {example}.", detail={"field": field})
    places = int(get_currency_precision(currency))
    minor = Decimal(typed.replace(",", ".").rstrip(".")).scaleb(places)
    if minor != minor.to_integral_value():
        raise BadRequest(f"{currency} amounts have {places} decimal places at most.",
                         detail={"field": field})
    return int(minor)


def _amount(text: Any, currency: str) -> int:
    """The price of one item typed on the page, in minor units; above 0, not absurd."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("Type the item's price, e.g. 2.49.", detail={"field": "amount"})
    typed = text.strip()
    if typed.startswith("-"):
        raise BadRequest("A price cannot be below 0: type what one item costs, e.g. 2.49.",
                         detail={"field": "amount"})
    minor = _minor_units(typed, currency, "amount", "the item's price like 2.49")
    places = int(get_currency_precision(currency))
    if minor <= 0:
        raise BadRequest("Type the item's price: it must be more than 0.",
                         detail={"field": "amount"})
    if minor > MAX_LINE_MAJOR * 10**places:
        most = money(MAX_LINE_MAJOR * 10**places, currency, _service().settings.locale)
        raise BadRequest(f"That is more than {most} for one item: check the amount.",
                         detail={"field": "amount"})
    return minor


def _qty(value: Any) -> int:
    """A quantity typed on the page (or sent by it as a number): 1 to 9999."""
    if value is None or value == "":
        return 1
    if isinstance(value, str) and QTY_RE.match(value.strip()):
        value = int(value.strip())
    elif isinstance(value, str) and value.strip().startswith("-"):
        raise BadRequest("The quantity must be at least 1.", detail={"field": "qty"})
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest("Type the quantity as a whole number, e.g. 2.", detail={"field": "qty"})
    if value < 1:
        raise BadRequest("The quantity must be at least 1.", detail={"field": "qty"})
    if value > MAX_QTY:
        raise BadRequest(f"The quantity can be at most {MAX_QTY}.", detail={"field": "qty"})
    return value


def page_line(raw: Any, currency: str, categories: set[str] | None = None) -> Line:
    """One basket line as the page holds it: `{"code", "qty"}` for a product of the store's
    list, or `{"cat", "amount", "qty"}` for an item entered by category and amount. The
    result has the shape of a lane's line (docs/checkout.md §2). `categories`: the store's
    categories when the caller has read them already (a basket of many lines)."""
    if not isinstance(raw, dict):
        raise BadRequest("A basket line is a product code or a category and an amount.",
                         detail={"field": "lines"})
    store = _service().store
    if raw.get("code") is not None:
        code = raw["code"]
        if not isinstance(code, str) or not code.strip():
            raise BadRequest("Scan or type the product code first.", detail={"field": "code"})
        product = find_product(store, code)
        if product is None:
            raise BadRequest("This store's product list has no product with that code: enter "
                             "the item by category and amount.",
                             detail={"field": "code", "reason": "product_unknown"})
        return Line(product.sku, _qty(raw.get("qty")), product.unit_minor,
                    frozenset(product.categories), product.name)
    cat = raw.get("cat")
    if not isinstance(cat, str) or not cat.strip():
        raise BadRequest("Pick the item's category, or scan its product code.",
                         detail={"field": "cat"})
    cat = cat.strip()
    if cat not in (categories if categories is not None else set(known_categories(store))):
        raise BadRequest(f"This store has no category {cat!r}: pick one from the list.",
                         detail={"field": "cat", "reason": "category_unknown"})
    unit = _amount(raw.get("amount"), currency)
    return Line(f"cat:{cat}", _qty(raw.get("qty")), unit, frozenset([cat]), cat)


def _line_json(line: Line) -> dict[str, Any]:
    return {"sku": line.sku, "qty": line.qty, "unit_minor": line.unit_minor,
            "categories": sorted(line.categories), "name": line.name}


def _basket(body: dict[str, Any], currency: str) -> dict[str, Any]:
    """The sale's basket as a lane sends it: the page's lines when it holds any, else the
    typed total as one line (the page then knows the amount, not the items)."""
    lines = body.get("lines") or []
    if not isinstance(lines, list) or len(lines) > MAX_LINES:
        raise BadRequest(f"A sale holds at most {MAX_LINES} lines.", detail={"field": "lines"})
    if lines:
        # The product list's categories once per basket, not once per line typed by category.
        by_category = any(isinstance(raw, dict) and raw.get("code") is None for raw in lines)
        known = set(known_categories(_service().store)) if by_category else None
        out = [_line_json(page_line(raw, currency, known)) for raw in lines]
        total = sum(line["qty"] * line["unit_minor"] for line in out)
    else:
        total = to_minor(body.get("total"), currency)
        out = [{"sku": BASKET_SKU, "qty": 1, "unit_minor": total, "categories": []}]
    return {"currency": currency, "total_minor": total, "lines": out}


def _dispatch(lane: str, method: str, data: dict[str, Any], *, staff: Actor | None = None,
              **extra: Any) -> Response:
    """Send one POS request through the dispatcher; the page gets the reply envelope."""
    envelope = new_envelope(method, data)
    _service().last_seen.note("pos", lane)  # the page is this lane's till: it was in use now
    reply = json.loads(_service().dispatcher.handle_request(
        Caller("pos", lane, staff), method, envelope.to_json()).body)
    error = reply.get("error") or {}
    if error.get("detail", {}).get("reason") == "manager_required":
        # A question of role, answered like the page's other refusals of who may do what.
        raise Forbidden(error["message"], detail=error["detail"])
    return jsonify({"action": method, **extra, "reply": reply})


def sale_action(view: F) -> F:
    """A JSON action of the page: cashier or higher; 401 rather than a redirect when signed out.

    Exempt from the blanket CSRF check so that a signed-out caller learns it is signed out;
    `require_staff` still checks the token of every session-authenticated POST.
    """
    guarded = require_staff("cashier")(view)

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            raise Unauthorized("Your session has ended: sign in again.")
        return guarded(*args, **kwargs)

    return cast(F, csrf.exempt(wrapper))


@bp.get("")
@require_staff("cashier")
def page() -> Any:
    settings = _service().settings
    return render_template(
        "checkout.html", user=current_user(), store=settings, lane=_open_lane(),
        currency=settings.currency, precision=int(get_currency_precision(settings.currency)),
        symbol=get_currency_symbol(settings.currency, locale=settings.locale),
        locale_tag=settings.locale.replace("_", "-"),
        categories=known_categories(_service().store))


@bp.get("/scans")
def scans() -> Response:
    """The scans of the lane's scanners, live (server-sent events, `event: scan`, data: the
    `cmd/scan` data of docs/protocol.md): the page enters each as if typed into its scan
    field. Only for a page its user may work on (a cashier: the lane of their sign-in).

    A stream left open is not a cashier at work: it does not keep an idle session alive
    (the session's last-seen moment is put back as it was)."""
    seen = session.get("seen")
    user = current_user()
    if user is None:
        raise Unauthorized("Your session has ended: sign in again.")
    if g.get("staff_via") == "session" and seen is not None:
        session["seen"] = seen
    if not user.may("cashier"):
        raise Forbidden("This needs a cashier account.")
    lane = _acting_lane()
    svc = _service()
    listener = svc.live_scans.listen(lane)
    if listener is None:
        raise Unavailable("Too many pages are listening for scans; enter codes by hand or "
                          "close another checkout page.", detail={"reason": "busy"})

    return scan_stream(listener.next, lambda: svc.live_scans.leave(listener))


@bp.post("/scan")
@sale_action
def scan() -> Response:
    """A scanned code: a product of the store's list becomes a line; a shopper's code
    (member QR, card, phone) identifies them; anything else is a coupon for the basket.
    Shopper codes are read by the lanes' own rules (edge.codes)."""
    lane, body = _acting_lane(), _body()
    code = body.get("code")
    if not isinstance(code, str) or not code.strip():
        raise BadRequest("Scan or type a code first.", detail={"field": "code"})
    code = code.strip()
    settings = _service().settings
    if find_product(_service().store, code) is not None:
        line = page_line({"code": code, "qty": 1}, settings.currency)
        return jsonify({"action": "item", "input": {"code": line.sku},
                        "line": _line_json(line)})
    scanned = classify_code(code, settings.country)
    if scanned.names_shopper:
        if body.get("customer_on_sale") and not body.get("replace"):
            # Another shopper's code while one is on the sale: the cashier decides.
            return jsonify({"action": "confirm_replace", "kind": scanned.kind,
                            "what": SHOPPER_WORDS[scanned.kind]})
        data = {"txn": body.get("txn"), **_identify_data(scanned, code)}
        return _dispatch(lane, "identify", data, kind=scanned.kind)
    if scanned.kind == "unreadable" and scanned.hint == "phone":
        raise BadRequest(f"That is not a valid phone number for {settings.country}; type it "
                         "with its +country code.", detail={"field": "code", "reason": "phone"})
    basket = _basket(body, settings.currency)
    return _dispatch(lane, "coupon.apply", {"txn": body.get("txn"), "code": code,
                                            "basket": basket},
                     total_minor=basket["total_minor"])


def _identify_data(scanned: Scanned, code: str) -> dict[str, str]:
    """`identify`'s data as a lane sends it: a phone number as `phone`, the rest as `code`."""
    return {"phone": code} if scanned.kind == "phone" else {"code": code}


@bp.post("/item")
@sale_action
def item() -> Response:
    """Check one basket line before the page holds it: a product code and quantity, or a
    category, an amount and a quantity. The answer is the line as a lane would send it."""
    _acting_lane()
    body = _body()
    line = page_line(body, _service().settings.currency)
    held = {"code": line.sku} if body.get("code") is not None else \
        {"cat": str(body.get("cat", "")).strip(), "amount": str(body.get("amount")).strip()}
    return jsonify({"action": "item", "input": {**held, "qty": line.qty},
                    "line": _line_json(line)})


@bp.post("/redeem")
@sale_action
def redeem() -> Response:
    """Complete the sale: its coupons become redemptions."""
    lane, body = _acting_lane(), _body()
    currency = _service().settings.currency
    basket = _basket(body, currency)
    total = basket["total_minor"]
    discount = body.get("discount_minor", 0)
    if not isinstance(discount, int) or isinstance(discount, bool) or discount < 0:
        raise BadRequest('"discount_minor" must be a whole number of minor units, 0 or more.',
                         detail={"field": "discount_minor"})
    return _dispatch(lane, "txn.complete", {
        "txn": body.get("txn"), "basket": basket, "tenders": [],
        "total_minor": max(total - discount, 0), "currency": currency}, total_minor=total)


@bp.post("/remove")
@sale_action
def remove() -> Response:
    """Take an applied coupon off the open sale."""
    lane, body = _acting_lane(), _body()
    return _dispatch(lane, "coupon.remove",
                     {"txn": body.get("txn"), "reservation": body.get("reservation")})


@bp.post("/void")
@sale_action
def void() -> Response:
    """Cancel a sale: release its coupons, or give back those it redeemed (a completed sale:
    a manager, or a cashier with a manager's `approval` from /approve)."""
    lane, body, user = _acting_lane(), _body(), _user()
    approved_by = None
    if body.get("approval") is not None:
        approved_by = consume(_service().store, body["approval"], for_user=user.username,
                              action=VOID, lane=lane, target=str(body.get("txn")))
    actor = Actor(user.username, "staff", approved_by, manager=user.role == "manager")
    return _dispatch(lane, "txn.void", {"txn": body.get("txn")}, staff=actor)


@bp.post("/approve")
@sale_action
def approve() -> Response:
    """A manager approves voiding one completed sale on this cashier's screen: their user
    name and password, checked as a sign-in is. The answer's `approval` is good for one
    void of that sale on this lane by this cashier, for a short while."""
    lane, body, user = _acting_lane(), _body(), _user()
    txn = body.get("txn")
    if not isinstance(txn, str) or not TXN_RE.match(txn):
        raise BadRequest('"txn" must be the sale id: 1-64 letters, digits or ._:/-',
                         detail={"field": "txn"})
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username.strip():
        raise BadRequest("The manager types their user name and password.",
                         detail={"field": "username"})
    approval = grant(_service().store, username, password, client_address(),
                     for_user=user.username, action=VOID, lane=lane, target=txn)
    return jsonify({"approval": approval.id, "manager": approval.manager,
                    "expires_in_s": APPROVAL_SECONDS})
