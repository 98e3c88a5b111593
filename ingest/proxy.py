"""The PROXY protocol (v1 and v2) header a TCP load balancer puts before a link's bytes.

Strategy: behind HAProxy, nginx-stream or a cloud load balancer every link comes from the
balancer's address; with ``send-proxy`` / ``send-proxy-v2`` the balancer first sends one
header naming the real client. A service point with ``proxy_protocol: true`` reads exactly
that header (and nothing more) before the session starts, so connection limits, the peer in
``frames.raw`` and the registry see the device's own address. A missing or malformed header
closes the connection: a point that expects it must not be reachable around the balancer.

v1: ``PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n`` (or ``PROXY UNKNOWN …``), at most 107
bytes. v2: a 12-byte signature, version/command, family, a 2-byte length, then the
addresses (IPv4: 4+4+2+2 bytes, IPv6: 16+16+2+2) and optional TLVs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct

from ingest.errors import SessionLimitError

__all__ = ["V2_SIGNATURE", "read_proxy_header"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_MAX = 107


async def read_proxy_header(reader: asyncio.StreamReader, *, wait_s: float = 5.0
                            ) -> tuple[str, int] | None:
    """The client's (address, port) from the PROXY header; None for ``UNKNOWN`` / LOCAL
    (health checks of the balancer itself). Raises :class:`SessionLimitError` if the
    connection does not start with a valid header."""
    try:
        head = await asyncio.wait_for(reader.readexactly(12), wait_s)
    except (asyncio.IncompleteReadError, TimeoutError) as exc:
        raise SessionLimitError("no PROXY protocol header",
                                hint="the balancer must send one (send-proxy / send-proxy-v2)"
                                ) from exc
    if head == V2_SIGNATURE:
        return await _v2(reader, wait_s)
    if head.startswith(b"PROXY "):
        return await _v1(reader, head, wait_s)
    raise SessionLimitError("the connection does not start with a PROXY protocol header",
                            where=head.hex(" "),
                            hint="connect through the load balancer, or turn proxy_protocol "
                                 "off for this service point")


async def _v1(reader: asyncio.StreamReader, head: bytes, wait_s: float
              ) -> tuple[str, int] | None:
    line = head
    while not line.endswith(b"\r\n"):
        if len(line) >= _V1_MAX:
            raise SessionLimitError("PROXY v1 header longer than 107 bytes")
        try:
            line += await asyncio.wait_for(reader.readexactly(1), wait_s)
        except (asyncio.IncompleteReadError, TimeoutError) as exc:
            raise SessionLimitError("incomplete PROXY v1 header") from exc
    parts = line[:-2].decode("ascii", errors="replace").split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return None
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise SessionLimitError(f"malformed PROXY v1 header {line[:-2]!r}")
    try:
        ipaddress.ip_address(parts[2])
        port = int(parts[4])
    except ValueError as exc:
        raise SessionLimitError(f"malformed PROXY v1 addresses {line[:-2]!r}") from exc
    return parts[2], port


async def _v2(reader: asyncio.StreamReader, wait_s: float) -> tuple[str, int] | None:
    try:
        fixed = await asyncio.wait_for(reader.readexactly(4), wait_s)
        version_command, family, length = struct.unpack(">BBH", fixed)
        body = await asyncio.wait_for(reader.readexactly(length), wait_s)
    except (asyncio.IncompleteReadError, TimeoutError) as exc:
        raise SessionLimitError("incomplete PROXY v2 header") from exc
    if version_command >> 4 != 2:
        raise SessionLimitError(f"PROXY v2 header with version {version_command >> 4}")
    if version_command & 0x0F == 0:  # LOCAL: the balancer's own health check
        return None
    if family >> 4 == 1 and len(body) >= 12:  # AF_INET
        return str(ipaddress.IPv4Address(body[0:4])), struct.unpack(">H", body[8:10])[0]
    if family >> 4 == 2 and len(body) >= 36:  # AF_INET6
        return str(ipaddress.IPv6Address(body[0:16])), struct.unpack(">H", body[32:34])[0]
    return None
