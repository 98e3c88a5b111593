"""The sink's per-record hot path: pure code, no services."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from schemas import codec
from schemas.errors import SchemaVersionError, UnimeterError
from schemas.messages import (
    DeviceEvent,
    Dimensions,
    EditInfo,
    IntervalConsumption,
    Message,
    Reading,
    ValidatedReading,
)
from schemas.settings import KafkaSettings
from sinks.runner import SinkRunner, crc_is_native
from sinks.settings import SinkSettings
from tests.sinks.fakes import FakeConsumer, NoSink


def test_kafka_python_checks_crcs_with_the_c_module() -> None:
    # Regression: without the crc32c package kafka-python checked every fetched batch's
    # CRC-32C in pure Python — 80 % of the sink's CPU per record (bench/sink_process.py).
    assert crc_is_native()


def test_a_corrupted_batch_still_fails_its_crc_check() -> None:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 16)
    builder.append(0, timestamp=None, key=b"GAS-1", value=b'{"x": 1}', headers=[])
    data = bytearray(builder.build())
    assert DefaultRecordBatch(bytes(data)).validate_crc()
    data[-3] ^= 0xFF  # a flipped bit in the record's value
    assert not DefaultRecordBatch(bytes(data)).validate_crc()


# --------------------------------------------------------------------------- typed decoding

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def _reading() -> Reading:
    return Reading(meter_id="GAS-000001", register="volume", ts=T0, value=Decimal("12.345"),
                   unit="m3", received_at=T0, status=("low_battery",), frame_id="f/1/2")


def _validated() -> ValidatedReading:
    return ValidatedReading(
        meter_id="GAS-000001", register="volume", ts=T0, value=Decimal("12.345"), unit="m3",
        version=2, quality="edited", flags=("reverse_flow",), consumption=Decimal("0.5"),
        interval_start=T0 - timedelta(hours=1),
        intervals=(IntervalConsumption(start=T0 - timedelta(hours=1), end=T0,
                                       volume=Decimal("0.5"), estimated=True),),
        dims=Dimensions(account_id="ACC-1", medium="gas"),
        edit=EditInfo(user="ops", at=T0, reason_code="manual", previous_value=Decimal("12")))


def _error(fn: Callable[[], object]) -> UnimeterError:
    with pytest.raises(UnimeterError) as info:
        fn()
    return info.value


@pytest.mark.parametrize("message", [_reading(), _validated()])
def test_the_typed_decoder_gives_what_decode_gives(message: Message) -> None:
    data = codec.encode(message, producer="test")
    decoded = codec.decoder_for(type(message))(data)
    assert decoded == codec.decode(data)[1] == message
    assert type(decoded) is type(message)


def test_another_type_on_the_topic_decodes_as_its_own_type() -> None:
    event = DeviceEvent(event_id="e1", device_id="DTU-1", kind="online", ts=T0)
    data = codec.encode(event, producer="test")
    assert codec.decoder_for(Reading)(data) == event


def test_the_typed_decoder_refuses_exactly_as_decode_does() -> None:
    decode_reading = codec.decoder_for(Reading)
    good = msgspec.json.decode(codec.encode(_reading(), producer="test"))
    newer = msgspec.json.encode({**good, "version": Reading.VERSION + 1})
    bad_value = msgspec.json.encode({**good, "payload": {**good["payload"], "value": "x"}})
    naive = msgspec.json.encode({**good, "payload": {**good["payload"],
                                                     "ts": "2026-07-01T00:00:00"}})
    unknown = msgspec.json.encode({**good, "schema": "reading.nope"})
    for data in (newer, bad_value, naive, unknown, b"not json", b"", b"{}"):
        ours = _error(lambda data=data: decode_reading(data))  # type: ignore[misc]
        theirs = _error(lambda data=data: codec.decode(data))  # type: ignore[misc]
        assert type(ours) is type(theirs)
        assert ours.to_dict() == theirs.to_dict()
    assert isinstance(_error(lambda: decode_reading(newer)), SchemaVersionError)


def test_an_older_payload_without_newer_fields_decodes_with_defaults() -> None:
    good = msgspec.json.decode(codec.encode(_reading(), producer="test"))
    payload = {k: v for k, v in good["payload"].items()
               if k not in ("status", "frame_id", "protocol")}
    data = msgspec.json.encode({**good, "payload": payload})
    decoded = codec.decoder_for(Reading)(data)
    assert decoded == codec.decode(data)[1]
    assert isinstance(decoded, Reading)
    assert decoded.status == ()
    assert decoded.frame_id is None


# --------------------------------------------------------------------------- garbage collection


class _Node:
    def __init__(self) -> None:
        self.other: object = self  # a reference cycle: only the collector frees it


def test_the_runner_collects_between_batches_and_gives_automatic_gc_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    runner = SinkRunner(NoSink(), KafkaSettings(), SinkSettings())  # type: ignore[arg-type]
    consumer = FakeConsumer(runner)
    consumer.install(monkeypatch)
    assert gc.isenabled()
    runner.run(until_idle_s=0)
    assert consumer.gc_enabled == [False]  # no young collection walks a batch being read
    assert gc.isenabled()

    gc.disable()
    try:
        cycle = weakref.ref(_Node())
        assert cycle() is not None
        runner._collect_garbage()  # what runs after every checkpoint
        assert cycle() is None
    finally:
        gc.enable()
