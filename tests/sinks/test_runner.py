"""The sink process end to end: real Kafka, real PostgreSQL, offsets, dead letters, outages."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest

from schemas import codec
from schemas.messages import CommandRequest, DeadLetter, Message, Reading
from schemas.settings import DatabaseSettings, KafkaSettings, UtilitySettings
from schemas.topics import topic_spec
from sinks.postgres import Backoff, PostgresSink
from sinks.runner import SinkRunner
from sinks.settings import DEFAULT_TOPICS, SinkSettings
from tests.plugins.services import DbHandle
from tests.sinks.fakes import FakeConsumer, NoSink
from tests.sinks.fleet import HOUR, fleet
from unimeter.topics import create_topics, delete_topics

pytestmark = pytest.mark.integration

T0 = datetime(2026, 7, 9, 12, tzinfo=UTC)


@pytest.fixture
def sink_kafka(kafka_settings: KafkaSettings) -> Iterator[KafkaSettings]:
    """Topics of this test only (a prefix of its own), so earlier tests' data is not seen."""
    settings = kafka_settings.model_copy(
        update={"topic_prefix": f"{kafka_settings.topic_prefix}{uuid.uuid4().hex[:6]}."})
    specs = tuple(topic_spec(n) for n in (*DEFAULT_TOPICS, "dlq.sink"))
    report = create_topics(settings, specs)
    yield settings
    with contextlib.suppress(Exception):
        delete_topics(settings, report.created + report.existing)


