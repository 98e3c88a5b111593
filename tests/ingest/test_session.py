"""Link sessions over real sockets: slicing, garbage, budgets, limits, admission."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest.ledger import LedgerView
from schemas.messages import Alert, DeadLetter, LedgerMeter, RawFrame, Reading
from schemas.settings import KafkaSettings
from tests.ingest._devices import RawDevice, ack_for, frame_901f, registration
from tests.ingest._fep import dtu_point, running_fep
from tests.ingest._kafka import consume_messages

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _ledger(*meters: tuple[str, str, str]) -> LedgerView:
    view = LedgerView()
    view.load(LedgerMeter(meter_id=m, status="active", medium="gas", updated_at=T0, address=a,
                          protocol="cjt188-2004", link_id=link, service_point="dtu")
              for m, a, link in meters)
    return view


async def test_byte_sliced_and_garbage_laden_stream(kafka_settings: KafkaSettings,
                                                    tmp_path: Path) -> None:
    ledger = _ledger(("M-1", "00000000000101", "DTU-A"))
    async with running_fep(kafka_settings, tmp_path, {"dtu": dtu_point()}, ledger=ledger) as fep:
        device = await RawDevice("127.0.0.1", fep.servers["dtu"].port).connect()
        frames = [frame_901f("00000000000101", f"{100 + i}.25", T0 + timedelta(hours=i))
                  for i in range(5)]
        stream = registration("DTU-A")
        for i, frame in enumerate(frames):
            stream += os.urandom(7) if i % 2 else b"\x00\xff\x68\x16"  # junk, a false start
            stream += frame
        await device.send(stream, chunk=1)  # one byte per write
        for frame in frames:
            assert await device.wait_for(ack_for(frame)), "every frame acknowledged"
        session = next(iter(fep.servers["dtu"].sessions))
        assert session.link_id == "DTU-A"
        assert session.stats.malformed >= 1  # the junk was seen and counted …
        assert not session.closed.is_set()  # … within the budget
        await device.close()
    readings = [m for m in await consume_messages(
        kafka_settings, "readings.raw",
        until=lambda ms: len([r for r in ms if getattr(r, "fep", "") == fep.instance]) >= 10)
        if isinstance(m, Reading) and m.fep == fep.instance]
    assert sorted(str(r.value) for r in readings if r.register == "volume") == \
        [f"{100 + i}.25" for i in range(5)]
    assert {r.ts for r in readings} == {T0 + timedelta(hours=i) for i in range(5)}
    dlq = [m for m in await consume_messages(kafka_settings, "dlq.ingest", count=1)
           if isinstance(m, DeadLetter) and m.reason.get("frame_id", "").startswith(fep.instance)]
    assert dlq, "garbage is kept in the dead-letter topic with the reason"
    assert all(d.reason.get("service_point") == "dtu" for d in dlq)


async def test_malformed_flood_is_cut_off_and_does_not_starve_good_links(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    ledger = _ledger(("M-2", "00000000000202", "DTU-GOOD"), ("M-F", "00000000000203", "DTU-FLOOD"))
    point = dtu_point(malformed_budget=5, malformed_window_s=60)
    async with running_fep(kafka_settings, tmp_path, {"dtu": point}, ledger=ledger) as fep:
        port = fep.servers["dtu"].port
        stop = asyncio.Event()
        floods = 0

        async def flood() -> None:
            nonlocal floods
            while not stop.is_set():
                bad = await RawDevice("127.0.0.1", port).connect()
                await bad.send(registration("DTU-FLOOD"))
                try:
                    while not bad.eof.is_set() and not stop.is_set():
                        await bad.send(os.urandom(8192))
                except (ConnectionError, OSError):
                    pass
                floods += 1
                await bad.close()

        flooder = asyncio.create_task(flood())
        good = await RawDevice("127.0.0.1", port).connect()
        await good.send(registration("DTU-GOOD"))
        for i in range(20):
            frame = frame_901f("00000000000202", f"{i}.00", T0 + timedelta(minutes=i))
            await good.send(frame)
            assert await good.wait_for(ack_for(frame), wait_s=10)
        stop.set()
        await flooder
        assert floods >= 1
        assert fep.stats["closed_malformed"] >= 1  # the flooder was cut off by its budget
        assert not good.eof.is_set()  # the good DTU stayed connected throughout
        await good.close()


async def test_admission_rejects_unknown_meters_and_links(kafka_settings: KafkaSettings,
                                                          tmp_path: Path) -> None:
    ledger = _ledger(("M-3", "00000000000303", "DTU-ADM"), ("M-4", "00000000000404", "DTU-OTHER"))
    async with running_fep(kafka_settings, tmp_path, {"dtu": dtu_point()}, ledger=ledger) as fep:
        port = fep.servers["dtu"].port
        dtu = await RawDevice("127.0.0.1", port).connect()
        known = frame_901f("00000000000303", "1.00", T0)
        stranger = frame_901f("00000000009999", "2.00", T0)
        elsewhere = frame_901f("00000000000404", "3.00", T0)  # assigned to another DTU
        await dtu.send(registration("DTU-ADM") + known + stranger + elsewhere)
        for frame in (known, stranger, elsewhere):  # data kept in frames.raw: acknowledged
            assert await dtu.wait_for(ack_for(frame))
        rogue = await RawDevice("127.0.0.1", port).connect()
        await rogue.send(registration("DTU-ROGUE"))
        await asyncio.wait_for(rogue.eof.wait(), 10)  # unknown link: closed
        await dtu.close()
        counts = dict(fep.admissions["dtu"].rejected)
    assert counts.get("unknown_address", 0) >= 1
    assert counts.get("wrong_link", 0) >= 1
    assert counts.get("unknown_link", 0) >= 1
    readings = [m for m in await consume_messages(
        kafka_settings, "readings.raw",
        until=lambda ms: any(getattr(r, "meter_id", "") == "M-3" and r.fep == fep.instance
                             for r in ms)) if isinstance(m, Reading) and m.fep == fep.instance]
    assert {r.meter_id for r in readings} == {"M-3"}
    alerts = [m for m in await consume_messages(
        kafka_settings, "alerts",
        until=lambda ms: len([a for a in ms if getattr(a, "source", "") == fep.instance]) >= 3,
        wait_s=15)
        if isinstance(m, Alert) and m.source == fep.instance]
    assert {a.code for a in alerts} >= {"admission_rejected", "link_rejected"}


async def test_connection_limits_and_identification_deadline(kafka_settings: KafkaSettings,
                                                             tmp_path: Path) -> None:
    point = dtu_point(max_connections_per_source=2, identify_timeout_s=0.5, admission="auto")
    async with running_fep(kafka_settings, tmp_path, {"dtu": point}) as fep:
        port = fep.servers["dtu"].port
        first = await RawDevice("127.0.0.1", port).connect()
        second = await RawDevice("127.0.0.1", port).connect()
        await first.send(registration("DTU-L1"))
        await second.send(registration("DTU-L2"))
        await asyncio.sleep(0.2)
        third = await RawDevice("127.0.0.1", port).connect()
        await asyncio.wait_for(third.eof.wait(), 5)  # refused: third from the same source
        assert fep.servers["dtu"].refused == 1
        await second.close()
        await asyncio.sleep(0.2)
        silent = await RawDevice("127.0.0.1", port).connect()
        await asyncio.wait_for(silent.eof.wait(), 5)  # never identified: closed at 0.5 s
        assert fep.stats["closed: not identified in time"] == 1
        assert not first.eof.is_set()
        await first.close()


async def test_pipelined_frames_are_acknowledged_in_order_each_recorded(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    """Frames sent back to back become durable together; their acknowledgements may leave in
    one write, but each in frame order and each with its own ``frames.raw`` record."""
    ledger = _ledger(("M-1", "00000000000101", "DTU-P"))
    async with running_fep(kafka_settings, tmp_path, {"dtu": dtu_point()}, ledger=ledger) as fep:
        device = await RawDevice("127.0.0.1", fep.servers["dtu"].port).connect()
        frames = [frame_901f("00000000000101", f"{200 + i}.50", T0 + timedelta(minutes=i))
                  for i in range(30)]
        await device.send(registration("DTU-P") + b"".join(frames))  # one write, 30 frames
        assert await device.wait_for(ack_for(frames[-1])), "the last frame acknowledged"
        received = bytes(device.received)
        positions = [received.find(ack_for(frame)) for frame in frames]
        assert all(p >= 0 for p in positions), "every frame acknowledged"
        assert positions == sorted(positions), "acknowledgements in frame order"
        session = next(iter(fep.servers["dtu"].sessions))
        assert session.stats.acks == len(frames)
        await device.close()
    acks_out = [m for m in await consume_messages(
        kafka_settings, "frames.raw",
        until=lambda ms: len([f for f in ms if isinstance(f, RawFrame) and f.fep == fep.instance
                              and f.direction == "out" and f.data.startswith(b"ACK:")])
        >= len(frames))
        if isinstance(m, RawFrame) and m.fep == fep.instance and m.direction == "out"
        and m.data.startswith(b"ACK:")]
    assert sorted(bytes(m.data) for m in acks_out) == sorted(ack_for(f) for f in frames)


async def test_idle_links_close_but_not_while_we_hold_them_back(kafka_settings: KafkaSettings,
                                                                 tmp_path: Path) -> None:
    """The idle deadline counts from the link's last read; a link whose reading is paused by
    the FEP (its acknowledgement window full while Kafka is behind) is not idle."""
    point = dtu_point(idle_timeout_s=0.5, admission="auto")
    async with running_fep(kafka_settings, tmp_path, {"dtu": point}) as fep:
        port = fep.servers["dtu"].port
        held = await RawDevice("127.0.0.1", port).connect()
        idle = await RawDevice("127.0.0.1", port).connect()
        await held.send(registration("DTU-H1"))
        await idle.send(registration("DTU-I1"))
        for _ in range(50):
            await asyncio.sleep(0.05)
            if len(fep.links) == 2:
                break
        session = fep.links["DTU-H1"]
        session._held = True  # as while its 512 units wait for Kafka
        await asyncio.wait_for(idle.eof.wait(), 5)  # silent for 0.5 s: closed
        await asyncio.sleep(1.2)
        assert not session.closed.is_set()
        session._held = False
        await asyncio.wait_for(held.eof.wait(), 5)
        assert session.close_reason == "idle timeout"
        assert fep.stats["closed: idle timeout"] == 2
