"""Modbus TCP RTUs read by a collection plan through pymodbus, registers decoded by the
protocol engine's register map (real sockets, real broker)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from ingest.protocols import ModbusPoll
from ingest.settings import PollPlanSettings, ServicePointSettings
from schemas.messages import RawFrame, Reading
from schemas.settings import KafkaSettings
from tests.ingest._fep import ledger_of, running_fep, small_fleet
from tests.ingest._kafka import consume_messages


def test_endpoints_parse() -> None:
    assert ModbusPoll.parse_endpoint("RTU1=10.0.0.5:502/7") == ("RTU1", "10.0.0.5", 502, 7)
    assert ModbusPoll.parse_endpoint("10.0.0.5:1502/1") == ("10.0.0.5:1502", "10.0.0.5",
                                                            1502, 1)
    from schemas.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="host:port/unit"):
        ModbusPoll.parse_endpoint("10.0.0.5/1")


@pytest.mark.integration
async def test_a_modbus_plan_reads_every_rtu_unit(kafka_settings: KafkaSettings,
                                                   tmp_path: Path) -> None:
    from simulator.runner import Simulator, SimulatorSettings

    spec = small_fleet(modbus_rtus=5, modbus_service_point="rtu")
    probe = Simulator(SimulatorSettings(), spec=spec, log_path=None)
    point = ServicePointSettings(transport="modbus", protocol="modbus-tcp")
    sim = simulator_for_modbus(spec, tmp_path)
    await sim.start(kinds=("modbus",))
    await sim.wait_connected(5)
    endpoints = tuple(sim.modbus_endpoints())
    assert len(endpoints) == 5
    plans = {"rtu-read": PollPlanSettings(service_point="rtu", target="modbus",
                                          template="flow-computer", endpoints=endpoints,
                                          interval_s=3600, jitter_s=0, timeout_s=2, retries=0)}
    try:
        async with running_fep(kafka_settings, tmp_path, {"rtu": point},
                               ledger=ledger_of(probe), poll_plans=plans) as fep:
            stats = await fep.pollers[0].run_plan("rtu-read")
            assert (stats.successes, stats.failures) == (5, 0)
            assert stats.requests == 10  # two blocks each: holding registers and the coil
    finally:
        await sim.stop()
    registers = {r.meter_id: r for r in read_answers(tmp_path)}

    def mine(ms: list[Any]) -> list[Reading]:
        return [m for m in ms if isinstance(m, Reading) and m.fep == fep.instance]

    readings = mine(await consume_messages(kafka_settings, "readings.raw",
                                           until=lambda ms: len(mine(ms)) >= 25))
    volumes = {r.meter_id: r for r in readings if r.register == "volume"}
    assert set(volumes) == set(probe.fleet.meters)
    for meter_id, reading in volumes.items():  # what the RTU held, exactly
        assert reading.value == Decimal(registers[meter_id].value)
        assert (reading.unit, reading.source, reading.protocol) == ("m3", "poll", "modbus-tcp")
    assert {r.register for r in readings} == {"volume", "volume_standard", "flow_rate",
                                              "temperature", "pressure"}
    from simulator.modbus import ModbusRtuServer

    for r in readings:
        meter = probe.fleet.meters[r.meter_id]
        if r.register == "pressure":  # the line pressure the RTU holds (float32 words)
            assert (r.unit, r.kind) == ("kPa", "instantaneous")
            assert abs(r.value - ModbusRtuServer.line_pressure_kpa(meter)) < Decimal("0.01")
        elif r.register == "temperature":
            assert r.unit == "degC"
            assert Decimal(-10) < r.value < Decimal(30)
        elif r.register == "volume_standard":  # converted in the same instant as the total
            expected = volumes[r.meter_id].value * ModbusRtuServer.base_factor(meter)
            assert r.value == expected.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
        assert "time:received" in r.status  # the RTU states no time: stamped when polled
    frames = [m for m in await consume_messages(kafka_settings, "frames.raw", count=1)
              if isinstance(m, RawFrame) and m.fep == fep.instance]
    assert {f.direction for f in frames} == {"in", "out"}  # pymodbus' packets, traced


def read_answers(tmp_path: Path) -> list[Any]:
    from simulator.log import read_log

    return read_log(tmp_path / "sim.jsonl").readings


def simulator_for_modbus(spec: Any, tmp_path: Path) -> Any:
    from simulator.clock import SimClock
    from simulator.runner import Simulator, SimulatorSettings
    from tests.ingest._fep import T0

    return Simulator(SimulatorSettings(modbus_port=0), spec=spec, clock=SimClock(T0, 60),
                     log_path=tmp_path / "sim.jsonl")


async def test_stopping_the_simulated_rtus_ends_their_connections(tmp_path: Path) -> None:
    """Regression: the demo printed "Exception in callback ... CancelledError" from the
    simulated RTUs' connection handlers when it stopped: they were left to be cancelled at
    loop shutdown. Stopping now closes their connections and the handlers end by themselves."""
    import asyncio

    from simulator.modbus import ModbusRtuServer

    sim = simulator_for_modbus(small_fleet(modbus_rtus=1, modbus_service_point="rtu"),
                               tmp_path)
    await sim.start(kinds=("modbus",))
    await sim.wait_connected(5)
    server = next(link for link in sim.links.values() if isinstance(link, ModbusRtuServer))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for _ in range(100):  # the handler picks the connection up
            if server._writers:
                break
            await asyncio.sleep(0.01)
        assert len(server._writers) == 1
        await sim.stop()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the simulator
        for _ in range(100):
            if not server._writers:
                break
            await asyncio.sleep(0.01)
        assert not server._writers  # the handler returned (not cancelled)
    finally:
        writer.close()
