"""PROXY protocol v1/v2 headers from a TCP load balancer."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from pathlib import Path

import pytest

from ingest.errors import SessionLimitError
from ingest.proxy import V2_SIGNATURE, read_proxy_header
from schemas.settings import KafkaSettings
from tests.ingest._devices import RawDevice, registration
from tests.ingest._fep import dtu_point, running_fep


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def _v2(src: str, port: int, command: int = 1) -> bytes:
    body = (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address("10.0.0.1").packed
            + struct.pack(">HH", port, 9110))
    return V2_SIGNATURE + bytes([0x20 | command, 0x11]) + struct.pack(">H", len(body)) + body


async def test_v1_and_v2_headers_name_the_client_and_leave_the_payload() -> None:
    reader = _reader(b"PROXY TCP4 192.0.2.7 10.0.0.1 40001 9110\r\nREG:X\r\n")
    assert await read_proxy_header(reader) == ("192.0.2.7", 40001)
    assert await reader.read() == b"REG:X\r\n"
    reader = _reader(_v2("198.51.100.9", 50123) + b"HB")
    assert await read_proxy_header(reader) == ("198.51.100.9", 50123)
    assert await reader.read() == b"HB"
    assert await read_proxy_header(_reader(_v2("1.2.3.4", 1, command=0))) is None  # LOCAL
    assert await read_proxy_header(_reader(b"PROXY UNKNOWN\r\n")) is None


@pytest.mark.parametrize("data", [b"REG:DTU1\r\nHB", b"PROXY TCP4 nonsense\r\n",
                                  b"PROXY TCP4 " + b"9" * 200, V2_SIGNATURE + b"\x10\x11\x00"])
async def test_bad_headers_are_refused(data: bytes) -> None:
    with pytest.raises(SessionLimitError):
        await read_proxy_header(_reader(data), wait_s=0.5)


@pytest.mark.integration
async def test_a_link_behind_the_balancer_carries_its_own_address(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    point = dtu_point(proxy_protocol=True, admission="auto")
    async with running_fep(kafka_settings, tmp_path, {"dtu": point}) as fep:
        port = fep.servers["dtu"].port
        device = await RawDevice("127.0.0.1", port).connect()
        await device.send(_v2("203.0.113.5", 41000) + registration("DTU-LB"))
        for _ in range(50):
            if fep.servers["dtu"].sessions:
                break
            await asyncio.sleep(0.05)
        session = next(iter(fep.servers["dtu"].sessions))
        assert session.peer == "203.0.113.5:41000"
        bypass = await RawDevice("127.0.0.1", port).connect()
        await bypass.send(registration("DTU-SNEAK"))
        await asyncio.wait_for(bypass.eof.wait(), 10)  # around the balancer: refused
        assert fep.stats["proxy_header_refused"] == 1
        await device.close()
