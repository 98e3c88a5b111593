"""The bounded, fsynced local spool that keeps an FEP acknowledging while Kafka is down.

Strategy: an append-only log of segment files in ``<spool_dir>/<instance>/``. Records are
appended in groups (one ``append`` call = one group, written with one ``write`` and one
``fsync``), so a device is acknowledged only once its data is on disk. The drainer reads the
oldest *sealed* segment, sends its records to Kafka and deletes the segment when Kafka has
acknowledged all of it; a small checkpoint file remembers how far into the oldest segment Kafka
has acknowledged, so a restart resends little. Delivery is at-least-once: records spooled
after Kafka accepted them silently, or resent after a crash, reach Kafka twice, and the
natural keys of every downstream writer absorb that.

Segment layout (all integers big-endian)::

    segment  = magic "UMSPOOL1" , record*
    record   = body_len:u32 , crc32(body):u32 , body
    body     = topic_len:u16 , topic , key_len:u16 (0xFFFF = no key) , key , value

A record whose length runs past the end of the file or whose CRC is wrong is a torn write
(the process died inside ``append``, before the fsync returned, so nobody was acknowledged
for it): reading stops there, the bytes are counted, and a sealed segment with a torn tail
is kept as ``*.corrupt`` for an operator rather than deleted.

The spool is bounded by ``max_bytes``: an ``append`` that does not fit raises
:class:`~ingest.errors.SpoolFullError` and writes nothing, so the caller does not acknowledge
and the device keeps its data.
"""

from __future__ import annotations

import fcntl
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import SpoolCorruptError, SpoolFullError

__all__ = ["Spool", "SpoolRecord", "SpoolStats"]

