"""Test helpers: frames as devices send them, built with the protocol engine, and a raw
TCP device client."""

from __future__ import annotations

import asyncio
import socket
import zlib
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from decoders import DataItem, Frame, get_protocol

ZONE = ZoneInfo("Asia/Shanghai")


def registration(dtu_id: str) -> bytes:
    return bytes(get_protocol("dtu-text").encode(Frame(
        protocol="dtu-text", direction="report", function="registration", address=dtu_id)))


def frame_901f(address: str, value: str, at: datetime, *, valve: str = "open",
               meter_type: str = "gas", sequence: int = 0) -> bytes:
    """A CJ/T 188 901F data frame of a water/gas meter (as pushed through a DTU)."""
    return bytes(get_protocol("cjt188-2004").encode(Frame(
        protocol="cjt188-2004", direction="reply", function="read_data", address=address,
        identifier="901F", sequence=sequence, header={"meter_type": meter_type},
        items=(DataItem(name="current_volume", value=Decimal(value), unit="m3"),
               DataItem(name="settlement_volume", value=Decimal(value), unit="m3"),
               DataItem(name="meter_time",
                        value=at.astimezone(ZONE).replace(tzinfo=None, microsecond=0)),
               DataItem(name="valve_state", value=valve),
               DataItem(name="battery_low", value=False)))))


def ack_for(frame: bytes) -> bytes:
    return f"ACK:{zlib.crc32(frame):08X}\r\n".encode()


class RawDevice:
    """A TCP client that writes exactly the bytes it is told to and collects what comes back."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.received = bytearray()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self.eof = asyncio.Event()

    async def connect(self) -> RawDevice:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.reader is not None
        try:
            while data := await self.reader.read(65536):
                self.received += data
        except (ConnectionError, OSError):
            pass
        self.eof.set()

    async def send(self, data: bytes, *, chunk: int | None = None) -> None:
        assert self.writer is not None
        step = chunk or len(data) or 1
        for i in range(0, len(data), step):
            self.writer.write(data[i:i + step])
            await self.writer.drain()
            if chunk:
                await asyncio.sleep(0)

    async def wait_for(self, expected: bytes, wait_s: float = 10.0) -> bool:
        for _ in range(int(wait_s * 50)):
            if expected in self.received:
                return True
            if self.eof.is_set():
                return expected in self.received
            await asyncio.sleep(0.02)
        return False

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._task is not None:
            self._task.cancel()


def frame_645_energy(address: str, value: str) -> bytes:
    """A DL/T 645-2007 reply with the forward active energy (00010000): no time in it, so
    the FEP stamps its readings on reception."""
    return bytes(get_protocol("dlt645-2007").encode(Frame(
        protocol="dlt645-2007", direction="reply", function="read_data", address=address,
        identifier="00010000",
        items=(DataItem(name="forward_active_energy", value=Decimal(value), unit="kWh"),))))
