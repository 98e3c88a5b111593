"""The canonical register catalog and exact unit conversion."""

from __future__ import annotations

from decimal import Decimal

import pytest

from schemas.registers import REGISTERS, UnitConversionError, canonical_unit, convert


def test_names_the_reading_docstring_promises() -> None:
    for name in ("volume", "volume_settlement", "energy_import", "heat_energy", "flow_rate",
                 "remaining_money"):
        assert name in REGISTERS
    assert canonical_unit("heat_energy") == "GJ"


@pytest.mark.parametrize(("value", "source", "target", "expected"), [
    ("12.30", "L", "m3", "0.0123"),
    ("1250.00", "kWh", "GJ", "4.5"),
    ("2", "MWh*100", "GJ", "720"),
    ("1500", "MJ", "GJ", "1.5"),
    ("3.2", "MW", "kW", "3200"),
    ("450", "L/h", "m3/h", "0.45"),
    ("0.35", "MPa", "kPa", "350"),
    ("2.5", "bar", "kPa", "250"),
    ("1013.25", "mbar", "kPa", "101.325"),
    ("101325", "Pa", "kPa", "101.325"),
])
def test_exact_conversions(value: str, source: str, target: str, expected: str) -> None:
    assert convert(Decimal(value), source, target) == Decimal(expected)


def test_inexact_conversion_is_rounded_not_float() -> None:
    assert convert(Decimal(1), "GJ", "kWh") == Decimal("277.777777778")


def test_different_dimensions_refuse() -> None:
    with pytest.raises(UnitConversionError):
        convert(Decimal(1), "m3", "kWh")
    with pytest.raises(UnitConversionError):
        convert(Decimal(1), "furlong", "m3")
    with pytest.raises(UnitConversionError):
        convert(Decimal(1), "kPa", "degC")
