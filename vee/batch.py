"""Batch runs of the engine: CSV rows in, final versions out (``unimeter vee run``), and the
same over stored readings (``unimeter vee revalidate``).

Strategy: a batch run is the stream run with the whole history in the window: readings are
grouped by meter, interval channels go before registers (so the sum check sees the
intervals and scaling to the register can happen when the register read arrives), each
channel in time order, through :class:`~vee.engine.VeeEngine.process`. What a run returns is
the *last* version of every value — a batch has no earlier consumers to correct. A
batch holds all there is, so at the end of a meter's input the days still open are
judged (:meth:`~vee.engine.VeeEngine.close`).

CSV input: ``meter_id,ts,register,value`` with ISO 8601 timestamps carrying an offset, and
optional ``unit``, ``status`` (``;``-separated device status tags), ``kind``
(``cumulative`` / ``interval``) and ``interval_s``. A bad row is reported with its line and
column and skipped; it never stops the run.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

from schemas.messages import Alert, Dimensions, Reading, ValidatedReading
from vee.engine import VeeEngine
from vee.groups import RuleSet
from vee.model import MeterInfo, MeterState
from vee.quality import espi_quality, nem12_codes

__all__ = [
    "OUTPUT_COLUMNS",
    "BatchResult",
    "RowError",
    "read_csv",
    "run_batch",
    "write_csv",
]

REQUIRED_COLUMNS = ("meter_id", "ts", "register", "value")
OPTIONAL_COLUMNS = ("unit", "status", "kind", "interval_s")
OUTPUT_COLUMNS = ("meter_id", "ts", "register", "value", "unit", "quality", "method", "flags",
                  "original_value", "consumption", "interval_start", "version",
                  "espi_quality", "nem12_quality", "nem12_method")
_BATCH_WINDOW = 2000


@dataclass(frozen=True)
class RowError:
    """A CSV row that could not be used: where, which column, why."""

    line: int
    column: str
    reason: str
    row: dict[str, str]


@dataclass
class BatchResult:
    """The final version of every value, the alerts raised, and the rows refused."""

    readings: list[ValidatedReading] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    inputs: int = 0
    duplicates: int = 0


def read_csv(stream: TextIO, *, received_at: datetime | None = None,
             source: str = "csv") -> tuple[list[Reading], list[RowError]]:
    """Parse CSV rows into readings; ``received_at`` defaults to each value's own time."""
    reader = csv.DictReader(stream)
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        return [], [RowError(1, ",".join(missing), "required column missing "
                             f"(the header must name {', '.join(REQUIRED_COLUMNS)})", {})]
    readings: list[Reading] = []
    errors: list[RowError] = []
    for line, row in enumerate(reader, start=2):
        try:
            readings.append(_row(row, received_at, source))
        except _RowError as problem:
            errors.append(RowError(line, problem.column, problem.reason, dict(row)))
    return readings, errors


class _RowError(Exception):
    def __init__(self, column: str, reason: str) -> None:
        super().__init__(reason)
        self.column = column
        self.reason = reason


def _row(row: dict[str, Any], received_at: datetime | None, source: str) -> Reading:
    meter_id = (row.get("meter_id") or "").strip()
    if not meter_id:
        raise _RowError("meter_id", "empty meter id")
    register = (row.get("register") or "").strip()
    if not register:
        raise _RowError("register", "empty register name")
    text = (row.get("ts") or "").strip()
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _RowError("ts", f"'{text}' is not an ISO 8601 time") from None
    if ts.tzinfo is None:
        raise _RowError("ts", f"'{text}' has no UTC offset (write e.g. "
                                "2026-07-01T08:00:00+08:00)")
    raw_value = (row.get("value") or "").strip()
    try:
        value = Decimal(raw_value)
    except InvalidOperation:
        raise _RowError("value", f"'{raw_value}' is not a number") from None
    if not value.is_finite():
        raise _RowError("value", f"'{raw_value}' is not a finite number")
    kind = (row.get("kind") or "cumulative").strip() or "cumulative"
    if kind not in ("cumulative", "interval", "instantaneous", "state"):
        raise _RowError("kind", f"'{kind}' is not cumulative, interval or instantaneous")
    interval_text = (row.get("interval_s") or "").strip()
    interval_s = None
    if interval_text:
        if not interval_text.isdigit() or int(interval_text) <= 0:
            raise _RowError("interval_s", f"'{interval_text}' is not a positive number "
                                            "of seconds")
        interval_s = int(interval_text)
    status = tuple(t.strip() for t in (row.get("status") or "").split(";") if t.strip())
    ts = ts.astimezone(UTC)
    return Reading(meter_id=meter_id, register=register, ts=ts, value=value,
                   unit=(row.get("unit") or "").strip() or "m3",
                   received_at=received_at or ts, kind=kind,  # type: ignore[arg-type]
                   interval_s=interval_s, status=status, source=source)


