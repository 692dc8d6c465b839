"""The basket a lane sends, checked at the boundary (docs/protocol.md, docs/checkout.md).

Money is integer minor units throughout; a line says its SKU, quantity, unit price and the
categories a coupon may be limited to. The edge prices coupons on it (edge/basket.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from store_contract.errors import BadRequest

SKU_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,64}\Z")


CURRENCY_RE = re.compile(r"^[A-Z]{3}\Z")


MAX_LINES = 500


MAX_QTY = 9999


MAX_NAME = 80


MAX_UNIT_MINOR = 10**9


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    qty: int
    unit_minor: int
    categories: frozenset[str]
    name: str = ""  # what the receipt prints; the POS's own text, cleaned when printed

    @property
    def total_minor(self) -> int:
        return self.qty * self.unit_minor


@dataclass(frozen=True, slots=True)
class Basket:
    currency: str
    lines: tuple[Line, ...]

    @property
    def total_minor(self) -> int:
        return sum(line.total_minor for line in self.lines)

    def to_dict(self) -> dict[str, Any]:
        return {"currency": self.currency, "total_minor": self.total_minor,
                "lines": [{"sku": ln.sku, "qty": ln.qty, "unit_minor": ln.unit_minor,
                           "categories": sorted(ln.categories),
                           **({"name": ln.name} if ln.name else {})} for ln in self.lines]}


@dataclass(frozen=True, slots=True)
class Discount:
    """What a coupon takes off: a percentage or an amount (in one currency)."""

    kind: str  # "percent" | "amount"
    percent: Decimal = Decimal(0)
    amount_minor: int = 0
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """Which lines a coupon applies to; empty sets mean every line."""

    discount: Discount
    skus: frozenset[str] = frozenset()
    cats: frozenset[str] = frozenset()

    def eligible(self, line: Line) -> bool:
        if not self.skus and not self.cats:
            return True
        return line.sku in self.skus or not self.cats.isdisjoint(line.categories)


def _int(value: Any, field: str, low: int, high: int) -> int:
    # bool is an int in Python; a JSON true is not a quantity.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequest(f'"{field}" must be a whole number from {low} to {high} '
                         "(money in minor units, e.g. 249 for 2.49).", detail={"field": field})
    return value


def parse_basket(obj: Any, currency: str) -> Basket:
    """Check a basket from a lane; `currency` is the store's. Raises BadRequest."""
    if not isinstance(obj, dict):
        raise BadRequest('"basket" must be an object with currency, lines and total_minor.',
                         detail={"field": "basket"})
    if obj.get("currency") != currency:
        raise BadRequest(f"This store sells in {currency}; the basket says "
                         f"{obj.get('currency')!r}.", detail={"field": "basket.currency"})
    lines_in = obj.get("lines")
    if not isinstance(lines_in, list) or len(lines_in) > MAX_LINES:
        raise BadRequest(f'"basket.lines" must be a list of at most {MAX_LINES} lines.',
                         detail={"field": "basket.lines"})
    lines = []
    for i, raw in enumerate(lines_in):
        where = f"basket.lines[{i}]"
        if not isinstance(raw, dict):
            raise BadRequest(f"{where} must be an object.", detail={"field": where})
        sku = raw.get("sku")
        if not isinstance(sku, str) or not SKU_RE.match(sku):
            raise BadRequest(f"{where}.sku must be 1-64 letters, digits or ._:/-",
                             detail={"field": f"{where}.sku"})
        cats = raw.get("categories", [])
        if not isinstance(cats, list) or len(cats) > 20 or not all(
                isinstance(c, str) and SKU_RE.match(c) for c in cats):
            raise BadRequest(f"{where}.categories must be a list of category ids.",
                             detail={"field": f"{where}.categories"})
        name = raw.get("name", "")
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise BadRequest(f"{where}.name must be text of at most {MAX_NAME} characters.",
                             detail={"field": f"{where}.name"})
        lines.append(Line(sku, _int(raw.get("qty"), f"{where}.qty", 1, MAX_QTY),
                          _int(raw.get("unit_minor"), f"{where}.unit_minor", 0, MAX_UNIT_MINOR),
                          frozenset(cats), name))
    basket = Basket(currency, tuple(lines))
    total = obj.get("total_minor")
    if total is not None and total != basket.total_minor:
        raise BadRequest(f"The basket total {total} does not match its lines "
                         f"({basket.total_minor}); send the total before coupons.",
                         detail={"field": "basket.total_minor", "lines_total": basket.total_minor})
    return basket


def parse_discount(obj: Any) -> Discount:
    """The `disc` claim of a coupon or campaign; raises ValueError if it is not one."""
    if not isinstance(obj, dict):
        raise ValueError("disc must be an object")
    kind = obj.get("kind")
    if kind == "percent":
        value = obj.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("disc.value must be a number")
        try:
            pct = Decimal(str(value))
        except ArithmeticError:
            raise ValueError("disc.value must be a number") from None
        if not pct.is_finite() or not 0 < pct <= 100 or pct != pct.quantize(
                Decimal("0.01"), rounding=ROUND_FLOOR):
            raise ValueError("disc.value must be above 0 and at most 100, in hundredths")
        return Discount("percent", percent=pct)
    if kind == "amount":
        value_minor = obj.get("value_minor")
        currency = obj.get("currency")
        if (not isinstance(value_minor, int) or isinstance(value_minor, bool)
                or not 0 < value_minor <= MAX_UNIT_MINOR):
            raise ValueError("disc.value_minor must be a positive whole number of minor units")
        if not isinstance(currency, str) or not CURRENCY_RE.match(currency):
            raise ValueError("disc.currency must be an ISO 4217 code")
        return Discount("amount", amount_minor=value_minor, currency=currency)
    raise ValueError('disc.kind must be "percent" or "amount"')


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    unit_minor: int
    categories: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"sku": self.sku, "name": self.name, "unit_minor": self.unit_minor,
                "categories": list(self.categories)}
