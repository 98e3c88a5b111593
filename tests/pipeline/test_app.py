"""The app skeleton: decoding, dead letters, send-then-commit ordering, poison messages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.app import BatchResult, Incoming, PipelineApp, create_app, discover_agents
from pipeline.errors import PipelineError
from pipeline.settings import PipelineSettings
from schemas import codec
from schemas.messages import Alert, DeadLetter, Reading
from schemas.settings import KafkaSettings

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def _reading(meter: str, value: str = "1.000") -> bytes:
    return codec.encode(Reading(meter_id=meter, register="volume", ts=T0,
                                value=Decimal(value), unit="m3", received_at=T0),
                        producer="test")


def _alert_for(app: PipelineApp, item: Incoming[Reading]) -> object:
    return app.output("alerts", Alert(alert_id=f"a-{item.offset}", object_type="meter",
                                      object_id=item.message.meter_id, severity="info",
                                      code="seen", reason="", ts=T0))


async def _run(app: PipelineApp, name: str, records: list[tuple[bytes, bytes]]) -> None:
    app.faust.finalize()
    agent = app.faust.agents[name]
    async with agent.test_context() as ctx:
        for key, value in records:
            await ctx.put(value, key=key)
        await asyncio.sleep(0.15)  # let the last batch time out and be handled


async def test_bad_records_are_dead_lettered_and_good_ones_handled(recording_app) -> None:
    app = recording_app
    seen: list[str] = []

    @app.batch_agent("readings.raw", Reading, name="t")
    def handle(batch: list[Incoming[Reading]]) -> BatchResult:
        seen.extend(i.message.meter_id for i in batch)
        return BatchResult(outputs=[_alert_for(app, i) for i in batch])  # type: ignore[misc]

    alert = codec.encode(Alert(alert_id="x", object_type="m", object_id="m", severity="info",
                               code="c", reason="", ts=T0), producer="test")
    await _run(app, "t", [(b"M1", _reading("M1")), (b"M2", b"\xff\x00garbage"),
                          (b"M3", alert), (b"M4", _reading("M4"))])
    assert seen == ["M1", "M4"]
    dead = [codec.decode(o.value, DeadLetter)[1] for o in app.sender.on("dlq.pipeline")]
    assert [d.key_bytes for d in dead] == [b"M2", b"M3"]  # type: ignore[attr-defined]
    assert dead[0].value == b"\xff\x00garbage"  # type: ignore[attr-defined]
    assert dead[0].source_topic == "unit.readings.raw"  # type: ignore[attr-defined]
    assert dead[0].offset == 1  # type: ignore[attr-defined]
    assert "not a unimeter envelope" in dead[0].reason["reason"]  # type: ignore[attr-defined]
    assert "expected schema 'reading.raw'" in dead[1].reason["reason"]  # type: ignore[attr-defined]
    assert len(app.sender.on("alerts")) == 2


async def test_state_is_written_only_after_the_outputs_were_sent(recording_app) -> None:
    app = recording_app
    order: list[str] = []
    original = app.sender.send

    async def send(outputs):  # type: ignore[no-untyped-def]
        await original(outputs)
        order.append(f"sent {len(outputs)}")

    app.sender.send = send

    @app.batch_agent("readings.raw", Reading, name="t")
    def handle(batch: list[Incoming[Reading]]) -> BatchResult:
        return BatchResult(outputs=[_alert_for(app, i) for i in batch],  # type: ignore[misc]
                           after_send=lambda: order.append(f"state {len(batch)}"))

    await _run(app, "t", [(b"M1", _reading("M1")), (b"M2", _reading("M2"))])
    assert order
    assert order[0].startswith("sent")
    assert sum(int(o.split()[1]) for o in order if o.startswith("state")) == 2
    for i, item in enumerate(order):
        if item.startswith("state"):
            assert order[i - 1].startswith("sent")


async def test_a_poison_message_is_dead_lettered_and_the_rest_of_its_batch_survives(
        recording_app) -> None:
    app = recording_app
    done: list[str] = []

    @app.batch_agent("readings.raw", Reading, name="t")
    async def handle(batch: list[Incoming[Reading]]) -> BatchResult:
        if any(i.message.value < 0 for i in batch):
            raise ZeroDivisionError("bug")
        return BatchResult(after_send=lambda: done.extend(i.message.meter_id for i in batch))

    poison = _reading("M2", "-1")
    await _run(app, "t", [(b"M1", _reading("M1")), (b"M2", poison), (b"M3", _reading("M3"))])
    assert done == ["M1", "M3"]
    dead = [codec.decode(o.value, DeadLetter)[1] for o in app.sender.on("dlq.pipeline")]
    assert len(dead) == 1
    assert dead[0].key_bytes == b"M2"  # type: ignore[attr-defined]
    assert dead[0].value == poison  # type: ignore[attr-defined]
    assert "bug, not bad input" in dead[0].reason["reason"]  # type: ignore[attr-defined]


def test_unknown_agent_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    settings = PipelineSettings(store="memory://", data_dir=tmp_path, agents=("nope",))
    with pytest.raises(PipelineError, match="unknown pipeline agent 'nope'") as err:
        create_app(settings, KafkaSettings(bootstrap="127.0.0.1:1"))
    assert "known agents" in (err.value.hint or "")


def test_agents_are_discovered_from_module_names() -> None:
    assert all(name.isidentifier() for name in discover_agents())


def test_topics_carry_the_configured_prefix(recording_app) -> None:
    assert recording_app.topic("readings.raw").get_topic_name() == "unit.readings.raw"
    with pytest.raises(KeyError, match="unknown topic"):
        recording_app.topic("readings.cooked")
    assert recording_app.app_id == "unit.pipeline"


async def test_outputs_are_sent_again_while_the_broker_is_away(recording_app,
                                                               monkeypatch) -> None:
    """Regression (fault run): a send that timed out while Kafka was down crashed the agent,
    faust restarted it past the batch, and the batch's readings were never validated."""
    app = recording_app
    original = app.sender.send
    failures = {"left": 2}
    order: list[str] = []

    async def send(outputs):  # type: ignore[no-untyped-def]
        if outputs and failures["left"]:
            failures["left"] -= 1
            raise TimeoutError("broker away")
        await original(outputs)
        order.append(f"sent {len(outputs)}")

    app.sender.send = send
    real_sleep = asyncio.sleep
    monkeypatch.setattr("pipeline.app.asyncio.sleep", lambda _s: real_sleep(0))

    @app.batch_agent("readings.raw", Reading, name="t")
    def handle(batch: list[Incoming[Reading]]) -> BatchResult:
        return BatchResult(outputs=[_alert_for(app, i) for i in batch],  # type: ignore[misc]
                           after_send=lambda: order.append(f"state {len(batch)}"))

    await _run(app, "t", [(b"M1", _reading("M1")), (b"M2", _reading("M2"))])
    assert failures["left"] == 0
    assert app.counters["send_retries"] == 2
    assert len(app.sender.on("alerts")) == 2, "every output reached the broker in the end"
    assert sum(int(o.split()[1]) for o in order if o.startswith("state")) == 2
    assert order[0].startswith("sent")


