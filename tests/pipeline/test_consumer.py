"""The consumer's inline delivery (pipeline/_consumer.py): same outcomes as mode's wait_first,
without a task per record when the stream's queue has room."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from pipeline._consumer import InlineConsumer, InlineTransport, InlineWaitFirst, finish


class _Service(InlineWaitFirst):
    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = asyncio.Event()


class _Deliver:
    """A stand-in for faust's on_message: put the record on a bounded queue (back-pressure)."""

    def __init__(self, room: int) -> None:
        self.queue: asyncio.Queue[int] = asyncio.Queue(room)
        self.ran_in: list[asyncio.Task[Any] | None] = []
        self.cleaned_up = 0

    async def __call__(self, record: int) -> str:
        self.ran_in.append(asyncio.current_task())
        try:
            await self.queue.put(record)
        finally:
            self.cleaned_up += 1
        return f"delivered {record}"


async def test_a_record_the_queue_has_room_for_is_delivered_inline_in_the_callers_task() -> None:
    service, deliver = _Service(), _Deliver(room=4)
    suspend = service.suspend_flow.wait()
    result = await service.wait_first(deliver(1), suspend)
    assert result.results == ["delivered 1"]
    assert not result.stopped
    assert deliver.ran_in == [asyncio.current_task()]  # no task of its own
    assert deliver.queue.get_nowait() == 1
    assert inspect.getcoroutinestate(suspend) == inspect.CORO_CLOSED  # no "never awaited"


