"""A command from the operator to the meter and back, with nothing faked: the control plane's
command service (``command serve``: lifecycle, safety policy, outbox, dispatch), a real FEP
(its PostgreSQL session registry says where the meter is), and a simulated CJ/T 188 gas
meter on the RS-485 bus of a DTU, connected over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from devices.commands.lifecycle import CommandState
from devices.commands.serve import CommandServer
from devices.commands.service import CommandService, direct_source, make_request
from devices.commands.settings import CommandSettings
from ingest.ledger import LedgerView
from ingest.registry import PostgresRegistry
from schemas.messages import CommandDispatch, CommandResult
from schemas.settings import KafkaSettings
from tests.ingest._fep import dtu_point, running_fep, simulator_for, small_fleet
from tests.ingest._kafka import consume_messages
from tests.plugins.fleet import Fleet

pytestmark = pytest.mark.integration

#: the ledger's wired prepaid gas meter (device type gas_wired_g2_5, CJ/T 188)
LEDGER_METER = "GAS-DIRECT-1"
SIM_METER = "GAS-000001"


@contextlib.asynccontextmanager
async def command_server(fleet: Fleet, kafka: KafkaSettings) -> AsyncIterator[CommandServer]:
    settings = CommandSettings(consumer_group=f"test-{uuid.uuid4().hex[:8]}",
                               poll_interval_s=0.2)
    server = CommandServer(fleet.db.settings, kafka, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    try:
        yield server
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _until_state(service: CommandService, command_id: str, states: set[CommandState],
                       seconds: float = 60.0) -> Any:
    async with asyncio.timeout(seconds):
        while True:
            record = await asyncio.to_thread(service.get, command_id)
            if record.state in states:
                return record
            await asyncio.sleep(0.2)


async def test_valve_close_from_the_operator_to_the_meter_and_back(
        fleet: Fleet, kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    from simulator.runner import Simulator, SimulatorSettings

    spec = small_fleet(gas_dtu_meters=2)
    probe = Simulator(SimulatorSettings(), spec=spec, log_path=None)
    sim_meter = probe.fleet.meters[SIM_METER]
    # The ledger's meter is the simulator's first meter: same address, on the DTU's bus.
    with fleet.connect("api") as conn:
        conn.execute("SELECT set_config('unimeter.actor', 'test', false)")
        conn.execute("UPDATE ledger.devices SET address = %s WHERE device_id = %s",
                     (sim_meter.address, LEDGER_METER))
    view = LedgerView()
    view.load([msgspec.structs.replace(m, meter_id=LEDGER_METER)
               if m.meter_id == SIM_METER else m for m in probe.fleet.ledger()])
    instance = f"fep-{uuid.uuid4().hex[:6]}"
    registry = PostgresRegistry(instance, fleet.db.settings, flush_s=0.2)
    service = CommandService(direct_source(fleet.db.settings.conninfo("api")))
    async with running_fep(kafka_settings, tmp_path, {"dtu": dtu_point()},
                           instance=instance, ledger=view, registry=registry,
                           consume_commands=True) as fep, \
            command_server(fleet, kafka_settings):
        sim = simulator_for(fep, spec, tmp_path, speed=600)
        await sim.start(kinds=("dtu",))
        try:
            await sim.wait_connected(10)
            async with asyncio.timeout(20):  # the meter reported: the registry knows its link
                while LEDGER_METER not in fep.meter_links:  # noqa: ASYNC110 - another task
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # one registry flush
            meter = sim.fleet.meters[SIM_METER]
            assert meter.valve == "open"
            record = await asyncio.to_thread(service.submit, make_request(
                device_id=LEDGER_METER, command="valve_close", requested_by="op-1",
                params={"cause": "service"}, client_command_id=uuid.uuid4().hex))
            done = await _until_state(service, record.command_id,
                                      {CommandState.CONFIRMED, CommandState.FAILED,
                                       CommandState.EXPIRED})
            assert done.state is CommandState.CONFIRMED, done
            assert meter.valve == "closed"  # the simulated valve really closed
        finally:
            await sim.stop()

    def mine(ms: list[Any]) -> list[CommandResult]:
        return [m for m in ms if isinstance(m, CommandResult)
                and m.command_id == record.command_id]

    results = mine(await consume_messages(kafka_settings, "commands.results",
                                          until=lambda ms: any(r.status == "confirmed"
                                                               for r in mine(ms))))
    assert [r.status for r in results][:1] == ["sent"]
    assert results[-1].status == "confirmed"
    assert results[-1].fep == instance
    dispatches = [m for m in await consume_messages(kafka_settings, "commands.dispatch",
                                                    count=1)
                  if isinstance(m, CommandDispatch) and m.command_id == record.command_id]
    assert dispatches
    assert dispatches[0].handler == "cjt188-2004"
    assert dispatches[0].fep == instance  # routed to the FEP holding the DTU
    history = [h.action for h in await asyncio.to_thread(service.history, record.command_id)]
    lifecycle = ["command.requested", "command.approved", "command.dispatched",
                 "command.sent", "command.confirmed"]
    assert [a for a in history if a in lifecycle] == lifecycle  # in this order, each once

