"""The simulator's links: DTUs over TCP, and the NB-IoT platform bridge over MQTT.

Strategy: a link owns the uploads of its meters that the FEP has not acknowledged yet
(``pending``, keyed by the reference an acknowledgement carries) and a send queue the fleet's
scheduler fills. It keeps the connection up (reconnecting with backoff), sends uploads while
fewer than ``window`` wait for an ack, retransmits an upload not acknowledged within
``ack_timeout_s`` (as a real store-and-forward DTU does), answers the head-end's requests
through the meter behaviours, and injects the faults the plan asks for. Everything sent and
every acknowledgement goes to the simulator log.

DTU acknowledgements are link-template ``ack`` packets naming the upload by CRC-32 of its
bytes; the NB-IoT bridge gets ``{"type": "ack", "ref": …}`` on the meter's downlink topic,
``ref`` being the first 16 hex digits of the SHA-256 of the uplink payload.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import socket
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from simulator.devices import behaviour_for
from simulator.fleet import SimLink, SimMeter
from simulator.log import CommandRec, ReadingRec

if TYPE_CHECKING:
    from simulator.runner import Simulator

__all__ = ["DtuLink", "MqttBridge", "Upload"]

log = logging.getLogger(__name__)

_HOUR = timedelta(hours=1)


@dataclass
class Upload:
    """One data frame on its way to the FEP."""

    frame_id: str
    data: bytes
    ref: str
    sim_at: datetime
    readings: int
    copies: int = 0
    sent_at: float = 0.0


def _crc_ref(data: bytes) -> str:
    return f"{zlib.crc32(data):08X}"


def _sha_ref(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class _LinkBase:
    ref_of = staticmethod(_crc_ref)

    def __init__(self, sim: Simulator, link: SimLink) -> None:
        self.sim = sim
        self.link = link
        self.meters_by_address = {m.address: m for m in link.meters}
        #: uploads awaiting an ack, by frame id (oldest first); identical uploads (a DL/T 645
        #: register read twice with the same value) share an ack reference, so each
        #: reference keeps its uploads in order and an ack takes the oldest
        self.pending: OrderedDict[str, Upload] = OrderedDict()
        self._by_ref: dict[str, collections.deque[str]] = {}
        self.queue: asyncio.Queue[tuple[SimMeter, datetime]] = asyncio.Queue()
        self.window_free = asyncio.Event()
        self.window_free.set()
        self._frame_seq = 0
        self.acked = 0
        self.sent = 0

    def next_frame_id(self) -> str:
        self._frame_seq += 1
        return f"{self.link.link_id}/{self._frame_seq}"

    # ------------------------------------------------------------------ uploads

    def build_upload(self, meter: SimMeter, at: datetime) -> Upload | None:
        """Advance the meter to ``at`` and build its report (faults applied), or None."""
        sim, faults = self.sim, self.sim.faults
        meter.advance(at)
        if faults.should("missing", meter.meter_id, self.link.link_id):
            sim.log.fault("missing", meter.meter_id, at, meter_id=meter.meter_id,
                          register=meter.register_name)
            return None
        tags: list[str] = []
        if faults.should("clock_drift", meter.meter_id):
            meter.clock_drift_s += faults.rng.uniform(300, 3600)
            tags.append("clock_drift")
        if faults.should("rollover", meter.meter_id):
            top = 10 ** meter.consumption.digits
            shown = meter.consumption.total % top
            # just below the maximum: the register wraps to zero within a few hours
            meter.consumption.add_offset(top - shown - max(0.01, 2 * meter.consumption
                                                           .base_per_hour))
            sim.log.fault("rollover", meter.meter_id, at, "register put just below its maximum",
                          meter_id=meter.meter_id)
        true_value = meter.consumption.register_value()
        value = true_value
        last = meter.extra.get("last_value")
        if faults.should("spike", meter.meter_id):
            value = (true_value + Decimal(max(50, int(true_value) // 2))).quantize(true_value)
            value %= Decimal(10) ** meter.consumption.digits
            tags.append("spike")
        elif isinstance(last, Decimal) and last > 1 and faults.should("rollback",
                                                                      meter.meter_id):
            value = (last - Decimal(faults.rng.randint(1, 20))).max(Decimal(0)).quantize(
                true_value)
            tags.append("rollback")
        fault = "+".join(tags) or None
        meter.extra["last_value"] = value
        data = behaviour_for(meter.protocol).report_frame(meter, at, value,
                                                          sequence=self._frame_seq)
        upload = Upload(self.next_frame_id(), data, self.ref_of(data), at, readings=0)
        upload.readings = self.log_readings(upload, meter, at, value, true_value, fault)
        return upload

    def log_readings(self, upload: Upload, meter: SimMeter, at: datetime, value: Decimal,
                     true_value: Decimal, fault: str | None) -> int:
        ts = self.reading_ts(meter, at)
        write = self.sim.log.write
        write(ReadingRec(frame=upload.frame_id, meter_id=meter.meter_id,
                         register=meter.register_name, unit=meter.unit, value=str(value),
                         sim_at=at, ts=ts, fault=fault,
                         true_value=str(true_value) if value != true_value else None))
        if meter.protocol.startswith("cjt188"):
            settlement = meter.extra.get("settlement_value", value)
            write(ReadingRec(frame=upload.frame_id, meter_id=meter.meter_id,
                             register="volume_settlement", unit=meter.unit,
                             value=str(settlement), sim_at=at, ts=ts))
            return 2
        return 1

    @staticmethod
    def reading_ts(meter: SimMeter, at: datetime) -> datetime | None:
        """The time stamp the platform will store: the meter's clock, to the second."""
        if not meter.protocol.startswith(("cjt188", "nbiot-json")):
            return None  # DL/T 645 energy reads carry no time: stamped on reception
        from datetime import UTC, timedelta

        shown = at + timedelta(seconds=meter.clock_drift_s)
        return shown.astimezone(UTC).replace(microsecond=0)

    def add_pending(self, upload: Upload) -> None:
        self.pending[upload.frame_id] = upload
        self._by_ref.setdefault(upload.ref, collections.deque()).append(upload.frame_id)

    def mark_acked(self, ref: str) -> None:
        waiting = self._by_ref.get(ref)
        upload = self.pending.pop(waiting.popleft(), None) if waiting else None
        if waiting is not None and not waiting:
            del self._by_ref[ref]
        if upload is None:
            self.sim.stats["acks_unknown"] += 1
            return
        self.acked += 1
        self.sim.stats["acked_frames"] += 1
        self.sim.ack_latency.append(time.monotonic() - upload.sent_at)
        self.sim.log.ack(upload.frame_id)
        if len(self.pending) < self.sim.window:
            self.window_free.set()

    def due_retransmits(self) -> list[Upload]:
        limit = time.monotonic() - self.sim.ack_timeout_s
        return [u for u in self.pending.values() if u.sent_at and u.sent_at < limit]

    # ------------------------------------------------------------------ requests

    def answer(self, meter: SimMeter, request: Any) -> bytes | None:
        sim = self.sim
        at = sim.clock.now()
        meter.advance(at)
        answer = behaviour_for(meter.protocol).answer(meter, request, at)
        frame_id = self.next_frame_id()
        sim.log.frame(frame_id=frame_id, link=self.link.link_id,
                      service_point=self.link.service_point, sim_at=at,
                      readings=len(answer.readings), data=answer.data)
        sim.log.answer(frame_id, answer.command)
        for register, value in answer.readings:
            sim.log.write(ReadingRec(frame=frame_id, meter_id=meter.meter_id, register=register,
                                     unit=meter.unit, value=str(value), sim_at=at,
                                     ts=self.reading_ts(meter, at)))
        from datetime import UTC

        sim.log.write(CommandRec(device_id=self.link.link_id, meter_id=meter.meter_id,
                                 command=answer.command, ok=answer.ok, effect=answer.effect,
                                 sim_at=at, wall_at=datetime.now(UTC)))
        sim.stats["requests_answered"] += 1
        return bytes(answer.data) if answer.data is not None else None


