"""Fixtures of the pipeline tests: an app on the memory store with a recording sender."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from pipeline.app import Output, PipelineApp
from pipeline.settings import PipelineSettings
from schemas.settings import KafkaSettings


class RecordingSender:
    """Keeps what an agent would produce, in order; ``calls`` records each send."""

    def __init__(self) -> None:
        self.sent: list[Output] = []
        self.calls: list[int] = []

    async def send(self, outputs: Sequence[Output]) -> None:
        await asyncio.sleep(0)
        self.calls.append(len(outputs))
        self.sent.extend(outputs)

    def on(self, topic: str) -> list[Output]:
        return [o for o in self.sent if o.topic == topic]


def make_app(tmp_path, **overrides) -> PipelineApp:  # type: ignore[no-untyped-def]
    settings = PipelineSettings(store="memory://", ledger_wait_s=0, batch_within_s=0.01,
                                data_dir=tmp_path, **overrides)
    app = PipelineApp(settings, KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="unit."))
    app.sender = RecordingSender()
    return app


@pytest.fixture
def recording_app(tmp_path) -> PipelineApp:  # type: ignore[no-untyped-def]
    return make_app(tmp_path)
