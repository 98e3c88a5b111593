"""Simulated Modbus TCP RTUs: flow computers whose registers are the live meter.

Strategy: one TCP server per RTU link (a gateway with up to 247 unit ids). Requests are
framed and decoded by the protocol engine (``modbus-tcp``); a read returns the registers of
the unit's register map (``decoders`` encodes the meter's true total and flow into words),
computed at the simulated instant of the request, so "reads return the register" (with the
gas temperature, the line pressure and the volume at base conditions of a flow computer);
a write to the valve coil really opens or closes the valve. Unknown units stay silent (a
gateway times out), unknown registers get exception 02 (illegal data address).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import zlib
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from simulator.fleet import SimLink, SimMeter
from simulator.log import CommandRec, ReadingRec

if TYPE_CHECKING:
    from simulator.runner import Simulator

__all__ = ["ModbusRtuServer"]

log = logging.getLogger(__name__)


class ModbusRtuServer:
    def __init__(self, sim: Simulator, link: SimLink, host: str, port: int,
                 register_map: str = "flow-computer") -> None:
        from decoders import get_protocol

        self.sim = sim
        self.link = link
        self.host, self.port = host, port
        self.proto = get_protocol(f"modbus-tcp:{register_map}")
        self.map = self.proto.register_map  # type: ignore[attr-defined]
        self.units: dict[int, SimMeter] = {m.modbus_unit: m for m in link.meters}
        self.server: asyncio.Server | None = None
        self.connected = asyncio.Event()
        self.pending: dict[str, Any] = {}  # nothing is pushed, nothing awaits an ack
        self._frames = 0
        self._writers: set[asyncio.StreamWriter] = set()  # open client connections

    async def run(self) -> None:
        self.server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = int(self.server.sockets[0].getsockname()[1])
        self.connected.set()
        async with self.server:
            await self.server.serve_forever()

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        # End the client handlers by closing their connections (they return on EOF) rather
        # than leaving them to be cancelled at loop shutdown, which Python 3.11 reports as
        # "Exception in callback ... CancelledError" on the console.
        for writer in list(self._writers):
            writer.close()

    def endpoints(self, host: str | None = None) -> list[str]:
        """``LINK=host:port/unit`` of every unit, for a collection plan."""
        return [f"{self.link.link_id}={host or self.host}:{self.port}/{unit}"
                for unit in sorted(self.units)]

    @staticmethod
    def line_pressure_kpa(meter: SimMeter) -> Decimal:
        """The gauge pressure of the meter's supply line: a medium-pressure industrial
        connection, 200–450 kPa, fixed per meter (a regulator holds it)."""
        return Decimal(200 + zlib.crc32(meter.meter_id.encode()) % 251)

    @staticmethod
    def gas_temperature(at: datetime) -> Decimal:
        """Gas temperature at the meter: a seasonal swing around 12 °C plus a small daily
        one (buried pipes follow the soil, not the air)."""
        day = at.timetuple().tm_yday
        seasonal = 8 * math.cos(2 * math.pi * (day - 200) / 365)
        daily = 1.5 * math.cos(2 * math.pi * (at.hour + at.minute / 60 - 15) / 24)
        return Decimal(f"{12 + seasonal + daily:.2f}")

    @staticmethod
    def base_factor(meter: SimMeter) -> Decimal:
        """Conversion to base conditions (101.325 kPa, 20 °C) at the line's nominal state
        (15 °C): the converted total stays a monotone register."""
        absolute = ModbusRtuServer.line_pressure_kpa(meter) + Decimal("101.325")
        return absolute / Decimal("101.325") * Decimal("293.15") / Decimal("288.15")

    def _values(self, meter: SimMeter) -> dict[str, Any]:
        at = self.sim.clock.now()
        meter.advance(at)
        total = meter.consumption.register_value()
        return {"volume_total": total,
                "volume_standard": (total * self.base_factor(meter)).quantize(
                    Decimal("0.001"), rounding=ROUND_HALF_UP),
                "flow_rate": Decimal(f"{meter.consumption.rate(at):.4f}"),
                "temperature": self.gas_temperature(at),
                "pressure": self.line_pressure_kpa(meter),
                "valve_open": meter.valve != "closed", "alarm_word": 0}

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = self.proto.framer()
        self._writers.add(writer)
        try:
            while data := await reader.read(4096):
                framer.feed(data)
                while True:
                    frame = framer.next_frame()
                    if not isinstance(frame, bytes | bytearray):
                        break
                    reply = self._answer(bytes(frame))
                    if reply is not None:
                        writer.write(reply)
                await writer.drain()
                framer.take_garbage()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, data: bytes) -> bytes | None:
        from decoders import DataItem, Frame

        try:
            request = self.proto.decode(data)
        except Exception:
            self.sim.stats["bad_requests"] += 1
            return None
        meter = self.units.get(int(request.address)) if request.address.isdigit() else None
        if meter is None or request.direction != "request":
            return None
        values = request.values()
        self._frames += 1
        frame_id = f"{self.link.link_id}/{self._frames}"
        at = self.sim.clock.now()

        def reply(items: tuple[Any, ...], abnormal: bool = False) -> bytes:
            return bytes(self.proto.encode(Frame(
                protocol=self.proto.name, direction="reply", function=request.function,
                address=request.address, control=request.control, sequence=request.sequence,
                abnormal=abnormal, items=items)))

        if request.function in ("read_holding_registers", "read_input_registers",
                                "read_coils", "read_discrete_inputs"):
            table = {"read_holding_registers": "holding", "read_input_registers": "input",
                     "read_coils": "coil", "read_discrete_inputs": "discrete"}[request.function]
            now_values = self._values(meter)  # one instant: the log says what was answered
            cells = self.map.encode(now_values).get(table, {})
            start, count = int(values["start_address"]), int(values["quantity"])
            if not any(start <= a < start + count for a in cells):
                return reply((DataItem(name="error", value=("illegal_data_address",)),),
                             abnormal=True)
            words = [cells.get(a, 0) for a in range(start, start + count)]
            name = "registers" if table in ("holding", "input") else (
                "coils" if table == "coil" else "inputs")
            answer = reply((DataItem(name=name, value=words if name == "registers"
                                     else [bool(w) for w in words]),))
            if table == "holding":
                value = now_values["volume_total"]
                self._log(frame_id, meter, "read_now", answer, at, reading=value)
            return answer
        if request.function == "write_single_coil":
            meter.set_valve("open" if values.get("value") else "closed", at)
            answer = reply(request.items)
            self._log(frame_id, meter, "valve", answer, at, effect={"valve": meter.valve})
            return answer
        return reply((DataItem(name="error", value=("illegal_function",)),), abnormal=True)

    def _log(self, frame_id: str, meter: SimMeter, command: str, data: bytes, at: datetime,
             *, reading: Decimal | None = None, effect: dict[str, Any] | None = None) -> None:
        sim = self.sim
        sim.log.frame(frame_id=frame_id, link=self.link.link_id,
                      service_point=self.link.service_point, sim_at=at,
                      readings=1 if reading is not None else 0, data=data)
        sim.log.answer(frame_id, command)
        if reading is not None:
            sim.log.write(ReadingRec(frame=frame_id, meter_id=meter.meter_id,
                                     register=meter.register_name, unit=meter.unit,
                                     value=str(reading), sim_at=at))
        sim.log.write(CommandRec(device_id=self.link.link_id, meter_id=meter.meter_id,
                                 command=command, ok=True, effect=effect or {}, sim_at=at,
                                 wall_at=datetime.now(UTC)))
        sim.stats["requests_answered"] += 1
