"""The interface every protocol implements, and the command round trip types.

Strategy: a :class:`Protocol` is sans-IO. It gives the FEP a framer for its links
(``framer()``), turns frame bytes into a typed :class:`~decoders.frame.Frame` and back
(``decode`` / ``encode``), and encodes the *unified commands* of the ``devices/`` catalog
(``read_now``, ``valve_close``, ``relay_trip`` …) into frames of this protocol
(``encode_command``). A request leaves a :class:`CommandFrame` behind: the bytes to send
plus what its reply must look like; ``matches(request, reply)`` says whether a decoded frame
answers it, and ``interpret(request, reply)`` says what the answer means
(:class:`CommandOutcome`: ``ok`` with the data read back, or ``device_error`` with the
device's reason).

Template protocols (:mod:`decoders.template.protocol`) implement all of it from YAML;
Python protocols (Modbus, M-Bus, DLMS, Q/GDW 376.1) subclass :class:`Protocol` directly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from decoders.errors import CommandNotSupportedError
from decoders.frame import Frame, to_jsonable
from decoders.framing import Framer, FrameSpec

__all__ = ["CommandFrame", "CommandOutcome", "MatchField", "Protocol"]

MatchField = Literal["address", "function", "identifier", "sequence"]

#: Address digits that address every device (DL/T 645 ``AA…``, ``99…`` broadcast).
_WILDCARD_DIGITS = frozenset({"A", "9"})


class CommandFrame(msgspec.Struct, frozen=True, kw_only=True):
    """A unified command encoded for one device: what to send and what answers it."""

    protocol: str
    command: str
    address: str
    data: bytes
    request: Frame
    expects_reply: bool = True
    match_on: tuple[MatchField, ...] = ("address", "function", "identifier")


class CommandOutcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a reply means for the command that caused it.

    ``status``: ``ok`` — the device did it (``data`` holds the values it read back, JSON
    ready); ``device_error`` — the device refused or failed (``error_code`` machine-readable,
    ``reason`` for operators, ``errors`` every flag the device set).
    """

    status: Literal["ok", "device_error"]
    command: str
    error_code: str | None = None
    reason: str = ""
    errors: tuple[str, ...] = ()
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class Protocol(ABC):
    """One protocol (optionally bound to a vendor variant). See the module docstring."""

    #: Registry name, e.g. ``cjt188-2004``.
    name: str = ""
    title: str = ""
    #: Vendor variants this protocol knows (``name:variant`` in the registry).
    variants: tuple[str, ...] = ("default",)
    variant: str = "default"

    # --------------------------------------------------------------- framing
    @abstractmethod
    def frame_specs(self) -> Sequence[FrameSpec]:
        """The frame shapes of this protocol (for a framer shared with other protocols)."""

    def framer(self, *, max_buffer: int = 65536) -> Framer:
        """A new framer for one link."""
        return Framer(self.frame_specs(), max_buffer=max_buffer)

    # --------------------------------------------------------------- codec
    @abstractmethod
    def decode(self, data: bytes) -> Frame:
        """Exactly one frame (preamble allowed) → typed frame; raises the
        :class:`~decoders.errors.DecodeError` family, and nothing else, on bad input."""

    @abstractmethod
    def encode(self, frame: Frame) -> bytes:
        """Typed frame → bytes; raises :class:`~decoders.errors.EncodeError`."""

    def with_variant(self, variant: str) -> Protocol:
        """This protocol bound to a vendor variant."""
        if variant not in self.variants:
            raise CommandNotSupportedError(f"unknown variant {variant!r}; known: "
                                      f"{list(self.variants)}", protocol=self.name)
        return self

    # --------------------------------------------------------------- commands
    def commands(self) -> Sequence[str]:
        """The unified commands this protocol can encode."""
        return ()

    def encode_command(self, command: str, address: str,
                       params: Mapping[str, Any] | None = None, *, sequence: int = 0,
                       timezone: str = "Asia/Shanghai") -> CommandFrame:
        """Encode a unified command for the device at ``address``. ``sequence`` is the
        link's next sequence number where the protocol has one; ``timezone`` the meters'
        local zone (for clock-setting commands)."""
        raise CommandNotSupportedError(f"{self.name} has no command {command!r}",
                                  protocol=self.name,
                                  hint=f"supported: {list(self.commands())}")

    def matches(self, request: CommandFrame, reply: Frame) -> bool:
        """Whether ``reply`` answers ``request`` (address, function, identifier, sequence
        as the protocol defines; abnormal replies carry no identifier and still match)."""
        if reply.direction != "reply" or reply.protocol != request.protocol:
            return False
        asked = request.request
        for key in request.match_on:
            if key == "address":
                if not _same_address(asked.address, reply.address):
                    return False
            elif key == "function":
                if asked.function != reply.function:
                    return False
            elif key == "identifier":
                if asked.identifier is not None and reply.identifier is not None and \
                        asked.identifier != reply.identifier:
                    return False
            elif key == "sequence" and asked.sequence is not None and \
                    reply.sequence is not None and asked.sequence != reply.sequence:
                return False
        return True

    def interpret(self, request: CommandFrame, reply: Frame) -> CommandOutcome:
        """What ``reply`` means for ``request`` (call after :meth:`matches`)."""
        if reply.abnormal:
            flags: list[str] = []
            for item in reply.items:
                if isinstance(item.value, tuple) and all(isinstance(v, str)
                                                         for v in item.value):
                    flags.extend(item.value)
            detail = ", ".join(flags) if flags else ", ".join(
                f"{i.name}={to_jsonable(i.value)}" for i in reply.items) or "no detail"
            return CommandOutcome(status="device_error", command=request.command,
                                  error_code=flags[0] if flags else "abnormal_reply",
                                  reason=f"the device refused {request.command}: {detail}",
                                  errors=tuple(flags),
                                  data={i.name: to_jsonable(i.value) for i in reply.items})
        return CommandOutcome(status="ok", command=request.command,
                              data={i.name: to_jsonable(i.value) for i in reply.items})

    def __repr__(self) -> str:
        suffix = f":{self.variant}" if self.variant != "default" else ""
        return f"<{type(self).__name__} {self.name}{suffix}>"


def _same_address(asked: str, answered: str) -> bool:
    if asked == answered:
        return True
    # A request to a wildcard/broadcast address is answered by the device's real address.
    return bool(asked) and set(asked.upper()) <= _WILDCARD_DIGITS
