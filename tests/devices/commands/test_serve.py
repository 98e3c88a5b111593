"""``command serve`` end to end over the real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from devices.commands.lifecycle import CommandState
from devices.commands.serve import CommandServer
from devices.commands.service import CommandService, direct_source, make_request
from devices.commands.settings import CommandSettings
from schemas import codec
from schemas.messages import (
    CommandDispatch,
    CommandRequest,
    CommandResult,
    DeadLetter,
    DeviceEvent,
    Message,
)
from schemas.settings import KafkaSettings
from tests.plugins.fleet import Fleet

pytestmark = pytest.mark.integration

_TOPICS = ("commands.requests", "commands.results", "commands.dispatch", "device.events",
           "alerts", "dlq.commands")


@pytest.fixture
def kafka(kafka_settings: KafkaSettings) -> Iterator[KafkaSettings]:
    """Topics of this test alone: what it writes (garbage included) disturbs no other test."""
    from schemas.topics import topic_spec
    from unimeter.topics import create_topics, delete_topics

    own = kafka_settings.model_copy(
        update={"topic_prefix": f"{kafka_settings.topic_prefix}{uuid.uuid4().hex[:6]}."})
    create_topics(own, tuple(topic_spec(t) for t in _TOPICS))
    yield own
    with contextlib.suppress(Exception):
        delete_topics(own, [own.topic(t) for t in _TOPICS])


@contextlib.asynccontextmanager
async def running(fleet: Fleet, kafka: KafkaSettings) -> AsyncIterator[CommandServer]:
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


async def _producer(kafka: KafkaSettings) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    return producer


async def _send(producer: AIOKafkaProducer, kafka: KafkaSettings, topic: str,
                message: Message | bytes, key: bytes = b"k") -> None:
    value = message if isinstance(message, bytes) else codec.encode(message, producer="test")
    await producer.send_and_wait(kafka.topic(topic), value, key=key)


async def _collect(kafka: KafkaSettings, topic: str, want: int,  # type: ignore[no-untyped-def]
                   match=lambda m: True) -> list[Message]:
    consumer = AIOKafkaConsumer(kafka.topic(topic), bootstrap_servers=kafka.bootstrap,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    out: list[Message] = []
    try:
        async with asyncio.timeout(60):
            while len(out) < want:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        message = codec.decode(record.value)[1]
                        if match(message):
                            out.append(message)
    finally:
        await consumer.stop()
    return out


async def _poll(done, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Wait until ``done()`` (a database or counter check, no event to await) is true."""
    async with asyncio.timeout(seconds):
        while not await done():  # noqa: ASYNC110 - polling another process's effect
            await asyncio.sleep(0.2)


async def _wait_state(service: CommandService, command_id: str, state: CommandState) -> None:
    async def reached() -> bool:
        return (await asyncio.to_thread(service.get, command_id)).state is state
    await _poll(reached)


async def test_requests_in_dispatches_out_results_applied(fleet: Fleet,
                                                          kafka: KafkaSettings) -> None:
    service = CommandService(direct_source(fleet.db.settings.conninfo("api")))
    run = uuid.uuid4().hex[:8]
    producer = await _producer(kafka)
    try:
        async with running(fleet, kafka) as server:
            # Billing closes a valve for debt through Kafka; a second copy is a no-op.
            request = CommandRequest(
                command_id=f"bill-{run}", device_id="GAS-ARM-1", command="valve_close",
                requested_by="billing", requested_at=datetime.now(UTC),
                params={"cause": "debt"}, origin="billing", client_command_id=f"b-{run}")
            for _ in range(2):
                await _send(producer, kafka, "commands.requests", request,
                            request.key())
            # An operator's command goes straight into the database (API/CLI path).
            direct = await asyncio.to_thread(service.submit, make_request(
                device_id="ELEC-1", command="read_now", requested_by="op-1",
                client_command_id=f"r-{run}"))
            wanted = {request.command_id, direct.command_id}
            sent = await _collect(kafka, "commands.dispatch", 2,
                                  lambda m: isinstance(m, CommandDispatch)
                                  and m.command_id in wanted)
            assert {m.command_id for m in sent} == wanted  # type: ignore[attr-defined]
            close = next(m for m in sent if m.command_id == request.command_id)  # type: ignore[attr-defined]
            assert isinstance(close, CommandDispatch)
            assert close.command == "valve_close"
            assert close.handler == "cjt188-2004"
            assert close.params == {"meter_type": "gas"}
            reply = CommandResult(command_id=close.command_id, device_id=close.device_id,
                                  status="delivered", ts=datetime.now(UTC), fep="fep-9",
                                  attempt=close.attempt, reply={"valve": "closed"})
            await _send(producer, kafka, "commands.results", reply, reply.key())
            await _wait_state(service, close.command_id, CommandState.CONFIRMED)
            assert server.stats.requests >= 2
            listed = await asyncio.to_thread(service.list, requested_by="billing")
            assert len([c for c in listed.items if c.command_id == request.command_id]) == 1
    finally:
        await producer.stop()


async def test_bad_input_goes_to_the_dead_letter_topic(fleet: Fleet,
                                                       kafka: KafkaSettings) -> None:
    run = uuid.uuid4().hex[:8]
    producer = await _producer(kafka)
    try:
        async with running(fleet, kafka):
            await _send(producer, kafka, "commands.requests", b"not an envelope",
                        key=f"garbage-{run}".encode())
            unknown = CommandRequest(
                command_id=f"u-{run}", device_id="NO-SUCH-METER", command="read_now",
                requested_by="billing", requested_at=datetime.now(UTC), origin="billing")
            await _send(producer, kafka, "commands.requests", unknown, unknown.key())
            stray = CommandResult(command_id=f"stray-{run}", device_id="GAS-ARM-1",
                                  status="confirmed", ts=datetime.now(UTC))
            await _send(producer, kafka, "commands.results", stray,
                        f"stray-{run}".encode())
            keys = {f"garbage-{run}".encode(), b"NO-SUCH-METER", f"stray-{run}".encode()}
            letters = await _collect(
                kafka, "dlq.commands", 3,
                lambda m: isinstance(m, DeadLetter) and (m.key_bytes in keys))
            reasons = sorted(str(m.reason.get("error")) for m in letters)  # type: ignore[attr-defined]
            assert reasons == ["CommandError", "CommandNotFoundError", "MessageDecodeError"]
            assert all(m.value for m in letters)  # type: ignore[attr-defined]
    finally:
        await producer.stop()


async def test_a_meter_closing_for_tamper_locks_automatic_reopening(
        fleet: Fleet, kafka: KafkaSettings) -> None:
    from devices.commands.errors import SafetyPolicyError

    service = CommandService(direct_source(fleet.db.settings.conninfo("api")))
    producer = await _producer(kafka)
    try:
        async with running(fleet, kafka) as server:
            event = DeviceEvent(event_id=uuid.uuid4().hex, device_id="GAS-ARM-2", kind="alarm",
                                ts=datetime.now(UTC),
                                attributes={"valve": "closed", "cause": "tamper"})
            await _send(producer, kafka, "device.events", event, event.key())
            async def seen() -> bool:
                return server.stats.events >= 1
            await _poll(seen)
            with pytest.raises(SafetyPolicyError):
                await asyncio.to_thread(service.submit, make_request(
                    device_id="GAS-ARM-2", command="valve_arm_open", requested_by="billing",
                    origin="billing"))
    finally:
        await producer.stop()
