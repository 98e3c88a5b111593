"""NB-IoT meters that speak JSON through the real Mosquitto (protocol nbiot-json:<map>):
uploads become readings and events, bad documents are dead-lettered, and commands the
control plane encodes as JSON (set_report_interval, set_balance) are delivered in the
meter's wake window and confirmed by its JSON reply."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ingest.ledger import LedgerView
from schemas import codec
from schemas.messages import (
    CommandDispatch,
    CommandResult,
    DeadLetter,
    LedgerMeter,
    Reading,
    readings_of,
)
from schemas.settings import KafkaSettings, MqttSettings
from tests.ingest._fep import nbiot_point, running_fep
from tests.ingest._kafka import consume, consume_messages

pytestmark = pytest.mark.integration
T0 = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)
IMEI = "868000000000042"


def _uplink(volume_litres: int, *, msg_id: int, balance: str = "88.20") -> bytes:
    return json.dumps({"imei": IMEI, "msgType": "report", "msgId": msg_id,
                       "meterTime": "20260401100000",  # local time: 02:00 UTC
                       "data": {"totalVolume": volume_litres, "valve": 0, "balance": balance,
                                "batteryLow": True, "rsrp": -97}}).encode()


@contextlib.asynccontextmanager
async def _json_meter_at_fep(kafka_settings: KafkaSettings, mqtt_settings: MqttSettings,
                             tmp_path: Path, meter_id: str) -> AsyncIterator[tuple[Any, Any]]:
    """An FEP whose MQTT point "nbj" speaks the nbiot-gas map, the ledger knowing meter
    ``meter_id`` at IMEI, and an MQTT client as that meter, listening on its downlink."""
    import aiomqtt

    ledger = LedgerView()
    ledger.load([LedgerMeter(meter_id=meter_id, status="active", medium="gas", updated_at=T0,
                             address=IMEI, protocol="nbiot-json:nbiot-gas",
                             service_point="nbj")])
    parts = urlsplit(mqtt_settings.url)
    point = nbiot_point(protocol="nbiot-json:nbiot-gas", wake_window_s=10.0)
    async with running_fep(kafka_settings, tmp_path, {"nbj": point}, ledger=ledger,
                           mqtt=mqtt_settings) as fep, \
            aiomqtt.Client(parts.hostname or "127.0.0.1", parts.port or 1883) as meter:
        await meter.subscribe(f"{mqtt_settings.topic_root}/meters/{IMEI}/down", qos=1)
        yield fep, meter


async def test_json_uplinks_and_commands_over_mqtt(
        kafka_settings: KafkaSettings, mqtt_settings: MqttSettings, tmp_path: Path) -> None:

    root = mqtt_settings.topic_root
    async with _json_meter_at_fep(kafka_settings, mqtt_settings, tmp_path, "NBJ-1") as \
            (fep, meter):
        await meter.publish(f"{root}/meters/{IMEI}/up", _uplink(1234567, msg_id=1), qos=1)
        await meter.publish(f"{root}/meters/{IMEI}/up", b'{"imei": 5', qos=1)
        await meter.publish(f"{root}/meters/{IMEI}/up",
                            json.dumps({"imei": IMEI, "data": {"totalVolume": "lots"}})
                            .encode(), qos=1)
        downlinks: list[dict[str, Any]] = []

        async def next_downlink() -> dict[str, Any]:
            async with asyncio.timeout(15):
                async for message in meter.messages:
                    return dict(json.loads(bytes(message.payload)))
            raise AssertionError("no downlink")

        downlinks.append(await next_downlink())  # the upload's acknowledgement
        assert downlinks[0]["type"] == "ack"
        # the meter is awake: the control plane's commands reach it now
        commands = {
            "set_report_interval": CommandDispatch(
                command_id=uuid.uuid4().hex, device_id="NBJ-1",
                command="set_report_interval", protocol="nbiot-json:nbiot-gas",
                address=IMEI, dispatched_at=datetime.now(UTC), reply_timeout_s=5,
                handler="nbiot-json:nbiot-gas", params={"minutes": 60, "seconds": 3600}),
            "set_balance": CommandDispatch(
                command_id=uuid.uuid4().hex, device_id="NBJ-1", command="set_balance",
                protocol="nbiot-json:nbiot-gas", address=IMEI,
                dispatched_at=datetime.now(UTC), reply_timeout_s=5,
                handler="nbiot-json:nbiot-gas", params={"balance": "50.00"}),
        }
        for name, dispatch in commands.items():
            await fep.commands.handle(dispatch)
            document = await next_downlink()
            while document.get("type") == "ack":
                document = await next_downlink()
            assert document["imei"] == IMEI
            if name == "set_report_interval":
                assert (document["cmd"], document["minutes"]) == ("setReportInterval", 60)
                answer = {"reportInterval": 60}
                result = 0
            else:
                assert (document["cmd"], document["balance"]) == ("setBalance", "50.00")
                answer, result = {}, 7  # the meter refuses: result code 7
            await meter.publish(f"{root}/meters/{IMEI}/up", json.dumps(
                {"imei": IMEI, "msgType": "cmdResp", "msgId": document["msgId"],
                 "result": result, "data": answer}).encode(), qos=1)
        for _ in range(100):
            if fep.commands.stats.confirmed + fep.commands.stats.failed >= 2:
                break
            await asyncio.sleep(0.1)

    def mine(ms: list[Any]) -> list[Reading]:
        return [m for m in ms if isinstance(m, Reading) and m.fep == fep.instance]

    readings = mine(await consume_messages(kafka_settings, "readings.raw",
                                           until=lambda ms: len(mine(ms)) >= 2, settle=0.5))
    assert sorted((r.register, r.value, r.unit) for r in readings) == [
        ("remaining_money", Decimal("88.20"), "CNY"), ("volume", Decimal("1234.567"), "m3")]
    for r in readings:
        assert (r.meter_id, r.ts, r.source) == ("NBJ-1", T0, "mqtt")
        assert "battery_low" in r.status
    # the meter's two readings of the uplink went as one record: one batch, keyed by meter
    records = [r for r in await consume(kafka_settings.bootstrap,
                                        [kafka_settings.topic("readings.raw")],
                                        until=lambda rs: False, wait_s=1.0)
               if fep.instance.encode() in r.value]
    assert [(r.key, codec.decode(r.value)[0].schema) for r in records] == [
        (b"NBJ-1", "reading.raw.batch")]
    batched = readings_of(codec.decode(records[0].value)[1])  # type: ignore[arg-type]
    assert sorted(batched, key=lambda r: r.register) == sorted(readings, key=lambda r: r.register)

    results: list[CommandResult] = []
    ids = {d.command_id: name for name, d in commands.items()}

    def finals(ms: list[Any]) -> list[CommandResult]:
        return [m for m in ms if isinstance(m, CommandResult) and m.command_id in ids
                and m.status in ("confirmed", "failed")]

    results = finals(await consume_messages(kafka_settings, "commands.results",
                                            until=lambda ms: len(finals(ms)) >= 2))
    by_name = {ids[r.command_id]: r for r in results}
    assert by_name["set_report_interval"].status == "confirmed"
    assert by_name["set_report_interval"].reply["report_interval_min"] == 60
    assert by_name["set_balance"].status == "failed"
    assert by_name["set_balance"].error_code == "device_refused"
    assert "result_7" in str(by_name["set_balance"].reply)

    dead = [m for m in await consume_messages(kafka_settings, "dlq.ingest", count=2)
            if isinstance(m, DeadLetter) and m.key_bytes == IMEI.encode()]
    reasons = " ".join(json.dumps(d.reason) for d in dead)
    assert "not a JSON document" in reasons
    assert "data.totalVolume" in reasons  # the path of the bad value


async def test_simulated_json_meters_report_and_obey(
        kafka_settings: KafkaSettings, mqtt_settings: MqttSettings, tmp_path: Path) -> None:
    """The simulator's NB-IoT meters speaking the nbiot-gas JSON map: their uploads arrive as
    readings at the meter's clock, and a valve close and a balance setting queued for a
    sleeping meter reach it in its wake window and really change it."""
    from simulator.log import read_log
    from simulator.runner import Simulator, SimulatorSettings
    from tests.ingest._fep import ledger_of, simulator_for, small_fleet

    spec = small_fleet(nbiot_meters=2, nbiot_protocol="nbiot-json:nbiot-gas")
    probe = Simulator(SimulatorSettings(), spec=spec, log_path=None)
    target = probe.fleet.meters["NBG-000001"]
    point = nbiot_point(protocol="nbiot-json:nbiot-gas", wake_window_s=3.0)
    async with running_fep(kafka_settings, tmp_path, {"nbiot": point},
                           ledger=ledger_of(probe), mqtt=mqtt_settings) as fep:
        dispatches = [CommandDispatch(
            command_id=uuid.uuid4().hex, device_id=target.meter_id, command=command,
            protocol=target.protocol, address=target.address, handler=target.protocol,
            dispatched_at=datetime.now(UTC), delivery="on_wake", reply_timeout_s=5,
            params=params) for command, params in (("valve_close", {}),
                                                   ("set_balance", {"balance": "42.50"}))]
        for dispatch in dispatches:
            await fep.commands.handle(dispatch)
        sim = simulator_for(fep, spec, tmp_path, speed=3600, mqtt=mqtt_settings,
                            wake_window_s=3.0, settings={"nbiot_report_s": 3 * 3600})
        await sim.start(kinds=("nbiot",))
        try:
            async with asyncio.timeout(40):
                while fep.commands.stats.confirmed < 2:  # noqa: ASYNC110 - the FEP's tasks
                    await asyncio.sleep(0.1)
            meter = sim.fleet.meters["NBG-000001"]
            assert meter.valve == "closed"
            assert meter.balance == Decimal("42.50")
        finally:
            await sim.stop()
    log = read_log(tmp_path / "sim.jsonl")
    sent = [r for r in log.readings if r.register == "volume" and r.ts is not None]
    assert sent

    def mine(ms: list[Any]) -> list[Reading]:
        return [m for m in ms if isinstance(m, Reading) and m.fep == fep.instance
                and m.register == "volume"]

    readings = mine(await consume_messages(kafka_settings, "readings.raw",
                                           until=lambda ms: len(mine(ms)) >= len(sent)))
    got = {(r.meter_id, r.ts, r.value) for r in readings}
    for rec in sent:  # every upload arrived, at the meter's clock, with its exact value
        assert (rec.meter_id, rec.ts, Decimal(rec.value)) in got


async def test_a_pack_of_hourly_values_is_stored_reading_by_reading_and_only_once(
        kafka_settings: KafkaSettings, mqtt_settings: MqttSettings, tmp_path: Path) -> None:
    """A daily upload of 24 hourly registers (the map's ``series``) becomes 24 readings at
    the meter's hours; the same pack delivered again (a QoS 1 redelivery, or the meter
    repeating an unacknowledged upload) adds none; a pack with a bad value is dead-lettered
    whole with the value's path."""

    hourly = [1_000_000 + 150 * n for n in range(24)]
    pack = json.dumps({"imei": IMEI, "msgType": "report", "msgId": 3,
                       "meterTime": "20260401100512",
                       "data": {"hourlyStart": "20260331110000", "hourly": hourly,
                                "valve": 0}}).encode()
    bad = json.dumps({"imei": IMEI, "msgType": "report", "msgId": 4,
                      "meterTime": "20260401110512",
                      "data": {"hourlyStart": "20260401110000", "hourly": [1, "x"]}}).encode()
    root = mqtt_settings.topic_root
    async with _json_meter_at_fep(kafka_settings, mqtt_settings, tmp_path, "NBJ-P") as \
            (fep, meter):
        for payload in (pack, pack, bad):
            await meter.publish(f"{root}/meters/{IMEI}/up", payload, qos=1)
        acks = 0
        async with asyncio.timeout(15):
            async for message in meter.messages:
                acks += json.loads(bytes(message.payload)).get("type") == "ack"
                if acks == 2:  # the bad pack is kept and PUBACKed, with no downlink ack
                    break
        for _ in range(100):
            if fep.servers["nbj"].stats["malformed"]:
                break
            await asyncio.sleep(0.1)
        stats = dict(fep.servers["nbj"].stats)

    assert stats["duplicates"] == 24  # the second copy: every reading already published
    assert stats["malformed"] == 1

    def mine(ms: list[Any]) -> list[Reading]:
        return [m for m in ms if isinstance(m, Reading) and m.fep == fep.instance
                and m.meter_id == "NBJ-P"]

    readings = mine(await consume_messages(kafka_settings, "readings.raw",
                                           until=lambda ms: len(mine(ms)) >= 24, settle=1.0))
    start = datetime(2026, 3, 31, 3, tzinfo=UTC)  # 11:00 Asia/Shanghai
    assert sorted((r.ts, r.value) for r in readings) == [
        (start + timedelta(hours=n), Decimal(hourly[n]) / 1000) for n in range(24)]
    assert {r.register for r in readings} == {"volume"}
    assert {r.meter_clock for r in readings} == {datetime(2026, 4, 1, 2, 5, 12, tzinfo=UTC)}
    dead = [m for m in await consume_messages(kafka_settings, "dlq.ingest", count=1)
            if isinstance(m, DeadLetter) and m.value == bad]
    assert dead
    assert "data.hourly.1" in json.dumps(dead[0].reason)


