"""A faust transport whose consumer hands a fetched record to the streams without four tasks.

Why: faust's fetcher delivers every record with ``await self.wait_first(callback(message),
self.suspend_flow.wait())`` — mode's ``wait_first`` wraps the callback, the suspend event and
the service's stopped and crashed events in four tasks and an ``asyncio.wait`` *per record*.
The callback (the conductor's ``on_message``: decode the key and value, put the event on the
stream's queue) almost always finishes without waiting, so that machinery was about a quarter
of a pipeline worker's CPU (py-spy on the VEE agent benchmark).

What changes: :meth:`InlineConsumer.wait_first` runs the first awaitable's first step inline.
If it finishes there (the stream's queue had room), that is the result — the other awaitables
are closed unstarted. If it has to wait (a full queue: back-pressure, or suspended flow during
a rebalance), the rest of it runs under mode's ``wait_first`` exactly as before, so a
rebalance or a stop still interrupts it. Nothing else about faust's consumer changes
(offsets, acks, gaps, commits). The service's stopped/crashed state and an already
suspended flow go the original way.

A second change, a fix: :meth:`InlineConsumer.perform_seek` stops the consumer's flow while it
moves the positions. faust's recovery, once it has restored a table from its changelog,
resumes the stream partitions, seeks them to their committed offsets (several broker round
trips) and only then resumes the app's flow control, which *clears* every stream queue. The
fetcher keeps running through that (recovery started it to read the changelog), so records
of the stream partitions fetched during the seek were put on the queues and then cleared:
never handled by this worker, and never fetched again (the position had moved past them) —
a worker restarted with state to restore and input waiting sat idle (CI caught it), and
faust would commit past the lost records as soon as later ones were acknowledged. With the
flow stopped no record reaches a queue during the seek; the caller resumes the flow (both of
faust's recovery paths call ``resume_flow`` after ``perform_seek``; the third caller,
``getmany``, calls it while the flow is already stopped), and the fetcher reads on from the
committed offsets.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service
from mode.services import WaitResults

log = logging.getLogger(__name__)

__all__ = ["GapsReported", "InlineConsumer", "InlineTransport", "InlineWaitFirst",
           "SeekWithFlowStopped", "finish", "new_transport"]


async def finish(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Drive ``coro`` on from the point where it yielded ``yielded``, as a task would.

    ``yielded`` is what the coroutine's last ``send(None)`` returned: a future it waits for,
    or ``None`` (a bare yield, as in ``asyncio.sleep(0)``). Exceptions and cancellation reach
    the coroutine where it waits, as they would inside a task: a future that failed or was
    cancelled raises in the coroutine when it resumes; this task being cancelled while the
    awaited future is still pending cancels that future (asyncio does), which the coroutine
    then sees.
    """
    try:
        while True:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                # The coroutine's own await marked the future as "handed to a task"; a task
                # clears that mark when it takes the future over, and so do we.
                yielded._asyncio_future_blocking = False
                try:
                    await yielded
                except BaseException as exc:
                    if not _outcome_of(yielded, exc):
                        raise  # this task was cancelled for another reason: stop the coroutine
            try:
                yielded = coro.send(None)
            except StopIteration as stop:
                return stop.value
    finally:
        coro.close()  # no-op when it finished; runs its clean-up when we stop early


def _outcome_of(future: Any, exc: BaseException) -> bool:
    """Whether ``exc`` is ``future``'s own outcome (so the coroutine should see it)."""
    if not isinstance(future, asyncio.Future) or not future.done():
        return False
    if future.cancelled():
        return isinstance(exc, asyncio.CancelledError)
    return future.exception() is exc


class InlineWaitFirst(Service):
    """mode's ``wait_first`` with the first awaitable's first step run inline (see above).

    For a service with a ``suspend_flow`` event (faust's consumer); mixed in before it.
    """

    suspend_flow: asyncio.Event

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109 — mode's signature
        first = coros[0] if coros else None
        if (timeout is not None or not inspect.iscoroutine(first) or self.should_stop
                or self._crashed.is_set() or self.suspend_flow.is_set()):
            return await super().wait_first(*coros, timeout=timeout)
        try:
            yielded = first.send(None)
        except BaseException as exc:  # finished (StopIteration) or failed at once
            for other in coros[1:]:
                if inspect.iscoroutine(other):
                    other.close()  # never awaited: no "never awaited" warning
            if isinstance(exc, StopIteration):
                return WaitResults([first], [exc.value], False)
            raise
        rest = finish(first, yielded)
        result = await super().wait_first(rest, *coros[1:])
        # Name the caller's awaitable among the winners, as mode would.
        return result._replace(done=[first if aw is rest else aw for aw in result.done])


class SeekWithFlowStopped(Service):
    """faust's ``perform_seek`` with the consumer's flow stopped (see the module's doc).

    For faust's consumer; mixed in before it. The flow stays stopped: the caller resumes it
    once it has cleared the stream queues.
    """

    stop_flow: Callable[[], None]  # faust's consumer's

    async def perform_seek(self) -> None:
        self.stop_flow()
        await super().perform_seek()  # type: ignore[misc]


class GapsReported(Service):
    """faust's ``_add_gap`` with a warning: offsets this worker never handled.

    faust counts offsets missing between two delivered records as acknowledged — meant for
    compacted topics and transaction markers — and commits past them. The pipeline's inputs
    are neither compacted nor transactional, so a gap there means records were skipped
    (the seek race above did that silently) or expired by retention before they were read.
    Either way an operator must hear of it: faust's behaviour stays, with a warning naming
    the partition and the offsets.
    """

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        # faust passes the offset of the record that revealed the gap as ``offset_to``
        if offset_to > offset_from:
            log.warning("offsets %d..%d of %s[%d] were never delivered to this worker and "
                        "will be committed as handled (%d record(s)): expired by retention "
                        "before they were read, or skipped — compare with the topic's log "
                        "start offset", offset_from, offset_to - 1, tp.topic, tp.partition,
                        offset_to - offset_from)
        await super()._add_gap(tp, offset_from, offset_to)  # type: ignore[misc]


class InlineConsumer(InlineWaitFirst, SeekWithFlowStopped, GapsReported,
                     faust_aiokafka.Consumer):
    """faust's aiokafka consumer, delivering a record inline when that needs no waiting,
    seeking with its flow stopped, and reporting offsets it would commit unhandled."""


class InlineTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with :class:`InlineConsumer`."""

    Consumer = InlineConsumer


def new_transport(app: faust.App) -> InlineTransport:
    """The transport for ``app``'s consumer (what ``faust.App._new_transport`` builds)."""
    return InlineTransport(app.conf.broker_consumer, app)