def run_batch(readings: Iterable[Reading], ruleset: RuleSet,
              meter_info: Callable[[str], MeterInfo], *, initial_load: bool = False,
              states: dict[str, MeterState] | None = None,
              dims: Callable[[MeterInfo], Dimensions] | None = None) -> BatchResult:
    """Validate ``readings`` meter by meter; returns the last version of every value."""
    engine = VeeEngine(ruleset, window_points=_BATCH_WINDOW, window_s=400 * 86400,
                       producer="vee-batch")
    by_meter: dict[str, list[Reading]] = {}
    result = BatchResult()
    for r in readings:
        by_meter.setdefault(r.meter_id, []).append(r)
        result.inputs += 1
    for meter_id in sorted(by_meter):
        meter = meter_info(meter_id)
        state = (states or {}).get(meter_id)
        latest: dict[tuple[str, datetime], ValidatedReading] = {}
        ordered = sorted(by_meter[meter_id],
                         key=lambda r: (r.kind != "interval", r.register, r.ts))
        meter_dims = dims(meter) if dims is not None else meter.dims
        inputs: list[Reading | None] = [*ordered, None]
        for item in inputs:
            if item is None:  # the input ends here: judge the days still open
                step = engine.close(meter, state, dims=meter_dims)
            else:
                step = engine.process(item, meter, state, dims=meter_dims,
                                      initial_load=initial_load)
            state = step.state
            if step.dropped == "duplicate":
                result.duplicates += 1
            for out in step.outputs:
                key = (out.register, out.ts)
                held = latest.get(key)
                if held is None or out.version >= held.version:
                    latest[key] = out
            result.alerts.extend(step.alerts)
        if states is not None and state is not None:
            states[meter_id] = state
        result.readings.extend(sorted(latest.values(), key=lambda o: (o.register, o.ts)))
    return result


def output_row(o: ValidatedReading, zone: tzinfo | None = None) -> dict[str, str]:
    """One CSV output row of a validated reading (times in ``zone``, default UTC)."""
    forward = "forward" in o.flags
    nem_quality, nem_method = nem12_codes(o.quality, o.method, kind=o.kind, forward=forward)
    ts = o.ts.astimezone(zone) if zone is not None else o.ts
    start = o.interval_start
    if start is not None and zone is not None:
        start = start.astimezone(zone)
    return {
        "meter_id": o.meter_id, "ts": ts.isoformat(), "register": o.register,
        "value": "" if o.value is None else str(o.value), "unit": o.unit,
        "quality": o.quality, "method": o.method, "flags": ";".join(o.flags),
        "original_value": "" if o.original_value is None else str(o.original_value),
        "consumption": "" if o.consumption is None else str(o.consumption),
        "interval_start": "" if start is None else start.isoformat(),
        "version": str(o.version), "espi_quality": str(espi_quality(o.quality, o.method)),
        "nem12_quality": nem_quality, "nem12_method": "" if nem_method is None else str(nem_method),
    }


def write_csv(rows: Iterable[ValidatedReading], stream: TextIO, *,
              zone: tzinfo | None = None) -> int:
    writer = csv.DictWriter(stream, fieldnames=list(OUTPUT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    count = 0
    for o in rows:
        writer.writerow(output_row(o, zone))
        count += 1
    return count


def write_errors(errors: Iterable[RowError], stream: TextIO) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["line", "column", "reason", *REQUIRED_COLUMNS, *OPTIONAL_COLUMNS])
    count = 0
    for e in errors:
        writer.writerow([e.line, e.column, e.reason,
                         *(e.row.get(c, "") for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS))])
        count += 1
    return count



@dataclass(frozen=True)
class StoredVersion:
    """The current stored version of a validated value (what ``revalidate`` compares with)."""

    version: int
    value: Decimal | None
    quality: str
    method: str
    flags: tuple[str, ...]
    consumption: Decimal | None
    interval_start: datetime | None


def next_versions(results: Iterable[ValidatedReading],
                  stored: dict[tuple[str, str, datetime], StoredVersion], *,
                  start: datetime, end: datetime) -> list[ValidatedReading]:
    """The re-validated values of ``[start, end)`` that differ from what is stored, each as
    the next version of its key. A stored edited or final value is never replaced; a value
    nothing was stored for gets version 1."""
    import msgspec

    out = []
    for r in results:
        if not start <= r.ts < end:
            continue
        held = stored.get((r.meter_id, r.register, r.ts))
        if held is None:
            out.append(msgspec.structs.replace(r, version=1))
            continue
        if held.quality in ("edited", "final"):
            continue
        same = (held.value == r.value and held.quality == r.quality
                and held.method == r.method and tuple(held.flags) == r.flags
                and held.consumption == r.consumption
                and held.interval_start == r.interval_start)
        if not same:
            out.append(msgspec.structs.replace(r, version=held.version + 1))
    return out
