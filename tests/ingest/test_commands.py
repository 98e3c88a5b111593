"""Commands end to end: commands.dispatch → FEP → device → commands.results (real broker,
real PostgreSQL registry, real sockets and the real Mosquitto)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingest.registry import PostgresRegistry
from schemas import codec
from schemas.messages import CommandDispatch, CommandResult
from schemas.settings import KafkaSettings, MqttSettings
from tests.ingest._fep import (
    dtu_point,
    ledger_of,
    nbiot_point,
    running_fep,
    simulator_for,
    small_fleet,
)
from tests.ingest._kafka import consume_messages

pytestmark = pytest.mark.integration


async def _dispatch(kafka: KafkaSettings, d: CommandDispatch) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(kafka.topic("commands.dispatch"),
                                     codec.encode(d, producer="test-control"), key=d.key())
    finally:
        await producer.stop()


async def _results(kafka: KafkaSettings, command_id: str, final: set[str],
                   wait_s: float = 30) -> list[CommandResult]:
    def mine(ms: list[Any]) -> list[CommandResult]:
        return [m for m in ms if isinstance(m, CommandResult) and m.command_id == command_id]

    found = await consume_messages(kafka, "commands.results",
                                   until=lambda ms: any(r.status in final for r in mine(ms)),
                                   wait_s=wait_s)
    return mine(found)


def _command(meter: Any, command: str, **kw: Any) -> CommandDispatch:
    return CommandDispatch(command_id=uuid.uuid4().hex, device_id=meter.meter_id,
                           command=command, protocol=meter.protocol, address=meter.address,
                           dispatched_at=datetime.now(UTC), **kw)


async def test_valve_close_round_trip_through_a_dtu(kafka_settings: KafkaSettings,
                                                    database: Any, tmp_path: Path) -> None:
    spec = small_fleet(gas_dtu_meters=2)
    instance = f"fep-{uuid.uuid4().hex[:6]}"
    registry = PostgresRegistry(instance, database.settings, flush_s=0.2)
    probe = simulator_for_probe(spec)
    async with running_fep(kafka_settings, tmp_path, {"dtu": dtu_point()}, instance=instance,
                           ledger=ledger_of(probe), registry=registry,
                           consume_commands=True) as fep:
        sim = simulator_for(fep, spec, tmp_path, speed=600)
        await sim.start(kinds=("dtu",))
        await sim.wait_connected(10)
        meter = sim.fleet.meters["GAS-000001"]
        for _ in range(100):  # the meters have reported: the FEP knows where they are
            if "GAS-000001" in fep.meter_links:
                break
            await asyncio.sleep(0.1)
        assert meter.valve == "open"
        command = _command(meter, "valve_close", reply_timeout_s=5.0)
        await _dispatch(kafka_settings, command)
        results = await _results(kafka_settings, command.command_id, {"confirmed", "failed"})
        assert meter.valve == "closed"  # the simulated meter really closed its valve
        await sim.stop()
    statuses = [r.status for r in results]
    assert statuses[:1] == ["sent"]
    assert statuses[-1] == "confirmed"
    assert all(r.fep == instance for r in results)
    assert results[-1].error_code is None
    from simulator.log import read_log

    effects = [c.effect for c in read_log(tmp_path / "sim.jsonl").commands
               if c.meter_id == "GAS-000001"]
    assert effects == [{"valve": "closed"}]
    with psycopg.connect(database.settings.url) as conn:
        state = conn.execute("SELECT state, outcome, claimed_by FROM ops.fep_pending_commands "
                             "WHERE command_id = %s", (command.command_id,)).fetchone()
        session = conn.execute("SELECT fep, kind, link_id FROM ops.device_sessions "
                               "WHERE device_id = 'GAS-000001'").fetchone()
    assert state == ("done", "confirmed", instance)
    assert session == (instance, "meter", "DTU000001")


async def test_command_waits_for_a_sleeping_nbiot_meter_and_goes_at_wake_up(
        kafka_settings: KafkaSettings, mqtt_settings: MqttSettings, database: Any,
        tmp_path: Path) -> None:
    spec = small_fleet(nbiot_meters=1)
    instance = f"fep-{uuid.uuid4().hex[:6]}"
    registry = PostgresRegistry(instance, database.settings, flush_s=0.2)
    probe = simulator_for_probe(spec)
    meter = probe.fleet.meters["NBG-000001"]
    async with running_fep(kafka_settings, tmp_path, {"nbiot": nbiot_point(wake_window_s=2.0)},
                           instance=instance, ledger=ledger_of(probe), registry=registry,
                           consume_commands=True, mqtt=mqtt_settings) as fep:
        command = _command(meter, "valve_close", delivery="on_wake", reply_timeout_s=5.0,
                           params={"meter_type": "gas"})
        await _dispatch(kafka_settings, command)
        queued = await _results(kafka_settings, command.command_id, {"queued"})
        assert [r.status for r in queued] == ["queued"]  # asleep: nothing sent yet
        # Now the meter wakes up (it reports every 3 real seconds) and listens for 2 s.
        sim = simulator_for(fep, spec, tmp_path, speed=3600, mqtt=mqtt_settings,
                            wake_window_s=2.0,
                            settings={"nbiot_report_s": 3 * 3600})
        await sim.start(kinds=("nbiot",))
        results = await _results(kafka_settings, command.command_id, {"confirmed", "failed"},
                                 wait_s=40)
        sim_meter = sim.fleet.meters["NBG-000001"]
        assert sim_meter.valve == "closed"
        await sim.stop()
    assert [r.status for r in results] == ["queued", "sent", "confirmed"]
    assert sim.stats["downlinks_while_asleep"] == 0


async def test_command_for_a_device_that_never_wakes_expires_once(
        kafka_settings: KafkaSettings, database: Any, tmp_path: Path) -> None:
    spec = small_fleet(gas_dtu_meters=1)
    probe = simulator_for_probe(spec)
    meter = probe.fleet.meters["GAS-000001"]
    instance = f"fep-{uuid.uuid4().hex[:6]}"
    registry = PostgresRegistry(instance, database.settings, flush_s=0.2)
    # The periodic sweep is pushed out of the test's way (regression: under load it ran
    # between "queued" and the test's own sweep, which then found nothing to expire).
    async with running_fep(kafka_settings, tmp_path, {"dtu": dtu_point()}, instance=instance,
                           ledger=ledger_of(probe), registry=registry,
                           consume_commands=True, command_expire_every_s=3600) as fep:
        expires_at = datetime.now(UTC) + timedelta(seconds=6)
        command = _command(meter, "valve_close", expires_at=expires_at)
        await _dispatch(kafka_settings, command)
        await _results(kafka_settings, command.command_id, {"queued"})
        assert await fep.commands.expire_now() == 0  # not yet due
        await asyncio.sleep((expires_at - datetime.now(UTC)).total_seconds() + 0.2)
        assert await fep.commands.expire_now() == 1
        assert await fep.commands.expire_now() == 0  # reported once
        results = await _results(kafka_settings, command.command_id, {"expired"})
    assert [r.status for r in results] == ["queued", "expired"]


def simulator_for_probe(spec: Any) -> Any:
    from simulator.runner import Simulator, SimulatorSettings

    return Simulator(SimulatorSettings(), spec=spec, log_path=None)


async def test_a_command_dispatched_once_the_intake_is_ready_is_taken_in(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    """A new FEP's dispatch consumer reads from "latest": until it holds its partitions
    and has resolved that offset, a dispatched command could be skipped (a CI failure:
    the NB-IoT wake-up test's command never arrived). ``intake_ready`` says when it is
    safe; a command dispatched right then is taken in."""
    async with running_fep(kafka_settings, tmp_path, {"dtu": dtu_point()},
                           consume_commands=True) as fep:
        assert fep.commands.intake_ready.is_set()
        assert fep.commands._consumer.assignment()
        command = CommandDispatch(command_id=uuid.uuid4().hex, device_id="NOWHERE-1",
                                  command="valve_close", protocol="cjt188-2004",
                                  address="00000000000001", dispatched_at=datetime.now(UTC))
        await _dispatch(kafka_settings, command)
        for _ in range(600):
            if fep.commands.stats.dispatches:
                break
            await asyncio.sleep(0.05)
        assert fep.commands.stats.dispatches == 1
