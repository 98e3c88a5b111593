"""Which unified commands a device type supports, and through which protocol handler.

Strategy: a :class:`DeviceTypeCommands` profile per device type binds catalog commands to a
handler of ``decoders/`` (a protocol and, where vendors differ, a variant — CJ/T 188 valve
codes 55/99 versus a vendor's own, DL/T 645 relay control with its password level). The
profile also carries what the safety policy and the dispatcher need to know about the type:
whether its valve can be *armed* for opening at the meter, whether a read-back is possible,
and whether the device listens all the time (``now``) or only when it wakes up to report
(``on_wake``, battery NB-IoT and LoRa meters). Profiles are rows of
``ledger.device_type_commands`` (see :mod:`devices.commands.store`); this module is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from devices.commands.catalog import CATALOG, CommandSpec, command_spec
from devices.commands.errors import UnsupportedCommandError

__all__ = ["CommandBinding", "Delivery", "DeviceTypeCommands"]

Delivery = Literal["now", "on_wake"]


@dataclass(frozen=True)
class CommandBinding:
    """How one command is carried out on one device type."""

    command: str
    #: ``decoders`` handler name, e.g. ``cjt188`` or ``cjt188:valve_vendor_a``.
    handler: str
    #: The device can be read back to confirm the effect (status, price table …).
    readback: bool = True
    #: Handler options (password level, valve code variant …) passed to the encoder.
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceTypeCommands:
    """A device type's command profile."""

    device_type: str
    protocol: str
    bindings: Mapping[str, CommandBinding]
    #: The valve can be armed so that the customer opens it locally.
    valve_arming: bool = False
    delivery: Delivery = "now"
    reply_timeout_s: float = 10.0
    max_attempts: int = 3

    def __post_init__(self) -> None:
        for name in self.bindings:
            command_spec(name)  # unknown names are a configuration error, found early

    @classmethod
    def build(cls, device_type: str, protocol: str, bindings: Iterable[CommandBinding],
              **kwargs: object) -> DeviceTypeCommands:
        return cls(device_type=device_type, protocol=protocol,
                   bindings={b.command: b for b in bindings}, **kwargs)  # type: ignore[arg-type]

    def supports(self, command: str) -> bool:
        return command in self.bindings

    @property
    def has_valve(self) -> bool:
        return any(CATALOG[c].actuator == "valve" for c in self.bindings)

    @property
    def has_relay(self) -> bool:
        return any(CATALOG[c].actuator == "relay" for c in self.bindings)

    def binding(self, command: str) -> CommandBinding:
        """The binding of ``command`` or :class:`UnsupportedCommandError` naming what is."""
        try:
            return self.bindings[command]
        except KeyError:
            raise UnsupportedCommandError(
                f"device type '{self.device_type}' ({self.protocol}) has no handler for "
                f"'{command}'",
                where=f"device type {self.device_type}",
                hint="supported: " + (", ".join(sorted(self.bindings)) or "nothing yet") +
                     "; add a binding in ledger.device_type_commands if the device can do it",
            ) from None

    def confirms_by_readback(self, spec: CommandSpec) -> bool:
        """Whether ``spec`` on this type is confirmed by reading the device back."""
        if not spec.confirms_by_readback or not self.supports(spec.name):
            return False
        if not self.bindings[spec.name].readback:
            return False
        return self.supports("read_now")
