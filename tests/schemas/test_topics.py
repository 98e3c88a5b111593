"""The topic catalog covers every message type and configures the broker correctly."""

from __future__ import annotations

import pytest

from schemas.messages import MESSAGE_TYPES
from schemas.topics import DLQ_STAGES, TOPICS, topic_spec


def test_every_message_type_has_a_topic() -> None:
    carried = {p.SCHEMA for spec in TOPICS for p in spec.payloads}
    assert carried == set(MESSAGE_TYPES)


def test_design_topics_are_present() -> None:
    for name in ("frames.raw", "readings.raw", "device.events", "readings.validated",
                 "billing.charges", "billing.balances", "alerts", "commands.requests",
                 "commands.dispatch", "commands.results", "ledger.meters"):
        assert topic_spec(name).name == name
    for stage in DLQ_STAGES:
        assert topic_spec(f"dlq.{stage}").compacted is False


def test_ledger_topics_are_compacted_and_data_topics_retained() -> None:
    assert topic_spec("ledger.meters").config()["cleanup.policy"] == "compact"
    assert "retention.ms" in topic_spec("readings.raw").config()
    assert "cleanup.policy" not in topic_spec("readings.raw").config()


def test_unknown_topic_lists_known_ones() -> None:
    with pytest.raises(KeyError, match=r"readings\.raw"):
        topic_spec("readings.cooked")
