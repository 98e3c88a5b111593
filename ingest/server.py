"""The TCP listener of one service point: accepts links and enforces connection limits.

Strategy: one ``asyncio`` server per TCP service point. Each accepted connection becomes a
:class:`~ingest.session.LinkSession`; the server counts open connections per source IP and in
total, and refuses (closes at once, counts, alerts) a connection beyond
``max_connections_per_source`` or ``max_connections`` — a misbehaving site cannot exhaust the
FEP. Behind a TCP load balancer that does not preserve client addresses every link comes
from the balancer's IP: raise ``max_connections_per_source`` there, or enable the PROXY
protocol on the balancer's side and terminate it before the FEP (see README).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from typing import TYPE_CHECKING

from ingest.errors import SessionLimitError
from ingest.events import new_session_id
from ingest.proxy import read_proxy_header
from ingest.session import LinkSession

if TYPE_CHECKING:
    from ingest.fep import FepRuntime
    from ingest.settings import ServicePointSettings
    from ingest.stack import LinkStack

__all__ = ["ServicePointServer"]

log = logging.getLogger(__name__)


class ServicePointServer:
    def __init__(self, runtime: FepRuntime, name: str, point: ServicePointSettings,
                 stack: LinkStack) -> None:
        self.runtime = runtime
        self.name = name
        self.point = point
        self.stack = stack
        self.sessions: set[LinkSession] = set()
        self.per_source: collections.Counter[str] = collections.Counter()
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.point.host, self.point.port, reuse_address=True,
            backlog=1024, limit=self.point.max_frame_bytes * 4)
        log.info("service point %s listening on %s:%d (%s, %s)", self.name, self.point.host,
                 self.port, self.point.protocol, self.point.link)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.close("FEP shutting down")
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peername = writer.get_extra_info("peername") or ("?", 0)
        try:
            if self.point.proxy_protocol:
                try:
                    real = await read_proxy_header(reader)
                except SessionLimitError as exc:
                    self.runtime.stats["proxy_header_refused"] += 1
                    log.warning("%s: connection from %s refused: %s", self.name, peername, exc)
                    writer.close()
                    return
                if real is None:  # the balancer's own health check
                    writer.close()
                    return
                peername = real
            source = str(peername[0])
            peer = f"{peername[0]}:{peername[1]}"
            if (self.per_source[source] >= self.point.max_connections_per_source
                    or len(self.sessions) >= self.point.max_connections):
                await self._refuse(writer, source, peer)
                return
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self.per_source[source] += 1
            session = LinkSession(self.runtime, self.name, self.point, self.stack, reader,
                                  writer, peer, new_session_id())
            self.sessions.add(session)
            self.runtime.stats["connections"] += 1
            try:
                await session.run()
            except Exception:
                log.exception("session %s from %s failed", session.session_id, peer)
            finally:
                self.sessions.discard(session)
                self.per_source[source] -= 1
                if not self.per_source[source]:
                    del self.per_source[source]
                await self.runtime.session_ended(session)
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _refuse(self, writer: asyncio.StreamWriter, source: str, peer: str) -> None:
        self.refused += 1
        self.runtime.stats["connections_refused"] += 1
        limit = ("max_connections_per_source"
                 if self.per_source[source] >= self.point.max_connections_per_source
                 else "max_connections")
        alert = self.runtime.messages.alert(
            code="connection_limit", object_type="source", object_id=source,
            severity="warning", reason=f"connection from {peer} refused at {self.name}: "
                                       f"{limit} reached",
            attributes={"service_point": self.name, "limit": limit})
        if alert is not None:
            self.runtime.publish_soon([alert])
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)
