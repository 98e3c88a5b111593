"""MQTT ingest through the real Mosquitto: uplinks, acknowledgements after durability,
duplicate deliveries absorbed by natural key, bad payloads kept and acknowledged."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ingest.ledger import LedgerView
from schemas.messages import DeadLetter, LedgerMeter, Reading
from schemas.settings import KafkaSettings, MqttSettings
from tests.ingest._devices import frame_901f
from tests.ingest._fep import nbiot_point, running_fep
from tests.ingest._kafka import consume_messages

pytestmark = pytest.mark.integration
T0 = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)


async def test_uplinks_acknowledged_once_durable_and_duplicates_absorbed(
        kafka_settings: KafkaSettings, mqtt_settings: MqttSettings, tmp_path: Path) -> None:
    import aiomqtt

    ledger = LedgerView()
    ledger.load([LedgerMeter(meter_id="NB-1", status="active", medium="gas", updated_at=T0,
                             address="00000000070002", protocol="cjt188-2004",
                             service_point="nbiot")])
    root = mqtt_settings.topic_root
    parts = urlsplit(mqtt_settings.url)
    async with running_fep(kafka_settings, tmp_path, {"nbiot": nbiot_point()}, ledger=ledger,
                           mqtt=mqtt_settings) as fep:
        async with aiomqtt.Client(parts.hostname or "127.0.0.1", parts.port or 1883) as device:
            await device.subscribe(f"{root}/meters/NB-1/down", qos=1)
            uplink = frame_901f("00000000070002", "321.50", T0)
            for _ in range(2):  # a duplicate upload (or a QoS 1 redelivery)
                await device.publish(f"{root}/meters/NB-1/up", uplink, qos=1)
            await device.publish(f"{root}/meters/NB-1/up", b"\x68\x00garbage", qos=1)
            acks: list[dict[str, Any]] = []
            async with asyncio.timeout(15):
                async for message in device.messages:
                    acks.append(json.loads(bytes(message.payload)))
                    if len(acks) == 2:
                        break
        mqtt_stats = dict(fep.servers["nbiot"].stats)
        await asyncio.sleep(0.5)
    ref = hashlib.sha256(uplink).hexdigest()[:16]
    assert acks == [{"type": "ack", "ref": ref}] * 2  # each copy acknowledged …
    assert mqtt_stats["duplicates"] == 2  # … its readings published once
    assert mqtt_stats["malformed"] == 1

    def mine(ms: list[Any]) -> list[Reading]:
        return [m for m in ms if isinstance(m, Reading) and m.fep == fep.instance]

    readings = mine(await consume_messages(kafka_settings, "readings.raw",
                                           until=lambda ms: len(mine(ms)) >= 2, settle=1.0))
    assert sorted((r.register, str(r.value)) for r in readings) == [
        ("volume", "321.50"), ("volume_settlement", "321.50")]
    assert {r.source for r in readings} == {"mqtt"}
    assert {r.meter_id for r in readings} == {"NB-1"}
    dead = [m for m in await consume_messages(kafka_settings, "dlq.ingest", count=1)
            if isinstance(m, DeadLetter) and m.value == b"\x68\x00garbage"]
    assert dead
    assert dead[0].reason["topic"].endswith("/meters/NB-1/up")


async def test_stopping_leaves_no_task_with_an_unretrieved_error(
        kafka_settings: KafkaSettings, mqtt_settings: MqttSettings, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Stopping the FEP stops the MQTT reader before its client disconnects: no task is
    left to fail with "Disconnected during message iteration" that nobody awaits (logged
    as "Task exception was never retrieved" at every stop)."""
    import gc

    async with running_fep(kafka_settings, tmp_path, {"nbiot": nbiot_point()},
                           ledger=LedgerView(), mqtt=mqtt_settings) as fep:
        async with asyncio.timeout(15):
            await fep.servers["nbiot"].connected.wait()
    await asyncio.sleep(0.5)
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text