async def test_simulated_pack_uploads_in_burst_arrive_reading_by_reading(
        kafka_settings: KafkaSettings, mqtt_settings: MqttSettings, tmp_path: Path) -> None:
    """The simulator's NB-IoT meters in burst mode with 24-hour packs (the throughput run of
    ``bench/e2e.py``): every reading of every upload the FEP acknowledged is in
    ``readings.raw`` once, at the hour the meter stated."""
    from simulator.log import read_log
    from simulator.runner import Simulator, SimulatorSettings
    from tests.ingest._fep import ledger_of, simulator_for, small_fleet

    spec = small_fleet(nbiot_meters=3, nbiot_protocol="nbiot-json:nbiot-gas")
    point = nbiot_point(protocol="nbiot-json:nbiot-gas", wake_window_s=3.0)
    probe = Simulator(SimulatorSettings(), spec=spec, log_path=None)
    async with running_fep(kafka_settings, tmp_path, {"nbiot": point},
                           ledger=ledger_of(probe), mqtt=mqtt_settings) as fep:
        sim = simulator_for(fep, spec, tmp_path, speed=1, mqtt=mqtt_settings,
                            settings={"nbiot_pack": 24, "window": 2}, burst=True)
        await sim.start(kinds=("nbiot",))
        try:
            async with asyncio.timeout(40):
                while sim.stats["acked_frames"] < 30:  # noqa: ASYNC110 - the FEP's tasks
                    await asyncio.sleep(0.1)
        finally:
            await sim.stop()
    log = read_log(tmp_path / "sim.jsonl")
    acked = log.acknowledged()
    assert len(acked) >= 30 * 24
    assert len(log.keys(acked)) == len(acked)  # burst packs never repeat an hour

    def mine(ms: list[Any]) -> list[Reading]:
        return [m for m in ms if isinstance(m, Reading) and m.fep == fep.instance
                and m.register == "volume"]

    readings = mine(await consume_messages(kafka_settings, "readings.raw",
                                           until=lambda ms: len(mine(ms)) >= len(acked)))
    got = {(r.meter_id, r.register, r.ts): r.value for r in readings}
    assert len(got) == len(readings)  # each reading published once
    for rec in acked:
        assert got[(rec.meter_id, rec.register, rec.ts)] == Decimal(rec.value)
