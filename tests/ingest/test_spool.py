"""The spool: fsynced groups, bounded size, torn tails, drain checkpoints, restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.errors import SpoolFullError
from ingest.spool import MAGIC, Spool, SpoolRecord


def _records(n: int, start: int = 0, size: int = 20) -> list[SpoolRecord]:
    return [SpoolRecord(topic="t.readings.raw", key=f"m{i}".encode() if i % 3 else None,
                        value=bytes([i % 256]) * size) for i in range(start, start + n)]


def _open(path: Path, **kw: int) -> Spool:
    spool = Spool(path, max_bytes=kw.get("max_bytes", 1 << 20),
                  segment_bytes=kw.get("segment_bytes", 4096))
    spool.open()
    return spool


def test_round_trip_across_segments_and_restart(tmp_path: Path) -> None:
    spool = _open(tmp_path)
    written = _records(300)
    for i in range(0, 300, 7):
        spool.append(written[i:i + 7])
    assert len(spool.sealed_segments()) >= 3  # rolled at 4 KiB
    spool.close()

    again = _open(tmp_path)
    assert list(again.iter_all()) == written
    drained: list[SpoolRecord] = []
    while True:
        batch, pos = again.read_batch(50)
        if not batch:
            break
        drained.extend(batch)
        again.commit(pos, len(batch))
    assert drained == written
    assert again.empty
    assert again.bytes_used == 0
    assert not list(tmp_path.glob("*.seg"))


def test_full_spool_refuses_the_whole_group(tmp_path: Path) -> None:
    spool = _open(tmp_path, max_bytes=2000, segment_bytes=1 << 20)
    spool.append(_records(20))
    used = spool.bytes_used
    with pytest.raises(SpoolFullError) as info:
        spool.append(_records(100))
    assert "full" in str(info.value)
    assert info.value.hint
    assert spool.bytes_used == used  # nothing of the refused group was written
    assert len(list(spool.iter_all())) == 20


def test_torn_tail_is_ignored_and_earlier_records_kept(tmp_path: Path) -> None:
    spool = _open(tmp_path, segment_bytes=1 << 20)
    spool.append(_records(10))
    spool.close()
    seg = next(tmp_path.glob("*.seg"))
    full = seg.read_bytes()
    # a crash in the middle of the next group: half a record at the end
    extra = _records(1, start=99)[0].encode()
    seg.write_bytes(full + extra[: len(extra) // 2])

    again = _open(tmp_path)
    batch, pos = again.read_batch(100)
    assert batch == _records(10)
    again.commit(pos, len(batch))
    assert again.stats.torn_bytes == len(extra) // 2
    # the segment is not fully consumed (the torn bytes remain) → quarantined on the next read
    batch, _ = again.read_batch(100)
    assert batch == []
    assert list(tmp_path.glob("*.corrupt-*"))


def test_corrupt_record_stops_reading_at_its_offset(tmp_path: Path) -> None:
    spool = _open(tmp_path, segment_bytes=1 << 20)
    spool.append(_records(5))
    spool.close()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    third = len(MAGIC) + 2 * len(_records(1)[0].encode())  # all records have the same size
    data[third + 12] ^= 0xFF  # flip a byte in the third record's body: CRC mismatch
    seg.write_bytes(bytes(data))
    again = _open(tmp_path)
    batch, _ = again.read_batch(100)
    assert batch == _records(5)[:2]


def test_drain_checkpoint_survives_restart(tmp_path: Path) -> None:
    spool = _open(tmp_path, segment_bytes=1 << 20)
    spool.append(_records(30))
    batch, pos = spool.read_batch(10)
    spool.commit(pos, len(batch))
    spool.close()
    again = _open(tmp_path)
    assert list(again.iter_all()) == _records(30)[10:]
    batch, _ = again.read_batch(100)
    assert batch == _records(30)[10:]


def test_second_process_on_the_same_spool_is_refused(tmp_path: Path) -> None:
    from schemas.errors import ConfigurationError

    spool = _open(tmp_path)
    with pytest.raises(ConfigurationError, match="another process"):
        _open(tmp_path)
    spool.close()
    _open(tmp_path).close()
