"""Money and volume arithmetic: ``Decimal`` everywhere, rounded half-up once per segment.

Binary floats give 13.04 for 5 × 2.61; decimals give 13.05. A priced segment (one tier, one
price component, one tariff version, one time-of-use period) is rounded to the cent once, and
a charge's amount is the sum of its rounded segments — so segments always add up to the charge.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

__all__ = ["CENT", "VOLUME_QUANTUM", "ZERO", "prorate", "round_money", "to_decimal"]

ZERO = Decimal(0)
CENT = Decimal("0.01")
#: Prorated volumes are kept to the litre (register resolution of domestic meters).
VOLUME_QUANTUM = Decimal("0.001")


def round_money(amount: Decimal) -> Decimal:
    """``amount`` rounded half-up to the cent."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def to_decimal(value: object) -> Decimal:
    """A decimal from a string, int, Decimal or float (floats through their shortest repr,
    so a YAML ``2.61`` is exactly 2.61). Raises ``ValueError`` for anything else."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except ArithmeticError:
            raise ValueError(f"not a decimal number: {value!r}") from None
        if not result.is_finite():
            raise ValueError(f"not a finite number: {value!r}")
        return result
    raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")


def prorate(volume: Decimal, weights: list[float] | list[int]) -> list[Decimal]:
    """Split ``volume`` in proportion to ``weights`` (durations), to the litre, exactly.

    Every part but the last is rounded down to :data:`VOLUME_QUANTUM` (finer if ``volume``
    itself is finer); the last part takes the remainder, so the parts always sum to ``volume``.
    """
    total = sum(weights)
    if len(weights) == 1 or total <= 0:
        return [volume] + [ZERO] * (len(weights) - 1)
    exponent = volume.as_tuple().exponent
    quantum = VOLUME_QUANTUM
    if isinstance(exponent, int) and exponent < -3:
        quantum = Decimal(1).scaleb(exponent)
    parts: list[Decimal] = []
    left = volume
    for weight in weights[:-1]:
        part = (volume * Decimal(weight) / Decimal(total)).quantize(quantum, rounding=ROUND_DOWN)
        parts.append(part)
        left -= part
    parts.append(left)
    return parts
