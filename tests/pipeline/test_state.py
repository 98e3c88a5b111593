"""Agent state tables: one changelog record per key per batch, after the outputs, in the
key's partition, then in the local store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from pipeline.app import BatchResult, Incoming, Output, PipelineApp
from pipeline.errors import PipelineError
from schemas import codec
from schemas.messages import Reading

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def _reading(meter: str, value: int) -> bytes:
    return codec.encode(Reading(meter_id=meter, register="volume", ts=T0, value=Decimal(value),
                                unit="m3", received_at=T0), producer="test")


async def _run(app: PipelineApp, name: str, records: list[tuple[bytes, bytes, int]]) -> None:
    app.faust.finalize()
    async with app.faust.agents[name].test_context() as ctx:
        for key, value, partition in records:
            await ctx.put(value, key=key, partition=partition)
        await asyncio.sleep(0.2)


async def test_writes_reach_changelog_after_outputs_once_per_key_then_the_store(
        recording_app) -> None:
    app = recording_app
    state = app.table("t_state")

    @app.batch_agent("readings.raw", Reading, name="t")
    def handle(batch: list[Incoming[Reading]]) -> BatchResult:
        def write() -> None:
            for item in batch:  # later readings of a meter overwrite earlier ones
                state[item.message.meter_id.encode()] = str(item.message.value).encode()
        return BatchResult(outputs=[Output("alerts", item.key or b"", b"x") for item in batch],
                           after_send=write)

    await _run(app, "t", [(b"A", _reading("A", 1), 0), (b"B", _reading("B", 2), 3),
                          (b"A", _reading("A", 3), 0), (b"B", _reading("B", 4), 3)])
    sent = app.sender.sent
    changelog = [o for o in sent if o.internal]
    assert changelog, "the writes reached the changelog"
    assert {o.topic for o in changelog} == {state.changelog_topic}
    assert state.changelog_topic.endswith("t_state-changelog")
    # after the outputs of their batch, never before
    first_change = sent.index(changelog[0])
    assert any(not o.internal for o in sent[:first_change])
    # one record per key and batch, the last value, in the partition of the key's input
    latest = {(o.key, o.partition): o.value for o in changelog}
    assert latest == {(b"A", 0): b"3", (b"B", 3): b"4"}
    assert len(changelog) <= 4
    # applied to the local store (not only pending), where faust's recovery would put them
    assert state.pending == 0
    assert state.table.data[b"A"] == b"3"
    assert dict(state.items()) == {b"A": b"3", b"B": b"4"}


async def test_pending_writes_are_read_back_and_deletes_are_tombstones(recording_app) -> None:
    app = recording_app
    state = app.table("t_state")
    seen: list[bytes | None] = []

    @app.batch_agent("readings.raw", Reading, name="t")
    def handle(batch: list[Incoming[Reading]]) -> BatchResult:
        def write() -> None:
            state[b"k"] = b"v1"
            seen.append(state.get(b"k"))
            del state[b"k"]
            seen.append(state.get(b"k"))
            state[b"gone"] = b"soon"
        return BatchResult(after_send=write)

    await _run(app, "t", [(b"A", _reading("A", 1), 2)])
    assert seen == [b"v1", None]
    changelog = [o for o in app.sender.sent if o.internal]
    assert [(o.key, o.value, o.partition) for o in changelog] == [
        (b"k", None, 2), (b"gone", b"soon", 2)]
    assert b"k" not in state
    assert state[b"gone"] == b"soon"


def test_writing_state_outside_an_input_event_is_refused(recording_app) -> None:
    state = recording_app.table("t_state")
    with pytest.raises(RuntimeError, match="while handling an input event"):
        state[b"k"] = b"v"
    assert PipelineError  # the app's own errors stay for configuration problems
