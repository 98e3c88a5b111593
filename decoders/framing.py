"""Framers: a byte stream in, whole frames out — sans-IO.

Strategy: a framer owns a bounded buffer. ``feed(data)`` appends what the link delivered;
``next_frame()`` returns the bytes of the next complete, valid frame or :data:`NEED_DATA`.
It never searches for an end byte (a checksum may equal it): a frame's size comes from its
length field (or its fixed size), then the fixed marks, the end byte and the checksum are
checked. When no frame spec accepts the bytes at the current position, one byte is counted
as garbage and the framer resynchronises at the next byte that could start a frame. Bytes
that can still become a frame (a partial header, a run of preamble bytes at the end of the
buffer) are kept until more data arrives.

A frame spec describes one frame shape of a protocol. :class:`Envelope` covers every
length-prefixed or fixed-size shape our protocols use::

    [preamble × 0..n] start [..] length [..] mark [..] payload .. checksum end
    |<------------------------- size = f(length) ------------------------>|

Specs that need more than that (Modbus RTU, whose size follows from the function code)
implement :class:`FrameSpec` themselves. :meth:`Envelope.validate` checks one whole frame
and raises the precise decode error (field, byte offset) — decoders call it; the framer
uses the cheaper :meth:`FrameSpec.measure`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from decoders.checksums import CHECKSUM_SIZES, CHECKSUMS
from decoders.errors import ChecksumError, FramingError, LengthError, TrailingBytesError
from decoders.frame import NEED_DATA, NeedData
from schemas.errors import UnimeterError

__all__ = [
    "MEASURE_BAD_CHECKSUM",
    "MEASURE_BAD_FRAME",
    "MEASURE_BAD_LENGTH",
    "MEASURE_NEED_DATA",
    "MEASURE_NO_SYNC",
    "ChecksumSpec",
    "Envelope",
    "FrameSpec",
    "Framer",
    "FramerOverflowError",
    "FramerStats",
    "LengthField",
]

#: Return codes of :meth:`FrameSpec.measure` (a positive value is the frame's size).
MEASURE_NEED_DATA = 0
MEASURE_NO_SYNC = -1
MEASURE_BAD_LENGTH = -2
MEASURE_BAD_CHECKSUM = -3
MEASURE_BAD_FRAME = -4


class FrameSpec(Protocol):
    """One frame shape a framer can recognise."""

    @property
    def first_bytes(self) -> frozenset[int] | None:
        """Bytes a frame of this shape may begin with (preamble included); ``None`` = any."""

    @property
    def max_size(self) -> int:
        """The largest frame of this shape, preamble included."""

    def measure(self, buf: bytes | bytearray, pos: int) -> int:
        """Size of the valid frame starting at ``buf[pos]`` (preamble included), or one of
        the ``MEASURE_*`` codes (0 = need more data, negative = no frame here)."""
        ...


@dataclass(frozen=True, slots=True)
class LengthField:
    """Where a frame states its size: ``size = ((raw & mask) >> shift) + add``."""

    offset: int
    size: int = 1
    order: Literal["little", "big"] = "little"
    add: int = 0
    shift: int = 0
    mask: int | None = None
    repeat_at: int | None = None  # the same raw bytes are sent again here (M-Bus, 376.1)
    minimum: int = 0              # smallest raw value that is valid

    def read(self, buf: bytes | bytearray, start: int) -> int:
        raw = int.from_bytes(buf[start + self.offset:start + self.offset + self.size],
                             self.order)
        if self.mask is not None:
            raw &= self.mask
        return raw >> self.shift


@dataclass(frozen=True, slots=True)
class ChecksumSpec:
    """The checksum over ``frame[start:end]`` stored at ``frame[end:end+size]``;
    ``end`` < 0 counts from the end of the frame."""

    algorithm: str
    start: int
    end: int
    order: Literal["little", "big"] = "little"

    @property
    def size(self) -> int:
        return CHECKSUM_SIZES[self.algorithm]

    def bounds(self, frame_size: int) -> tuple[int, int]:
        end = self.end if self.end >= 0 else frame_size + self.end
        return self.start, end

    def compute(self, frame: bytes | bytearray | memoryview) -> int:
        start, end = self.bounds(len(frame))
        return CHECKSUMS[self.algorithm](memoryview(frame)[start:end])

    def stored(self, frame: bytes | bytearray, begin: int, frame_size: int) -> int:
        _, end = self.bounds(frame_size)
        return int.from_bytes(frame[begin + end:begin + end + self.size], self.order)


@dataclass(frozen=True)
class Envelope:
    """A length-prefixed or fixed-size frame shape (see the module docstring).

    Offsets count from the first ``start`` byte (the preamble is not part of the offsets).
    """

    name: str
    protocol: str
    start: bytes
    header_size: int                       # bytes needed before the size is known
    length: LengthField | None = None
    fixed_size: int | None = None
    end: bytes = b""
    marks: tuple[tuple[int, bytes], ...] = ()
    checksum: ChecksumSpec | None = None
    preamble: int | None = None
    preamble_max: int = 0
    max_frame: int = 512                   # without preamble
    first_bytes: frozenset[int] | None = field(init=False)
    max_size: int = field(init=False)

    def __post_init__(self) -> None:
        if (self.length is None) == (self.fixed_size is None):
            raise ValueError(f"envelope {self.name}: give either a length field or a size")
        first = {self.start[0]}
        if self.preamble is not None:
            first.add(self.preamble)
        object.__setattr__(self, "first_bytes", frozenset(first))
        object.__setattr__(self, "max_size", self.max_frame + self.preamble_max)

    # ----------------------------------------------------------------- framer path
    def measure(self, buf: bytes | bytearray, pos: int) -> int:
        n = len(buf)
        if pos >= n:
            return MEASURE_NEED_DATA
        begin = pos
        preamble = self.preamble
        if preamble is not None:
            limit = min(n, pos + self.preamble_max)
            while begin < limit and buf[begin] == preamble:
                begin += 1
            if begin == n:
                return MEASURE_NEED_DATA
        start = self.start
        if buf[begin] != start[0]:
            return MEASURE_NO_SYNC
        if n - begin < self.header_size:
            # What we have must at least agree with the sync bytes we know.
            have = buf[begin:begin + len(start)]
            return MEASURE_NEED_DATA if start.startswith(bytes(have)) else MEASURE_NO_SYNC
        if len(start) > 1 and buf[begin:begin + len(start)] != start:
            return MEASURE_NO_SYNC
        for offset, mark in self.marks:
            if offset + len(mark) <= self.header_size and \
                    buf[begin + offset:begin + offset + len(mark)] != mark:
                return MEASURE_NO_SYNC
        length = self.length
        if length is not None:
            if length.repeat_at is not None and \
                    buf[begin + length.offset:begin + length.offset + length.size] != \
                    buf[begin + length.repeat_at:begin + length.repeat_at + length.size]:
                return MEASURE_BAD_LENGTH
            raw = length.read(buf, begin)
            size = raw + length.add
            if raw < length.minimum or size > self.max_frame:
                return MEASURE_BAD_LENGTH
        else:
            size = self.fixed_size  # type: ignore[assignment]
        if n - begin < size:
            return MEASURE_NEED_DATA
        for offset, mark in self.marks:
            if buf[begin + offset:begin + offset + len(mark)] != mark:
                return MEASURE_BAD_FRAME
        end = self.end
        if end and buf[begin + size - len(end):begin + size] != end:
            return MEASURE_BAD_FRAME
        checksum = self.checksum
        if checksum is not None:
            lo, hi = checksum.bounds(size)
            if CHECKSUMS[checksum.algorithm](memoryview(buf)[begin + lo:begin + hi]) != \
                    checksum.stored(buf, begin, size):
                return MEASURE_BAD_CHECKSUM
        return begin + size - pos

    # ----------------------------------------------------------------- decoder path
    def validate(self, data: bytes) -> tuple[int, int]:
        """Check that ``data`` is exactly one frame of this shape; return ``(begin, end)``,
        the offsets of its first (start) byte and one past its last byte. Raises the
        precise :class:`~decoders.errors.DecodeError` otherwise."""
        proto, n = self.protocol, len(data)
        begin = 0
        if self.preamble is not None:
            while begin < n and data[begin] == self.preamble:
                begin += 1
            if begin > self.preamble_max:
                raise FramingError(f"{begin} preamble bytes {self.preamble:02X}, at most "
                                   f"{self.preamble_max} allowed", protocol=proto, data=data,
                                   field="preamble", offset=self.preamble_max)
        if n - begin < self.header_size:
            raise LengthError(f"truncated: {n - begin} bytes, the header alone needs "
                              f"{self.header_size}", protocol=proto, data=data,
                              field="header", offset=n)
        if data[begin:begin + len(self.start)] != self.start:
            raise FramingError(f"start byte(s) {self.start.hex(' ').upper()} expected",
                               protocol=proto, data=data, field="start", offset=begin)
        for offset, mark in self.marks:
            if offset + len(mark) <= self.header_size and \
                    data[begin + offset:begin + offset + len(mark)] != mark:
                raise FramingError(f"byte(s) {mark.hex(' ').upper()} expected",
                                   protocol=proto, data=data, field="start",
                                   offset=begin + offset)
        length = self.length
        if length is not None:
            if length.repeat_at is not None and \
                    data[begin + length.offset:begin + length.offset + length.size] != \
                    data[begin + length.repeat_at:begin + length.repeat_at + length.size]:
                raise LengthError("the two copies of the length field differ",
                                  protocol=proto, data=data, field="length",
                                  offset=begin + length.repeat_at)
            raw = length.read(data, begin)
            size = raw + length.add
            if raw < length.minimum or size > self.max_frame:
                raise LengthError(f"length field says {raw}, which gives a {size}-byte "
                                  f"frame (allowed: {length.minimum + length.add}.."
                                  f"{self.max_frame})", protocol=proto, data=data,
                                  field="length", offset=begin + length.offset)
        else:
            size = self.fixed_size  # type: ignore[assignment]
        if n - begin < size:
            raise LengthError(f"truncated: the frame needs {size} bytes, got {n - begin}",
                              protocol=proto, data=data, field="length", offset=n)
        for offset, mark in self.marks:
            if data[begin + offset:begin + offset + len(mark)] != mark:
                raise FramingError(f"byte(s) {mark.hex(' ').upper()} expected",
                                   protocol=proto, data=data, field="start",
                                   offset=begin + offset)
        if self.end and data[begin + size - len(self.end):begin + size] != self.end:
            raise FramingError(f"end byte {self.end.hex().upper()} expected "
                               "(the length field may lie)", protocol=proto, data=data,
                               field="end", offset=begin + size - len(self.end))
        if self.checksum is not None:
            lo, hi = self.checksum.bounds(size)
            expected = CHECKSUMS[self.checksum.algorithm](data[begin + lo:begin + hi])
            stored = self.checksum.stored(data, begin, size)
            if expected != stored:
                width = self.checksum.size * 2
                raise ChecksumError(f"{self.checksum.algorithm} is {stored:0{width}X}, "
                                    f"the content gives {expected:0{width}X}",
                                    protocol=proto, data=data, field="checksum",
                                    offset=begin + hi)
        if begin + size != n:
            raise TrailingBytesError(f"{n - begin - size} byte(s) after the end of the frame; "
                                     "split a stream with a framer", protocol=proto,
                                     data=data, field="end", offset=begin + size)
        return begin, begin + size

    def seal(self, frame: bytearray) -> None:
        """Write the checksum into an assembled frame (without preamble), in place."""
        if self.checksum is not None:
            _, hi = self.checksum.bounds(len(frame))
            value = self.checksum.compute(frame)
            frame[hi:hi + self.checksum.size] = value.to_bytes(self.checksum.size,
                                                               self.checksum.order)


@dataclass
class FramerStats:
    """Counters a FEP exports per link (all monotonic)."""

    bytes_in: int = 0
    frames: int = 0
    garbage_bytes: int = 0
    resyncs: int = 0             # runs of garbage skipped
    bad_length: int = 0          # candidates rejected for their length field
    bad_checksum: int = 0        # candidates rejected for their checksum
    bad_frame: int = 0           # candidates rejected for a wrong end/mark byte


class FramerOverflowError(UnimeterError):
    """``feed`` would grow the buffer past its bound: drain ``next_frame()`` first (the
    caller's fault)."""

    fault = "caller"


class Framer:
    """Splits a byte stream into frames of one or more frame specs (sans-IO).

    Give several specs to accept several protocols on one link — e.g. a DTU's registration
    and heartbeat packets interleaved with the meter protocol; ``next_frame()`` then says
    which spec matched through :attr:`last_spec`.
    """

    def __init__(self, specs: Sequence[FrameSpec], *, max_buffer: int = 65536,
                 keep_garbage: int = 4096, lookahead: bool = True) -> None:
        if not specs:
            raise ValueError("a framer needs at least one frame spec")
        self.specs = tuple(specs)
        self.max_buffer = max(max_buffer, 2 * max(s.max_size for s in self.specs))
        self.keep_garbage = keep_garbage
        self.lookahead = lookahead
        self.stats = FramerStats()
        self.last_spec: FrameSpec | None = None
        self._buf = bytearray()
        self._pos = 0
        self._garbage = bytearray()
        self._in_garbage = False
        firsts: set[int] = set()
        any_first = False
        for spec in self.specs:
            if spec.first_bytes is None:
                any_first = True
            else:
                firsts |= spec.first_bytes
        self._first_bytes: tuple[int, ...] | None = None if any_first else tuple(sorted(firsts))

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet a frame."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the link."""
        if self.buffered + len(data) > self.max_buffer:
            raise FramerOverflowError(
                f"framer buffer would hold {self.buffered + len(data)} bytes, "
                f"bound {self.max_buffer}", where="Framer.feed",
                hint="call next_frame() until NEED_DATA after every feed(), or feed smaller "
                     "chunks")
        if self._pos and self._pos > len(self._buf) // 2:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data
        self.stats.bytes_in += len(data)

    def next_frame(self) -> bytes | NeedData:
        """The next complete frame (preamble included), or :data:`NEED_DATA`."""
        buf, specs, stats = self._buf, self.specs, self.stats
        while self._pos < len(buf):
            pos = self._pos
            waiting = False
            for spec in specs:
                size = spec.measure(buf, pos)
                if size > 0:
                    self._pos = pos + size
                    self._in_garbage = False
                    self.last_spec = spec
                    stats.frames += 1
                    return bytes(buf[pos:pos + size])
                if size == MEASURE_NEED_DATA:
                    waiting = True
                elif size == MEASURE_BAD_CHECKSUM:
                    stats.bad_checksum += 1
                elif size == MEASURE_BAD_LENGTH:
                    stats.bad_length += 1
                elif size == MEASURE_BAD_FRAME:
                    stats.bad_frame += 1
            if waiting:
                later = self._complete_frame_after(pos) if self.lookahead else None
                if later is None:
                    return NEED_DATA
                self._skip_garbage(pos, later)
                continue
            self._skip_garbage(pos)
        return NEED_DATA

    def _complete_frame_after(self, pos: int) -> int | None:
        """Where a complete, valid frame starts after ``pos``, if the buffer holds one.

        The candidate at ``pos`` waits for bytes its length field promises; when a whole
        frame with a good checksum and end byte already follows, that candidate was a start
        byte inside garbage, not a frame — waiting for it would hold the real reply back
        until the link's timeout."""
        buf = self._buf
        for start in range(pos + 1, len(buf)):
            if self._first_bytes is not None and buf[start] not in self._first_bytes:
                continue
            for spec in self.specs:
                if spec.measure(buf, start) > 0:
                    return start
        return None

    def _skip_garbage(self, pos: int, upto: int | None = None) -> None:
        buf = self._buf
        nxt = len(buf)
        if upto is not None:
            nxt = upto
        elif self._first_bytes is None:
            nxt = pos + 1
        else:
            for byte in self._first_bytes:
                found = buf.find(byte, pos + 1, nxt)
                if found != -1:
                    nxt = found
        if not self._in_garbage:
            self.stats.resyncs += 1
            self._in_garbage = True
        self.stats.garbage_bytes += nxt - pos
        room = self.keep_garbage - len(self._garbage)
        if room > 0:
            self._garbage += buf[pos:pos + min(room, nxt - pos)]
        self._pos = nxt

    def resync(self) -> None:
        """Give up on the partial frame at the head of the buffer — call it when the link
        has been idle for a reply timeout: a spurious start byte in garbage can announce a
        long frame that never comes. Its first byte becomes garbage; scanning resumes."""
        if self._pos < len(self._buf):
            self._skip_garbage(self._pos)

    def take_garbage(self) -> bytes:
        """The skipped bytes kept since the last call (at most ``keep_garbage``), for the
        dead-letter record; clears them."""
        out = bytes(self._garbage)
        self._garbage.clear()
        return out

    def close(self) -> bytes:
        """End of stream: whatever is still buffered can never become a frame; it is
        counted as garbage and returned."""
        rest = bytes(self._buf[self._pos:])
        if rest:
            self.stats.garbage_bytes += len(rest)
            self.stats.resyncs += 1
        self._buf.clear()
        self._pos = 0
        self._in_garbage = False
        return rest
