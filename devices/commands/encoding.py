"""From a unified command to what the device's protocol encoder takes — and a preview frame.

Strategy: the catalog speaks in utility terms (a step price table, a money top-up, a time
window of history); ``decoders`` encoders speak in protocol terms (CJ/T 188 ``prices`` and
``step_limits``, ``purchase_sequence``; DL/T 645 password level and operator code;
``months_ago``). :func:`encode_for_device` translates one into the other per protocol
family, merges the device type's handler options (passwords, the medium's meter type,
vendor variants), and *encodes it once* with the real encoder: a parameter the protocol
cannot carry (a fourth price tier on a CJ/T 188 meter) is refused at submission with the
encoder's own reason, and the hex frame is kept as the command's preview for the operator
and the mass-command approvers. The result — the encoder's command name and parameters —
is what ``CommandDispatch`` carries, so an FEP only calls
``get_protocol(dispatch.handler).encode_command(dispatch.command, dispatch.address,
dispatch.params, …)``.

Which commands a handler can carry comes from the encoder (``Protocol.commands()``), so a
protocol added to ``decoders`` (or through its entry points) becomes commandable here
without a change. ``valve_open`` is carried by the protocol's ``valve_open`` frame where it
has one, else by its valve-open code (CJ/T 188 A017 55), which arms or opens according to
the meter — the device type's ``valve_arm_supported`` says which, and the safety policy acts
on that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import decoders
from decoders import CommandNotSupportedError, EncodeError, Protocol, UnknownProtocolError
from devices.commands.errors import InvalidParametersError, UnsupportedCommandError

__all__ = [
    "EncodedCommand",
    "encode_for_device",
    "encoder_command",
    "handler_commands",
    "protocol_of",
    "resolve_handler",
]

#: Unified commands carried by another encoder frame when the protocol has no own frame.
_ALIASES: dict[str, tuple[str, ...]] = {"valve_open": ("valve_open", "valve_arm_open")}

#: CJ/T 188 meter type codes by the ledger's medium.
_CJT188_METER_TYPE = {"gas": "gas", "water": "cold_water", "heat": "heat",
                      "electricity": "electricity"}

#: DL/T 645 identifiers a read asks for by what it wants.
_DLT645_READS = {"balance": "00900200", "current": "00010000"}

_PASSWORD_OPTIONS = ("password_level", "password", "operator", "valid_until")


@lru_cache(maxsize=256)
def protocol_of(handler: str) -> Protocol | None:
    """The ``decoders`` protocol of a handler name (``protocol[:variant]``), None if unknown."""
    try:
        return decoders.get_protocol(handler)
    except (UnknownProtocolError, CommandNotSupportedError, KeyError, ValueError):
        # an unknown protocol, or a variant the protocol does not have
        return None


def resolve_handler(*candidates: str | None) -> str | None:
    """The first candidate name ``decoders`` knows; else a family name (``cjt188``) that
    names exactly one registered protocol (``cjt188-2004``), with its variant where the
    protocol has it. None when no candidate can be encoded."""
    names = [c for c in candidates if c]
    for name in names:
        if protocol_of(name) is not None:
            return name
    registered = decoders.protocol_names()
    for name in names:
        family, _, variant = name.partition(":")
        matches = [n for n in registered if n.startswith(f"{family}-")]
        if len(matches) == 1:
            for full in (f"{matches[0]}:{variant}" if variant else "", matches[0]):
                if full and protocol_of(full) is not None:
                    return full
    return None


def encoder_command(protocol: Protocol, command: str) -> str | None:
    """The encoder frame that carries ``command`` on ``protocol``, or None."""
    offered = set(protocol.commands())
    for name in _ALIASES.get(command, (command,)):
        if name in offered:
            return name
    return None


def handler_commands(handler: str) -> frozenset[str] | None:
    """The unified commands a handler can carry; None when ``decoders`` does not know it."""
    protocol = protocol_of(handler)
    if protocol is None:
        return None
    from devices.commands.catalog import CATALOG

    return frozenset(c for c in CATALOG if encoder_command(protocol, c) is not None)


@dataclass(frozen=True)
class EncodedCommand:
    """What is dispatched: the encoder's command and parameters, and the preview frame."""

    handler: str
    command: str
    params: dict[str, Any]
    preview_hex: str
    expects_reply: bool


def _family(protocol: Protocol) -> str:
    return protocol.name.split("-")[0]


def _months_ago(start: datetime, now: datetime) -> int:
    months = (now.year - start.year) * 12 + (now.month - start.month)
    return max(1, min(12, months))


