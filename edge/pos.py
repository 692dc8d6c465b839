"""The POS methods (docs/checkout.md) as thin adapters: check the request, call the checkout.

The same handlers serve MQTT (`req/{method}`), HTTP (`POST /api/v1/pos/{device}/{method}`)
and the staff checkout page, because all three go through the one dispatcher.
"""

from __future__ import annotations

from typing import Any

from edge.dispatch import Caller, Dispatcher
from edge.transactions import TXN_RE, Checkout, Tender
from store_contract.basket import parse_basket
from store_contract.errors import BadRequest
from store_contract.protocol import Envelope

POS = ("pos",)
MAX_CODE_CHARS = 4096
MAX_TENDERS = 20


def _text(data: dict[str, Any], field: str, max_len: int = MAX_CODE_CHARS) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise BadRequest(f'"{field}" must be non-empty text of at most {max_len} characters.',
                         detail={"field": field})
    return value.strip()


def _txn(data: dict[str, Any]) -> str:
    txn = data.get("txn")
    if not isinstance(txn, str) or not TXN_RE.match(txn):
        raise BadRequest('"txn" must be the sale id: 1-64 letters, digits or ._:/-',
                         detail={"field": "txn"})
    return txn


def _minor(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10**10:
        raise BadRequest(f'"{field}" must be a whole number of minor units, 0 or more.',
                         detail={"field": field})
    return value


def _tenders(value: Any) -> list[Tender]:
    if not isinstance(value, list) or len(value) > MAX_TENDERS:
        raise BadRequest(f'"tenders" must be a list of at most {MAX_TENDERS} payments.',
                         detail={"field": "tenders"})
    out = []
    for i, t in enumerate(value):
        kind = t.get("kind") if isinstance(t, dict) else None
        if not isinstance(kind, str) or not 0 < len(kind) <= 32:
            raise BadRequest(f'"tenders[{i}].kind" must say how it was paid (card, cash, ...).',
                             detail={"field": f"tenders[{i}].kind"})
        out.append(Tender(kind, _minor(t.get("amount_minor"), f"tenders[{i}].amount_minor")))
    return out


def register_pos_methods(dispatcher: Dispatcher, checkout: Checkout) -> None:
    """Add identify, coupon.apply, coupon.remove, txn.complete and txn.void for lanes."""
    currency = checkout.settings.currency

    @dispatcher.method("identify", kinds=POS)
    def identify(caller: Caller, env: Envelope) -> dict[str, Any]:
        data = env.data
        txn = _txn(data)
        if ("code" in data) == ("phone" in data):
            raise BadRequest('Send either "code" (member code or card) or "phone".',
                             detail={"field": "code"})
        if "phone" in data:
            return checkout.identify(caller.device, txn, None, _text(data, "phone", 32))
        return checkout.identify(caller.device, txn, _text(data, "code"), None)

    @dispatcher.method("coupon.apply", kinds=POS)
    def apply(caller: Caller, env: Envelope) -> dict[str, Any]:
        data = env.data
        return checkout.apply(caller.device, _txn(data), _text(data, "code"),
                              parse_basket(data.get("basket"), currency))

    @dispatcher.method("coupon.remove", kinds=POS)
    def remove(caller: Caller, env: Envelope) -> dict[str, Any]:
        data = env.data
        return checkout.remove(caller.device, _txn(data), _text(data, "reservation", 64))

    @dispatcher.method("txn.complete", kinds=POS)
    def complete(caller: Caller, env: Envelope) -> dict[str, Any]:
        data = env.data
        basket = parse_basket(data.get("basket"), currency)
        if data.get("currency", currency) != currency:
            raise BadRequest(f"This store sells in {currency}.", detail={"field": "currency"})
        total = _minor(data.get("total_minor"), "total_minor")
        return checkout.complete(caller.device, _txn(data), basket,
                                 _tenders(data.get("tenders", [])), total)

    @dispatcher.method("txn.void", kinds=POS)
    def void(caller: Caller, env: Envelope) -> dict[str, Any]:
        # A lane's own POS enforces its roles; the staff page says who is signed in.
        return checkout.void(caller.device, _txn(env.data), caller.staff)