def test_without_web_server_the_monitor_skips_only_its_per_record_counters(tmp_path) -> None:
    """faust's rebalance bookkeeping needs its sensors unchanged while the worker runs (a
    monitor swapped at agent start left a rebalance's end looking up a sensor its start
    never saw, and the consumer never resumed); the monitor is built quiet instead: the
    per-record counters, which nobody reads without the web server, are skipped."""
    from faust.sensors import Monitor
    from faust.types import TP

    from tests.pipeline.conftest import make_app

    app = make_app(tmp_path)
    app.faust.on_init_dependencies()  # what the worker does when it starts
    monitor = app.faust.monitor
    assert monitor in list(app.faust.sensors)
    tp = TP("unit.readings.raw", 0)
    app.faust.sensors.on_message_in(tp, 7, object())  # type: ignore[arg-type]
    state = app.faust.sensors.on_stream_event_in(tp, 7, object(), object())  # type: ignore[arg-type]
    app.faust.sensors.on_stream_event_out(tp, 7, object(), object(), state)  # type: ignore[arg-type]
    assert (monitor.messages_received_total, monitor.events_total) == (0, 0)
    # the rebalance hooks still record (faust warns on every rebalance without them)
    assert app.faust.sensors.on_rebalance_start(app.faust)[monitor]
    with_web = make_app(tmp_path / "web", web_port=6099)
    assert type(with_web.faust.monitor) is Monitor


def test_a_dead_workers_session_ends_long_before_faust_default_would(tmp_path: Path) -> None:
    """A worker killed with -9 keeps its partitions until the broker ends its session, and
    its restarted successor's join waits for that: the app passes the (short) session timeout
    and heartbeat of the settings to faust instead of faust's 60 s."""
    from tests.pipeline.conftest import make_app

    defaults = PipelineSettings()
    assert defaults.session_timeout_s < 60
    assert defaults.heartbeat_interval_s * 3 <= defaults.session_timeout_s
    app = make_app(tmp_path, session_timeout_s=12, heartbeat_interval_s=4)
    assert (app.faust.conf.broker_session_timeout, app.faust.conf.broker_heartbeat_interval) \
        == (12, 4)
    with pytest.raises(ValueError, match="at most a third of session_timeout_s"):
        PipelineSettings(session_timeout_s=12, heartbeat_interval_s=5)


def test_the_partition_cache_keeps_a_topics_keys_for_its_partition_count_and_bounded() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from pipeline.app import PartitionCache

    partitioner, cache = DefaultPartitioner(), PartitionCache(limit=3)
    keys = [f"GM-{i}".encode() for i in range(5)]
    six = cache.of("t", 6)
    for key in keys[:3]:
        cache.remember(six, key, partitioner(key, list(range(6)), list(range(6))))
    assert cache.of("t", 6) is six
    assert six == {k: partitioner(k, list(range(6)), list(range(6))) for k in keys[:3]}
    assert cache.of("other", 6) == {}  # per topic
    cache.remember(six, keys[3], 1)  # over the limit: starts over
    assert six == {keys[3]: 1}
    twelve = cache.of("t", 12)  # the topic gained partitions: nothing carried over
    assert twelve == {}
    assert cache.of("t", 12) is twelve
