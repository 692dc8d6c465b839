"""The discount arithmetic on a basket (the basket record: store_contract/basket.py).

Money is integer minor units throughout. A coupon's discount is worked out on the lines it
is eligible for, after what earlier coupons in the same sale already took off those lines,
so stacked coupons can never together take more than the basket is worth.

Rounding: a percentage discount is rounded half up to the minor unit (10 % of €0.25 is
€0.03), then capped at what the eligible lines still hold. The discount is spread over the
eligible lines in proportion to their value (largest remainder), which is what a receipt
and a return need.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from store_contract.basket import Basket, Rule


def _allocate(amount: int, weights: list[int]) -> list[int]:
    """Split `amount` over `weights` in proportion, in whole units (largest remainder)."""
    total = sum(weights)
    if total == 0 or amount == 0:
        return [0] * len(weights)
    shares = [amount * w // total for w in weights]
    rest = amount - sum(shares)
    by_remainder = sorted(range(len(weights)), key=lambda i: -(amount * weights[i] % total))
    for i in by_remainder[:rest]:
        shares[i] += 1
    return shares


def percent_of(base_minor: int, percent: Decimal) -> int:
    """`percent` % of `base_minor`, rounded half up to a whole minor unit."""
    exact = Decimal(base_minor) * percent / Decimal(100)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass
class Pricing:
    """What is left of each line after the coupons priced so far in one sale."""

    basket: Basket
    remaining: list[int]

    @classmethod
    def start(cls, basket: Basket) -> Pricing:
        return cls(basket, [line.total_minor for line in basket.lines])

    def eligible_minor(self, rule: Rule) -> int:
        return sum(r for r, line in zip(self.remaining, self.basket.lines, strict=True)
                   if rule.eligible(line))

    def take(self, rule: Rule) -> int:
        """Price one coupon: its discount in minor units, taken off its eligible lines."""
        idx = [i for i, line in enumerate(self.basket.lines) if rule.eligible(line)]
        base = sum(self.remaining[i] for i in idx)
        disc = rule.discount
        wanted = percent_of(base, disc.percent) if disc.kind == "percent" else disc.amount_minor
        amount = max(0, min(wanted, base))
        for i, share in zip(idx, _allocate(amount, [self.remaining[i] for i in idx]),
                            strict=True):
            self.remaining[i] -= share
        return amount


