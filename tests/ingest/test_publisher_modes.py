"""The publisher's switch between spool and direct mode, with a producer of our own (no
broker): the order of the flusher's and the drainer's spool calls is forced."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ingest.publisher import OutRecord, Publisher
from ingest.spool import Spool, SpoolRecord
from schemas.settings import KafkaSettings


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: Any) -> object:
        self.records.append((key, value))
        return object()


class _Producer:
    """Acknowledges every batch at once and keeps what it was sent."""

    def __init__(self, sent: list[bytes]) -> None:
        self.sent = sent

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int
                         ) -> asyncio.Future[None]:
        self.sent.extend(value for _, value in batch.records)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _HeldSpool(Spool):
    """A spool whose reads that find nothing can be held (as a slow disk would)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, max_bytes=1 << 20, segment_bytes=1 << 16)
        self.hold_empty_reads = threading.Event()
        self.holding = threading.Event()
        self.release = threading.Event()

    def read_batch(self, max_records: int) -> tuple[list[SpoolRecord], tuple[int, int]]:
        records, position = super().read_batch(max_records)
        if not records and self.hold_empty_reads.is_set():
            self.hold_empty_reads.clear()
            self.holding.set()
            self.release.wait(10)
        return records, position


async def _until(predicate: Any, seconds: float) -> bool:
    for _ in range(int(seconds * 100)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return bool(predicate())


async def test_units_written_while_the_drainer_finds_the_spool_empty_are_still_drained(
        tmp_path: Path) -> None:
    """Regression (CI: the spool still held records 30 s after Kafka returned, in direct
    mode). The drainer read an empty spool while the flusher, which had just taken the last
    queued unit, was waiting to write it; finding the queue empty too, the drainer went back
    to direct mode, and the unit written next stayed in the spool with nobody draining it."""
    leftover = _HeldSpool(tmp_path)
    leftover.open()
    leftover.append([SpoolRecord("t.readings", b"M1", b"from-a-previous-run")])
    leftover.close()
    spool = _HeldSpool(tmp_path)
    sent: list[bytes] = []
    publisher = Publisher(KafkaSettings(), spool=spool, client_id="test",
                          producer_factory=lambda: _Producer(sent))
    spool.hold_empty_reads.set()  # the drainer's first read that finds nothing waits
    await publisher.start()
    try:
        assert publisher.mode == "spool"  # records left by a previous run
        assert await asyncio.to_thread(spool.holding.wait, 10)
        assert sent == [b"from-a-previous-run"]
        # Still in spool mode: this unit goes to the spool, its write queued behind the read.
        published = asyncio.create_task(
            publisher.publish([OutRecord("t.readings", b"M2", b"during-the-read")]))
        assert await _until(lambda: publisher.stats.pending_units == 0
                            and not publisher._queue, 5)
        await asyncio.sleep(0.05)  # the flusher has submitted its write
        spool.release.set()
        assert await asyncio.wait_for(published, 10) == "spool"
        assert await _until(lambda: spool.empty and publisher.mode == "direct", 10), \
            (publisher.mode, publisher.stats)
        assert sent == [b"from-a-previous-run", b"during-the-read"]
    finally:
        spool.release.set()
        await publisher.stop()


async def test_records_sent_directly_once_the_spool_is_drained(tmp_path: Path) -> None:
    spool = _HeldSpool(tmp_path)
    sent: list[bytes] = []
    publisher = Publisher(KafkaSettings(), spool=spool, client_id="test",
                          producer_factory=lambda: _Producer(sent))
    await publisher.start()
    try:
        assert publisher.mode == "direct"
        units: Sequence[list[OutRecord]] = [
            [OutRecord("t.readings", b"M%d" % i, b"r-%d" % i)] for i in range(5)]
        assert await asyncio.gather(*(publisher.publish(u) for u in units)) == ["kafka"] * 5
        assert sorted(sent) == sorted(b"r-%d" % i for i in range(5))
        assert spool.empty
    finally:
        await publisher.stop()
