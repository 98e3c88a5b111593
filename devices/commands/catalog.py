"""The catalog of unified commands: names, typed parameters, safety class, read-back.

Strategy: one :class:`CommandSpec` per command, registered in :data:`CATALOG` — the single
source of truth that the API, the CLI, the safety policy and the lifecycle read. A spec says
what a command *means* for any device: its parameter model, its safety class (what it does to
the supply), whether it can be confirmed by reading the device back and how a read-back is
judged. *How* a command is put on the wire is not here: per device type a binding
(:mod:`devices.commands.capabilities`) names the protocol handler of ``decoders/`` that turns
it into frames and interprets the reply, so one command controls different device types.

Replies and read-backs arrive interpreted (``CommandResult.reply``) with these keys, the
contract with the protocol encoders' ``CommandOutcome.data``: ``valve`` or ``valve_state``
(``open``/``closed``/``armed``/``abnormal``), ``relay`` or ``relay_state``
(``closed``/``open``), ``balance`` (decimal string), ``tariff_id`` and ``tariff_version`` or
``prices`` (list of decimal strings), ``report_interval_min`` (int), ``clock`` or
``meter_time`` (ISO 8601; a meter's local time without a zone is read in the utility's zone,
passed to the checks as ``_timezone``), ``observed_at`` (when the reply arrived). A
read-back predicate answers True (confirmed), False (the device disagrees: fail) or None
(the reply does not say: keep waiting or confirm by acknowledgement).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from devices.commands.errors import InvalidParametersError, UnknownCommandError
from devices.commands.params import (
    CommandParams,
    ReadHistoryParams,
    ReadNowParams,
    RelayCloseParams,
    RelayTripParams,
    SetBalanceParams,
    SetPriceParams,
    SetReportIntervalParams,
    SyncTimeParams,
    TopUpParams,
    ValveArmOpenParams,
    ValveCloseParams,
    ValveOpenParams,
)

__all__ = [
    "CATALOG",
    "CommandSpec",
    "ReadbackCheck",
    "SafetyClass",
    "command_spec",
    "validate_params",
]

#: Judges a read-back reply against the parameters of the command it confirms.
ReadbackCheck = Callable[[Mapping[str, Any], Mapping[str, Any]], bool | None]


class SafetyClass(StrEnum):
    """What a command does to the customer's supply and money — the safety policy's input."""

    READ = "read"                      # reads only; no effect on the device's behaviour
    CONFIG = "config"                  # clock, report interval: behaviour, not supply
    MONEY = "money"                    # price table, balance, top-up
    SUPPLY_CUT = "supply_cut"          # valve close, relay trip
    SUPPLY_RESTORE = "supply_restore"  # valve open / arm, relay close


@dataclass(frozen=True)
class CommandSpec:
    """One unified command as every part of the control plane sees it."""

    name: str
    summary: str
    params_model: type[CommandParams]
    safety_class: SafetyClass
    #: The read issued to confirm the effect where the device type allows a read-back.
    readback_what: str | None = None
    readback_check: ReadbackCheck | None = None
    #: How long a command may wait for delivery and confirmation by default.
    default_ttl: timedelta = timedelta(hours=24)
    #: Electricity-only (relay) or valve-only commands: the device must have that actuator.
    actuator: str | None = None
    aliases: tuple[str, ...] = field(default=())

    @property
    def confirms_by_readback(self) -> bool:
        return self.readback_check is not None

    def validate(self, params: Mapping[str, Any] | None) -> CommandParams:
        """Check ``params`` against the typed model; raise :class:`InvalidParametersError`."""
        return validate_params(self, params)

    def is_supply_cut(self) -> bool:
        return self.safety_class is SafetyClass.SUPPLY_CUT

    def is_supply_restore(self) -> bool:
        return self.safety_class is SafetyClass.SUPPLY_RESTORE


def validate_params(spec: CommandSpec, params: Mapping[str, Any] | None) -> CommandParams:
    """The typed parameters of ``spec`` from JSON values, or a precise error per bad field."""
    try:
        return spec.params_model.model_validate(dict(params or {}))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(parameters)"
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            problems.append(f"{loc}: {err['msg']}{shown}")
        fields = ", ".join(sorted(spec.params_model.model_fields)) or "none"
        raise InvalidParametersError(
            f"invalid parameters for '{spec.name}': " + "; ".join(problems),
            where=f"command {spec.name}",
            hint=f"parameters of '{spec.name}': {fields}; see `unimeter command catalog`",
        ) from None


# --------------------------------------------------------------------------- read-back checks


def _valve_is(*states: str) -> ReadbackCheck:
    def check(reply: Mapping[str, Any], _params: Mapping[str, Any]) -> bool | None:
        valve = reply.get("valve", reply.get("valve_state"))
        if valve is None:
            return None
        return str(valve) in states
    return check


def _relay_is(state: str) -> ReadbackCheck:
    def check(reply: Mapping[str, Any], _params: Mapping[str, Any]) -> bool | None:
        relay = reply.get("relay", reply.get("relay_state"))
        return None if relay is None else str(relay) == state
    return check


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _price_matches(reply: Mapping[str, Any], params: Mapping[str, Any]) -> bool | None:
    if "tariff_id" in reply and "tariff_version" in reply:
        return (str(reply["tariff_id"]) == str(params["tariff_id"])
                and int(reply["tariff_version"]) == int(params["tariff_version"]))
    prices = reply.get("prices")
    if prices is None:
        return None
    wanted = [_decimal(t["price"]) for t in params["tiers"]]
    return [_decimal(p) for p in prices] == wanted


def _balance_matches(reply: Mapping[str, Any], params: Mapping[str, Any]) -> bool | None:
    if "balance" not in reply:
        return None
    return _decimal(reply["balance"]) == _decimal(params["balance"])


def _interval_matches(reply: Mapping[str, Any], params: Mapping[str, Any]) -> bool | None:
    if "report_interval_min" not in reply:
        return None
    return int(reply["report_interval_min"]) == int(params["minutes"])


#: How far a read-back clock may be from the intended time and still confirm ``sync_time``.
CLOCK_TOLERANCE = timedelta(seconds=30)


def _clock_matches(reply: Mapping[str, Any], params: Mapping[str, Any]) -> bool | None:
    clock = reply.get("clock", reply.get("meter_time"))
    observed = reply.get("observed_at")
    if clock is None or observed is None:
        return None
    try:
        device = datetime.fromisoformat(str(clock))
        at = datetime.fromisoformat(str(observed))
    except ValueError:
        return False
    if device.tzinfo is None:  # meters keep local time
        device = device.replace(tzinfo=ZoneInfo(str(params.get("_timezone") or "UTC")))
    return abs(device - at) <= CLOCK_TOLERANCE


# --------------------------------------------------------------------------- the catalog


def _specs() -> tuple[CommandSpec, ...]:
    return (
        CommandSpec("read_now", "read current values, status bits or balance now",
                    ReadNowParams, SafetyClass.READ, default_ttl=timedelta(hours=2)),
        CommandSpec("read_history", "read stored hourly/daily/monthly values",
                    ReadHistoryParams, SafetyClass.READ, default_ttl=timedelta(days=2)),
        CommandSpec("valve_close", "close the valve (cause: debt, safety, service, manual)",
                    ValveCloseParams, SafetyClass.SUPPLY_CUT, readback_what="status",
                    readback_check=_valve_is("closed"), actuator="valve"),
        CommandSpec("valve_arm_open", "arm the valve for opening at the meter by the customer",
                    ValveArmOpenParams, SafetyClass.SUPPLY_RESTORE, readback_what="status",
                    readback_check=_valve_is("armed", "open"), actuator="valve"),
        CommandSpec("valve_open", "open the valve remotely (arms instead where possible)",
                    ValveOpenParams, SafetyClass.SUPPLY_RESTORE, readback_what="status",
                    readback_check=_valve_is("open"), actuator="valve"),
        CommandSpec("relay_trip", "open the breaker of an electricity meter",
                    RelayTripParams, SafetyClass.SUPPLY_CUT, readback_what="status",
                    readback_check=_relay_is("open"), actuator="relay"),
        CommandSpec("relay_close", "close the breaker of an electricity meter",
                    RelayCloseParams, SafetyClass.SUPPLY_RESTORE, readback_what="status",
                    readback_check=_relay_is("closed"), actuator="relay"),
        CommandSpec("set_price", "write the step price table of a prepaid meter",
                    SetPriceParams, SafetyClass.MONEY, readback_what="all",
                    readback_check=_price_matches),
        CommandSpec("top_up", "add credit to a prepaid meter (idempotent by topup_id)",
                    TopUpParams, SafetyClass.MONEY),
        CommandSpec("set_balance", "set the balance of a prepaid meter",
                    SetBalanceParams, SafetyClass.MONEY, readback_what="balance",
                    readback_check=_balance_matches),
        CommandSpec("sync_time", "set the meter clock",
                    SyncTimeParams, SafetyClass.CONFIG, readback_what="status",
                    readback_check=_clock_matches),
        CommandSpec("set_report_interval", "set how often the meter reports on its own",
                    SetReportIntervalParams, SafetyClass.CONFIG, readback_what="all",
                    readback_check=_interval_matches),
    )


CATALOG: Mapping[str, CommandSpec] = {spec.name: spec for spec in _specs()}


def command_spec(name: str) -> CommandSpec:
    """The spec of ``name``; :class:`UnknownCommandError` lists the known commands."""
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownCommandError(
            f"unknown command '{name}'", where="command",
            hint=f"known commands: {', '.join(sorted(CATALOG))}") from None
