"""The command catalog: names, typed parameters, read-back judgement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from devices.commands.catalog import CATALOG, SafetyClass, command_spec
from devices.commands.errors import InvalidParametersError, UnknownCommandError

UNIFIED = {"read_now", "read_history", "valve_close", "valve_arm_open", "valve_open",
           "set_price", "top_up", "set_balance", "sync_time", "set_report_interval",
           "relay_trip", "relay_close"}


def test_catalog_holds_the_unified_commands() -> None:
    assert set(CATALOG) == UNIFIED
    assert command_spec("valve_close").safety_class is SafetyClass.SUPPLY_CUT
    assert command_spec("relay_close").safety_class is SafetyClass.SUPPLY_RESTORE
    assert command_spec("read_now").safety_class is SafetyClass.READ


def test_unknown_command_names_the_known_ones() -> None:
    with pytest.raises(UnknownCommandError) as err:
        command_spec("valve_explode")
    assert "valve_close" in str(err.value.hint)


def test_money_is_decimal_and_canonical_as_string() -> None:
    params = command_spec("top_up").validate({"amount": "100.50", "topup_id": "T-1"})
    assert params.canonical() == {"amount": "100.50", "topup_id": "T-1"}
    assert params.amount == Decimal("100.50")  # type: ignore[attr-defined]


@pytest.mark.parametrize(("command", "params", "fragment"), [
    ("top_up", {"amount": "0", "topup_id": "x"}, "amount"),
    ("top_up", {"amount": "1.001", "topup_id": "x"}, "decimal places"),
    ("top_up", {"amount": "5"}, "topup_id"),
    ("valve_close", {"cause": "safety"}, "safety_cause"),
    ("valve_close", {"cause": "debt", "safety_cause": "leak"}, "safety_cause"),
    ("valve_close", {"cause": "whim"}, "cause"),
    ("set_report_interval", {"minutes": 0}, "minutes"),
    ("read_now", {"colour": "red"}, "colour"),
    ("read_history", {"start": "2024-01-02T00:00:00+00:00",
                      "end": "2024-01-01T00:00:00+00:00"}, "after start"),
    ("read_history", {"start": "2024-01-01T00:00:00", "end": "2024-01-02T00:00:00"},
     "timezone"),
    ("set_price", {"tariff_id": "T", "tariff_version": 1,
                   "tiers": [{"upper": "350", "price": "2.61"}]}, "open-ended"),
    ("set_price", {"tariff_id": "T", "tariff_version": 1,
                   "tiers": [{"upper": "500", "price": "2.61"}, {"upper": "350", "price": "2.83"},
                             {"price": "4.23"}]}, "increase"),
])
def test_bad_parameters_are_refused_with_the_field(command: str, params: dict[str, object],
                                                    fragment: str) -> None:
    with pytest.raises(InvalidParametersError) as err:
        command_spec(command).validate(params)
    assert fragment in str(err.value)
    assert err.value.hint
    assert command in err.value.hint


def test_history_span_is_bounded() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    spec = command_spec("read_history")
    spec.validate({"start": start.isoformat(), "end": (start + timedelta(days=31)).isoformat()})
    with pytest.raises(InvalidParametersError, match="split"):
        spec.validate({"start": start.isoformat(),
                       "end": (start + timedelta(days=500)).isoformat()})


BEIJING_GAS = {"tariff_id": "BJ-GAS", "tariff_version": 3,
               "tiers": [{"upper": "350", "price": "2.61"}, {"upper": "500", "price": "2.83"},
                         {"price": "4.23"}]}


def test_readback_checks() -> None:
    close = command_spec("valve_close")
    assert close.readback_check is not None
    assert close.readback_check({"valve": "closed"}, {}) is True
    assert close.readback_check({"valve": "open"}, {}) is False
    assert close.readback_check({"volume": "1.0"}, {}) is None

    arm = command_spec("valve_arm_open")
    assert arm.readback_check is not None
    assert arm.readback_check({"valve": "armed"}, {}) is True
    assert arm.readback_check({"valve": "open"}, {}) is True
    assert arm.readback_check({"valve": "closed"}, {}) is False

    price = command_spec("set_price")
    params = price.validate(BEIJING_GAS).canonical()
    assert price.readback_check is not None
    assert price.readback_check({"prices": ["2.61", "2.83", "4.2300"]}, params) is True
    assert price.readback_check({"prices": ["2.61", "2.83", "4.24"]}, params) is False
    assert price.readback_check({"tariff_id": "BJ-GAS", "tariff_version": 2}, params) is False

    balance = command_spec("set_balance")
    assert balance.readback_check is not None
    assert balance.readback_check({"balance": "77.520"}, {"balance": "77.52"}) is True
    assert balance.readback_check({"balance": "77.51"}, {"balance": "77.52"}) is False

    clock = command_spec("sync_time")
    assert clock.readback_check is not None
    at = datetime(2024, 5, 1, 8, tzinfo=UTC)
    good = {"clock": (at + timedelta(seconds=5)).isoformat(), "observed_at": at.isoformat()}
    late = {"clock": (at - timedelta(minutes=5)).isoformat(), "observed_at": at.isoformat()}
    assert clock.readback_check(good, {}) is True
    assert clock.readback_check(late, {}) is False
