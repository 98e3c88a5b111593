"""The FEP's reception clock: real by default, a simulation's time line when given one."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest.clock import ReceptionClock
from ingest.ledger import LedgerView
from ingest.protocols import RECEPTION_TIME_TAG
from schemas.messages import DeviceEvent, LedgerMeter, RawFrame, Reading
from schemas.settings import KafkaSettings
from schemas.timeline import TimeLine
from simulator.clock import write_timeline
from tests.ingest._devices import RawDevice, ack_for, frame_645_energy, registration
from tests.ingest._fep import dtu_point, running_fep
from tests.ingest._kafka import consume_messages

SIM = datetime(2026, 3, 1, tzinfo=UTC)


def _near(a: datetime, b: datetime, seconds: float) -> bool:
    return abs((a - b).total_seconds()) <= seconds


def test_without_a_file_it_is_the_real_clock(tmp_path: Path) -> None:
    for clock in (ReceptionClock(None), ReceptionClock(tmp_path / "absent.json")):
        clock.check()
        assert not clock.simulated
        assert _near(clock.now(), datetime.now(UTC), 1)


def test_follows_the_file_picks_up_changes_and_returns_to_real_time(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    clock = ReceptionClock(path)
    write_timeline(path, TimeLine(anchor=time.time(), start=SIM, speed=60))
    clock.check()
    assert clock.simulated
    assert _near(clock.now(), SIM, 5)  # within a few seconds of its start (60x)
    # a new run writes a new line
    write_timeline(path, TimeLine(anchor=time.time() - 1, start=SIM + timedelta(days=9),
                                  speed=3600))
    clock.check()
    assert _near(clock.now(), SIM + timedelta(days=9, hours=1), 120)
    path.unlink()
    clock.check()
    assert not clock.simulated
    assert _near(clock.now(), datetime.now(UTC), 1)


def test_a_bad_file_is_reported_once_and_changes_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "clock.json"
    path.write_text('{"anchor_unix_s": 1, "speed": 2}', encoding="utf-8")
    clock = ReceptionClock(path)
    with caplog.at_level(logging.ERROR, logger="ingest.clock"):
        clock.check()
        clock.check()
    assert not clock.simulated
    assert _near(clock.now(), datetime.now(UTC), 1)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # not once per check
    assert "missing start" in errors[0]
    assert str(path) in errors[0]
    # a good line replaces it; a later broken write keeps the line in force
    write_timeline(path, TimeLine(anchor=time.time(), start=SIM, speed=60))
    clock.check()
    assert clock.simulated
    assert clock.error is None
    path.write_text("{", encoding="utf-8")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    clock.check()
    assert clock.simulated
    assert clock.error is not None
    assert _near(clock.now(), SIM, 5)


@pytest.mark.integration
async def test_fep_stamps_reception_in_simulated_time(kafka_settings: KafkaSettings,
                                                      tmp_path: Path) -> None:
    """A DL/T 645 energy frame carries no time: with the demo's time line the FEP stamps it
    on the simulated day the meter lives in (not the real minute of the run); frames and
    device events follow the same clock."""
    clock_file = tmp_path / "clock.json"
    write_timeline(clock_file, TimeLine(anchor=time.time(), start=SIM, speed=60))
    view = LedgerView()
    view.load([LedgerMeter(meter_id="ELC-SIM", status="active", medium="electricity",
                           updated_at=SIM, address="000000000042", protocol="dlt645-2007",
                           link_id="DTU-SIM", service_point="dtu645", unit="kWh")])
    frame = frame_645_energy("000000000042", "321.09")
    async with running_fep(kafka_settings, tmp_path,
                           {"dtu645": dtu_point(protocol="dlt645-2007")}, ledger=view,
                           clock_file=clock_file) as fep:
        assert fep.clock.simulated
        device = await RawDevice("127.0.0.1", fep.servers["dtu645"].port).connect()
        await device.send(registration("DTU-SIM") + frame)
        assert await device.wait_for(ack_for(frame))
        await device.close()
    real_now = datetime.now(UTC)
    mine = [m for m in await consume_messages(
        kafka_settings, "readings.raw",
        until=lambda ms: any(getattr(r, "fep", "") == fep.instance for r in ms))
        if isinstance(m, Reading) and m.fep == fep.instance]
    assert len(mine) == 1
    reading = mine[0]
    assert RECEPTION_TIME_TAG in reading.status
    # 60x: the test's few real seconds are minutes of simulated time after SIM
    assert SIM <= reading.received_at < SIM + timedelta(hours=2), reading.received_at
    assert reading.ts == reading.received_at.replace(microsecond=0)
    assert not _near(reading.ts, real_now, 86_400)
    frames = [m for m in await consume_messages(
        kafka_settings, "frames.raw",
        until=lambda ms: sum(getattr(f, "fep", "") == fep.instance for f in ms) >= 3)
        if isinstance(m, RawFrame) and m.fep == fep.instance]
    assert {f.direction for f in frames} == {"in", "out"}
    assert all(SIM <= f.received_at < SIM + timedelta(hours=2) for f in frames)
    events = [m for m in await consume_messages(
        kafka_settings, "device.events",
        until=lambda ms: any(getattr(e, "device_id", "") == "DTU-SIM" for e in ms))
        if isinstance(m, DeviceEvent) and m.device_id == "DTU-SIM"]
    assert any(e.kind == "online" for e in events)
    assert all(SIM <= e.ts < SIM + timedelta(hours=2) for e in events)
