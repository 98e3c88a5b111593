"""The simulator's log: what it sent and what was acknowledged — the fault-test oracle's input.

Format ``unimeter-sim-log`` version 1: JSON Lines, one record per line, each an object whose
``"k"`` field names its kind. Times are ISO 8601 in UTC (``…Z``); register values are decimal
strings exactly as the meter put them in the frame. Readers must ignore unknown kinds and
unknown fields (later versions add, never change).

==========  ====================================================================================
kind        meaning and fields
==========  ====================================================================================
``run``     first line. ``v`` (format version), ``run_id``, ``started_at`` (wall),
            ``sim_start`` (simulated start), ``speed``, ``seed``, ``fleet`` (counts),
            ``faults`` (the fault spec in force at start).
``meter``   one per simulated meter, before any reading: ``meter_id``, ``address``,
            ``medium``, ``protocol``, ``transport``, ``link_id``, ``service_point``,
            ``customer_type``, ``register``, ``unit``, ``digits``, ``decimals``.
``frame``   an upload put on the wire: ``id`` (unique in the run: ``<link>/<n>``), ``link``,
            ``service_point``, ``sim_at``, ``wall_at``, ``readings`` (how many), ``copy``
            (1 = first transmission; 2… = retransmission after no ack, or a deliberate
            duplicate upload), ``hex`` (only with ``--log-frames``), ``fault``.
``reading`` one reading carried by frame ``frame`` (logged once, at its first
            transmission): ``meter_id``, ``register``, ``unit``, ``value`` (as sent),
            ``ts`` (the time stamp in the frame: the meter's clock, drift included; null when
            the protocol carries none and the receiver stamps it), ``sim_at`` (true simulated
            time of the reading), ``true_value`` (the true register at ``sim_at``, present only
            when ``fault`` distorted ``value``), ``fault`` (null, ``spike``, ``rollback``,
            ``clock_drift``; several faults of one report are joined by ``+``).
``ack``     the FEP acknowledged frame ``frame`` (every reading in it is then durable on
            the platform side): ``frame``, ``wall_at``.
``answer``  the simulator answered a poll or read command with frame ``frame``; no
            acknowledgement follows in any protocol, so its readings are *sent, unconfirmed*.
``command`` a command reached a device and what it did: ``device_id``, ``meter_id``,
            ``command``, ``ok``, ``effect`` (e.g. ``{"valve": "closed"}``), ``sim_at``,
            ``wall_at``.
``fault``   an injected fault not tied to one reading: ``kind`` (``missing``,
            ``garbage``, ``disconnect``, ``corrupt``, ``duplicate``), ``target`` (link or meter),
            ``sim_at``, ``wall_at``, ``detail``. ``missing`` means a reading was deliberately
            never sent (``meter_id``, ``register``, ``sim_at``).
``end``     last line of a clean shutdown: ``wall_at``, ``stats``.
==========  ====================================================================================

How the oracle reads it: a reading is *acknowledged* when some ``ack`` names its frame
(any copy). Every acknowledged reading must be stored exactly once (by natural key
``meter_id, register, ts``); a reading sent but never acknowledged may or may not be stored;
a stored reading that no ``reading`` line announces is *unexpected*. :func:`read_log` builds
exactly those sets. True consumption per meter is the difference of true registers
(``true_value`` if present, else ``value``; a register below its predecessor by more than
half its range has rolled over at ``10**digits``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

__all__ = [
    "FORMAT_VERSION",
    "LogSummary",
    "SimLog",
    "read_log",
]

FORMAT_VERSION = 1


class _Rec(msgspec.Struct, tag_field="k", omit_defaults=True):
    pass


class RunRec(_Rec, tag="run"):
    run_id: str
    started_at: datetime
    sim_start: datetime
    speed: float
    seed: int
    v: int  # the format version, always written (no default: never omitted)
    fleet: dict[str, int] = msgspec.field(default_factory=dict)
    faults: dict[str, Any] = msgspec.field(default_factory=dict)


class MeterRec(_Rec, tag="meter"):
    meter_id: str
    address: str
    medium: str
    protocol: str
    transport: str
    link_id: str
    service_point: str
    customer_type: str
    register: str
    unit: str
    digits: int
    decimals: int


class FrameRec(_Rec, tag="frame"):
    id: str
    link: str
    service_point: str
    sim_at: datetime
    wall_at: datetime
    readings: int
    copy: int = 1
    hex: str | None = None
    fault: str | None = None


class ReadingRec(_Rec, tag="reading"):
    frame: str
    meter_id: str
    register: str
    unit: str
    value: str
    sim_at: datetime
    ts: datetime | None = None
    true_value: str | None = None
    fault: str | None = None


class AckRec(_Rec, tag="ack"):
    frame: str
    wall_at: datetime


class AnswerRec(_Rec, tag="answer"):
    frame: str
    wall_at: datetime
    command: str = ""


class CommandRec(_Rec, tag="command"):
    device_id: str
    command: str
    ok: bool
    sim_at: datetime
    wall_at: datetime
    meter_id: str | None = None
    effect: dict[str, Any] = msgspec.field(default_factory=dict)


class FaultRec(_Rec, tag="fault"):
    kind: str
    target: str
    sim_at: datetime
    wall_at: datetime
    detail: str = ""
    meter_id: str | None = None
    register: str | None = None


class EndRec(_Rec, tag="end"):
    wall_at: datetime
    stats: dict[str, Any] = msgspec.field(default_factory=dict)


LogRecord = (RunRec | MeterRec | FrameRec | ReadingRec | AckRec | AnswerRec | CommandRec
             | FaultRec | EndRec)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LogRecord)


def _now() -> datetime:
    return datetime.now(UTC)


class SimLog:
    """Append-only writer of the log (buffered; :meth:`flush` is cheap, call it often)."""

    def __init__(self, path: Path | None, *, frames_hex: bool = False,
                 buffer_bytes: int = 1 << 20) -> None:
        self.path = path
        self.frames_hex = frames_hex
        self._fh: BinaryIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "ab", buffering=buffer_bytes)  # noqa: SIM115 - kept open
        self.counts: dict[str, int] = {}

    def write(self, record: _Rec) -> None:
        kind = type(record).__struct_config__.tag
        self.counts[str(kind)] = self.counts.get(str(kind), 0) + 1
        if self._fh is not None:
            self._fh.write(_encoder.encode(record) + b"\n")

    # convenience writers used by the fleet
    def frame(self, *, frame_id: str, link: str, service_point: str, sim_at: datetime,
              readings: int, copy: int = 1, data: bytes | None = None,
              fault: str | None = None) -> None:
        self.write(FrameRec(id=frame_id, link=link, service_point=service_point,
                            sim_at=sim_at, wall_at=_now(), readings=readings, copy=copy,
                            hex=data.hex() if (data is not None and self.frames_hex) else None,
                            fault=fault))

    def ack(self, frame_id: str) -> None:
        self.write(AckRec(frame=frame_id, wall_at=_now()))

    def answer(self, frame_id: str, command: str = "") -> None:
        self.write(AnswerRec(frame=frame_id, wall_at=_now(), command=command))

    def fault(self, kind: str, target: str, sim_at: datetime, detail: str = "", *,
              meter_id: str | None = None, register: str | None = None) -> None:
        self.write(FaultRec(kind=kind, target=target, sim_at=sim_at, wall_at=_now(),
                            detail=detail, meter_id=meter_id, register=register))

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self, stats: dict[str, Any] | None = None) -> None:
        if self._fh is not None:
            self.write(EndRec(wall_at=_now(), stats=stats or {}))
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None


def iter_log(path: Path) -> Iterator[LogRecord]:
    """Every record of a log file; a torn last line (the simulator was killed) is skipped."""
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                return
            try:
                yield _decoder.decode(line)
            except msgspec.ValidationError:
                continue  # an unknown kind from a newer writer


ReadingKey = tuple[str, str, datetime | None]


@dataclass
class LogSummary:
    """What the oracle needs: every reading sent, which were acknowledged, the fleet."""

    run: RunRec | None = None
    meters: dict[str, MeterRec] = field(default_factory=dict)
    readings: list[ReadingRec] = field(default_factory=list)
    acked_frames: set[str] = field(default_factory=set)
    frame_copies: dict[str, int] = field(default_factory=dict)
    commands: list[CommandRec] = field(default_factory=list)
    faults: list[FaultRec] = field(default_factory=list)
    clean_end: bool = False
    #: the simulator's own summary at the end of the run (``faults``: how often each fault
    #: kind fired, ``frames_sent``, …)
    end_stats: dict[str, Any] = field(default_factory=dict)

    def acknowledged(self) -> list[ReadingRec]:
        return [r for r in self.readings if r.frame in self.acked_frames]

    def unconfirmed(self) -> list[ReadingRec]:
        return [r for r in self.readings if r.frame not in self.acked_frames]

    def keys(self, readings: list[ReadingRec] | None = None) -> set[ReadingKey]:
        return {(r.meter_id, r.register, r.ts) for r in (self.readings if readings is None
                                                         else readings)}


def read_log(path: Path) -> LogSummary:
    summary = LogSummary()
    for rec in iter_log(path):
        if isinstance(rec, ReadingRec):
            summary.readings.append(rec)
        elif isinstance(rec, AckRec):
            summary.acked_frames.add(rec.frame)
        elif isinstance(rec, FrameRec):
            summary.frame_copies[rec.id] = max(rec.copy, summary.frame_copies.get(rec.id, 0))
        elif isinstance(rec, MeterRec):
            summary.meters[rec.meter_id] = rec
        elif isinstance(rec, RunRec):
            summary.run = rec
        elif isinstance(rec, CommandRec):
            summary.commands.append(rec)
        elif isinstance(rec, FaultRec):
            summary.faults.append(rec)
        elif isinstance(rec, EndRec):
            summary.clean_end = True
            summary.end_stats = rec.stats
    return summary
