"""Kafka stopped while devices report: the FEP keeps acknowledging from its fsynced spool,
and after Kafka returns every acknowledged reading is there (a private broker, never the
shared one)."""

from __future__ import annotations

import asyncio
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from schemas.messages import Reading
from simulator.log import read_log
from tests.ingest._fep import dtu_point, ledger_of, running_fep, simulator_for, small_fleet
from tests.ingest._kafka import consume_messages

pytestmark = pytest.mark.integration


async def _until(predicate: Any, seconds: float) -> bool:
    for _ in range(int(seconds * 10)):
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return predicate()


async def test_kafka_down_during_ingest_loses_nothing(private_kafka: Any, config: Any,
                                                      tmp_path: Path) -> None:
    from simulator.runner import Simulator, SimulatorSettings
    from unimeter.topics import create_topics

    kafka = config.kafka.model_copy(update={"bootstrap": private_kafka.bootstrap,
                                            "topic_prefix": "outage.", "default_partitions": 2})
    create_topics(kafka)
    spec = small_fleet(gas_dtu_meters=16, water_dtu_meters=8)
    probe = Simulator(SimulatorSettings(), spec=spec, log_path=None)
    async with running_fep(kafka, tmp_path, {"dtu": dtu_point()}, ledger=ledger_of(probe),
                           kafka_ack_timeout_s=1.0) as fep:
        sim = simulator_for(fep, spec, tmp_path, speed=3600, ack_timeout_s=5)
        await sim.start(kinds=("dtu",))
        await sim.wait_connected(10)
        assert await _until(lambda: sim.stats["acked_frames"] >= 24, 20)
        private_kafka.stop()  # the broker goes away in the middle of the stream
        before = sim.stats["acked_frames"]
        assert await _until(lambda: fep.publisher.mode == "spool", 20)
        assert await _until(lambda: sim.stats["acked_frames"] >= before + 48, 30), \
            "devices are still acknowledged while Kafka is down (from the spool)"
        spooled = fep.publisher.stats.records_spooled
        assert spooled > 0
        private_kafka.start()
        assert await _until(lambda: fep.publisher.mode == "direct", 90), fep.publisher.stats
        await asyncio.sleep(2.0)
        await sim.stop()
        assert await _until(lambda: fep.publisher.spool.empty, 30)
        assert fep.publisher.stats.records_drained >= spooled
    log = read_log(tmp_path / "sim.jsonl")
    acked = {(r.meter_id, r.register, r.ts.astimezone(UTC) if r.ts else None, r.value)
             for r in log.acknowledged()}

    def keys(ms: list[Any]) -> set[Any]:
        return {(m.meter_id, m.register, m.ts.astimezone(UTC), str(m.value)) for m in ms
                if isinstance(m, Reading)}

    stored = keys(await consume_messages(kafka, "readings.raw",
                                         until=lambda ms: acked <= keys(ms), wait_s=60))
    assert len(acked) > 100
    assert acked <= stored, f"lost: {sorted(acked - stored)[:5]}"