def produce(kafka: KafkaSettings, items: list[tuple[str, Message | bytes, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap.split(","), acks="all")
    for topic, value, key in items:
        data = value if isinstance(value, bytes) else codec.encode(value, producer="test")
        producer.send(kafka.topic(topic), key=key, value=data)
    producer.flush(timeout=30)
    producer.close()


def dead_letters(kafka: KafkaSettings, expected: int) -> list[DeadLetter]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(kafka.topic("dlq.sink"), bootstrap_servers=kafka.bootstrap.split(","),
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=120_000)  # returns once it has `expected`
    out: list[DeadLetter] = []
    for rec in consumer:
        message = codec.decode(rec.value)[1]
        assert isinstance(message, DeadLetter)
        out.append(message)
        if len(out) >= expected:
            break
    consumer.close()
    return out


def committed(kafka: KafkaSettings, group: str, topic: str) -> dict[int, int | None]:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap.split(","), group_id=group,
                             enable_auto_commit=False)
    parts = consumer.partitions_for_topic(kafka.topic(topic)) or set()
    out = {p: consumer.committed(TopicPartition(kafka.topic(topic), p)) for p in parts}
    consumer.close()
    return out


def end_offsets(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap.split(","))
    parts = [TopicPartition(kafka.topic(topic), p)
             for p in consumer.partitions_for_topic(kafka.topic(topic)) or set()]
    ends = consumer.end_offsets(parts)
    consumer.close()
    return {tp.partition: off for tp, off in ends.items()}


def make_runner(db: DatabaseSettings, kafka: KafkaSettings, group: str, **overrides: Any
                ) -> SinkRunner:
    settings = SinkSettings(group_id=group, commit_interval_ms=200, **overrides)
    sink = PostgresSink(db.conninfo("sink"), consumer_group=group,
                        max_batch_records=settings.batch_max_records,
                        backoff=Backoff(0.2, 1.0), connect_timeout_s=2)
    return SinkRunner(sink, kafka, settings)


def count(db: DatabaseSettings, table: str) -> int:
    with psycopg.connect(db.url, connect_timeout=3) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition``; a database or broker that cannot answer yet means 'not yet'."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.Error, KafkaError):
            if condition():
                return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_stores_commits_after_the_database_and_dead_letters_what_it_cannot_store(
        database: DbHandle, sink_kafka: KafkaSettings) -> None:
    readings = list(fleet(20, T0, 5))
    nul = msgspec.structs.replace(readings[0], ts=T0 - HOUR, source="bad\x00")
    raw = [Reading(meter_id=f"GAS-{i:06d}", register="volume", ts=T0, value=Decimal(i),
                   unit="m3", received_at=T0) for i in range(10)]
    wrong = CommandRequest(command_id="c-1", device_id="D-1", command="read_now",
                           requested_by="test", requested_at=T0)
    items: list[tuple[str, Message | bytes, bytes]] = [
        ("readings.validated", m, m.key()) for m in readings]
    items += [("readings.raw", m, m.key()) for m in raw]
    items += [("readings.raw", b"\x68\x10not an envelope", b"GAS-000001"),
              ("readings.validated", nul, nul.key()),
              ("alerts", wrong, b"D-1")]
    produce(sink_kafka, items)

    group = f"sink-{uuid.uuid4().hex[:6]}"
    metrics = make_runner(database.settings, sink_kafka, group).run(until_idle_s=3)

    assert count(database.settings, "data.validated_readings") == len(readings)
    assert count(database.settings, "data.consumption_intervals") == len(readings)
    assert count(database.settings, "data.raw_readings") == len(raw)
    assert metrics.dead_lettered == 3
    letters = dead_letters(sink_kafka, 3)
    assert sorted(str(d.reason.get("error")) for d in letters) == [
        "CharacterNotInRepertoire", "MessageDecodeError", "NoStoreForSchema"]
    by_error = {str(d.reason.get("error")): d for d in letters}
    garbage = by_error["MessageDecodeError"]
    assert garbage.value == b"\x68\x10not an envelope"
    assert garbage.source_topic == sink_kafka.topic("readings.raw")
    assert garbage.offset is not None
    assert garbage.partition is not None
    refused = by_error["CharacterNotInRepertoire"]
    assert str(refused.reason["sqlstate"]).startswith("22")
    assert codec.decode(refused.value)[1] == nul
    for topic in ("readings.validated", "readings.raw", "alerts"):
        assert committed(sink_kafka, group, topic) == {
            p: (end or None) for p, end in end_offsets(sink_kafka, topic).items()}

    # Everything again: the same group starts where it committed and stores nothing new; a
    # fresh group re-reads it all and absorbs every duplicate.
    again = make_runner(database.settings, sink_kafka, group).run(until_idle_s=2)
    assert again.records_in == 0
    replay = make_runner(database.settings, sink_kafka, group + "-replay").run(until_idle_s=3)
    assert replay.rows_written == 0
    assert replay.absorbed == len(readings) + len(raw)
    assert count(database.settings, "data.validated_readings") == len(readings)


@pytest.fixture
def private_database(private_postgres: Any, config: Any) -> DatabaseSettings:
    from unimeter.db.migrate import migrate

    settings = DatabaseSettings(url=private_postgres.url(), timescale="off")
    migrate(settings, UtilitySettings())
    return settings


def test_database_stopped_during_a_run_loses_nothing(
        private_postgres: Any, private_database: DatabaseSettings,
        sink_kafka: KafkaSettings) -> None:
    group = f"sink-{uuid.uuid4().hex[:6]}"
    runner = make_runner(private_database, sink_kafka, group, batch_max_records=50)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        first = list(fleet(30, T0, 4))
        produce(sink_kafka, [("readings.validated", m, m.key()) for m in first])
        wait_for(lambda: count(private_database, "data.validated_readings") == len(first), 60,
                 "the first readings")
        wait_for(lambda: sum(v or 0 for v in committed(sink_kafka, group,
                                                       "readings.validated").values())
                 == len(first), 30, "the first commit")

        private_postgres.stop()
        second = list(fleet(30, T0 + 4 * HOUR, 4))
        produce(sink_kafka, [("readings.validated", m, m.key()) for m in second])
        wait_for(lambda: runner.metrics.backpressure_events >= 2, 90,
                 "the sink to back off twice while the database is down")
        # Nothing advanced while the database was away.
        assert sum(v or 0 for v in committed(sink_kafka, group,
                                             "readings.validated").values()) == len(first)
        assert runner.metrics.database_down_since is not None

        private_postgres.start()
        total = len(first) + len(second)
        wait_for(lambda: count(private_database, "data.validated_readings") == total, 90,
                 "the readings sent while the database was down")
        wait_for(lambda: sum(v or 0 for v in committed(sink_kafka, group,
                                                       "readings.validated").values())
                 == total, 30, "the commit after the outage")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert count(private_database, "data.consumption_intervals") == total
    with psycopg.connect(private_database.url) as conn:
        duplicates = conn.execute(
            "SELECT count(*) FROM (SELECT meter_id, ts FROM data.validated_readings "
            "GROUP BY 1, 2 HAVING count(*) > 1) d").fetchone()
    assert duplicates == (0,)


def test_idle_time_counts_only_after_the_group_assigned_partitions(
        monkeypatch: pytest.MonkeyPatch, kafka_settings: KafkaSettings) -> None:
    # On a busy broker joining the group takes longer than `until_idle_s`: a one-shot run
    # must not give up before it had its partitions (it then stored nothing at all).
    runner = SinkRunner(NoSink(), kafka_settings, SinkSettings())  # type: ignore[arg-type]
    consumer = FakeConsumer(runner, join_at=5)  # a slow join
    consumer.install(monkeypatch)
    runner.run(until_idle_s=0)
    assert consumer.polls == 5


def test_the_consumer_uses_the_short_group_session_of_the_settings(
        kafka_settings: KafkaSettings) -> None:
    # kafka-python's default session (45 s) kept a killed sink's partitions, and its restarted
    # successor idle, that long.
    settings = SinkSettings(session_timeout_ms=7_000, heartbeat_interval_ms=2_000)
    runner = SinkRunner(NoSink(), kafka_settings, settings)  # type: ignore[arg-type]
    runner._connect()
    try:
        config = runner._consumer.config
        assert (config["session_timeout_ms"], config["heartbeat_interval_ms"]) == (7_000, 2_000)
    finally:
        runner._consumer.close()
    assert SinkSettings().session_timeout_ms < 45_000
    with pytest.raises(ValueError, match="at most a third of session_timeout_ms"):
        SinkSettings(session_timeout_ms=7_000, heartbeat_interval_ms=3_000)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def tcp_forwarder(port: int, upstream: str) -> Iterator[None]:
    """Listen on ``port`` and pass every connection through to ``upstream`` (host:port): a
    bootstrap address that starts answering only when the test says so."""
    import socket

    host, _, up_port = upstream.rpartition(":")
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.2)
    done = threading.Event()
    sockets: list[socket.socket] = [server]

    def pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not done.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            remote = socket.create_connection((host, int(up_port)))
            sockets.extend((client, remote))
            for a, b in ((client, remote), (remote, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def test_a_sink_started_before_kafka_waits_for_it_then_stores_everything(
        database: DbHandle, sink_kafka: KafkaSettings) -> None:
    # Regression: the sink exited ("cannot reach Kafka") when it started before the broker,
    # and only its supervisor brought it back.
    readings = list(fleet(10, T0, 3))
    produce(sink_kafka, [("readings.validated", m, m.key()) for m in readings])
    port = _free_port()
    late = sink_kafka.model_copy(update={"bootstrap": f"127.0.0.1:{port}"})
    runner = make_runner(database.settings, late, f"sink-{uuid.uuid4().hex[:6]}",
                         retry_initial_ms=200, retry_max_ms=500)
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(runner.run(until_idle_s=3)),
                              daemon=True)
    thread.start()
    wait_for(lambda: runner.metrics.kafka_connect_failures >= 1, 60,
             "a failed attempt to reach the broker")
    assert thread.is_alive()  # still waiting, not exited
    assert count(database.settings, "data.validated_readings") == 0
    with tcp_forwarder(port, sink_kafka.bootstrap):
        thread.join(timeout=120)
    assert not thread.is_alive()
    assert outcome == [runner.metrics]
    assert count(database.settings, "data.validated_readings") == len(readings)


def test_a_sink_waiting_for_kafka_stops_on_request_and_gives_up_after_its_wait(
        kafka_settings: KafkaSettings) -> None:
    from sinks.errors import SinkError

    nowhere = kafka_settings.model_copy(update={"bootstrap": f"127.0.0.1:{_free_port()}"})
    patient = SinkRunner(NoSink(), nowhere,  # type: ignore[arg-type]
                         SinkSettings(kafka_wait_s=3600, retry_initial_ms=100))
    stop = threading.Event()
    thread = threading.Thread(target=patient.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: patient.metrics.kafka_connect_failures >= 1, 60, "a failed attempt")
    stop.set()
    thread.join(timeout=15)  # one bootstrap attempt at most, not kafka-python's 30 s
    assert not thread.is_alive()

    hasty = SinkRunner(NoSink(), nowhere,  # type: ignore[arg-type]
                       SinkSettings(kafka_wait_s=0.5, retry_initial_ms=100))
    with pytest.raises(SinkError, match=r"cannot reach Kafka at .*gave up after \d+ attempts"
                       ) as raised:
        hasty.run()
    assert "unimeter services up" in (raised.value.hint or "")


def test_a_sink_whose_topics_appear_after_it_joined_gets_them_and_stores_everything(
        database: DbHandle, kafka_settings: KafkaSettings) -> None:
    # The group's assignment is made before the topics exist: the sink holds no partitions
    # and must rejoin once the broker's metadata has them (a CI run under heavy load showed
    # "No partition metadata for topic ..." at assignment and a sink that stored nothing).
    kafka = kafka_settings.model_copy(
        update={"topic_prefix": f"{kafka_settings.topic_prefix}{uuid.uuid4().hex[:6]}."})
    runner = make_runner(database.settings, kafka, f"sink-{uuid.uuid4().hex[:6]}")
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    specs = tuple(topic_spec(n) for n in (*DEFAULT_TOPICS, "dlq.sink"))
    report = None
    try:
        wait_for(lambda: runner._joined, 60, "the sink to join its group")
        report = create_topics(kafka, specs)
        readings = list(fleet(10, T0, 2))
        produce(kafka, [("readings.validated", m, m.key()) for m in readings])
        wait_for(lambda: count(database.settings, "data.validated_readings") == len(readings),
                 60, "the readings of topics created after the sink joined")
    finally:
        stop.set()
        thread.join(timeout=30)
        if report is not None:
            with contextlib.suppress(Exception):
                delete_topics(kafka, report.created + report.existing)