class DtuLink(_LinkBase):
    """A transparent DTU: registration, heartbeats, meter uploads, answers to requests."""

    def __init__(self, sim: Simulator, link: SimLink, host: str, port: int) -> None:
        super().__init__(sim, link)
        from decoders import Framer, get_protocol

        self.host, self.port = host, port
        self.link_proto = get_protocol(sim.link_protocol)
        self.meter_proto = behaviour_for(link.protocol).proto
        self._specs = [*self.link_proto.frame_specs(), *self.meter_proto.frame_specs()]
        self._framer_cls = Framer
        self.has_ack = any(getattr(getattr(s, "spec", None), "kind", "") == "ack"
                           for s in self.link_proto.frame_specs())
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self.connections = 0
        self._burst_index = 0
        self._stop = False
        #: extra copies of sent uploads not yet written (delivery mode: they go out later,
        #: between other frames, so the FEP sees them out of order)
        self._echoes: list[Upload] = []
        #: uploads held back (delivery mode ``late``) and how many later uploads go first
        self._late: list[tuple[Upload, int]] = []

    def _packet(self, kind: str) -> bytes:
        from decoders import Frame

        return bytes(self.link_proto.encode(Frame(
            protocol=self.link_proto.name, direction="report", function=kind,
            address=self.link.link_id)))

    async def run(self) -> None:
        backoff = 0.2
        while not self._stop:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self.connections += 1
            self.writer = writer
            sock = writer.get_extra_info("socket")
            if sock is not None:  # small frames: no Nagle delay
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                writer.write(self._packet("registration"))
                await writer.drain()
                self.connected.set()
                tasks = [asyncio.create_task(self._read(reader)),
                         asyncio.create_task(self._send_loop(writer)),
                         asyncio.create_task(self._heartbeats(writer))]
                try:
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in tasks:
                        task.cancel()
                    for task in tasks:
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await task
                for task in done:  # a dropped connection: reconnect below
                    if not task.cancelled() and task.exception() is not None:
                        self.sim.stats["link_errors"] += 1
            except (ConnectionError, OSError):
                pass
            finally:
                self.connected.clear()
                self.writer = None
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1)
            if not self._stop:
                await asyncio.sleep(self.sim.reconnect_delay_s)

    def stop(self) -> None:
        self._stop = True
        if self.writer is not None:
            self.writer.close()

    async def _heartbeats(self, writer: asyncio.StreamWriter) -> None:
        packet = self._packet("heartbeat")
        while True:
            await asyncio.sleep(self.sim.heartbeat_s)
            writer.write(packet)
            await writer.drain()

    async def _send(self, writer: asyncio.StreamWriter, upload: Upload, *,
                    fault: str | None = None) -> None:
        sim = self.sim
        upload.copies += 1
        upload.sent_at = time.monotonic()
        data = upload.data
        if fault is None and upload.copies == 1 and sim.faults.should("corrupt",
                                                                      self.link.link_id):
            fault = "corrupt"
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0x10
            data = bytes(flipped)
        if sim.faults.should("garbage", self.link.link_id):
            junk = bytes(sim.faults.rng.getrandbits(8) for _ in range(sim.faults.rng.randint(1,
                                                                                           40)))
            sim.log.fault("garbage", self.link.link_id, upload.sim_at, junk.hex())
            writer.write(junk)
        sim.log.frame(frame_id=upload.frame_id, link=self.link.link_id,
                      service_point=self.link.service_point, sim_at=upload.sim_at,
                      readings=upload.readings, copy=upload.copies, data=data, fault=fault)
        if sim.faults.should("disconnect", self.link.link_id):
            cut = sim.faults.rng.randint(0, len(data) - 1)
            writer.write(data[:cut])
            await writer.drain()
            sim.log.fault("disconnect", self.link.link_id, upload.sim_at,
                          f"dropped after {cut} of {len(data)} bytes of {upload.frame_id}")
            raise ConnectionResetError("fault: disconnect")
        writer.write(data)
        sim.stats["frames_sent"] += 1
        self.sent += 1
        if sim.delivery.copies_max > 1:
            self._echo(writer, upload)
        if sim.faults.should("duplicate", self.link.link_id):
            upload.copies += 1
            sim.log.frame(frame_id=upload.frame_id, link=self.link.link_id,
                          service_point=self.link.service_point, sim_at=upload.sim_at,
                          readings=upload.readings, copy=upload.copies, fault="duplicate")
            writer.write(upload.data)
        await writer.drain()

    def _echo(self, writer: asyncio.StreamWriter, upload: Upload) -> None:
        """Delivery mode: queue this upload's extra copies (1–N deliveries in all) and write
        a random part of the copies queued so far, so copies overtake and trail other frames.
        """
        sim = self.sim
        rng = sim.delivery_rng
        extra = rng.randint(sim.delivery.copies_min, sim.delivery.copies_max) - 1
        self._echoes.extend([upload] * extra)
        rng.shuffle(self._echoes)
        keep: list[Upload] = []
        for echo in self._echoes:
            if rng.random() < 0.5:
                keep.append(echo)
                continue
            echo.copies += 1
            sim.log.frame(frame_id=echo.frame_id, link=self.link.link_id,
                          service_point=self.link.service_point, sim_at=echo.sim_at,
                          readings=echo.readings, copy=echo.copies, fault="redelivery")
            writer.write(echo.data)
            sim.stats["frames_redelivered"] += 1
        self._echoes = keep

    def _hold_back(self, upload: Upload) -> bool:
        """Delivery mode ``late``: hold a share of uploads back (still pending, so a dropped
        link sends them at once) until ``late_after`` later uploads of the link went."""
        sim = self.sim
        late = sim.delivery.late
        if not late or upload.copies or sim.delivery_rng.random() >= late:
            return False
        self._late.append((upload, sim.delivery.late_after))
        sim.stats["frames_late"] += 1
        return True

    def _late_due(self) -> list[Upload]:
        """Held uploads whose turn came (one more upload went), unless already sent (a
        reconnection sends everything pending)."""
        due: list[Upload] = []
        keep: list[tuple[Upload, int]] = []
        for upload, left in self._late:
            if left <= 1:
                due.append(upload)
            else:
                keep.append((upload, left - 1))
        self._late = keep
        return [u for u in due if not u.copies and u.frame_id in self.pending]

    async def _reordered(self, first: Upload) -> list[Upload]:
        """Delivery mode: hold uploads for up to ``reorder_hold_s`` (at most ``reorder`` of
        them, within the window) and return them shuffled."""
        sim = self.sim
        batch = [first]
        deadline = time.monotonic() + sim.delivery.reorder_hold_s
        while len(batch) < sim.delivery.reorder and len(self.pending) + len(batch) < sim.window:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                meter, at = await asyncio.wait_for(self.queue.get(), remaining)
            except TimeoutError:
                break
            built = self.build_upload(meter, at)
            if built is not None:
                if self.has_ack:  # pending at once: a dropped link sends it again
                    self.add_pending(built)
                batch.append(built)
        sim.delivery_rng.shuffle(batch)
        if len(batch) > 1:
            sim.stats["frames_reordered"] += len(batch)
        return batch

    async def _send_loop(self, writer: asyncio.StreamWriter) -> None:
        sim = self.sim
        # after a reconnection: everything not acknowledged goes again, oldest first
        for upload in list(self.pending.values()):
            await self._send(writer, upload)
        while True:
            if self.has_ack:
                for upload in self.due_retransmits():
                    await self._send(writer, upload)
                if len(self.pending) >= sim.window:
                    self.window_free.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.window_free.wait(), sim.ack_timeout_s / 4)
                    continue
            if sim.burst:  # throughput runs: the next meter of the bus, stamped now
                meter = self.link.meters[self._burst_index % len(self.link.meters)]
                self._burst_index += 1
                at = sim.clock.now()
            else:
                try:
                    meter, at = await asyncio.wait_for(self.queue.get(), 0.5)
                except TimeoutError:
                    continue
            built = self.build_upload(meter, at)
            if built is None:
                continue
            # pending before anything is awaited: an upload built but not yet sent when the
            # link drops is sent after the reconnection, never forgotten
            if self.has_ack:
                self.add_pending(built)
            batch = ([built] if sim.burst or sim.delivery.reorder < 2
                     else await self._reordered(built))
            for upload in batch:
                if self._hold_back(upload):
                    continue
                await self._send(writer, upload)
                for late in self._late_due():
                    await self._send(writer, late)
            if sim.burst:
                await asyncio.sleep(0)  # every link (and the control port) gets its turn

    async def _read(self, reader: asyncio.StreamReader) -> None:
        framer = self._framer_cls(self._specs, max_buffer=65536)
        link_specs = set(map(id, self.link_proto.frame_specs()))
        while True:
            data = await reader.read(16384)
            if not data:
                return
            framer.feed(data)
            while True:
                frame = framer.next_frame()
                if not isinstance(frame, bytes | bytearray):
                    break
                frame = bytes(frame)
                if id(framer.last_spec) in link_specs:
                    self._on_link_packet(frame)
                else:
                    await self._on_meter_frame(frame)
            framer.take_garbage()

    def _on_link_packet(self, data: bytes) -> None:
        try:
            packet = self.link_proto.decode(data)
        except Exception:
            self.sim.stats["bad_link_packets"] += 1
            return
        if packet.function == "ack":
            ref = str(packet.values().get("ref", ""))
            self.mark_acked(ref)

    async def _on_meter_frame(self, data: bytes) -> None:
        try:
            request = self.meter_proto.decode(data)
        except Exception:
            self.sim.stats["bad_requests"] += 1
            return
        if request.direction != "request":
            return
        meter = self.meters_by_address.get(request.address)
        if meter is None:
            return  # not on this bus: a real bus stays silent
        reply = self.answer(meter, request)
        if reply is not None and self.writer is not None:
            self.writer.write(reply)
            await self.writer.drain()


