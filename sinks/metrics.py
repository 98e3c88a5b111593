"""Counters of a running sink and the rates derived from them (rows/s, lag, duplicates)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sinks.base import TopicPartition, WriteResult

__all__ = ["SinkMetrics"]


@dataclass
class SinkMetrics:
    """What the sink has done since it started; :meth:`snapshot` adds rates since last call."""

    started_at: float = field(default_factory=time.monotonic)
    records_in: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    absorbed: int = 0
    corrections: int = 0
    dead_lettered: int = 0
    flushes: int = 0
    commits: int = 0
    backpressure_events: int = 0
    #: Failed attempts to reach Kafka at start (the sink waits for the broker).
    kafka_connect_failures: int = 0
    database_down_since: float | None = None
    last_error: str = ""
    lag: dict[TopicPartition, int] = field(default_factory=dict)
    db_seconds: float = 0.0
    _last_snapshot_at: float = field(default_factory=time.monotonic)
    _last_rows: int = 0
    _last_records: int = 0

    @property
    def rows_written(self) -> int:
        return sum(self.rows.values())

    @property
    def total_lag(self) -> int:
        return sum(max(v, 0) for v in self.lag.values())

    def add(self, result: WriteResult) -> None:
        self.flushes += 1
        self.rows.update(result.rows)
        self.absorbed += result.absorbed
        self.corrections += result.corrections
        self.dead_lettered += len(result.rejected)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view with rows/s and records/s since the previous snapshot."""
        now = time.monotonic()
        elapsed = max(now - self._last_snapshot_at, 1e-9)
        rows, records = self.rows_written, self.records_in
        out = {
            "uptime_s": round(now - self.started_at, 1),
            "records_in": records,
            "rows_written": rows,
            "rows_per_s": round((rows - self._last_rows) / elapsed, 1),
            "records_per_s": round((records - self._last_records) / elapsed, 1),
            "duplicates_absorbed": self.absorbed,
            "corrections": self.corrections,
            "dead_lettered": self.dead_lettered,
            "flushes": self.flushes,
            "commits": self.commits,
            "backpressure_events": self.backpressure_events,
            "kafka_connect_failures": self.kafka_connect_failures,
            "database_down_s": (round(now - self.database_down_since, 1)
                                if self.database_down_since is not None else 0.0),
            "lag": self.total_lag,
            "lag_by_partition": {f"{tp.topic}[{tp.partition}]": v
                                 for tp, v in sorted(self.lag.items())},
            "rows_by_table": dict(self.rows),
            "last_error": self.last_error,
        }
        self._last_snapshot_at, self._last_rows, self._last_records = now, rows, records
        return out
