"""The shared session registry and command wake-queue: PostgreSQL and in-memory alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingest.registry import (
    MemoryRegistry,
    PendingCommand,
    PostgresRegistry,
    SessionEntry,
    SessionRegistry,
)

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


@pytest.fixture(params=["postgres", "memory"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SessionRegistry, ...]]:
    """Two FEP instances sharing one registry."""
    if request.param == "postgres":
        db = request.getfixturevalue("database")
        a: SessionRegistry = PostgresRegistry("fep-a", db.settings, flush_s=0.05)
        b: SessionRegistry = PostgresRegistry("fep-b", db.settings, flush_s=0.05)
    else:
        a = MemoryRegistry("fep-a", flush_s=0.05)
        b = MemoryRegistry("fep-b", shared=a.shared, flush_s=0.05)  # type: ignore[attr-defined]
    await a.start(["sp"])
    await b.start(["sp"])
    yield a, b
    await a.stop()
    await b.stop()


def _entry(device: str, online: bool, **kw: Any) -> SessionEntry:
    return SessionEntry(device_id=device, kind="link", service_point="sp", online=online,
                        last_heard=NOW, peer="10.0.0.1:4000", **kw)


def _cmd(cid: str, device: str, ttl: float = 3600) -> PendingCommand:
    return PendingCommand(command_id=cid, device_id=device, envelope=b"{...}" + cid.encode(),
                          expires_at=datetime.now(UTC) + timedelta(seconds=ttl))


async def test_old_fep_does_not_mark_a_moved_device_offline(pair: tuple[Any, ...]) -> None:
    a, b = pair
    a.record(_entry("DTU1", True, connected_at=NOW))
    await a.flush()
    assert await b.holder("DTU1") == "fep-a"
    b.record(_entry("DTU1", True, connected_at=NOW))  # reconnected through the balancer
    await b.flush()
    a.record(_entry("DTU1", False, disconnected_at=NOW))  # a's old session times out later
    await a.flush()
    assert await a.holder("DTU1") == "fep-b"
    rows = {e.device_id: e for e in await a.sessions()}
    assert rows["DTU1"].online


async def test_exactly_one_fep_claims_a_pending_command(pair: tuple[Any, ...]) -> None:
    a, b = pair
    assert await a.park(_cmd("c1", "M1"))
    assert not await b.park(_cmd("c1", "M1"))  # both FEPs saw the dispatch: queued once
    await a.park(_cmd("c2", "M1"))
    await a.park(_cmd("c3", "M2"))
    got_a, got_b = await asyncio.gather(a.claim_for(["M1"]), b.claim_for(["M1"]))
    ids = sorted(c.command_id for c in got_a + got_b)
    assert ids == ["c1", "c2"]
    assert await b.claim("c1") is None
    # released by a (device left before delivery) → b can claim it
    await a.release(got_a[0].command_id) if got_a else await b.release(got_b[0].command_id)
    again = await b.claim_for(["M1"])
    assert len(again) == 1


async def test_expiry_is_reported_once(pair: tuple[Any, ...]) -> None:
    a, b = pair
    await a.park(_cmd("old", "M9", ttl=-1))
    await a.park(_cmd("new", "M9"))
    first, second = await asyncio.gather(a.expire_due(), b.expire_due())
    assert [c.command_id for c in first + second] == ["old"]
    assert [c.command_id for c in await b.claim_for(["M9"])] == ["new"]


async def test_dead_fep_releases_claims_and_sessions(database: Any) -> None:
    import psycopg

    a = PostgresRegistry("fep-a", database.settings, flush_s=0.05, instance_ttl_s=1)
    b = PostgresRegistry("fep-b", database.settings, flush_s=0.05, instance_ttl_s=1)
    await a.start(["sp"])
    await b.start(["sp"])
    try:
        a.record(_entry("DTU7", True))
        await a.flush()
        await a.park(_cmd("c7", "DTU7"))
        assert await a.claim_for(["DTU7"])
        with psycopg.connect(database.settings.url, autocommit=True) as conn:
            conn.execute("UPDATE ops.fep_instances SET last_seen = now() - interval '1 hour' "
                         "WHERE fep = 'fep-a'")
        await b._release_dead()
        assert await b.holder("DTU7") is None
        assert [c.command_id for c in await b.claim_for(["DTU7"])] == ["c7"]
    finally:
        await a.stop()
        await b.stop()