MAGIC = b"UMSPOOL1"
_HEAD = struct.Struct(">II")
_U16 = struct.Struct(">H")
_NO_KEY = 0xFFFF


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One Kafka record waiting in the spool: full topic name, key, value."""

    topic: str
    key: bytes | None
    value: bytes

    def encode(self) -> bytes:
        topic = self.topic.encode()
        key = self.key
        body = b"".join((
            _U16.pack(len(topic)), topic,
            _U16.pack(_NO_KEY if key is None else len(key)), key or b"",
            self.value,
        ))
        return _HEAD.pack(len(body), zlib.crc32(body)) + body

    @classmethod
    def decode_body(cls, body: bytes) -> SpoolRecord:
        (tlen,) = _U16.unpack_from(body, 0)
        topic = body[2:2 + tlen].decode()
        pos = 2 + tlen
        (klen,) = _U16.unpack_from(body, pos)
        pos += 2
        key: bytes | None = None
        if klen != _NO_KEY:
            key = body[pos:pos + klen]
            pos += klen
        return cls(topic=topic, key=key, value=body[pos:])


@dataclass
class SpoolStats:
    bytes: int = 0
    segments: int = 0
    appended_records: int = 0
    drained_records: int = 0
    torn_bytes: int = 0
    full_rejections: int = 0


def _segment_name(seq: int) -> str:
    return f"{seq:016d}.seg"


class Spool:
    """Segment files on local disk. Not thread-safe: one thread (or one executor) uses it."""

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int = 16 << 20,
                 fsync: bool = True) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.stats = SpoolStats()
        self._lock_fd: int | None = None
        self._active: int | None = None  # sequence number of the segment being appended to
        self._active_fd: int | None = None
        self._active_size = 0
        self._sizes: dict[int, int] = {}
        self._next_seq = 1
        # drain position: (segment seq, byte offset) of the first record Kafka has not acked
        self._drain_seq = 0
        self._drain_pos = 0

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_path = self.directory / "LOCK"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            from schemas.errors import ConfigurationError

            raise ConfigurationError(
                "another process is using this spool", where=str(self.directory),
                hint="give every FEP process its own UNIMETER_FEP_INSTANCE") from None
        self._lock_fd = fd
        for path in sorted(self.directory.glob("*.seg")):
            seq = int(path.stem)
            self._sizes[seq] = path.stat().st_size
            self._next_seq = max(self._next_seq, seq + 1)
        self.stats.segments = len(self._sizes)
        self.stats.bytes = sum(self._sizes.values())
        self._load_checkpoint()

    def close(self) -> None:
        self._close_active()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ state

    @property
    def empty(self) -> bool:
        return not self._sizes

    @property
    def bytes_used(self) -> int:
        return sum(self._sizes.values())

    def free_bytes(self) -> int:
        return max(0, self.max_bytes - self.bytes_used)

    # ------------------------------------------------------------------ append

    def append(self, records: Sequence[SpoolRecord]) -> None:
        """Write ``records`` as one group and fsync; all of them or none."""
        if not records:
            return
        blob = b"".join(r.encode() for r in records)
        if self.bytes_used + len(blob) + len(MAGIC) > self.max_bytes:
            self.stats.full_rejections += 1
            raise SpoolFullError(
                f"the spool is full ({self.bytes_used:,} of {self.max_bytes:,} bytes)",
                where=str(self.directory),
                hint="Kafka has not acknowledged for a while; the FEP stops acknowledging "
                     "devices until it drains. Restore Kafka or raise UNIMETER_FEP_SPOOL_MAX_BYTES")
        if self._active is None or self._active_size + len(blob) > self.segment_bytes:
            self._roll()
        assert self._active is not None
        assert self._active_fd is not None
        start = self._active_size
        try:
            _write_all(self._active_fd, blob)
            if self.fsync:
                os.fsync(self._active_fd)
        except OSError:
            # Leave the file as it was before this group: nobody was acknowledged for it.
            os.ftruncate(self._active_fd, start)
            raise
        self._active_size += len(blob)
        self._sizes[self._active] = self._active_size
        self.stats.appended_records += len(records)
        self.stats.bytes = self.bytes_used

    def _roll(self) -> None:
        self._close_active()
        seq = self._next_seq
        self._next_seq += 1
        path = self.directory / _segment_name(seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        _write_all(fd, MAGIC)
        if self.fsync:
            os.fsync(fd)
            _fsync_dir(self.directory)
        self._active, self._active_fd, self._active_size = seq, fd, len(MAGIC)
        self._sizes[seq] = self._active_size
        self.stats.segments = len(self._sizes)

    def _close_active(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
        self._active, self._active_fd, self._active_size = None, None, 0

    def seal(self) -> None:
        """Close the active segment so the drainer may read it; the next append opens anew."""
        self._close_active()

    # ------------------------------------------------------------------ drain

    def sealed_segments(self) -> list[int]:
        return sorted(s for s in self._sizes if s != self._active)

    def read_batch(self, max_records: int) -> tuple[list[SpoolRecord], tuple[int, int]]:
        """Up to ``max_records`` from the oldest sealed segment, and the position after them.

        Seals the active segment first when it is the only one with data. Returns no records
        when the spool is empty. Pass the returned position to :meth:`commit` once Kafka has
        acknowledged every record read.
        """
        sealed = self.sealed_segments()
        if not sealed and self._active is not None:
            self.seal()
            sealed = self.sealed_segments()
        if not sealed:
            return [], (0, 0)
        seq = sealed[0]
        pos = self._drain_pos if self._drain_seq == seq else len(MAGIC)
        path = self.directory / _segment_name(seq)
        data = path.read_bytes()
        if data[:len(MAGIC)] != MAGIC:
            self._quarantine(seq, "bad magic")
            return self.read_batch(max_records)
        records: list[SpoolRecord] = []
        for record, end in _iter_records(data, pos):
            if record is None:  # torn tail
                self.stats.torn_bytes += len(data) - end
                if not records:
                    self._quarantine(seq, f"torn record at byte {end}")
                    return self.read_batch(max_records)
                break
            records.append(record)
            pos = end
            if len(records) >= max_records:
                break
        return records, (seq, pos)

    def commit(self, position: tuple[int, int], count: int = 0) -> None:
        """Kafka acknowledged the ``count`` records up to ``position``: forget them."""
        seq, pos = position
        if seq == 0 or seq not in self._sizes:
            return
        path = self.directory / _segment_name(seq)
        self.stats.drained_records += count
        if pos >= self._sizes[seq]:
            path.unlink()
            del self._sizes[seq]
            if self.fsync:
                _fsync_dir(self.directory)
            self._drain_seq, self._drain_pos = 0, 0
        else:
            self._drain_seq, self._drain_pos = seq, pos
        self._save_checkpoint()
        self.stats.segments = len(self._sizes)
        self.stats.bytes = self.bytes_used

    def _quarantine(self, seq: int, why: str) -> None:
        path = self.directory / _segment_name(seq)
        path.rename(path.with_suffix(f".corrupt-{why.split()[0]}"))
        del self._sizes[seq]
        if self._drain_seq == seq:
            self._drain_seq, self._drain_pos = 0, 0
        self.stats.segments = len(self._sizes)

    # ------------------------------------------------------------------ checkpoint

    def _checkpoint_path(self) -> Path:
        return self.directory / "drain.pos"

    def _save_checkpoint(self) -> None:
        tmp = self._checkpoint_path().with_suffix(".tmp")
        tmp.write_text(f"{self._drain_seq} {self._drain_pos}\n")
        tmp.replace(self._checkpoint_path())

    def _load_checkpoint(self) -> None:
        try:
            seq_text, pos_text = self._checkpoint_path().read_text().split()
            seq, pos = int(seq_text), int(pos_text)
        except (OSError, ValueError):
            return
        if seq in self._sizes and len(MAGIC) <= pos <= self._sizes[seq]:
            self._drain_seq, self._drain_pos = seq, pos

    def iter_all(self) -> Iterator[SpoolRecord]:
        """Every record still in the spool, oldest first (for inspection and tests)."""
        for seq in sorted(self._sizes):
            data = (self.directory / _segment_name(seq)).read_bytes()
            start = self._drain_pos if self._drain_seq == seq else len(MAGIC)
            for record, _ in _iter_records(data, start):
                if record is None:
                    break
                yield record


def _iter_records(data: bytes, pos: int) -> Iterator[tuple[SpoolRecord | None, int]]:
    """(record, end position) pairs from ``pos``; (None, pos) at a torn or corrupt record."""
    size = len(data)
    while pos < size:
        if pos + _HEAD.size > size:
            yield None, pos
            return
        length, crc = _HEAD.unpack_from(data, pos)
        start, end = pos + _HEAD.size, pos + _HEAD.size + length
        if end > size or zlib.crc32(data[start:end]) != crc:
            yield None, pos
            return
        try:
            record = SpoolRecord.decode_body(data[start:end])
        except (struct.error, UnicodeDecodeError) as exc:
            raise SpoolCorruptError(f"undecodable spool record: {exc}",
                                    where=f"offset {pos}") from exc
        yield record, end
        pos = end


def _write_all(fd: int, blob: bytes) -> None:
    view = memoryview(blob)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
