"""The canonical register catalog: register names, their canonical units, unit conversion.

Every package that talks about a reading's ``register`` uses these names (decoders' report
templates produce them; VEE rules, billing and aggregates consume them), so they are
declared once here. A register's canonical unit is the unit its values are stored in;
``convert`` turns a protocol's unit (``L``, ``MWh*100``, ``kJ``) into it exactly, with
``Decimal`` arithmetic.

Canonical units: volumes in ``m3``; electrical energy in ``kWh``; heat energy in ``GJ``
(every unit a heat meter uses — J, Wh, kWh, MWh, kJ, MJ, GJ — converts to GJ exactly);
power in ``kW``; flow in ``m3/h``; temperature in ``degC``; pressure in ``kPa``; money in ``CNY``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Literal

__all__ = [
    "REGISTERS",
    "UNITS",
    "Register",
    "UnitConversionError",
    "canonical_unit",
    "convert",
]

RegisterKind = Literal["cumulative", "instantaneous", "state"]


@dataclass(frozen=True, slots=True)
class Register:
    name: str
    unit: str
    kind: RegisterKind
    description: str


_REGISTERS = [
    Register("volume", "m3", "cumulative", "total volume through the meter (gas, water)"),
    Register("volume_settlement", "m3", "cumulative",
             "total volume at the last settlement (billing) day"),
    Register("volume_reverse", "m3", "cumulative", "total reverse volume"),
    Register("energy_import", "kWh", "cumulative", "forward (imported) active energy, total"),
    Register("energy_export", "kWh", "cumulative", "reverse (exported) active energy, total"),
    Register("energy_import_settlement", "kWh", "cumulative",
             "forward active energy at the last settlement day"),
    Register("energy_reactive", "kvarh", "cumulative", "combined reactive energy 1, total"),
    Register("heat_energy", "GJ", "cumulative", "total heat energy delivered"),
    Register("heat_energy_settlement", "GJ", "cumulative",
             "heat energy at the last settlement day"),
    Register("cooling_energy", "GJ", "cumulative", "total cooling energy"),
    Register("heat_power", "kW", "instantaneous", "thermal power"),
    Register("flow_rate", "m3/h", "instantaneous", "volume flow"),
    Register("supply_temperature", "degC", "instantaneous", "flow (supply) temperature"),
    Register("return_temperature", "degC", "instantaneous", "return temperature"),
    Register("working_hours", "h", "cumulative", "hours in operation"),
    Register("volume_standard", "m3", "cumulative",
             "total volume converted to base conditions (gas flow computers, volume "
             "converters): the billing volume of industrial gas"),
    Register("temperature", "degC", "instantaneous",
             "temperature of the medium at the meter (gas flow computers, volume converters)"),
    Register("pressure", "kPa", "instantaneous",
             "pressure of the medium at the meter, as the device states it (gauge or "
             "absolute: see its register map)"),
    Register("remaining_money", "CNY", "state", "prepaid balance kept by the meter"),
    Register("remaining_energy", "kWh", "state", "prepaid energy kept by the meter"),
    Register("purchase_total", "CNY", "cumulative", "total purchased amount kept by the meter"),
    Register("voltage_a", "V", "instantaneous", "phase A voltage"),
    Register("voltage_b", "V", "instantaneous", "phase B voltage"),
    Register("voltage_c", "V", "instantaneous", "phase C voltage"),
    Register("current_a", "A", "instantaneous", "phase A current"),
    Register("current_b", "A", "instantaneous", "phase B current"),
    Register("current_c", "A", "instantaneous", "phase C current"),
    Register("active_power", "kW", "instantaneous", "total active power"),
    Register("reactive_power", "kvar", "instantaneous", "total reactive power"),
    Register("apparent_power", "kVA", "instantaneous", "total apparent power"),
    Register("power_factor", "1", "instantaneous", "total power factor"),
    Register("frequency", "Hz", "instantaneous", "grid frequency"),
]

#: Canonical registers by name.
REGISTERS: dict[str, Register] = {r.name: r for r in _REGISTERS}

#: unit -> (dimension, factor to the dimension's base unit). Base units: m3, J, kW, m3/h, kPa.
UNITS: dict[str, tuple[str, Decimal]] = {
    "m3": ("volume", Decimal(1)),
    "L": ("volume", Decimal("0.001")),
    "J": ("energy", Decimal(1)),
    "kJ": ("energy", Decimal("1E3")),
    "MJ": ("energy", Decimal("1E6")),
    "GJ": ("energy", Decimal("1E9")),
    "GJ*100": ("energy", Decimal("1E11")),
    "Wh": ("energy", Decimal(3600)),
    "kWh": ("energy", Decimal("3.6E6")),
    "MWh": ("energy", Decimal("3.6E9")),
    "MWh*100": ("energy", Decimal("3.6E11")),
    "kvarh": ("reactive_energy", Decimal(1)),
    "varh": ("reactive_energy", Decimal("0.001")),
    "W": ("power", Decimal("0.001")),
    "kW": ("power", Decimal(1)),
    "MW": ("power", Decimal(1000)),
    "kvar": ("reactive_power", Decimal(1)),
    "kVA": ("apparent_power", Decimal(1)),
    "m3/h": ("flow", Decimal(1)),
    "L/h": ("flow", Decimal("0.001")),
    "degC": ("temperature", Decimal(1)),
    "Pa": ("pressure", Decimal("0.001")),
    "kPa": ("pressure", Decimal(1)),
    "MPa": ("pressure", Decimal(1000)),
    "bar": ("pressure", Decimal(100)),
    "mbar": ("pressure", Decimal("0.1")),
    "h": ("time", Decimal(1)),
    "CNY": ("money", Decimal(1)),
    "V": ("voltage", Decimal(1)),
    "A": ("current", Decimal(1)),
    "Hz": ("frequency", Decimal(1)),
    "1": ("ratio", Decimal(1)),
}

#: Places kept when a conversion is not exact (GJ -> kWh); every other one is exact.
INEXACT_PLACES = 9


class UnitConversionError(ValueError):
    """Two units of different dimensions, or a unit nobody declared."""


def canonical_unit(register: str) -> str:
    return REGISTERS[register].unit


def convert(value: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """``value`` in ``from_unit`` expressed in ``to_unit``, exactly where possible."""
    if from_unit == to_unit:
        return value
    try:
        dim_from, factor_from = UNITS[from_unit]
        dim_to, factor_to = UNITS[to_unit]
    except KeyError as exc:
        raise UnitConversionError(f"unknown unit {exc.args[0]!r}; known: {sorted(UNITS)}") \
            from None
    if dim_from != dim_to:
        raise UnitConversionError(f"cannot convert {from_unit} ({dim_from}) to {to_unit} "
                                  f"({dim_to})")
    with localcontext() as ctx:
        ctx.prec = 50
        result = value * factor_from / factor_to
        if result != result.quantize(Decimal(1).scaleb(-INEXACT_PLACES)) and \
                len(result.as_tuple().digits) > 40:
            result = result.quantize(Decimal(1).scaleb(-INEXACT_PLACES))
    # Keep at least the input's own places (12.30 L -> 0.01230 m3), drop scientific form.
    exponent = result.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        result = result.quantize(Decimal(1))
    return result