async def test_a_record_that_must_wait_for_room_is_delivered_once_there_is_room() -> None:
    service, deliver = _Service(), _Deliver(room=1)
    deliver.queue.put_nowait(0)
    delivery = deliver(1)
    waiting = asyncio.create_task(service.wait_first(delivery, service.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    assert deliver.queue.get_nowait() == 0  # the stream takes one: room again
    result = await asyncio.wait_for(waiting, 5)
    assert result.results == ["delivered 1"]
    assert result.done == [delivery]
    assert deliver.queue.get_nowait() == 1
    assert deliver.cleaned_up == 1


async def test_a_waiting_record_is_given_up_when_the_flow_is_suspended() -> None:
    """A rebalance suspends the flow: the blocked delivery stops, as with mode's wait_first."""
    service, deliver = _Service(), _Deliver(room=1)
    deliver.queue.put_nowait(0)
    suspend = service.suspend_flow.wait()
    waiting = asyncio.create_task(service.wait_first(deliver(1), suspend))
    await asyncio.sleep(0.01)
    service.suspend_flow.set()
    result = await asyncio.wait_for(waiting, 5)
    assert result.done == [suspend]
    await asyncio.sleep(0)  # the cancelled delivery unwinds
    assert deliver.cleaned_up == 1
    assert deliver.queue.qsize() == 1  # never put
    assert deliver.queue.get_nowait() == 0


async def test_cancelling_the_caller_cancels_the_waiting_delivery() -> None:
    service, deliver = _Service(), _Deliver(room=1)
    deliver.queue.put_nowait(0)
    waiting = asyncio.create_task(service.wait_first(deliver(1), service.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)
    assert deliver.cleaned_up == 1
    deliver.queue.get_nowait()
    await asyncio.sleep(0.01)
    assert deliver.queue.empty()  # the cancelled put did not land later


async def test_an_error_reaches_the_caller_whether_raised_at_once_or_after_waiting() -> None:
    service = _Service()

    async def fails_at_once() -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        await service.wait_first(fails_at_once(), service.suspend_flow.wait())

    gate = asyncio.get_running_loop().create_future()

    async def fails_later() -> None:
        await gate
        raise KeyError("late")

    waiting = asyncio.create_task(service.wait_first(fails_later(), service.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    gate.set_result(None)
    with pytest.raises(KeyError, match="late"):
        await waiting


async def test_a_failed_future_raises_inside_the_coroutine_that_awaited_it() -> None:
    gate = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def awaits_gate() -> str:
        try:
            await gate
        except OSError as exc:
            seen.append(str(exc))
            return "handled"
        return "not reached"

    coro = awaits_gate()
    driving = asyncio.create_task(finish(coro, coro.send(None)))
    await asyncio.sleep(0)
    gate.set_exception(OSError("broker gone"))
    assert await driving == "handled"
    assert seen == ["broker gone"]


async def test_finish_drives_bare_yields_and_several_waits() -> None:
    events = [asyncio.Event() for _ in range(3)]

    async def steps() -> int:
        await asyncio.sleep(0)
        for event in events:
            await event.wait()
        return 42

    coro = steps()
    driving = asyncio.create_task(finish(coro, coro.send(None)))
    for event in events:
        await asyncio.sleep(0.005)
        assert not driving.done()
        event.set()
    assert await asyncio.wait_for(driving, 5) == 42


async def test_a_stopping_service_delivers_the_original_way() -> None:
    service, deliver = _Service(), _Deliver(room=4)
    await service.stop()
    result = await service.wait_first(deliver(1), service.suspend_flow.wait())
    assert result.stopped  # mode's answer for a stopped service
    assert deliver.ran_in[:1] != [asyncio.current_task()]


def test_the_transport_builds_the_inline_consumer() -> None:
    assert InlineTransport.Consumer is InlineConsumer
    assert issubclass(InlineConsumer, InlineWaitFirst)


async def test_seeking_to_the_committed_offsets_stops_the_flow_until_the_caller_resumes_it(
        ) -> None:
    """Regression: faust's recovery seeks the stream partitions with the fetcher running and
    clears the stream queues only afterwards; records fetched during the seek were put on
    the queues and cleared — a restarted worker with state to restore never handled the
    input waiting for it (CI: 4 of 6 validated readings after 180 s)."""
    import faust
    from faust.types import TP

    from pipeline._consumer import new_transport

    app = faust.App("seek-test", broker="kafka://127.0.0.1:9", autodiscover=False)
    app.transport = new_transport(app)
    consumer = app.consumer
    assert isinstance(consumer, InlineConsumer)
    tp = TP("readings.raw", 0)
    during: list[tuple[bool, bool]] = []

    async def seek_to_committed() -> dict[TP, int]:
        during.append((consumer.flow_active, consumer.suspend_flow.is_set()))
        await asyncio.sleep(0)  # the broker round trips: other tasks (the fetcher) run here
        return {tp: 4}

    consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    consumer.resume_flow()
    await consumer.perform_seek()
    assert during == [(False, True)]  # no record can reach a stream while positions move
    assert not consumer.flow_active  # still stopped: recovery clears the queues, then resumes
    assert consumer._read_offset[tp] == 4
    consumer.resume_flow()  # what faust's recovery does next
    assert consumer.flow_active
    assert not consumer.suspend_flow.is_set()


async def test_offsets_faust_would_commit_unhandled_are_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    """faust takes offsets missing between two delivered records as handled (compacted
    topics); on the pipeline's inputs they are records this worker never saw."""
    import faust
    from faust.types import TP

    from pipeline._consumer import new_transport

    app = faust.App("gap-test", broker="kafka://127.0.0.1:9", autodiscover=False)
    app.transport = new_transport(app)
    consumer = app.consumer
    tp = TP("unimeter.readings.raw", 2)
    with caplog.at_level("WARNING", logger="pipeline._consumer"):
        await consumer._add_gap(tp, 11, 11)  # the next record right after 10: nothing missing
        assert not caplog.records
        await consumer._add_gap(tp, 11, 14)  # delivered 10, then 14: 11, 12 and 13 missing
    (record,) = caplog.records
    assert "offsets 11..13 of unimeter.readings.raw[2]" in record.getMessage()
    assert "(3 record(s))" in record.getMessage()
    assert consumer._gap[tp].overlaps(11, 15)  # faust's own bookkeeping is unchanged
