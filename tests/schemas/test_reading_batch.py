"""``reading.raw.batch``: a meter's readings of one frame as one ``readings.raw`` record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest

from schemas import codec
from schemas.errors import MessageDecodeError
from schemas.messages import (
    MAX_BATCH_READINGS,
    Reading,
    ReadingBatch,
    batches_of,
    readings_of,
)

T0 = datetime(2026, 7, 10, tzinfo=UTC)


def _reading(meter: str, hour: int) -> Reading:
    return Reading(meter_id=meter, register="volume", ts=T0 + timedelta(hours=hour),
                   value=Decimal(hour), unit="m3", received_at=T0 + timedelta(hours=24))


def test_batches_group_by_meter_in_the_order_the_frame_had_them() -> None:
    readings = [_reading("A", 0), _reading("B", 0), _reading("A", 1), _reading("C", 5),
                _reading("B", 1), _reading("A", 2)]
    batches = batches_of(readings)
    assert [b.meter_id for b in batches] == ["A", "B", "C"]
    assert [[r.ts.hour for r in b.readings] for b in batches] == [[0, 1, 2], [0, 1], [5]]
    assert [b.key() for b in batches] == [b"A", b"B", b"C"]
    assert [r for b in batches for r in readings_of(b)] == sorted(
        readings, key=lambda r: r.meter_id)


def test_a_long_profile_is_split_into_batches_of_the_limit() -> None:
    readings = [_reading("A", h) for h in range(2 * MAX_BATCH_READINGS + 3)]
    batches = batches_of(readings)
    assert [len(b.readings) for b in batches] == [MAX_BATCH_READINGS, MAX_BATCH_READINGS, 3]
    assert [r for b in batches for r in b.readings] == readings
    assert batches_of([]) == []


def test_readings_of_a_single_reading_is_that_reading() -> None:
    one = _reading("A", 0)
    assert readings_of(one) == (one,)


def test_a_batch_travels_exactly_and_is_keyed_by_its_meter() -> None:
    batch = ReadingBatch(meter_id="A", readings=(_reading("A", 0), _reading("A", 1)))
    envelope, message = codec.decode(codec.encode(batch, producer="t"))
    assert envelope.schema == "reading.raw.batch"
    assert message == batch


def test_an_empty_batch_or_another_meters_reading_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one reading"):
        ReadingBatch(meter_id="A", readings=())
    with pytest.raises(ValueError, match="reading 1 is of meter 'B'"):
        ReadingBatch(meter_id="A", readings=(_reading("A", 0), _reading("B", 1)))
    # the same rules hold for bytes from the wire
    doc = msgspec.json.decode(codec.encode(
        ReadingBatch(meter_id="A", readings=(_reading("A", 0),)), producer="t"))
    doc["payload"]["meter_id"] = "Z"
    with pytest.raises(MessageDecodeError, match="not of the batch's meter 'Z'"):
        codec.decode(msgspec.json.encode(doc))
    doc["payload"].update(meter_id="A", readings=[])
    with pytest.raises(MessageDecodeError, match="at least one reading"):
        codec.decode(msgspec.json.encode(doc))
