"""The sink's per-record hot path: pure code, no services."""

from __future__ import annotations

from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from sinks.runner import crc_is_native


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
