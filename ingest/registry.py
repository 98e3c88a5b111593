"""The session registry shared by all FEP instances, and the wake-queue of commands.

Strategy: every FEP writes where its devices are (``ops.device_sessions``: link or meter,
FEP, service point, peer, online, last heard) and keeps its own heartbeat in
``ops.fep_instances``; the control plane reads both to route ``CommandDispatch.fep``.
Session changes are buffered in memory and written in one batched upsert per
``registry_flush_s``: 10,000 meters reporting every minute cost a few statements a second.
An FEP only marks a device offline while the row is still its own, so a device that
reconnected through the load balancer to another FEP is not reported offline by the old one.

Commands whose device is not connected anywhere wait in ``ops.fep_pending_commands`` until the
device next connects to *any* FEP: that FEP claims them with one ``UPDATE … WHERE state =
'pending' RETURNING``, which PostgreSQL's row locks make exclusive, so exactly one FEP
delivers each. Commands claimed by an FEP that died (no heartbeat for ``instance_ttl_s``) go
back to pending. :class:`MemoryRegistry` implements the same contract in one process, for a
single-FEP deployment without a database and for tests.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from schemas.settings import DatabaseSettings

__all__ = ["MemoryRegistry", "PostgresRegistry", "SessionEntry", "SessionRegistry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionEntry:
    """Where one link or meter is held, as the registry stores it."""

    device_id: str
    kind: Literal["link", "meter"]
    service_point: str
    online: bool
    last_heard: datetime
    link_id: str | None = None
    address: str | None = None
    protocol: str = ""
    peer: str = ""
    connected_at: datetime | None = None
    disconnected_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PendingCommand:
    command_id: str
    device_id: str
    envelope: bytes
    expires_at: datetime


class SessionRegistry(abc.ABC):
    """Shared state of the FEP fleet: who holds which device; commands waiting for devices."""

    def __init__(self, fep: str, *, flush_s: float = 1.0, instance_ttl_s: float = 30.0) -> None:
        self.fep = fep
        self.flush_s = flush_s
        self.instance_ttl_s = instance_ttl_s
        self._dirty: dict[str, SessionEntry] = {}
        self._task: asyncio.Task[None] | None = None
        self.service_points: tuple[str, ...] = ()
        self.stats: dict[str, Any] = {}
        self.failures = 0

    async def start(self, service_points: Sequence[str]) -> None:
        self.service_points = tuple(service_points)
        await self._start()
        self._task = asyncio.create_task(self._flush_loop(), name="registry-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush()
            await self._stop()

    def record(self, entry: SessionEntry) -> None:
        """Buffer a session change; the latest state of a device wins."""
        previous = self._dirty.get(entry.device_id)
        if previous is not None and previous.online and not entry.online:
            entry = replace(entry, connected_at=entry.connected_at or previous.connected_at)
        self._dirty[entry.device_id] = entry

    async def flush(self) -> None:
        if not self._dirty:
            return
        entries, self._dirty = list(self._dirty.values()), {}
        try:
            await self._write(entries)
        except Exception:
            # keep them for the next try, unless newer states arrived meanwhile
            for entry in entries:
                self._dirty.setdefault(entry.device_id, entry)
            raise

    async def _flush_loop(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self.flush_s)
            ticks += 1
            try:
                await self.flush()
                if ticks % 5 == 0:
                    await self._heartbeat()
                    await self._release_dead()
            except Exception as exc:  # the registry is best effort: log, retry next tick
                self.failures += 1
                log.warning("session registry: %r", exc)

    # ------------------------------------------------------------------ abstract

    @abc.abstractmethod
    async def _start(self) -> None: ...

    @abc.abstractmethod
    async def _stop(self) -> None: ...

    @abc.abstractmethod
    async def _write(self, entries: list[SessionEntry]) -> None: ...

    @abc.abstractmethod
    async def _heartbeat(self) -> None: ...

    @abc.abstractmethod
    async def _release_dead(self) -> None: ...

    @abc.abstractmethod
    async def holder(self, device_id: str) -> str | None:
        """The FEP that holds ``device_id`` online now, if any."""

    @abc.abstractmethod
    async def sessions(self, *, online_only: bool = True) -> list[SessionEntry]:
        """Rows of the registry (all FEPs)."""

    @abc.abstractmethod
    async def park(self, command: PendingCommand) -> bool:
        """Queue a command for its device; False if it was queued already (by any FEP)."""

    @abc.abstractmethod
    async def claim_for(self, device_ids: Sequence[str]) -> list[PendingCommand]:
        """Claim the pending, unexpired commands of these devices for this FEP."""

    @abc.abstractmethod
    async def claim(self, command_id: str) -> PendingCommand | None:
        """Claim one pending command for this FEP (None if another FEP has it)."""

    @abc.abstractmethod
    async def finish(self, command_id: str, outcome: str) -> None:
        """A claimed command reached a final state at this FEP."""

    @abc.abstractmethod
    async def release(self, command_id: str) -> None:
        """Give a claimed command back (the device left before delivery)."""

    @abc.abstractmethod
    async def expire_due(self) -> list[PendingCommand]:
        """Mark pending commands past their expiry as expired; returns them (exactly once)."""

    @abc.abstractmethod
    async def audit_auto_registration(self, *, service_point: str, link_id: str, address: str,
                                      protocol: str, meter_id: str, peer: str) -> bool:
        """Record a device admitted without a ledger entry; False if recorded before."""


# --------------------------------------------------------------------------- memory


@dataclass
class _MemCommand:
    command: PendingCommand
    state: str = "pending"
    claimed_by: str | None = None
    outcome: str | None = None


@dataclass
class _MemShared:
    sessions: dict[str, tuple[str, SessionEntry]] = field(default_factory=dict)
    commands: dict[str, _MemCommand] = field(default_factory=dict)
    auto_registrations: dict[tuple[str, str, str], dict[str, str]] = field(
        default_factory=dict)


class MemoryRegistry(SessionRegistry):
    """The registry contract in memory (one process; several FEPs may share ``shared``)."""

    async def audit_auto_registration(self, *, service_point: str, link_id: str, address: str,
                                      protocol: str, meter_id: str, peer: str) -> bool:
        key = (service_point, link_id, address)
        if key in self.shared.auto_registrations:
            return False
        self.shared.auto_registrations[key] = {"protocol": protocol, "meter_id": meter_id,
                                               "fep": self.fep, "peer": peer}
        return True

    def __init__(self, fep: str, *, shared: _MemShared | None = None, **kw: Any) -> None:
        super().__init__(fep, **kw)
        self.shared = shared or _MemShared()

    async def _start(self) -> None:
        for device_id, (fep, entry) in list(self.shared.sessions.items()):
            if fep == self.fep and entry.online:
                self.shared.sessions[device_id] = (fep, replace(entry, online=False))

    async def _stop(self) -> None:
        return None

    async def _write(self, entries: list[SessionEntry]) -> None:
        for entry in entries:
            current = self.shared.sessions.get(entry.device_id)
            if current is not None and not entry.online and current[0] != self.fep:
                continue  # another FEP holds it now
            self.shared.sessions[entry.device_id] = (self.fep, entry)

    async def _heartbeat(self) -> None:
        return None

    async def _release_dead(self) -> None:
        return None

    async def holder(self, device_id: str) -> str | None:
        pending = self._dirty.get(device_id)
        if pending is not None:
            return self.fep if pending.online else None
        current = self.shared.sessions.get(device_id)
        return current[0] if current and current[1].online else None

    async def sessions(self, *, online_only: bool = True) -> list[SessionEntry]:
        await self.flush()
        return [e for _, e in self.shared.sessions.values() if e.online or not online_only]

    async def park(self, command: PendingCommand) -> bool:
        if command.command_id in self.shared.commands:
            return False
        self.shared.commands[command.command_id] = _MemCommand(command)
        return True

    async def claim_for(self, device_ids: Sequence[str]) -> list[PendingCommand]:
        now = datetime.now(UTC)
        wanted = set(device_ids)
        out = []
        for item in self.shared.commands.values():
            if (item.state == "pending" and item.command.device_id in wanted
                    and item.command.expires_at > now):
                item.state, item.claimed_by = "claimed", self.fep
                out.append(item.command)
        return sorted(out, key=lambda c: c.command_id)

    async def claim(self, command_id: str) -> PendingCommand | None:
        item = self.shared.commands.get(command_id)
        if item is None or item.state != "pending":
            return None
        item.state, item.claimed_by = "claimed", self.fep
        return item.command

    async def finish(self, command_id: str, outcome: str) -> None:
        item = self.shared.commands.get(command_id)
        if item is not None:
            item.state, item.outcome = "done", outcome

    async def release(self, command_id: str) -> None:
        item = self.shared.commands.get(command_id)
        if item is not None and item.state == "claimed" and item.claimed_by == self.fep:
            item.state, item.claimed_by = "pending", None

    async def expire_due(self) -> list[PendingCommand]:
        now = datetime.now(UTC)
        out = []
        for item in self.shared.commands.values():
            if item.state == "pending" and item.command.expires_at <= now:
                item.state, item.outcome = "expired", "expired"
                out.append(item.command)
        return out


# --------------------------------------------------------------------------- PostgreSQL

_UPSERT = """
INSERT INTO ops.device_sessions AS s
    (device_id, kind, link_id, address, protocol, service_point, fep, peer, online,
     connected_at, last_heard, disconnected_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (device_id) DO UPDATE SET
    kind = EXCLUDED.kind, link_id = EXCLUDED.link_id, address = EXCLUDED.address,
    protocol = EXCLUDED.protocol, service_point = EXCLUDED.service_point, fep = EXCLUDED.fep,
    peer = EXCLUDED.peer, online = EXCLUDED.online,
    connected_at = COALESCE(EXCLUDED.connected_at, s.connected_at),
    last_heard = GREATEST(s.last_heard, EXCLUDED.last_heard),
    disconnected_at = EXCLUDED.disconnected_at, updated_at = now()
WHERE EXCLUDED.online OR s.fep = EXCLUDED.fep
"""


class PostgresRegistry(SessionRegistry):
    """The registry in PostgreSQL (``ops`` schema), acting as the ingest role."""

    def __init__(self, fep: str, database: DatabaseSettings, *, advertise: str = "",
                 **kw: Any) -> None:
        super().__init__(fep, **kw)
        self.database = database
        self.advertise = advertise
        self._pool: Any = None
        self._started_at = datetime.now(UTC)

    async def _start(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        self._pool = AsyncConnectionPool(self.database.conninfo("ingest"), min_size=1,
                                         max_size=4, open=False, kwargs={"autocommit": True})
        await self._pool.open(wait=True, timeout=15)
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE ops.device_sessions SET online = false, disconnected_at = now(), "
                "updated_at = now() WHERE fep = %s AND online", (self.fep,))
            await conn.execute(
                "UPDATE ops.fep_pending_commands SET state = 'pending', claimed_by = NULL "
                "WHERE state = 'claimed' AND claimed_by = %s", (self.fep,))
        await self._heartbeat()

    async def _stop(self) -> None:
        if self._pool is not None:
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE ops.fep_pending_commands SET state = 'pending', claimed_by = NULL "
                    "WHERE state = 'claimed' AND claimed_by = %s", (self.fep,))
            await self._pool.close()

    async def _write(self, entries: list[SessionEntry]) -> None:
        rows = [(e.device_id, e.kind, e.link_id, e.address, e.protocol, e.service_point,
                 self.fep, e.peer, e.online, e.connected_at, e.last_heard, e.disconnected_at)
                for e in entries]
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(_UPSERT, rows)

    async def _heartbeat(self) -> None:
        import json

        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO ops.fep_instances (fep, service_points, advertise, started_at, "
                "last_seen, stats) VALUES (%s, %s, %s, %s, now(), %s) "
                "ON CONFLICT (fep) DO UPDATE SET service_points = EXCLUDED.service_points, "
                "advertise = EXCLUDED.advertise, started_at = EXCLUDED.started_at, "
                "last_seen = now(), stats = EXCLUDED.stats",
                (self.fep, list(self.service_points), self.advertise, self._started_at,
                 json.dumps(self.stats, default=str)))

    async def _release_dead(self) -> None:
        cutoff = datetime.now(UTC) - timedelta(seconds=self.instance_ttl_s)
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE ops.fep_pending_commands c SET state = 'pending', claimed_by = NULL "
                "FROM ops.fep_instances i WHERE c.state = 'claimed' AND i.fep = c.claimed_by "
                "AND i.last_seen < %s", (cutoff,))
            await conn.execute(
                "UPDATE ops.device_sessions s SET online = false, disconnected_at = now(), "
                "updated_at = now() FROM ops.fep_instances i WHERE s.online AND i.fep = s.fep "
                "AND i.last_seen < %s", (cutoff,))

    async def holder(self, device_id: str) -> str | None:
        pending = self._dirty.get(device_id)
        if pending is not None:
            return self.fep if pending.online else None
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT s.fep FROM ops.device_sessions s JOIN ops.fep_instances i USING (fep) "
                "WHERE s.device_id = %s AND s.online AND i.last_seen > %s",
                (device_id, datetime.now(UTC) - timedelta(seconds=self.instance_ttl_s)))
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def sessions(self, *, online_only: bool = True) -> list[SessionEntry]:
        await self.flush()
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT device_id, kind, service_point, online, last_heard, link_id, address, "
                "protocol, peer, connected_at, disconnected_at FROM ops.device_sessions"
                + (" WHERE online" if online_only else "") + " ORDER BY device_id")
            rows = await cur.fetchall()
        return [SessionEntry(device_id=r[0], kind=r[1], service_point=r[2], online=r[3],
                             last_heard=r[4], link_id=r[5], address=r[6], protocol=r[7],
                             peer=r[8], connected_at=r[9], disconnected_at=r[10]) for r in rows]

    async def park(self, command: PendingCommand) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO ops.fep_pending_commands (command_id, device_id, dispatch, "
                "expires_at) VALUES (%s, %s, %s, %s) ON CONFLICT (command_id) DO NOTHING",
                (command.command_id, command.device_id, command.envelope, command.expires_at))
            return bool(cur.rowcount == 1)

    @staticmethod
    def _pending(rows: list[Any]) -> list[PendingCommand]:
        return [PendingCommand(command_id=r[0], device_id=r[1], envelope=bytes(r[2]),
                               expires_at=r[3]) for r in rows]

    async def claim_for(self, device_ids: Sequence[str]) -> list[PendingCommand]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE ops.fep_pending_commands SET state = 'claimed', claimed_by = %s, "
                "claimed_at = now(), attempts = attempts + 1 WHERE device_id = ANY(%s) "
                "AND state = 'pending' AND expires_at > now() "
                "RETURNING command_id, device_id, dispatch, expires_at",
                (self.fep, list(device_ids)))
            rows = await cur.fetchall()
        return sorted(self._pending(rows), key=lambda c: c.command_id)

    async def claim(self, command_id: str) -> PendingCommand | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE ops.fep_pending_commands SET state = 'claimed', claimed_by = %s, "
                "claimed_at = now(), attempts = attempts + 1 WHERE command_id = %s "
                "AND state = 'pending' RETURNING command_id, device_id, dispatch, expires_at",
                (self.fep, command_id))
            rows = await cur.fetchall()
        found = self._pending(rows)
        return found[0] if found else None

    async def finish(self, command_id: str, outcome: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE ops.fep_pending_commands SET state = 'done', finished_at = now(), "
                "outcome = %s WHERE command_id = %s", (outcome, command_id))

    async def release(self, command_id: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE ops.fep_pending_commands SET state = 'pending', claimed_by = NULL "
                "WHERE command_id = %s AND state = 'claimed' AND claimed_by = %s",
                (command_id, self.fep))

    async def audit_auto_registration(self, *, service_point: str, link_id: str, address: str,
                                      protocol: str, meter_id: str, peer: str) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO ops.fep_auto_registrations (service_point, link_id, address, "
                "protocol, meter_id, fep, peer) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (service_point, link_id, address, protocol, meter_id, self.fep, peer))
            return bool(cur.rowcount == 1)

    async def expire_due(self) -> list[PendingCommand]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE ops.fep_pending_commands SET state = 'expired', finished_at = now(), "
                "outcome = 'expired' WHERE state = 'pending' AND expires_at <= now() "
                "RETURNING command_id, device_id, dispatch, expires_at")
            rows = await cur.fetchall()
        return self._pending(rows)
