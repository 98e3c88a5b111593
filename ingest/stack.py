"""What a link session needs from the protocol engine, and nothing more.

Strategy: a session (``ingest.session``) never parses bytes. It asks its :class:`LinkStack`
for a framer, hands it every frame, and gets back an :class:`Inbound` — what the frame *means
for the link*: a DTU registering or beating, a concentrator logging in, meter data (possibly
several meters forwarded through one concentrator frame), a reply to a command, and whether
the device expects an acknowledgement once its data is safe. The stack for a service point is
built from ``decoders`` (registry, framers, DTU templates, report templates, command
encoders) in :mod:`ingest.protocols`; this module only fixes the contract, so the session,
the command router and the poller are written — and read — without protocol details.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

__all__ = [
    "CommandFrame",
    "FramerLike",
    "Inbound",
    "LinkStack",
    "ReadingDraft",
]

InboundKind = Literal["registration", "heartbeat", "login", "logout", "data", "reply",
                      "confirm", "other"]


class FramerLike(Protocol):
    """A sans-IO framer (``decoders``): bytes in, whole frames out."""

    max_buffer: int

    @property
    def buffered(self) -> int: ...

    def resync(self) -> None: ...

    def feed(self, data: bytes | bytearray | memoryview) -> None: ...

    def next_frame(self) -> Any: ...  # bytes, or the NEED_DATA marker

    def take_garbage(self) -> bytes: ...


@dataclass(slots=True)  # not frozen: a frozen init costs ~3 µs, made per frame
class ReadingDraft:
    """A canonical reading as a report template produced it, before admission."""

    address: str
    register: str
    value: Decimal
    unit: str
    ts: datetime | None = None  # meter clock; None = stamp with the time received
    kind: str = "cumulative"
    interval_s: int | None = None
    meter_clock: datetime | None = None
    status: tuple[str, ...] = ()


@dataclass(slots=True)  # not frozen: a frozen init costs ~3 µs, made per frame
class EventDraft:
    """A device event a report template found in a frame (valve state, battery, alarm)."""

    address: str
    kind: str
    severity: str = "info"
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)  # not frozen: a frozen init costs ~3 µs, made per frame
class Inbound:
    """One frame, interpreted for the link."""

    kind: InboundKind
    protocol: str
    link_id: str | None = None  # registration / login identity
    address: str = ""  # the meter (or concentrator) address the frame speaks for
    readings: Sequence[ReadingDraft] = ()
    events: Sequence[EventDraft] = ()
    reply_now: bytes | None = None  # answer at once (login confirm, heartbeat echo)
    ack: bytes | None = None  # send once the frame's data is durable
    decoded: Any = None  # the decoded frame(s), for reply matching
    sequence: int | None = None
    identifier: str | None = None
    abnormal: bool = False
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CommandFrame:
    """A unified command encoded for one device on one link.

    ``request`` is the protocol engine's own record of what was asked (address, function,
    identifier, sequence); the stack uses it to recognise and interpret the reply.
    """

    data: bytes
    request: Any
    protocol: str
    address: str
    expects_reply: bool = True
    #: the protocol (handler) that encoded it, when not the link's own: it judges the reply
    encoder: Any = None


class LinkStack(Protocol):
    """The protocol stack of one service point."""

    protocol: str

    def new_framer(self, max_frame_bytes: int) -> FramerLike: ...

    def interpret(self, data: bytes, *, spec: Any = None) -> Inbound:
        """Meaning of one whole frame; raises a ``decoders`` decode error if malformed.

        ``spec`` is the frame spec the link's framer matched (``framer.last_spec``), when
        known: it tells a link packet from a meter frame without measuring it again."""
        ...

    def encode_command(self, command: str, address: str, params: Mapping[str, Any], *,
                       sequence: int, medium: str | None = None,
                       link_id: str | None = None, handler: str | None = None
                       ) -> CommandFrame:
        """Bytes of a unified command (``valve_close``, ``read_now`` …) for ``address`` on
        link ``link_id``; ``medium`` (from the ledger) fills protocol fields that follow
        from it; ``handler`` (``protocol[:variant]``, the device type's command handler the
        control plane chose) encodes it instead of the link's protocol when given."""
        ...

    def reply_matches(self, command: CommandFrame, inbound: Inbound) -> bool:
        """Whether ``inbound`` answers ``command`` (address, identifier, sequence)."""
        ...

    def reply_outcome(self, command: CommandFrame, inbound: Inbound
                      ) -> tuple[bool, dict[str, Any]]:
        """(device did it?, reply details for ``commands.results``)."""
        ...