def _wire_params(family: str, command: str, params: Mapping[str, Any],
                 options: Mapping[str, Any], medium: str | None, now: datetime,
                 sequence: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if family == "cjt188":
        out["meter_type"] = options.get("meter_type") or _CJT188_METER_TYPE.get(medium or "",
                                                                                "gas")
    if family == "dlt645":
        out.update({k: options[k] for k in _PASSWORD_OPTIONS if k in options})
    if command == "read_now":
        if family == "dlt645":
            ident = options.get(f"read_{params.get('what', 'current')}") or \
                _DLT645_READS.get(str(params.get("what")))
            if ident:
                out["identifier"] = ident
    elif command == "read_history":
        if params.get("months_ago") is not None:
            out["months_ago"] = int(params["months_ago"])
        else:
            out["months_ago"] = _months_ago(datetime.fromisoformat(params["start"]), now)
    elif command == "set_price":
        tiers = params["tiers"]
        if family == "cjt188":
            if len(tiers) > 3:
                raise InvalidParametersError(
                    f"a CJ/T 188 meter holds 3 price tiers, the table has {len(tiers)}",
                    where="tiers", hint="merge tiers or bill the extra ones centrally")
            out["prices"] = [t["price"] for t in tiers]
            out["step_limits"] = [t["upper"] for t in tiers[:-1]]
            if params.get("effective_from"):
                out["effective_day"] = datetime.fromisoformat(params["effective_from"]).day
        elif family == "dlt645":
            if len(tiers) > 1:
                raise InvalidParametersError(
                    "this DL/T 645 handler writes one tariff price, not a step table",
                    where="tiers", hint="send a one-tier table per TOU tariff number")
            out["price"] = tiers[0]["price"]
            out["tariff"] = int(options.get("tariff", 1))
        else:
            out.update(params)
    elif command == "top_up":
        out["amount"] = params["amount"]
        out["purchase_sequence"] = sequence if sequence is not None else 1
        if params.get("topup_id"):
            out["topup_id"] = params["topup_id"]  # meters that deduplicate by order id
    elif command == "set_balance":
        out["balance"] = params["balance"]
    elif command == "set_report_interval":
        # encoders take the unit their device counts in: minutes (NB-IoT JSON documents)
        # or seconds (a Modbus register)
        out["minutes"] = int(params["minutes"])
        out["seconds"] = int(params["minutes"]) * 60
    elif command == "sync_time":
        if params.get("time"):
            out["time"] = params["time"]
        # Without a time the FEP sets its own clock at delivery (the command may wait hours
        # for a sleeping meter); the preview below uses the time of submission.
    elif command in ("relay_close",):
        out["mode"] = options.get("relay_close_mode", "close_allowed")
    elif command in ("valve_close", "valve_arm_open", "valve_open", "relay_trip"):
        pass
    else:
        out.update({k: v for k, v in params.items() if k not in ("acknowledge_safety_lock",)})
    return out


def encode_for_device(handler: str, command: str, params: Mapping[str, Any], *, address: str,
                      options: Mapping[str, Any] | None = None, medium: str | None = None,
                      timezone: str = "Asia/Shanghai", sequence: int | None = None,
                      now: datetime | None = None) -> EncodedCommand:
    """Translate and encode once; :class:`UnsupportedCommandError` or
    :class:`InvalidParametersError` with the encoder's reason when it cannot be carried."""
    protocol = protocol_of(handler)
    if protocol is None:
        raise UnsupportedCommandError(
            f"no protocol encoder '{handler}' in decoders", where=f"handler {handler}",
            hint=f"known: {', '.join(decoders.protocol_names())}; fix the device type's "
                 "protocol or command handler")
    wire = encoder_command(protocol, command)
    if wire is None:
        raise UnsupportedCommandError(
            f"{protocol.name} cannot carry '{command}'", where=f"handler {handler}",
            hint=f"it encodes: {', '.join(protocol.commands())}")
    at = now or datetime.now(UTC)
    wire_params = _wire_params(_family(protocol), command, params, options or {}, medium, at,
                               sequence)
    preview_params = dict(wire_params)
    if wire == "sync_time" and "time" not in preview_params:
        preview_params["time"] = at.isoformat()
    try:
        frame = protocol.encode_command(wire, address, _exact(preview_params),
                                        timezone=timezone)
    except CommandNotSupportedError as exc:
        raise UnsupportedCommandError(str(exc), where=f"handler {handler}") from None
    except EncodeError as exc:
        raise InvalidParametersError(
            f"{protocol.name} cannot encode '{command}' with these parameters: {exc}",
            where=f"handler {handler}", hint="check the parameters against the device type "
                                             "(tiers, amounts, address)") from None
    return EncodedCommand(handler=handler, command=wire, params=wire_params,
                          preview_hex=frame.data.hex(" "), expects_reply=frame.expects_reply)


def _exact(params: Mapping[str, Any]) -> dict[str, Any]:
    """Decimal strings stay exact for the encoder (it would read floats approximately)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, list):
            out[key] = [Decimal(v) if isinstance(v, str) and _decimal(v) else v for v in value]
        else:
            out[key] = value
    return out


def _decimal(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True