class ConcentratorLink(_LinkBase):
    """A Q/GDW 376.1 concentrator: logs in, beats, and forwards the head-end's reads and
    commands to the DL/T 645 meters on its bus (AFN 10), answering with theirs.

    A concentrator is asked, it does not push: its meters' readings reach the platform
    through the FEP's collection plans, and the log records them as answers (unconfirmed).
    """

    def __init__(self, sim: Simulator, link: SimLink, host: str, port: int) -> None:
        super().__init__(sim, link)
        from decoders import get_protocol

        self.host, self.port = host, port
        self.proto = get_protocol(link.protocol)
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self.confirmed = 0
        self._seq = 0
        self._stop = False

    def _link_frame(self, function: str, fn: int) -> bytes:
        from decoders import Frame

        self._seq = (self._seq + 1) % 16
        return bytes(self.proto.encode(Frame(
            protocol=self.proto.name, direction="report", function=function,
            address=self.link.address, control=0xC9, identifier=f"AFN02:p0:F{fn}",
            sequence=self._seq, header={"fir": True, "fin": True, "con": True})))

    async def run(self) -> None:
        backoff = 0.2
        while not self._stop:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self.writer = writer
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tasks: list[asyncio.Task[None]] = []
            try:
                writer.write(self._link_frame("login", 1))
                await writer.drain()
                tasks = [asyncio.create_task(self._read(reader)),
                         asyncio.create_task(self._heartbeats(writer))]
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        self.sim.stats["link_errors"] += 1
            except (ConnectionError, OSError):
                pass
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                self.connected.clear()
                self.writer = None
                writer.close()
            if not self._stop:
                await asyncio.sleep(self.sim.reconnect_delay_s)

    def stop(self) -> None:
        self._stop = True
        if self.writer is not None:
            self.writer.close()

    async def _heartbeats(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(self.sim.heartbeat_s)
            writer.write(self._link_frame("heartbeat", 3))
            await writer.drain()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        framer = self.proto.framer()
        while True:
            data = await reader.read(16384)
            if not data:
                return
            framer.feed(data)
            while True:
                frame = framer.next_frame()
                if not isinstance(frame, bytes | bytearray):
                    break
                await self._on_frame(bytes(frame))
            framer.take_garbage()

    async def _on_frame(self, data: bytes) -> None:
        from decoders import DataItem, Frame

        try:
            frame = self.proto.decode(data)
        except Exception:
            self.sim.stats["bad_requests"] += 1
            return
        if frame.function == "confirm_all":
            self.confirmed += 1
            self.connected.set()
            return
        if frame.function in ("class1_data", "class2_data") and frame.direction == "request":
            await self._archive(frame)
            return
        forwarded = frame.item("forwarded")
        if frame.function != "data_forwarding" or forwarded is None:
            return
        answer: bytes = b""
        try:
            inner_proto = behaviour_for(self.sim.spec.meter_protocol_645).proto
            request = inner_proto.decode(bytes(forwarded.value))
            meter = self.meters_by_address.get(request.address)
            if meter is not None and request.direction == "request":
                answer = self.answer(meter, request) or b""
        except Exception:
            self.sim.stats["bad_requests"] += 1
        port = frame.item("port")
        reply = self.proto.encode(Frame(
            protocol=self.proto.name, direction="reply", function="data_forwarding",
            address=self.link.address, control=0x88, identifier="AFN10:p0:F1",
            sequence=frame.sequence, header={"fir": True, "fin": True},
            items=(DataItem(name="port", value=port.value if port else 2),
                   DataItem(name="forwarded", value=answer))))
        if self.writer is not None:
            self.writer.write(bytes(reply))
            await self.writer.drain()


    async def _archive(self, request: Any) -> None:
        """Answer a read of the concentrator's archive (376.1 AFN 0C F129 current / AFN 0D
        F161 daily frozen forward active energy) for the requested measuring points: the
        concentrator read its meters a moment ago (current values, stamped with that time
        by the concentrator); a frozen day is answered only for today's freeze (what the
        simulation can know), other days as "no data"."""
        from datetime import UTC, date, timedelta
        from zoneinfo import ZoneInfo

        from decoders.qgdw3761 import fn_of, pn_of
        from decoders.qgdw3761_data import data_time, encode_energy_unit

        afn = 0x0C if request.function == "class1_data" else 0x0D
        asked: list[tuple[int, int, Any]] = []
        first_pn = int(str(request.identifier).split(":")[1][1:])
        first_fn = int(str(request.identifier).split(":")[2][1:])
        data = bytes(request.item("data").value) if request.item("data") else b""
        td = 3 if afn == 0x0D else 0
        asked.append((first_pn, first_fn, data[:td] if td else None))
        rest = data[td:]
        while len(rest) >= 4 + td:
            for pn in pn_of(rest[:2]):
                for fn in fn_of(rest[2:4]):
                    asked.append((pn, fn, rest[4:4 + td] if td else None))
            rest = rest[4 + td:]
        at = self.sim.clock.now()
        zone: ZoneInfo = getattr(self.sim.fleet, "zone", None) or ZoneInfo("Asia/Shanghai")
        local = at.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
        units = []
        frame_id = self.next_frame_id()
        readings = 0
        by_point = {m.point_no: m for m in self.link.meters if m.point_no is not None}
        for pn, fn, label_bytes in asked:
            meter = by_point.get(pn)
            if (afn, fn) not in ((0x0C, 129), (0x0D, 161)) or meter is None:
                continue
            meter.advance(at)
            held = meter.consumption.register_value()
            witnessed = True
            label = None
            if afn == 0x0D:
                assert label_bytes is not None
                d, m, y = (int(f"{b:02X}") for b in label_bytes)
                label = date(2000 + y, m, d)
                frozen_at = data_time(None, "day", label)
                # a freeze the simulation did not witness: no data
                witnessed = frozen_at is not None and \
                    local - timedelta(minutes=15) <= frozen_at <= local
            value = held if witnessed else None
            units.append(encode_energy_unit(afn, fn, pn, read_at=local, values=[[value]],
                                            label=label))
            if value is not None:
                readings += 1
                ts = local if afn == 0x0C else data_time(None, "day", label)
                assert ts is not None
                self.sim.log.write(ReadingRec(
                    frame=frame_id, meter_id=meter.meter_id, register=meter.register_name,
                    unit=meter.unit, value=str(value), sim_at=at,
                    ts=ts.replace(tzinfo=zone).astimezone(UTC)))
        if not units:
            return
        reply = self.proto.data_frame(  # type: ignore[attr-defined]
            self.link.address, afn, units, direction="reply", sequence=request.sequence or 0)
        self.sim.log.frame(frame_id=frame_id, link=self.link.link_id,
                           service_point=self.link.service_point, sim_at=at, readings=readings,
                           data=reply)
        self.sim.stats["requests_answered"] += 1
        if self.writer is not None:
            self.writer.write(bytes(reply))
            await self.writer.drain()


class _JsonCommands:
    """The JSON command path of the MQTT bridge (NB-IoT meters speaking nbiot-json)."""

    async def _on_json_command(self: Any, client: Any, meter: SimMeter,
                               doc: dict[str, Any]) -> None:
        from datetime import UTC

        if self.awake_until.get(meter.meter_id, 0) < time.monotonic():
            self.sim.stats["downlinks_while_asleep"] += 1
            return  # the radio is off: the downlink is lost
        behaviour = behaviour_for(meter.protocol)
        at = self.sim.clock.now()
        meter.advance(at)
        answer = behaviour.answer_document(meter, doc, at)
        if answer is None:
            self.sim.stats["bad_requests"] += 1
            return
        frame_id = self.next_frame_id()
        self.sim.log.frame(frame_id=frame_id, link=meter.link_id,
                           service_point=self.link.service_point, sim_at=at,
                           readings=len(answer.readings), data=answer.data)
        self.sim.log.answer(frame_id, answer.command)
        for register, value in answer.readings:
            self.sim.log.write(ReadingRec(frame=frame_id, meter_id=meter.meter_id,
                                          register=register, unit=meter.unit,
                                          value=str(value), sim_at=at,
                                          ts=self.reading_ts(meter, at)))
        self.sim.log.write(CommandRec(device_id=meter.link_id, meter_id=meter.meter_id,
                                      command=answer.command, ok=answer.ok,
                                      effect=answer.effect, sim_at=at,
                                      wall_at=datetime.now(UTC)))
        self.sim.stats["requests_answered"] += 1
        self.awake_until[meter.meter_id] = time.monotonic() + self.sim.wake_window_s
        await client.publish(f"{self.root}/meters/{meter.meter_id}/up", answer.data, qos=1)


class MqttBridge(_JsonCommands, _LinkBase):
    """The NB-IoT platform's MQTT bridge for every NB-IoT meter of the fleet.

    NB-IoT meters reach a utility through the operator's IoT platform, which forwards their
    uplinks to MQTT; one client here publishes for all of them (``<root>/meters/<id>/up``)
    and listens on ``<root>/meters/+/down``. A meter listens only for ``wake_window_s``
    after each uplink; a downlink outside that window is lost, as it would be.

    Packs (``nbiot_pack`` N, JSON-map meters): a meter records its register at every full
    hour and each upload carries its last N hourly registers (the map's ``series``) instead
    of the current one; every reading is logged with its hour as ``ts``. In burst mode the
    bridge needs no schedule: meter after meter uploads the next N hours of its backlog
    since the simulated start (consecutive, never repeated), stamped with the meter's clock
    now, as fast as the FEP acknowledges (at most ``8 × window`` uploads unacknowledged).
    """

    ref_of = staticmethod(_sha_ref)

    def __init__(self, sim: Simulator, links: list[SimLink], url: str, topic_root: str) -> None:
        super().__init__(sim, SimLink("nbiot-bridge", "nbiot", links[0].service_point
                                      if links else "", "cjt188-2004"))
        self.links = {link.link_id: link for link in links}
        self.meters_by_id = {link.link_id: link.meters[0] for link in links if link.meters}
        self.url = url
        self.root = topic_root.rstrip("/")
        self.awake_until: dict[str, float] = {}
        self.client: Any = None
        self.connected = asyncio.Event()
        self._stop = False
        self._burst_meters = list(self.meters_by_id.values())
        self._burst_index = 0
        self._publishing: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        from urllib.parse import urlsplit

        import aiomqtt

        parts = urlsplit(self.url)
        while not self._stop:
            try:
                async with aiomqtt.Client(parts.hostname or "127.0.0.1", parts.port or 1883,
                                          identifier=f"unimeter-sim-{self.sim.run_id}",
                                          max_inflight_messages=1000) as client:
                    self.client = client
                    client.pending_calls_threshold = 10_000  # thousands of meters
                    await client.subscribe(f"{self.root}/meters/+/down", qos=1)
                    self.connected.set()
                    sender = asyncio.create_task(self._send_loop(client))
                    try:
                        async for message in client.messages:
                            await self._on_down(client, message)
                    finally:
                        sender.cancel()
            except aiomqtt.MqttError as exc:
                log.info("simulator MQTT bridge: %s; reconnecting", exc)
            finally:
                self.client = None
                self.connected.clear()
            if not self._stop:
                await asyncio.sleep(0.5)

    def stop(self) -> None:
        self._stop = True

    async def _publish(self, client: Any, meter: SimMeter, upload: Upload) -> None:
        upload.copies += 1
        upload.sent_at = time.monotonic()
        self.sim.log.frame(frame_id=upload.frame_id, link=meter.link_id,
                           service_point=self.link.service_point, sim_at=upload.sim_at,
                           readings=upload.readings, copy=upload.copies, data=upload.data)
        self.awake_until[meter.meter_id] = time.monotonic() + self.sim.wake_window_s
        await client.publish(f"{self.root}/meters/{meter.meter_id}/up", upload.data, qos=1)
        self.sim.stats["frames_sent"] += 1
        if self.sim.faults.should("duplicate", meter.meter_id):
            upload.copies += 1
            await client.publish(f"{self.root}/meters/{meter.meter_id}/up", upload.data, qos=1)

    async def _send_loop(self, client: Any) -> None:
        for upload in list(self.pending.values()):
            meter = self.meters_by_id.get(upload.frame_id.split("/")[0])
            if meter is not None:
                await self._publish(client, meter, upload)
        while True:
            for upload in self.due_retransmits():
                meter = self.meters_by_id.get(upload.frame_id.split("/")[0])
                if meter is not None:
                    await self._publish(client, meter, upload)
            if len(self.pending) >= self.sim.window * 8:
                await asyncio.sleep(0.05)
                continue
            if self.sim.burst:
                burst = self._next_burst()
                if burst is None:  # no backlog left (or no pack mode): nothing to send
                    await asyncio.sleep(0.5)
                    continue
                due_meter, built = burst
            else:
                try:
                    due_meter, at = await asyncio.wait_for(self.queue.get(), 0.5)
                except TimeoutError:
                    continue
                maybe = self.build_upload(due_meter, at)
                if maybe is None:
                    continue
                built = maybe
            self.add_pending(built)
            if self.sim.burst:
                # many uploads on their way at once (the window bounds them): waiting for
                # each PUBACK in turn would make the broker's round trip the limit
                task = asyncio.create_task(self._publish(client, due_meter, built))
                self._publishing.add(task)
                task.add_done_callback(self._published)
            else:
                await self._publish(client, due_meter, built)

    def _published(self, task: asyncio.Task[None]) -> None:
        self._publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # not on the broker: the upload stays pending and goes again after ack_timeout_s
            self.sim.stats["publish_errors"] += 1

    # ------------------------------------------------------------------ packs

    def _hourly(self, meter: SimMeter, at: datetime) -> list[tuple[datetime, Decimal]]:
        """The meter's frozen hourly registers up to ``at``, the last ``nbiot_pack`` of them:
        each full hour is recorded once, as the meter's register passes it."""
        history = meter.extra.get("hourly")
        if not isinstance(history, collections.deque):
            history = collections.deque(maxlen=self.sim.nbiot_pack)
            meter.extra["hourly"] = history
        hour = self._next_hour(meter)
        while hour <= at:
            meter.advance(hour)
            history.append((hour, meter.consumption.register_value()))
            hour += _HOUR
        meter.extra["hourly_next"] = hour
        return list(history)

    @staticmethod
    def _next_hour(meter: SimMeter) -> datetime:
        """The first full hour the meter has not recorded yet."""
        hour = meter.extra.get("hourly_next")
        if isinstance(hour, datetime):
            return hour
        since = meter.consumption.at
        hour = since.replace(minute=0, second=0, microsecond=0)
        return hour + _HOUR if hour < since else hour

    def _next_burst(self) -> tuple[SimMeter, Upload] | None:
        """Burst mode (throughput runs), pack uploads only: the next meter in turn uploads
        the next ``nbiot_pack`` hours of its backlog since the simulated start, stamped with
        its clock now (wall time); a meter whose backlog has reached now is skipped."""
        if not self.sim.nbiot_pack or not self._burst_meters:
            return None
        from datetime import UTC

        now = datetime.now(UTC)
        for _ in range(len(self._burst_meters)):
            meter = self._burst_meters[self._burst_index % len(self._burst_meters)]
            self._burst_index += 1
            first = self._next_hour(meter)
            until = min(first + (self.sim.nbiot_pack - 1) * _HOUR, now)
            if until < first:
                continue
            built = self.build_upload(meter, until, clock_at=now)
            if built is not None:
                return meter, built
        return None

    def build_upload(self, meter: SimMeter, at: datetime, *,
                     clock_at: datetime | None = None) -> Upload | None:
        """The meter's upload at ``at``: its current register, or with ``nbiot_pack`` its
        last hourly registers (``clock_at``: the meter's clock, when not ``at``)."""
        self._frame_seq += 1
        frame_id = f"{meter.link_id}/{self._frame_seq}"
        sim, faults = self.sim, self.sim.faults
        if sim.nbiot_pack:
            return self._pack_upload(meter, at, frame_id, clock_at or at)
        meter.advance(at)
        if faults.should("missing", meter.meter_id):
            sim.log.fault("missing", meter.meter_id, at, meter_id=meter.meter_id,
                          register=meter.register_name)
            return None
        value = meter.consumption.register_value()
        data = behaviour_for(meter.protocol).report_frame(meter, at, value,
                                                          sequence=self._frame_seq)
        upload = Upload(frame_id, data, self.ref_of(data), at, readings=0)
        upload.readings = self.log_readings(upload, meter, at, value, value, None)
        return upload

    def _pack_upload(self, meter: SimMeter, at: datetime, frame_id: str,
                     clock_at: datetime) -> Upload | None:
        hourly = self._hourly(meter, at)
        meter.advance(at)
        if self.sim.faults.should("missing", meter.meter_id):
            self.sim.log.fault("missing", meter.meter_id, at, meter_id=meter.meter_id,
                               register=meter.register_name)
            return None
        if not hourly:
            return None  # not a full hour recorded yet
        data = behaviour_for(meter.protocol).pack_frame(meter, clock_at, hourly,
                                                        sequence=self._frame_seq)
        upload = Upload(frame_id, data, self.ref_of(data), clock_at, readings=len(hourly))
        write = self.sim.log.write
        for hour, value in hourly:
            write(ReadingRec(frame=frame_id, meter_id=meter.meter_id,
                             register=meter.register_name, unit=meter.unit, value=str(value),
                             sim_at=hour, ts=self.reading_ts(meter, hour)))
        return upload

    async def _on_down(self, client: Any, message: Any) -> None:
        topic = str(message.topic).split("/")
        meter_id = topic[-2] if len(topic) >= 2 else ""
        payload = bytes(message.payload or b"")
        if payload[:1] == b"{":
            try:
                doc = json.loads(payload)
            except json.JSONDecodeError:
                return
            if doc.get("type") == "ack":
                self.mark_acked(str(doc.get("ref", "")))
                return
            json_meter = self.meters_by_id.get(meter_id)
            if json_meter is not None and json_meter.protocol.startswith("nbiot-json"):
                await self._on_json_command(client, json_meter, doc)
            return
        meter = self.meters_by_id.get(meter_id)
        if meter is None:
            return
        if self.awake_until.get(meter_id, 0) < time.monotonic():
            self.sim.stats["downlinks_while_asleep"] += 1
            return  # the radio is off: the downlink is lost
        proto = behaviour_for(meter.protocol).proto
        try:
            request = proto.decode(payload)
        except Exception:
            self.sim.stats["bad_requests"] += 1
            return
        if request.direction != "request" or request.address != meter.address:
            return
        reply = self.answer(meter, request)
        if reply is not None:
            self.awake_until[meter_id] = time.monotonic() + self.sim.wake_window_s
            await client.publish(f"{self.root}/meters/{meter_id}/up", reply, qos=1)
