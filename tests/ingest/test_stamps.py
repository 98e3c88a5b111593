"""Reception stamps: readings without time of one meter never share a key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest.ledger import LedgerView
from ingest.protocols import RECEPTION_TIME_TAG
from ingest.stamps import ReceptionStamps
from schemas.messages import LedgerMeter, Reading
from schemas.settings import KafkaSettings
from tests.ingest._devices import RawDevice, ack_for, frame_645_energy, registration
from tests.ingest._fep import dtu_point, running_fep
from tests.ingest._kafka import consume_messages

T = datetime(2026, 3, 1, 8, 0, 0, 250_000, tzinfo=UTC)


def test_whole_seconds_distinct_per_meter_and_register() -> None:
    stamps = ReceptionStamps()
    first = stamps.stamp("E-1", "energy_import", T)
    assert first == T.replace(microsecond=0)
    # received within the same second: the next free second, in arrival order
    assert stamps.stamp("E-1", "energy_import", T + timedelta(microseconds=1)) == \
        first + timedelta(seconds=1)
    assert stamps.stamp("E-1", "energy_import", T + timedelta(milliseconds=500)) == \
        first + timedelta(seconds=2)
    # another register or meter has its own seconds
    assert stamps.stamp("E-1", "energy_export", T) == first
    assert stamps.stamp("E-2", "energy_import", T) == first
    # once the clock has passed the used seconds, stamps are the reception second again
    assert stamps.stamp("E-1", "energy_import", T + timedelta(seconds=5)) == \
        first + timedelta(seconds=5)


def test_pruning_keeps_what_can_still_collide() -> None:
    stamps = ReceptionStamps(prune_above=10)
    for n in range(30):
        stamps.stamp(f"E-{n}", "energy_import", T - timedelta(seconds=60))
    stamps.stamp("E-0", "energy_import", T)
    stamps.stamp("E-0", "energy_import", T)  # bumped to T+1 s
    for n in range(30):
        stamps.stamp(f"F-{n}", "energy_import", T)
    assert len(stamps) <= 40
    assert stamps.stamp("E-0", "energy_import", T) == T.replace(microsecond=0) + \
        timedelta(seconds=2)


@pytest.mark.integration
async def test_readings_without_time_received_together_keep_their_own_keys(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    """Regression: DL/T 645 energy reads of one meter arriving within one second (a DTU
    sending a backlog) were stamped with their reception instant, which the platform keys
    to the whole second (VEE points, ``readings.validated``): they collapsed into one key,
    and the later value was taken for a revision of the earlier one."""
    view = LedgerView()
    view.load([LedgerMeter(meter_id="ELC-1", status="active", medium="electricity",
                           updated_at=T, address="000000000001", protocol="dlt645-2007",
                           link_id="DTU-645", service_point="dtu645", unit="kWh")])
    values = ["100.01", "100.02", "100.03", "100.04"]
    frames = [frame_645_energy("000000000001", v) for v in values]
    async with running_fep(kafka_settings, tmp_path,
                           {"dtu645": dtu_point(protocol="dlt645-2007")}, ledger=view) as fep:
        device = await RawDevice("127.0.0.1", fep.servers["dtu645"].port).connect()
        await device.send(registration("DTU-645") + b"".join(frames))  # one write
        for frame in frames:
            assert await device.wait_for(ack_for(frame)), "every frame acknowledged"
        await device.close()
    readings = [m for m in await consume_messages(
        kafka_settings, "readings.raw",
        until=lambda ms: len([r for r in ms if getattr(r, "fep", "") == fep.instance]) >= 4)
        if isinstance(m, Reading) and m.fep == fep.instance]
    assert sorted(str(r.value) for r in readings) == values
    assert all(RECEPTION_TIME_TAG in r.status for r in readings)
    # four keys at the platform's resolution (whole seconds), in arrival order
    seconds = [int(r.ts.timestamp()) for r in sorted(readings, key=lambda r: r.value)]
    assert len(set(seconds)) == 4, seconds
    assert seconds == sorted(seconds)
    assert all(r.ts.microsecond == 0 for r in readings)  # raw key == validated key
    assert all(r.received_at <= r.ts + timedelta(seconds=4) for r in readings)
