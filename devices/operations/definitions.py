"""The service operations and their steps, as data.

Strategy: an operation kind is a parameter model plus an ordered tuple of :class:`Step`.
A step is either a *ledger* change (an action of :mod:`.ledger_actions`, undone from its
stored undo record) or a *command* to one of the operation's meters, with the parameters
built from the operation's parameters and what earlier steps learned (the ``context``: the
final read of the old meter, its balance, the tariff to write). A step may be conditional
(``when``): a meter without a valve skips the valve steps, a postpaid account skips prices
and balances. A command step may name its compensation — the command that undoes it when a
later step fails (a service close is undone by *arming* the valve, never by opening it).

Balances are *set* where the meter can (``set_balance``), else an opening balance is
*credited* (``top_up``) to the new meter, which starts at zero.

* register — bind account, initial read, price, balance, arm valve;
* transfer — final read, close the old account and bind the new, price, balance, arm valve;
* deregister — final read, close valve, close account;
* install — install (location, network, account), clock, initial read, price, balance,
  arm valve, active;
* replace — final read of the old meter, close its valve, swap in the ledger; on the new
  meter clock, initial read, price, balance (carried over), arm valve; active;
* remove — final read, close valve, removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["OPERATIONS", "OperationKind", "Step", "StepContext"]

Money = Field(default=None, max_digits=12, decimal_places=2)


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RegisterParams(_Params):
    """Open ``account_id`` at an installed meter: bind, read, price, balance, arm."""

    meter_id: str = Field(min_length=1)
    account_id: str = Field(min_length=1)
    opening_balance: Decimal | None = Money
    arm_valve: bool = True


class TransferParams(_Params):
    """A new occupant: final read, close the old account, open ``new_account_id``."""

    meter_id: str = Field(min_length=1)
    new_account_id: str = Field(min_length=1)
    opening_balance: Decimal | None = Money
    arm_valve: bool = True


class DeregisterParams(_Params):
    """The customer leaves: final read, close the valve, close the account."""

    meter_id: str = Field(min_length=1)
    close_valve: bool = True


class InstallParams(_Params):
    """Install an in-stock meter at ``location_id`` (below ``parent_device_id``)."""

    meter_id: str = Field(min_length=1)
    location_id: str = Field(min_length=1)
    parent_device_id: str | None = None
    account_id: str | None = None
    opening_balance: Decimal | None = Money
    arm_valve: bool = True


class ReplaceParams(_Params):
    """Replace ``old_meter_id`` by the in-stock ``new_meter_id`` at the same place and account.

    The new meter's balance is the old meter's last read balance when ``carry_balance`` and the
    read reported one, else ``opening_balance``.
    """

    old_meter_id: str = Field(min_length=1)
    new_meter_id: str = Field(min_length=1)
    carry_balance: bool = True
    opening_balance: Decimal | None = Money
    arm_valve: bool = True


class RemoveParams(_Params):
    """Take a meter out: final read, close the valve, removed (the account stays open)."""

    meter_id: str = Field(min_length=1)
    close_valve: bool = True


@dataclass(frozen=True)
class StepContext:
    """What a step's builders see: the operation's parameters and what earlier steps learned."""

    params: Mapping[str, Any]
    context: Mapping[str, Any]
    #: per device id: the commands its type supports, its tariff and billing mode
    devices: Mapping[str, Mapping[str, Any]]
    operation_id: str = ""

    def supports(self, device_key: str, command: str) -> bool:
        device = self.devices.get(str(self.params.get(device_key)), {})
        return command in device.get("commands", ())

    def prepaid(self, device_key: str) -> bool:
        device = self.devices.get(str(self.params.get(device_key)), {})
        return str(device.get("billing_mode", "")).startswith("prepaid")


ParamsBuilder = Callable[[StepContext], dict[str, Any]]
Condition = Callable[[StepContext], bool]


@dataclass(frozen=True)
class Step:
    name: str
    kind: Literal["ledger", "command"]
    #: ledger: the action name; command: the catalog command
    action: str
    #: which parameter names the target device
    device: str = "meter_id"
    params: ParamsBuilder | None = None
    when: Condition | None = None
    #: command steps: the command (and its parameters) that undoes this one
    compensation: tuple[str, ParamsBuilder] | None = None
    #: keep the confirmed reply in the context under this name
    remember: str | None = None


@dataclass(frozen=True)
class OperationKind:
    name: str
    params_model: type[_Params]
    steps: tuple[Step, ...]
    #: the parameters naming the meters the operation touches (for facts and authorisation)
    devices: tuple[str, ...] = ("meter_id",)


def _service_close(_c: StepContext) -> dict[str, Any]:
    return {"cause": "service"}


def _arm(_c: StepContext) -> dict[str, Any]:
    return {}


def _read_all(_c: StepContext) -> dict[str, Any]:
    return {"what": "all"}


def _price(device_key: str) -> ParamsBuilder:
    def build(c: StepContext) -> dict[str, Any]:
        tariff = c.devices[str(c.params[device_key])]["tariff"]
        return {"tariff_id": tariff["tariff_id"], "tariff_version": tariff["version"],
                "tiers": tariff["tiers"]}
    return build


def _has_price(device_key: str) -> Condition:
    def when(c: StepContext) -> bool:
        device = c.devices.get(str(c.params.get(device_key)), {})
        return (c.supports(device_key, "set_price") and c.prepaid(device_key)
                and bool(device.get("tariff")))
    return when


def _balance(c: StepContext) -> dict[str, Any]:
    return {"balance": str(_opening_amount(c)), "reason": "service operation"}


def _opening_amount(c: StepContext) -> Decimal | None:
    carried = c.context.get("old_final_read", {}).get("balance") \
        if c.params.get("carry_balance") else None
    value = carried if carried is not None else c.params.get("opening_balance")
    return None if value is None else Decimal(str(value))


def _has_balance(device_key: str) -> Condition:
    def when(c: StepContext) -> bool:
        return (c.supports(device_key, "set_balance") and c.prepaid(device_key)
                and _opening_amount(c) is not None)
    return when


def _credit(c: StepContext) -> dict[str, Any]:
    return {"amount": str(_opening_amount(c)), "topup_id": f"op-{c.operation_id}"}


def _has_credit(device_key: str) -> Condition:
    """Meters that take top-ups but cannot have their balance set (CJ/T 188): a new meter
    starts at zero, so crediting the opening balance sets it."""
    def when(c: StepContext) -> bool:
        amount = _opening_amount(c)
        return (not c.supports(device_key, "set_balance") and c.supports(device_key, "top_up")
                and c.prepaid(device_key) and amount is not None and amount > 0)
    return when


def _balance_steps(device_key: str) -> tuple[Step, Step]:
    return (Step("set balance", "command", "set_balance", device_key, _balance,
                 _has_balance(device_key)),
            Step("credit opening balance", "command", "top_up", device_key, _credit,
                 _has_credit(device_key)))


def _can(device_key: str, command: str, flag: str | None = None) -> Condition:
    def when(c: StepContext) -> bool:
        return (flag is None or bool(c.params.get(flag, True))) and c.supports(device_key,
                                                                                command)
    return when


def _arm_step(device_key: str) -> Step:
    return Step("arm valve", "command", "valve_arm_open", device_key, _arm,
                _can(device_key, "valve_arm_open", "arm_valve"),
                compensation=("valve_close", _service_close))


def _close_step(device_key: str, remember: str | None = None) -> Step:
    return Step("close valve", "command", "valve_close", device_key, _service_close,
                _can(device_key, "valve_close", "close_valve"),
                compensation=("valve_arm_open", _arm), remember=remember)


def _final_read(device_key: str, remember: str) -> Step:
    return Step("final read", "command", "read_now", device_key, _read_all,
                _can(device_key, "read_now"), remember=remember)


OPERATIONS: dict[str, OperationKind] = {op.name: op for op in (
    OperationKind("register", RegisterParams, (
        Step("bind account", "ledger", "bind_account"),
        Step("initial read", "command", "read_now", params=_read_all,
             when=_can("meter_id", "read_now"), remember="initial_read"),
        Step("set price", "command", "set_price", params=_price("meter_id"),
             when=_has_price("meter_id")),
        *_balance_steps("meter_id"),
        _arm_step("meter_id"),
    )),
    OperationKind("transfer", TransferParams, (
        _final_read("meter_id", "final_read"),
        Step("transfer account", "ledger", "transfer_account"),
        Step("set price", "command", "set_price", params=_price("meter_id"),
             when=_has_price("meter_id")),
        *_balance_steps("meter_id"),
        _arm_step("meter_id"),
    )),
    OperationKind("deregister", DeregisterParams, (
        _final_read("meter_id", "final_read"),
        _close_step("meter_id"),
        Step("close account", "ledger", "close_account"),
    )),
    OperationKind("install", InstallParams, (
        Step("install", "ledger", "install_meter"),
        Step("set clock", "command", "sync_time", params=lambda _c: {},
             when=_can("meter_id", "sync_time")),
        Step("initial read", "command", "read_now", params=_read_all,
             when=_can("meter_id", "read_now"), remember="initial_read"),
        Step("set price", "command", "set_price", params=_price("meter_id"),
             when=_has_price("meter_id")),
        *_balance_steps("meter_id"),
        _arm_step("meter_id"),
        Step("activate", "ledger", "activate_meter"),
    )),
    OperationKind("replace", ReplaceParams, (
        _final_read("old_meter_id", "old_final_read"),
        _close_step("old_meter_id"),
        Step("swap meters", "ledger", "swap_meters", device="new_meter_id"),
        Step("set clock", "command", "sync_time", "new_meter_id", lambda _c: {},
             _can("new_meter_id", "sync_time")),
        Step("initial read", "command", "read_now", "new_meter_id", _read_all,
             _can("new_meter_id", "read_now"), remember="initial_read"),
        Step("set price", "command", "set_price", "new_meter_id", _price("new_meter_id"),
             _has_price("new_meter_id")),
        *_balance_steps("new_meter_id"),
        _arm_step("new_meter_id"),
        Step("activate", "ledger", "activate_meter", device="new_meter_id"),
    ), devices=("old_meter_id", "new_meter_id")),
    OperationKind("remove", RemoveParams, (
        _final_read("meter_id", "final_read"),
        _close_step("meter_id"),
        Step("remove", "ledger", "remove_meter"),
    )),
)}
