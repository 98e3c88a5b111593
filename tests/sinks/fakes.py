"""Stand-ins for the sink runner's consumer and sink, for tests of its loop alone."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from sinks.runner import SinkRunner


class FakeConsumer:
    """A consumer that owns nothing: its group hands it its (empty) assignment at poll
    ``join_at``. It counts its polls and records whether automatic GC was on at each."""

    def __init__(self, runner: SinkRunner, *, join_at: int = 1) -> None:
        self.runner = runner
        self.join_at = join_at
        self.polls = 0
        self.gc_enabled: list[bool] = []

    def poll(self, **_kwargs: Any) -> dict[Any, Any]:
        self.polls += 1
        if self.polls == self.join_at:
            self.runner._assigned([])
        self.gc_enabled.append(gc.isenabled())
        return {}

    def assignment(self) -> set[Any]:
        return set()

    def close(self, **_kwargs: Any) -> None:
        pass

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make the runner's connect step use this consumer instead of Kafka."""

        def connect(**_kwargs: Any) -> None:
            self.runner._consumer = self

        monkeypatch.setattr(self.runner, "_connect", connect)


class NoSink:
    """A sink with nothing pending, never full."""

    def full(self) -> bool:
        return False

    def pending(self) -> set[Any]:
        return set()

    def close(self) -> None:
        pass
