"""Realistic validated readings for storage tests: hourly cumulative gas meters with dims."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

from schemas import codec
from schemas.messages import Dimensions, EditInfo, IntervalConsumption, Message, ValidatedReading
from sinks.base import SinkBatch, SinkRecord, TopicPartition

HOUR = timedelta(hours=1)


def dims_for(index: int) -> Dimensions:
    """Ledger attribution of the index-th meter: two customer types, three regions."""
    return Dimensions(account_id=f"ACC-{index:05d}",
                      customer_type="residential" if index % 4 else "commercial",
                      region=("north", "south", "east")[index % 3], org_unit=f"branch-{index % 2}",
                      supply_node=f"PZ-{index % 5}", tariff_id="BJ-GAS" if index % 4 else "BJ-COM",
                      vee_group="residential-gas", medium="gas")


def hourly_volume(index: int, ts: datetime) -> Decimal:
    """A deterministic, varying consumption for meter ``index`` in the hour ending at ``ts``."""
    return Decimal(((index * 7 + ts.hour * 13 + ts.day) % 40) + 5) / Decimal(100)


def reading(index: int, ts: datetime, *, version: int = 1, volume: Decimal | None = None,
            value: Decimal | None = None, span_hours: int = 1, estimated: bool = False,
            dims: Dimensions | None = None, register: str = "volume",
            edit_user: str | None = None) -> ValidatedReading:
    """The reading of meter ``index`` at ``ts``: consumption prorated over ``span_hours``."""
    total = volume if volume is not None else sum(
        (hourly_volume(index, ts - HOUR * k) for k in range(span_hours)), Decimal(0))
    part = (total / span_hours).quantize(Decimal("0.000001"))
    intervals = tuple(
        IntervalConsumption(start=ts - HOUR * (k + 1), end=ts - HOUR * k,
                            volume=part if k else total - part * (span_hours - 1),
                            estimated=estimated)
        for k in reversed(range(span_hours)))
    return ValidatedReading(
        meter_id=f"GAS-{index:06d}", register=register, ts=ts,
        value=value if value is not None else Decimal(1000 + index) + total, unit="m3",
        version=version, quality="estimated" if estimated else "validated",
        method="linear" if estimated else "none", consumption=total,
        interval_start=ts - HOUR * span_hours, intervals=intervals, received_at=ts,
        validated_at=ts, dims=dims or dims_for(index), source="tcp",
        edit=None if edit_user is None else EditInfo(
            user=edit_user, at=ts, reason_code="SPIKE", previous_version=version - 1))


def fleet(meters: int, start: datetime, hours: int) -> Iterator[ValidatedReading]:
    for h in range(1, hours + 1):
        for i in range(meters):
            yield reading(i, start + HOUR * h)


def records(messages: list[Message], topic: str = "test.readings.validated",
            partition: int = 0, first_offset: int = 0) -> list[SinkRecord]:
    return [SinkRecord(topic, partition, first_offset + n, m.key(),
                       codec.encode(m, producer="test"), m)
            for n, m in enumerate(messages)]


def batch(messages: list[Message], topic: str = "test.readings.validated",
          partition: int = 0, first_offset: int = 0) -> SinkBatch:
    return SinkBatch(TopicPartition(topic, partition),
                     records(messages, topic, partition, first_offset))
