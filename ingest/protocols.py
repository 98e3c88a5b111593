"""The link stacks of service points, built from ``decoders`` — the only place ingest meets it.

Strategy: :class:`DecodersStack` implements :class:`~ingest.stack.LinkStack` with the
protocol registry: one framer per link over the DTU link template's packets (registration,
heartbeat, logout, ack) and the meter protocol's frames; ``interpret`` decodes a frame,
applies the report template (``decoders.reports``) and says what the frame means for the link.
Concentrators (Q/GDW 376.1) log in and beat (answered at once with AFN 00 F1); meter commands
and reads are wrapped in AFN 10 forwarding for the concentrator holding the link, and the
meter frames it forwards back are decoded with ``forwarded_protocol`` and report templates.

Acknowledgements: a DTU whose link template defines an ``ack`` packet gets one after every
unsolicited data frame once its data is durable; the packet names the frame it acknowledges
by ``ref`` = CRC-32 of the frame's bytes (8 hex digits), so a device (or the simulator) can
pair acks with uploads even when one in the middle is not acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from ingest.clock import utc_now
from ingest.publisher import OutRecord
from ingest.stack import CommandFrame, EventDraft, Inbound, ReadingDraft
from schemas.errors import ConfigurationError

if TYPE_CHECKING:
    from ingest.fep import FepRuntime
    from ingest.polling import PlanStats
    from ingest.settings import PollPlanSettings, ServicePointSettings

__all__ = ["RECEPTION_TIME_TAG", "DecodersStack", "ModbusPoll", "build_stack", "frame_ref",
           "stack_for_protocol"]


_CJT188_METER_TYPES = {"gas": "gas", "water": "cold_water", "heat": "heat"}

#: Status tag of a reading whose ``ts`` is the time the FEP received it, not a time the
#: meter stated (the frame carries no clock, or the service point uses reception time).
RECEPTION_TIME_TAG = "time:received"
_LINK_SERVICE = {"login": "login", "logout": "logout", "heartbeat": "heartbeat"}
_CLASS_DATA = frozenset({"class1_data", "class2_data"})


def frame_ref(data: bytes) -> str:
    """How an ack names the frame it acknowledges: CRC-32 of its bytes, 8 upper-case hex."""
    return f"{zlib.crc32(data):08X}"


class DecodersStack:
    """A service point's protocol stack (see the module docstring)."""

    def __init__(self, protocol: str, *, link_protocol: str | None = None,
                 forwarded_protocol: str | None = None, reading_time: str = "meter_clock",
                 timezone: str = "Asia/Shanghai") -> None:
        from decoders import UnknownProtocolError, get_protocol

        try:
            self.proto = get_protocol(protocol)
            self.link = get_protocol(link_protocol) if link_protocol else None
            self.forwarded = get_protocol(forwarded_protocol) if forwarded_protocol else None
        except UnknownProtocolError as exc:
            from decoders import protocol_names

            raise ConfigurationError(str(exc), where="fep.service_points",
                                     hint=f"known protocols: {', '.join(protocol_names())}"
                                     ) from None
        self.protocol = protocol
        self.reading_time = reading_time
        self.timezone = timezone
        #: "now" for requests that name a day (the FEP sets its reception clock)
        self.now: Callable[[], datetime] = utc_now
        self._link_specs = tuple(self.link.frame_specs()) if self.link is not None else ()
        self._link_spec_ids = frozenset(map(id, self._link_specs))
        self._ack_parts: tuple[bytes, bytes] | tuple[()] | None = None
        #: header fields a command needs that only the meter's own frames tell (the CJ/T 188
        #: meter type), remembered per address from the last frame heard
        self._known: dict[str, dict[str, Any]] = {}
        #: (concentrator address, measuring point) → the meter's address, from the ledger
        #: (set by the FEP); class 1/2 data name meters by their point only
        self.point_address: Callable[[str, int], str | None] | None = None
        self._has_ack = self.link is not None and any(
            getattr(getattr(s, "spec", None), "kind", "") == "ack" for s in self._link_specs)

    # ------------------------------------------------------------------ framing

    def new_framer(self, max_frame_bytes: int) -> Any:
        from decoders import Framer

        # meter frames first: they are most of the traffic, link packets the exception
        specs = [*self.proto.frame_specs(), *self._link_specs]
        return Framer(specs, max_buffer=max(4 * max_frame_bytes, 4096))

    # ------------------------------------------------------------------ inbound

    def _link_packet(self, data: bytes) -> bool:
        return any(spec.measure(data, 0) == len(data) for spec in self._link_specs)

    def interpret(self, data: bytes, *, spec: Any = None) -> Inbound:
        if self.link is not None and (id(spec) in self._link_spec_ids if spec is not None
                                      else self._link_packet(data)):
            return self._interpret_link(data)
        frame = self.proto.decode(data)
        if self.forwarded is not None:  # a concentrator: login, heartbeat, forwarding
            return self._concentrator(frame, data)
        return self._meter_frame(frame, data, self.protocol)

    def _interpret_link(self, data: bytes) -> Inbound:
        assert self.link is not None
        frame = self.link.decode(data)
        kind = frame.function
        mapped = {"registration": "registration", "heartbeat": "heartbeat",
                  "logout": "logout"}.get(kind, "other")
        reply = self.link.reply_to(frame)  # type: ignore[attr-defined]
        return Inbound(kind=mapped, protocol=self.link.name,  # type: ignore[arg-type]
                       link_id=frame.address or None, reply_now=reply, decoded=frame)

    def _meter_frame(self, frame: Any, data: bytes, protocol: str) -> Inbound:
        from decoders import apply_report

        readings: list[ReadingDraft] = []
        events: list[EventDraft] = []
        meter_type = frame.header.get("meter_type")
        if meter_type is not None and frame.address and \
                self._known.get(frame.address, {}).get("meter_type") != meter_type:
            if len(self._known) > 1_000_000:
                self._known.clear()
            self._known[frame.address] = {"meter_type": meter_type}
        if not frame.abnormal and frame.direction in ("reply", "report"):
            report = apply_report(frame, timezone=self.timezone)
            if report is not None:
                for r in report.readings:
                    # an interval value (series, load profile) has its own time stamp
                    ts = r.ts or (r.meter_clock if self.reading_time == "meter_clock"
                                  else None)
                    # no meter time (DL/T 645 energy replies carry none), or the service
                    # point ignores it: the FEP stamps the reception time — say so
                    status = r.status if ts is not None else (*r.status, RECEPTION_TIME_TAG)
                    readings.append(ReadingDraft(
                        address=frame.address, register=r.register, value=r.value, unit=r.unit,
                        ts=ts, kind=r.kind, meter_clock=r.meter_clock, status=status))
                for e in report.events:
                    events.append(EventDraft(address=frame.address, kind=e.kind,
                                             severity=e.severity, attributes=e.attributes))
        kind = "reply" if frame.direction == "reply" else (
            "data" if frame.direction == "report" else "other")
        ack = None
        if self._has_ack and readings:
            ack = self.encode_ack(data)
        return Inbound(kind=kind, protocol=protocol, address=frame.address,  # type: ignore[arg-type]
                       readings=readings, events=events, ack=ack, decoded=frame,
                       sequence=frame.sequence, identifier=frame.identifier,
                       abnormal=frame.abnormal)

    def _concentrator(self, frame: Any, data: bytes) -> Inbound:
        """A Q/GDW 376.1 frame: link service (answered at once) or forwarded meter data."""
        function = frame.function
        if function in _LINK_SERVICE and frame.direction == "report":
            confirm = getattr(self.proto, "confirm", None)
            return Inbound(kind=_LINK_SERVICE[function], protocol=self.protocol,  # type: ignore[arg-type]
                           link_id=frame.address or None, address=frame.address,
                           reply_now=confirm(frame) if confirm is not None else None,
                           decoded=frame, sequence=frame.sequence)
        if function in _CLASS_DATA and frame.direction != "request":
            return self._class_data(frame, data)
        forwarded = frame.item("forwarded")
        if forwarded is not None and frame.direction != "request" and forwarded.value:
            assert self.forwarded is not None
            content = bytes(forwarded.value)
            inner = self.forwarded.decode(content)
            meter = self._meter_frame(inner, content, self.forwarded.name)
            return Inbound(kind="reply", protocol=meter.protocol, address=meter.address,
                           readings=meter.readings, events=meter.events,
                           decoded=(frame, inner), sequence=frame.sequence,
                           identifier=inner.identifier, abnormal=inner.abnormal)
        kind = "confirm" if function in ("confirm_all", "deny_all") else (
            "reply" if frame.direction == "reply" else "other")
        return Inbound(kind=kind, protocol=self.protocol, address=frame.address,  # type: ignore[arg-type]
                       decoded=frame, sequence=frame.sequence, abnormal=frame.abnormal)

    def _class_data(self, frame: Any, data: bytes) -> Inbound:
        """AFN 0C/0D energy data of the concentrator's measuring points: one reading per
        point and register, for the meter the ledger puts at that point (``point_address``);
        a point the ledger does not know keeps the address ``<concentrator>/p<N>``, which
        admission rejects and alerts. An upload asking for confirmation (CON) gets AFN 00 F1
        once its data is durable."""
        from decoders import apply_report
        from decoders.qgdw3761_data import point_frames

        readings: list[ReadingDraft] = []
        resolve = self.point_address
        for pn, unit in point_frames(frame):
            address = (resolve(frame.address, pn) if resolve is not None else None) or \
                f"{frame.address}/p{pn}"
            report = apply_report(unit, timezone=self.timezone)
            if report is None:
                continue
            for r in report.readings:
                ts = r.meter_clock if self.reading_time == "meter_clock" else None
                status = r.status if ts is not None else (*r.status, RECEPTION_TIME_TAG)
                readings.append(ReadingDraft(
                    address=address, register=r.register, value=r.value, unit=r.unit, ts=ts,
                    kind=r.kind, meter_clock=r.meter_clock, status=status))
        ack = None
        if frame.direction == "report" and frame.header.get("con"):
            confirm = getattr(self.proto, "confirm", None)
            ack = confirm(frame) if confirm is not None else None
        return Inbound(kind="reply" if frame.direction == "reply" else "data",
                       protocol=self.protocol, address=frame.address, readings=readings,
                       ack=ack, decoded=frame, sequence=frame.sequence,
                       identifier=frame.identifier)

    def encode_ack(self, data: bytes) -> bytes | None:
        ref = frame_ref(data)
        if self._ack_parts is None:
            self._ack_parts = self._ack_template()
        if self._ack_parts:
            head, tail = self._ack_parts
            return head + ref.encode("ascii") + tail
        return self._encode_ack_packet(ref)

    def _encode_ack_packet(self, ref: str) -> bytes:
        from decoders import DataItem, Frame

        assert self.link is not None
        return bytes(self.link.encode(Frame(
            protocol=self.link.name, direction="request", function="ack",
            items=(DataItem(name="ref", value=ref),))))

    def _ack_template(self) -> tuple[bytes, bytes] | tuple[()]:
        """The ack packet around its reference, when the reference appears in it verbatim
        (then an ack is a concatenation, not a template encode per frame)."""
        probe = "5A3C0F1E"
        packet = self._encode_ack_packet(probe)
        if packet.count(probe.encode()) != 1:
            return ()
        head, tail = packet.split(probe.encode())
        other = "00FF00FF"
        if head + other.encode() + tail != self._encode_ack_packet(other):
            return ()
        return head, tail

    # ------------------------------------------------------------------ commands

    def handler_protocol(self, handler: str | None) -> Any:
        """The ``decoders`` protocol that encodes a dispatch's ``handler`` on this link.

        The handler (``protocol[:variant]``, chosen by the control plane from the device
        type) must speak the protocol of the link's meter frames — the link's own protocol,
        or the forwarded one behind a concentrator; a variant (vendor valve codes, DI byte
        order) is honoured. None when there is no handler: the link's protocol then.
        """
        if not handler:
            return None
        from decoders import EncodeError, UnknownProtocolError, get_protocol

        spoken = self.forwarded if self.forwarded is not None else self.proto
        base = handler.partition(":")[0]
        if self.forwarded is not None and base == self.protocol:
            return None  # the concentrator's own protocol: it forwards as it always does
        if base != spoken.name:
            raise EncodeError(
                f"the command handler '{handler}' speaks {base}, but this link carries "
                f"{spoken.name} frames", protocol=spoken.name, field="handler",
                hint="fix the device type's protocol / command handler in the ledger, or the "
                     "meter's service point")
        try:
            return get_protocol(handler)
        except (UnknownProtocolError, KeyError, ValueError) as exc:
            raise EncodeError(f"unknown command handler '{handler}': {exc}",
                              protocol=spoken.name, field="handler") from None

    def encode_command(self, command: str, address: str, params: Mapping[str, Any], *,
                       sequence: int, medium: str | None = None,
                       link_id: str | None = None, handler: str | None = None
                       ) -> CommandFrame:
        encoder = self.handler_protocol(handler)
        merged = {**self._known.get(address, {}), **params}
        if "meter_type" not in merged and medium in _CJT188_METER_TYPES:
            # CJ/T 188 commands carry the meter type; before the meter has spoken, the
            # ledger's medium says it
            merged["meter_type"] = _CJT188_METER_TYPES[medium]
        if self.forwarded is not None:
            # a meter behind a concentrator: the concentrator forwards it (376.1 AFN 10)
            if not link_id:
                from decoders import EncodeError

                raise EncodeError("a meter behind a concentrator needs the concentrator's "
                                  "address", protocol=self.protocol, field="link_id")
            merged.setdefault("meter_address", address)
            merged.setdefault("meter_protocol",
                              handler if encoder is not None else self.forwarded.name)
            cmd = self.proto.encode_command(command, link_id, merged, sequence=sequence,
                                            timezone=self.timezone)
            encoder = None  # the concentrator's own protocol matches its replies
        else:
            cmd = (encoder or self.proto).encode_command(command, address, merged,
                                                         sequence=sequence,
                                                         timezone=self.timezone)
        return CommandFrame(data=cmd.data, request=cmd, protocol=cmd.protocol, address=address,
                            expects_reply=cmd.expects_reply, encoder=encoder)

    def encode_archive_request(self, link_address: str, points: list[int], *, sequence: int,
                               daily: bool = False) -> CommandFrame:
        """Ask a concentrator for its archive of ``points`` (376.1 measuring points): the
        current forward active energy (AFN 0C F129), or yesterday's daily frozen value in
        the utility's zone (AFN 0D F161). The answer is class 1/2 data (:meth:`_class_data`)."""
        from datetime import timedelta
        from zoneinfo import ZoneInfo

        if self.forwarded is None:
            from decoders import EncodeError

            raise EncodeError("archive reads are for concentrator links", protocol=self.protocol,
                              field="target")
        label = None
        if daily:
            label = (self.now().astimezone(ZoneInfo(self.timezone)) - timedelta(days=1)).date()
        afn, fn = (0x0D, 161) if daily else (0x0C, 129)
        cmd = self.proto.data_request(  # type: ignore[attr-defined]
            link_address, afn, [(pn, fn) for pn in points], sequence=sequence, label=label,
            command="read_history" if daily else "read_now")
        return CommandFrame(data=cmd.data, request=cmd, protocol=cmd.protocol,
                            address=link_address, expects_reply=True)

    def _reply_frame(self, inbound: Inbound) -> Any:
        decoded = inbound.decoded
        if isinstance(decoded, tuple):  # (concentrator frame, forwarded meter frame)
            return decoded[0] if self.forwarded is not None else decoded[1]
        return decoded

    def reply_matches(self, command: CommandFrame, inbound: Inbound) -> bool:
        frame = self._reply_frame(inbound)
        if frame is None:
            return False
        return bool((command.encoder or self.proto).matches(command.request, frame))

    def reply_outcome(self, command: CommandFrame, inbound: Inbound
                      ) -> tuple[bool, dict[str, Any]]:
        outcome = (command.encoder or self.proto).interpret(command.request,
                                                            self._reply_frame(inbound))
        details: dict[str, Any] = dict(outcome.data)
        if outcome.status != "ok":
            details["error_code"] = outcome.error_code
            details["reason"] = outcome.reason
        return outcome.status == "ok", details


