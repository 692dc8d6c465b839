"""The staff checkout page: a browser lane for tills without integration.

The page is just another lane. Every action it offers becomes a POS request envelope that
goes through the one dispatcher as `Caller("pos", lane)`, exactly like a lane's MQTT
`req/{method}`, so coupons are checked, held, redeemed and refused by the same code with
the same sentences. The views only decide which method a scan is and build its data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from functools import wraps
from typing import Any, TypeVar, cast

import jwt
from babel.numbers import get_currency_precision, get_currency_symbol
from flask import Blueprint, Response, current_app, jsonify, render_template, request

from edge.dispatch import Caller
from edge.errors import BadRequest, Unauthorized
from edge.protocol import ID_RE, new_envelope
from edge.service import EdgeService
from edge.staff.auth import csrf, current_user, require_staff
from edge.tokens import MEMBER_TYP

F = TypeVar("F", bound=Callable[..., Any])
bp = Blueprint("checkout", __name__, url_prefix="/staff/checkout")

DEFAULT_LANE = "staff-web"
BASKET_SKU = "BASKET"
CARD_RE = re.compile(r"^[0-9]+\Z")
# What a cashier types as the basket total: "23.50" or "23,50"; no thousands separators.
AMOUNT_RE = re.compile(r"^[0-9]{1,7}([.,][0-9]*)?\Z")


def _service() -> EdgeService:
    svc: EdgeService = current_app.extensions["edge"]
    return svc


def _lane() -> str:
    lane = request.args.get("lane", DEFAULT_LANE)
    if not ID_RE.match(lane):
        raise BadRequest("A lane id is 1-32 lower-case letters, digits or '-', e.g. lane-4.",
                         detail={"field": "lane"})
    return lane


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("Send a JSON object.", detail={"reason": "shape"})
    return body


def to_minor(text: Any, currency: str) -> int:
    """What the cashier typed as the basket total ("12,50" or "12.50") in minor units."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("Type the basket total first, e.g. 23.50.", detail={"field": "total"})
    typed = text.strip()
    places = int(get_currency_precision(currency))
    if not AMOUNT_RE.match(typed):
        raise BadRequest(f"{typed!r} is not an amount: type the basket total like 23.50.",
                         detail={"field": "total"})
    minor = Decimal(typed.replace(",", ".").rstrip(".")).scaleb(places)
    if minor != minor.to_integral_value():
        raise BadRequest(f"{currency} amounts have {places} decimal places at most.",
                         detail={"field": "total"})
    return int(minor)


def _basket(total_minor: int, currency: str) -> dict[str, Any]:
    """The whole sale as one line: this page knows the amount, not the items."""
    return {"currency": currency, "total_minor": total_minor,
            "lines": [{"sku": BASKET_SKU, "qty": 1, "unit_minor": total_minor,
                       "categories": []}]}


def identifies_shopper(code: str) -> bool:
    """Does this scan name the shopper (member code or loyalty card) rather than a coupon?

    Only routing: the unverified header picks the method; the domain verifies the code.
    """
    if CARD_RE.match(code):
        return True
    try:
        return jwt.get_unverified_header(code).get("typ") == MEMBER_TYP
    except jwt.PyJWTError:
        return False


def _dispatch(lane: str, method: str, data: dict[str, Any], **extra: Any) -> Response:
    """Send one POS request through the dispatcher; the page gets the reply envelope."""
    envelope = new_envelope(method, data)
    reply = _service().dispatcher.handle_request(Caller("pos", lane), method,
                                                 envelope.to_json())
    return jsonify({"action": method, **extra, "reply": json.loads(reply.body)})


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
        "checkout.html", user=current_user(), store=settings, lane=_lane(),
        currency=settings.currency, precision=int(get_currency_precision(settings.currency)),
        symbol=get_currency_symbol(settings.currency, locale=settings.locale),
        locale_tag=settings.locale.replace("_", "-"))


@bp.post("/scan")
@sale_action
def scan() -> Response:
    """A scanned code: identify the shopper, or apply a coupon to the basket total."""
    lane, body = _lane(), _body()
    code = body.get("code")
    if not isinstance(code, str) or not code.strip():
        raise BadRequest("Scan or type a code first.", detail={"field": "code"})
    code = code.strip()
    if identifies_shopper(code):
        return _dispatch(lane, "identify", {"txn": body.get("txn"), "code": code})
    currency = _service().settings.currency
    total = to_minor(body.get("total"), currency)
    return _dispatch(lane, "coupon.apply",
                     {"txn": body.get("txn"), "code": code, "basket": _basket(total, currency)},
                     total_minor=total)


@bp.post("/redeem")
@sale_action
def redeem() -> Response:
    """Complete the sale: its coupons become redemptions."""
    lane, body = _lane(), _body()
    currency = _service().settings.currency
    total = to_minor(body.get("total"), currency)
    discount = body.get("discount_minor", 0)
    if not isinstance(discount, int) or isinstance(discount, bool) or discount < 0:
        raise BadRequest('"discount_minor" must be a whole number of minor units, 0 or more.',
                         detail={"field": "discount_minor"})
    return _dispatch(lane, "txn.complete", {
        "txn": body.get("txn"), "basket": _basket(total, currency), "tenders": [],
        "total_minor": max(total - discount, 0), "currency": currency}, total_minor=total)


@bp.post("/remove")
@sale_action
def remove() -> Response:
    """Take an applied coupon off the open sale."""
    lane, body = _lane(), _body()
    return _dispatch(lane, "coupon.remove",
                     {"txn": body.get("txn"), "reservation": body.get("reservation")})


@bp.post("/void")
@sale_action
def void() -> Response:
    """Cancel a sale: release its coupons, or give back those it redeemed."""
    lane, body = _lane(), _body()
    return _dispatch(lane, "txn.void", {"txn": body.get("txn")})
