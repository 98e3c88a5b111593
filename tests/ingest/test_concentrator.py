"""Q/GDW 376.1 concentrators: login and heartbeat confirmed, meters read and commanded
through AFN 10 forwarding (real sockets, real broker)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ingest.settings import PollPlanSettings
from schemas.messages import CommandDispatch, Reading
from schemas.settings import KafkaSettings
from simulator.log import read_log
from tests.ingest._fep import (
    concentrator_point,
    ledger_of,
    running_fep,
    simulator_for,
    small_fleet,
)
from tests.ingest._kafka import consume_messages

pytestmark = pytest.mark.integration


async def test_concentrator_meters_are_read_and_tripped_through_afn10(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    from simulator.runner import Simulator, SimulatorSettings

    spec = small_fleet(electricity_meters=6, meters_per_concentrator=3)
    probe = Simulator(SimulatorSettings(), spec=spec, log_path=None)
    plans = {"read-645": PollPlanSettings(service_point="con", interval_s=3600, jitter_s=0,
                                          timeout_s=3)}
    async with running_fep(kafka_settings, tmp_path, {"con": concentrator_point()},
                           ledger=ledger_of(probe), poll_plans=plans) as fep:
        sim = simulator_for(fep, spec, tmp_path, speed=60, heartbeat_s=0.5)
        await sim.start(kinds=("concentrator",))
        await sim.wait_connected(10)  # each login was confirmed (AFN 00 F1)
        assert set(fep.links) == {"32010001", "32010002"}
        stats = await fep.pollers[0].run_plan("read-645")
        assert (stats.requests, stats.successes, stats.failures) == (6, 6, 0)

        meter = sim.fleet.meters["ELE-000002"]
        command = CommandDispatch(command_id=uuid.uuid4().hex, device_id=meter.meter_id,
                                  command="relay_trip", protocol=meter.protocol,
                                  address=meter.address, dispatched_at=datetime.now(UTC),
                                  reply_timeout_s=3)
        await fep.commands.handle(command)
        for _ in range(100):
            if fep.commands.stats.confirmed:
                break
            await asyncio.sleep(0.05)
        assert meter.valve == "closed"  # the supply really tripped
        await asyncio.sleep(1.2)  # a couple of heartbeats
        links = list(sim.links.values())
        await sim.stop()
    assert fep.commands.stats.by_status == {"sent": 1, "confirmed": 1}
    assert all(link.confirmed >= 2 for link in links)  # login + heartbeats answered
    log = read_log(tmp_path / "sim.jsonl")
    assert sorted(c.command for c in log.commands) == ["read_now"] * 6 + ["relay"]

    def mine(ms: list[Any]) -> list[Reading]:
        return [m for m in ms if isinstance(m, Reading) and m.fep == fep.instance]

    readings = mine(await consume_messages(kafka_settings, "readings.raw",
                                           until=lambda ms: len(mine(ms)) >= 6))
    assert {r.meter_id for r in readings} == set(probe.fleet.meters)
    assert {(r.register, r.unit, r.source, r.protocol) for r in readings} == \
        {("energy_import", "kWh", "poll", "dlt645-2007")}
    sent = {r.meter_id: r.value for r in log.readings}
    assert all(str(r.value) == sent[r.meter_id] for r in readings)


async def test_class2_uploads_become_readings_of_the_meters_at_their_points(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    """A concentrator uploads daily frozen energy (AFN 0D F161) of three measuring points
    over a real socket: the ledger's meters at points 1 and 2 get their readings, stamped at
    the end of the frozen day; point 9 belongs to nobody and is rejected with an alert; the
    upload is confirmed (AFN 00 F1) once durable."""
    from datetime import date
    from decimal import Decimal

    from decoders import get_protocol
    from decoders.qgdw3761_data import encode_energy_unit
    from ingest.ledger import LedgerView
    from schemas.messages import Alert, LedgerMeter

    terminal = "42010007"
    view = LedgerView()
    now = datetime.now(UTC)
    view.load([LedgerMeter(meter_id=f"ELC-{n}", status="active", medium="electricity",
                           updated_at=now, address=f"{n:012d}", protocol="dlt645-2007",
                           link_id="4201-0007", service_point="con", point_no=n, unit="kWh")
               for n in (1, 2)])
    proto = get_protocol("qgdw376.1")
    day = date(2026, 11, 26)
    read_at = datetime(2026, 11, 27, 0, 7)
    units = [encode_energy_unit(0x0D, 161, pn, read_at=read_at, values=[[value]], label=day)
             for pn, value in ((1, Decimal("1520.3301")), (2, Decimal("88.0500")),
                               (9, Decimal("5.0000")))]
    upload = proto.data_frame(terminal, 0x0D, units, direction="report", sequence=5)
    login = proto.encode(__import__("decoders").Frame(
        protocol="qgdw376.1", direction="report", function="login", address=terminal,
        control=0xC9, identifier="AFN02:p0:F1", sequence=1,
        header={"fir": True, "fin": True, "con": True}))
    async with running_fep(kafka_settings, tmp_path, {"con": concentrator_point()},
                           ledger=view) as fep:
        reader, writer = await asyncio.open_connection("127.0.0.1", fep.servers["con"].port)
        try:
            writer.write(login)
            await writer.drain()
            framer = proto.framer()

            async def next_frame() -> Any:
                while True:
                    frame = framer.next_frame()
                    if isinstance(frame, bytes | bytearray):
                        return proto.decode(bytes(frame))
                    framer.feed(await asyncio.wait_for(reader.read(4096), 10))

            assert (await next_frame()).function == "confirm_all"  # the login
            writer.write(upload)
            await writer.drain()
            confirm = await next_frame()  # after Kafka acknowledged the readings
            assert (confirm.function, confirm.sequence) == ("confirm_all", 5)
        finally:
            writer.close()

    def mine(ms: list[Any]) -> list[Reading]:
        return [m for m in ms if isinstance(m, Reading) and m.fep == fep.instance]

    readings = mine(await consume_messages(kafka_settings, "readings.raw",
                                           until=lambda ms: len(mine(ms)) >= 2))
    shanghai_midnight = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)  # 27th 00:00 at UTC+8
    got = {(r.meter_id, r.register, r.value, r.ts) for r in readings}
    assert got == {("ELC-1", "energy_import", Decimal("1520.3301"), shanghai_midnight),
                   ("ELC-2", "energy_import", Decimal("88.0500"), shanghai_midnight)}
    for r in readings:
        assert "frozen:day" in r.status, r.status
        assert r.device_id == "4201-0007"  # the link as the ledger spells it
    alerts = [m for m in await consume_messages(
        kafka_settings, "alerts", until=lambda ms: any(
            isinstance(a, Alert) and a.code == "admission_rejected" for a in ms))
        if isinstance(m, Alert) and m.code == "admission_rejected"]
    assert any(f"{terminal}/p9" in (str(a.attributes.get("address")) + a.reason)
               for a in alerts)


async def test_a_plan_reads_the_concentrators_archives(kafka_settings: KafkaSettings,
                                                       tmp_path: Path) -> None:
    """A collection plan reads every measuring point of each concentrator from its archive
    (AFN 0C F129, a few points per request) instead of one AFN 10 forwarding per meter;
    the readings carry the time the concentrator read its meters."""
    from decimal import Decimal

    from simulator.runner import Simulator, SimulatorSettings

    spec = small_fleet(electricity_meters=5, meters_per_concentrator=5)
    probe = Simulator(SimulatorSettings(), spec=spec, log_path=None)
    plans = {"archive": PollPlanSettings(service_point="con", target="concentrator",
                                         points_per_request=2, interval_s=3600, jitter_s=0,
                                         timeout_s=3)}
    async with running_fep(kafka_settings, tmp_path, {"con": concentrator_point()},
                           ledger=ledger_of(probe), poll_plans=plans) as fep:
        sim = simulator_for(fep, spec, tmp_path, speed=60, heartbeat_s=5)
        await sim.start(kinds=("concentrator",))
        await sim.wait_connected(10)
        stats = await fep.pollers[0].run_plan("archive")
        assert (stats.requests, stats.successes, stats.failures) == (3, 3, 0)  # 2 + 2 + 1
        await sim.stop()
    sent = {r.meter_id: r for r in read_log(tmp_path / "sim.jsonl").readings}
    assert set(sent) == set(probe.fleet.meters)

    def mine(ms: list[Any]) -> list[Reading]:
        return [m for m in ms if isinstance(m, Reading) and m.fep == fep.instance]

    readings = mine(await consume_messages(kafka_settings, "readings.raw",
                                           until=lambda ms: len(mine(ms)) >= 5))
    assert {r.meter_id for r in readings} == set(sent)
    for r in readings:
        assert (r.register, r.unit, r.source) == ("energy_import", "kWh", "poll")
        assert r.value == Decimal(sent[r.meter_id].value)  # what the meter held, exactly
        assert r.ts == sent[r.meter_id].ts  # the concentrator's reading time, not reception
        assert "time:received" not in r.status