def build_stack(point: ServicePointSettings, timezone: str = "Asia/Shanghai") -> DecodersStack:
    return DecodersStack(point.protocol, link_protocol=point.link_protocol,
                         forwarded_protocol=point.forwarded_protocol,
                         reading_time=point.reading_time, timezone=timezone)


@cache
def stack_for_protocol(protocol: str) -> DecodersStack:
    """A plain stack for one protocol (file uploads of hex dumps)."""
    return DecodersStack(protocol)


class ModbusPoll:
    """Reads Modbus TCP RTUs with pymodbus; ``decoders`` says what the registers mean.

    pymodbus is the transport (connection, transaction ids, retries); every request and
    reply it exchanges is caught with its packet trace, kept in ``frames.raw``, and decoded
    by the protocol engine with the plan's register map (``modbus-tcp:<template>``), so the
    readings come from the same report templates as any other frame. Endpoints are
    ``[LINK=]host:port/unit``; ``LINK`` is the link id the ledger assigns the RTU to
    (default ``host:port``).
    """

    def __init__(self, runtime: FepRuntime, plan: PollPlanSettings) -> None:
        from decoders import get_protocol

        self.runtime = runtime
        self.plan = plan
        self.point = runtime.points[plan.service_point]
        if not plan.template:
            raise ConfigurationError("a modbus collection plan needs 'template' (the register "
                                     "map)", where=f"poll plan for {plan.service_point}")
        self.proto = get_protocol(f"{self.point.protocol}:{plan.template}")
        self.register_map = self.proto.register_map  # type: ignore[attr-defined]
        self._clients: dict[tuple[str, int], Any] = {}
        self._trace: list[tuple[bool, bytes]] = []
        self._lock = asyncio.Lock()

    @staticmethod
    def parse_endpoint(endpoint: str) -> tuple[str, str, int, int]:
        """``[LINK=]host:port/unit`` → (link id, host, port, unit)."""
        name, _, rest = endpoint.rpartition("=")
        where, _, unit_text = rest.partition("/")
        host, _, port_text = where.rpartition(":")
        if not host or not port_text.isdigit() or not unit_text.isdigit():
            raise ConfigurationError(f"Modbus endpoint {endpoint!r} is not [LINK=]host:port/unit",
                                     where="fep.poll_plans.endpoints")
        return name or f"{host}:{port_text}", host, int(port_text), int(unit_text)

    def _traced(self, sending: bool, data: bytes) -> bytes:
        self._trace.append((sending, bytes(data)))
        return data

    async def _client(self, host: str, port: int) -> Any:
        from pymodbus.client import AsyncModbusTcpClient

        client = self._clients.get((host, port))
        if client is None or not client.connected:
            client = AsyncModbusTcpClient(host, port=port, timeout=self.plan.timeout_s,
                                          retries=self.plan.retries,
                                          trace_packet=self._traced)
            self._clients[(host, port)] = client
            if not await client.connect():
                raise ConnectionError(f"Modbus TCP {host}:{port} is not reachable")
        return client

    def close(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()

    async def read(self, endpoint: str, stats: PlanStats) -> bool:
        """Read every block of the register map from one RTU; True if all answered."""
        from decoders import DecodeError, apply_report

        link_id, host, port, unit = self.parse_endpoint(endpoint)
        async with self._lock:  # one transaction at a time per plan: the trace is ours
            ok = True
            for index, block in enumerate(self.register_map.blocks):
                stats.requests += 1
                self._trace.clear()
                command = self.proto.encode_command("read_now", str(unit), {"block": index})
                try:
                    client = await self._client(host, port)
                    answer = await getattr(client, block.function)(
                        block.start, count=block.quantity, device_id=unit)
                except Exception as exc:  # unreachable, timeout: counted, next RTU
                    stats.timeouts += 1
                    self._publish_packets(link_id, endpoint, error=repr(exc))
                    return False
                if answer.isError():
                    ok = False
                received = [data for sending, data in self._trace if not sending]
                if not received:
                    ok = False
                    continue
                try:
                    reply = self.proto.decode(received[-1])
                except DecodeError as exc:
                    self._publish_packets(link_id, endpoint, error=str(exc))
                    ok = False
                    continue
                mapped = self.proto.apply_map(command, reply)  # type: ignore[attr-defined]
                report = apply_report(mapped, timezone=self.runtime.timezone)
                self._publish(link_id, endpoint, str(unit), report)
            return ok

    def _publish_packets(self, link_id: str, endpoint: str, *, error: str | None = None
                         ) -> tuple[list[OutRecord], str | None]:
        """frames.raw records of the traced packets, and the frame id of the last reply."""
        now = self.runtime.clock.now()
        records: list[OutRecord] = []
        reply_id: str | None = None
        for sending, data in self._trace:
            frame_id = self.runtime.messages.next_id()
            if not sending:
                reply_id = frame_id
            records.append(self.runtime.messages.frame(
                frame_id=frame_id, device_id=link_id, service_point=self.plan.service_point,
                peer=endpoint, protocol=self.proto.name, direction="out" if sending else "in",
                data=data, received_at=now, valid=error is None or sending,
                error=None if sending else error))
        if error is not None:
            self.runtime.publish_soon(records)
        return records, reply_id

    def _publish(self, link_id: str, endpoint: str, address: str, report: Any) -> None:
        from schemas.messages import Reading

        runtime = self.runtime
        records, frame_id = self._publish_packets(link_id, endpoint)
        if report is None:
            runtime.publish_soon(records)
            return
        decision = runtime.admission_for(self.plan.service_point).admit_meter(
            self.plan.service_point, link_id, address, self.proto.name)
        if not decision.admitted:
            alert = runtime.messages.alert(
                code="admission_rejected", object_type="link", object_id=link_id,
                limit_key=f"{link_id}/{address}",
                reason=f"{decision.reason} (Modbus unit {address} at {endpoint})")
            runtime.publish_soon(records + ([alert] if alert is not None else []))
            return
        meter_id = decision.meter_id or address
        now = runtime.clock.now()
        records.extend(runtime.messages.readings([Reading(
            meter_id=meter_id, register=draft.register,
            ts=runtime.reception.stamp(meter_id, draft.register, now), value=draft.value,
            unit=draft.unit, received_at=now, kind=draft.kind, source="poll",
            device_id=link_id, fep=runtime.instance, protocol=self.proto.name,
            status=(*draft.status, RECEPTION_TIME_TAG), frame_id=frame_id)
            for draft in report.readings], event_time=now))
        for event in report.events:
            if runtime.event_changed(meter_id, event.kind, event.attributes):
                records.append(runtime.messages.event(
                    device_id=meter_id, meter_id=meter_id, kind=event.kind,
                    severity=event.severity, attributes=event.attributes))
        runtime.publish_soon(records)
