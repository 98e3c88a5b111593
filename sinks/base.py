"""The sink base class: batching per partition, flush at commit, back-pressure.

Strategy (the Quix Streams habit): a concrete sink implements one method,
:meth:`BatchingSink.write`, which stores one :class:`SinkBatch` — the records of one topic
partition since the last commit — durably, or raises. Everything else lives here and in the
runner: records are added per partition, a partition is flushed when its batch is full or at
the commit interval, and offsets are committed only for partitions whose flush returned.

``write`` signals three outcomes:

* it returns a :class:`WriteResult` — the batch is durable; records it could not store are
  listed in ``rejected`` with the reason (the runner puts them on the dead-letter topic before
  committing the offsets);
* it raises :class:`~sinks.errors.SinkBackpressureError` — the destination is away; the runner
  discards the batch, rewinds the partition to its committed offset and pauses for
  ``retry_after`` (nothing is lost, nothing advances);
* it raises anything else — a fault retrying will not cure; the runner stops without
  committing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from schemas.messages import Message

__all__ = [
    "BatchingSink",
    "Rejected",
    "SinkBatch",
    "SinkRecord",
    "TopicPartition",
    "WriteResult",
]


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(slots=True)
class SinkRecord:
    """One decoded Kafka record on its way to storage, with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    message: Message

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass
class SinkBatch:
    """The records of one topic partition since its last flush, in offset order."""

    tp: TopicPartition
    records: list[SinkRecord] = field(default_factory=list)

    @property
    def first_offset(self) -> int:
        return self.records[0].offset

    @property
    def next_offset(self) -> int:
        return self.records[-1].offset + 1

    def __len__(self) -> int:
        return len(self.records)


@dataclass(frozen=True)
class Rejected:
    """A record the sink could not store, and why (a ``UnimeterError.to_dict()``-like map)."""

    record: SinkRecord
    reason: dict[str, Any]


@dataclass
class WriteResult:
    """What a write stored: rows per table, absorbed duplicates, corrections, rejects."""

    rows: Counter[str] = field(default_factory=Counter)
    absorbed: int = 0
    corrections: int = 0
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def rows_written(self) -> int:
        return sum(self.rows.values())

    def merge(self, other: WriteResult) -> None:
        self.rows.update(other.rows)
        self.absorbed += other.absorbed
        self.corrections += other.corrections
        self.rejected.extend(other.rejected)


class BatchingSink(ABC):
    """Collects records per topic partition and hands full batches to :meth:`write`."""

    def __init__(self, *, max_batch_records: int = 20_000) -> None:
        if max_batch_records < 1:
            raise ValueError("max_batch_records must be at least 1")
        self.max_batch_records = max_batch_records
        self._batches: dict[TopicPartition, SinkBatch] = {}

    def add(self, record: SinkRecord) -> None:
        """Queue ``record`` in its partition's batch (records arrive in offset order)."""
        batch = self._batches.get(record.tp)
        if batch is None:
            batch = self._batches[record.tp] = SinkBatch(record.tp)
        batch.records.append(record)

    def add_many(self, tp: TopicPartition, records: list[SinkRecord]) -> None:
        """Queue records of partition ``tp``, in offset order (what one poll returned)."""
        if not records:
            return
        batch = self._batches.get(tp)
        if batch is None:
            self._batches[tp] = SinkBatch(tp, records)
        else:
            batch.records.extend(records)

    def pending(self) -> list[TopicPartition]:
        """Partitions with records waiting to be written."""
        return [tp for tp, batch in self._batches.items() if batch.records]

    def pending_records(self) -> int:
        return sum(len(b) for b in self._batches.values())

    def full(self) -> bool:
        """True when some partition's batch has reached ``max_batch_records``."""
        return any(len(b) >= self.max_batch_records for b in self._batches.values())

    def flush(self, tp: TopicPartition) -> tuple[SinkBatch, WriteResult] | None:
        """Write the pending batch of ``tp``; None when there was nothing to write.

        The batch leaves the queue before :meth:`write` runs: after a back-pressure error or a
        crash it is re-read from Kafka, never retried from memory.
        """
        batch = self._batches.pop(tp, None)
        if batch is None or not batch.records:
            return None
        return batch, self.write(batch)

    def drop(self, tp: TopicPartition) -> int:
        """Forget the pending records of ``tp`` (revoked, or rewound after back-pressure)."""
        batch = self._batches.pop(tp, None)
        return len(batch) if batch else 0

    @abstractmethod
    def write(self, batch: SinkBatch) -> WriteResult:
        """Store ``batch`` durably and return what was stored, or raise (see module doc)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""
