"""The VEE agent with faust's test_context: enrichment, versions, dead letters, replays."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.app import Incoming, PipelineApp, create_app
from pipeline.settings import PipelineSettings
from pipeline.vee_agent import VeeRunner
from schemas import codec
from schemas.messages import (
    Alert,
    DeadLetter,
    LedgerMeter,
    LedgerVeeGroup,
    Reading,
    ReadingBatch,
    ReadingEdit,
    ValidatedReading,
)
from schemas.settings import KafkaSettings
from tests.pipeline.conftest import RecordingSender

T0 = datetime(2026, 7, 6, tzinfo=UTC)


def _app(tmp_path: Path, store: dict[bytes, bytes] | None = None) -> PipelineApp:
    settings = PipelineSettings(store="memory://", ledger_wait_s=0, batch_within_s=0.01,
                                data_dir=tmp_path)
    app = create_app(settings, KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="unit."),
                     agents=["vee"])
    app.sender = RecordingSender()
    app.extensions["vee"].store = {} if store is None else store
    app.ledger.put(LedgerMeter(meter_id="GM-1", status="active", medium="gas", updated_at=T0,
                               qmax=Decimal("4"), account_id="A-1", customer_type="residential",
                               region="north", tariff_id="BJ-GAS", supply_node="PZ-2",
                               has_valve=True))
    return app


def _reading(hours: int, value: str, meter: str = "GM-1") -> bytes:
    ts = T0 + timedelta(hours=hours)
    return codec.encode(Reading(meter_id=meter, register="volume", ts=ts, value=Decimal(value),
                                unit="m3", received_at=ts + timedelta(seconds=20),
                                frame_id=f"f-{hours}"), producer="test")


async def _feed(app: PipelineApp, records: list[tuple[bytes, bytes]]) -> None:
    app.faust.finalize()
    async with app.faust.agents["vee"].test_context() as agent:
        for key, value in records:
            await agent.put(value, key=key)
        await asyncio.sleep(0.2)


def _validated(app: PipelineApp) -> list[ValidatedReading]:
    return [codec.decode(o.value, ValidatedReading)[1]  # type: ignore[misc]
            for o in app.sender.on("readings.validated")]  # type: ignore[attr-defined]


async def test_readings_are_validated_enriched_and_versioned(tmp_path: Path) -> None:
    app = _app(tmp_path)
    await _feed(app, [(b"GM-1", _reading(h, v)) for h, v in
                      ((0, "100"), (1, "101"), (2, "102"), (4, "104"), (3, "103"))])
    out = _validated(app)
    latest = {}
    for o in out:
        latest[o.ts] = o
    assert len(latest) == 5
    first = latest[T0]
    assert first.dims.account_id == "A-1"
    assert first.dims.region == "north"
    assert first.dims.tariff_id == "BJ-GAS"
    assert first.dims.vee_group == "gas"
    assert first.frame_id == "f-0"
    # 03:00 was missing when 04:00 arrived: estimated, then replaced by the late actual
    three = [o for o in out if o.ts == T0 + timedelta(hours=3)]
    assert [(o.version, o.quality) for o in three] == [(1, "estimated"), (2, "validated")]
    assert three[-1].frame_id == "f-3"
    assert latest[T0 + timedelta(hours=4)].consumption == Decimal("1.000")
    assert app.extensions["vee"].store[b"GM-1"]


async def test_bad_records_and_impossible_edits_are_dead_lettered(tmp_path: Path) -> None:
    app = _app(tmp_path)
    edit = ReadingEdit(edit_id="e", meter_id="GM-1", register="heat", ts=T0, user="u",
                       at=T0, reason_code="X", value=Decimal("1"))
    alert = Alert(alert_id="a", object_type="m", object_id="m", severity="info", code="c",
                  reason="", ts=T0)
    await _feed(app, [(b"GM-1", b"not json"), (b"GM-1", codec.encode(edit, producer="t")),
                      (b"GM-1", codec.encode(alert, producer="t")),
                      (b"GM-1", _reading(0, "100"))])
    dead = [codec.decode(o.value, DeadLetter)[1]
            for o in app.sender.on("dlq.pipeline")]  # type: ignore[attr-defined]
    reasons = [d.reason["reason"] for d in dead]  # type: ignore[attr-defined]
    assert len(dead) == 3
    assert any("not a unimeter envelope" in r for r in reasons)
    assert any("no value of this register" in r for r in reasons)
    assert any("schema 'alert' does not belong on" in r for r in reasons)
    assert len(_validated(app)) == 1


async def test_a_replay_after_a_crash_produces_identical_messages(tmp_path: Path) -> None:
    store: dict[bytes, bytes] = {}
    first = _app(tmp_path / "a", store)
    await _feed(first, [(b"GM-1", _reading(h, str(100 + h))) for h in range(3)])
    saved = dict(store)
    records = [(b"GM-1", _reading(h, str(100 + h))) for h in (3, 5, 6)]
    one = _app(tmp_path / "b", dict(saved))
    await _feed(one, records)
    # the worker crashed before writing its state: the same input is delivered again
    two = _app(tmp_path / "c", dict(saved))
    await _feed(two, records)
    sent_one = [(o.topic, o.key, o.value) for o in one.sender.sent]  # type: ignore[attr-defined]
    sent_two = [(o.topic, o.key, o.value) for o in two.sender.sent]  # type: ignore[attr-defined]
    assert sent_one == sent_two
    assert any(t == "readings.validated" for t, _, _ in sent_one)


async def test_a_batch_gives_exactly_what_its_readings_give_one_by_one(tmp_path: Path) -> None:
    """FEPs publish a meter's readings of one frame as one ``reading.raw.batch`` record: the
    agent takes them in order, as if they had come one record each (the same outputs, byte
    for byte, and the same stored state)."""
    hours = [(0, "100"), (1, "101"), (2, "102"), (4, "104"), (3, "103"), (5, "104.5")]
    singles = [(b"GM-1", _reading(h, v)) for h, v in hours]
    readings = [codec.decode(v, Reading)[1] for _, v in singles]
    batches = [(b"GM-1", codec.encode(ReadingBatch(meter_id="GM-1", readings=tuple(part)),
                                      producer="test"))
               for part in (readings[:4], readings[4:])]
    one_store: dict[bytes, bytes] = {}
    two_store: dict[bytes, bytes] = {}
    one, two = _app(tmp_path / "a", one_store), _app(tmp_path / "b", two_store)
    await _feed(one, singles)
    await _feed(two, batches)
    sent_one = [(o.topic, o.key, o.value) for o in one.sender.sent]  # type: ignore[attr-defined]
    sent_two = [(o.topic, o.key, o.value) for o in two.sender.sent]  # type: ignore[attr-defined]
    assert sum(t == "readings.validated" for t, _, _ in sent_two) >= len(hours)
    assert sent_two == sent_one
    assert two_store == one_store
    assert two.extensions["vee"].counters["readings"] == len(hours)


async def test_a_batch_of_another_meters_readings_is_dead_lettered(tmp_path: Path) -> None:
    """A batch whose readings are not all of its meter (its key) is refused whole, with the
    reason, and nothing of it is validated."""
    app = _app(tmp_path)
    good = codec.decode(_reading(0, "100"), Reading)[1]
    value = codec.encode(ReadingBatch(meter_id="GM-1", readings=(good,)), producer="t")
    value = value.replace(b'"meter_id":"GM-1","register"', b'"meter_id":"GM-2","register"', 1)
    assert b'"meter_id":"GM-2"' in value
    await _feed(app, [(b"GM-1", value)])
    dead = [codec.decode(o.value, DeadLetter)[1]
            for o in app.sender.on("dlq.pipeline")]  # type: ignore[attr-defined]
    assert len(dead) == 1
    assert "not of the batch's meter 'GM-1'" in dead[0].reason["reason"]  # type: ignore[attr-defined]
    assert dead[0].value == value  # type: ignore[attr-defined]
    assert _validated(app) == []


async def test_ledger_vee_groups_replace_file_groups_and_bad_ones_raise_an_alert(
        tmp_path: Path) -> None:
    app = _app(tmp_path)
    app.ledger.put(LedgerVeeGroup(group_id="gas", version=2, updated_at=T0,
                                  spec="rules: [{rule: absolute_limits, upper: 0.5}]"))
    app.ledger.put(LedgerVeeGroup(group_id="broken", version=1, updated_at=T0,
                                  spec="rules: [no_such_rule]"))
    await _feed(app, [(b"GM-1", _reading(0, "100")), (b"GM-1", _reading(1, "101"))])
    second = [o for o in _validated(app) if o.ts == T0 + timedelta(hours=1)][-1]
    assert second.flags == ("absolute_limits",)
    alerts = [codec.decode(o.value, Alert)[1]
              for o in app.sender.on("alerts")]  # type: ignore[attr-defined]
    assert any(a.code == "vee.group_invalid" and a.object_id == "broken"  # type: ignore[attr-defined]
               for a in alerts)


async def test_a_meter_changed_in_the_ledger_enriches_the_next_readings_with_the_change(
        tmp_path: Path) -> None:
    """The agent keeps the engine's view of a meter between readings; a ledger change of the
    meter must reach the next reading, not the cached view."""
    app = _app(tmp_path)
    runner = app.extensions["vee"]
    assert runner.meter("GM-1").dims.region == "north"
    assert runner.meter("GM-1") is runner.meter("GM-1")
    app.ledger.put(LedgerMeter(meter_id="GM-1", status="active", medium="gas", updated_at=T0,
                               ledger_version=2, qmax=Decimal("4"), account_id="A-2",
                               customer_type="commercial", region="south", has_valve=True))
    await _feed(app, [(b"GM-1", _reading(0, "100"))])
    first = _validated(app)[0]
    assert (first.dims.region, first.dims.account_id) == ("south", "A-2")


def _batch(hours: range, value_of: Any = lambda h: str(100 + h)) -> list[Incoming[Any]]:
    batch: list[Incoming[Any]] = []
    for h in hours:
        raw = _reading(h, value_of(h))
        batch.append(Incoming(codec.decode(raw, Reading)[1], b"GM-1", "readings.raw", 0, h,
                              raw))
    return batch


def _run(runner: VeeRunner, batch: list[Incoming[Any]], *, write: bool = True) -> list[bytes]:
    result = runner.handle(batch)
    if write and result.after_send is not None:
        result.after_send()
    return [o.value for o in result.outputs if o.topic == "readings.validated"]


def test_the_decoded_state_is_reused_only_while_the_store_holds_what_the_worker_wrote(
        tmp_path: Path) -> None:
    store: dict[bytes, bytes] = {}
    runner: VeeRunner = _app(tmp_path / "a", store).extensions["vee"]

    def reference(name: str) -> VeeRunner:
        """A runner without the cache over a copy of the store as it is now."""
        other: VeeRunner = _app(tmp_path / name).extensions["vee"]
        other.store = dict(store)
        return other

    _run(runner, _batch(range(0, 3)))
    assert runner.counters["state_decoded"] == 0  # a new meter: nothing to decode
    before = reference("b")
    assert _run(runner, _batch(range(3, 6))) == _run(before, _batch(range(3, 6)))
    assert runner.counters["state_decoded"] == 0  # the state it wrote, not decoded again
    # The store changes underneath (a rebalance restored another worker's newer state):
    other_writer: VeeRunner = _app(tmp_path / "c").extensions["vee"]
    other_writer.store = store
    _run(other_writer, _batch(range(6, 8)))
    now = reference("d")
    assert _run(runner, _batch(range(8, 9))) == _run(now, _batch(range(8, 9)))
    assert runner.counters["state_decoded"] == 1  # decoded from the store, not the cache


def test_a_batch_that_is_never_written_leaves_no_changed_state_behind(tmp_path: Path) -> None:
    """The engine changes states in place: outputs of a batch whose write did not happen
    (a crash of the send, a failure) must not leak into the next batch through the cache."""
    store: dict[bytes, bytes] = {}
    runner: VeeRunner = _app(tmp_path / "a", store).extensions["vee"]
    reference: VeeRunner = _app(tmp_path / "b", {}).extensions["vee"]
    reference.store = dict_store = dict[bytes, bytes]()
    for r in (runner, reference):
        _run(r, _batch(range(0, 3)))
    dict_store.update(store)
    _run(runner, _batch(range(3, 5), lambda h: "90"), write=False)  # never acknowledged
    assert _run(runner, _batch(range(3, 6))) == _run(reference, _batch(range(3, 6)))
    assert store == dict_store
