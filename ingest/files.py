"""File ingest: handheld (RF mobile collection) and offline-DTU uploads, all or nothing.

Strategy: an upload is validated completely before anything is published. Every line is
parsed, checked (meter known to the ledger and admitted, time stamp with a zone or in the
utility's zone, decimal value, canonical unit, no duplicate key inside the file) and either
becomes a reading or a :class:`RejectedLine` with its line number and reason. One rejected
line rejects the file: the report lists every rejected line so the outworker fixes them all
at once. A valid file is published in one Kafka *transaction* (a read-committed consumer sees
all of its readings or none) and recorded in ``ops.file_imports`` by its SHA-256, so the same
file is not imported twice by accident (``--force`` re-imports; the natural keys make that
harmless).

Formats (chosen by ``--format`` or the file extension):

* ``csv`` — a header row; columns ``meter_id`` or ``address``, ``register``, ``ts``,
  ``value``, ``unit``, and optionally ``kind``, ``status`` (``|``-separated);
* ``json`` — an array of objects with the same fields, or JSON Lines;
* ``hex`` — one frame per line: ``HEX``, ``PROTOCOL HEX`` or ``TS PROTOCOL HEX`` (or JSON
  Lines ``{"protocol": …, "hex": …, "ts": …}`` as ``unimeter decode --jsonl`` reads them);
  frames are decoded by ``decoders`` and their readings taken from the report templates; a
  frame that carries no meter time takes the line's ``TS``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ingest.errors import FileImportError
from ingest.ledger import Admission, LedgerView
from ingest.stack import LinkStack
from schemas import codec
from schemas.errors import UnimeterError
from schemas.messages import RawFrame, Reading, batches_of
from schemas.settings import DatabaseSettings, KafkaSettings

__all__ = [
    "CANONICAL_UNITS",
    "FileImport",
    "RejectedLine",
    "find_import",
    "parse_upload",
    "publish_upload",
    "record_import",
]

#: Units a reading may carry (the canonical units of ``schemas.messages.Reading``).
CANONICAL_UNITS = frozenset({"m3", "L", "kWh", "MWh", "Wh", "kvarh", "GJ", "MJ", "kJ", "J",
                             "m3/h", "L/h", "kW", "W", "degC", "CNY", "h", "V", "A",
                             "bar", "kPa", ""})
_KINDS = frozenset({"cumulative", "interval", "instantaneous", "state"})


@dataclass(frozen=True)
class RejectedLine:
    line: int
    reason: str
    text: str = ""


@dataclass
class FileImport:
    """The outcome of validating one upload file."""

    path: str
    format: str
    sha256: str
    lines: int = 0
    readings: list[Reading] = field(default_factory=list)
    frames: list[RawFrame] = field(default_factory=list)
    rejected: list[RejectedLine] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected and bool(self.readings)

    def report(self) -> dict[str, Any]:
        return {"file": self.path, "format": self.format, "sha256": self.sha256,
                "lines": self.lines, "readings": len(self.readings),
                "rejected": [{"line": r.line, "reason": r.reason, "text": r.text[:120]}
                             for r in self.rejected]}


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("csv", "txt"):
        return "csv"
    if suffix in ("json", "jsonl", "ndjson"):
        return "json"
    if suffix in ("hex", "dump", "log"):
        return "hex"
    raise FileImportError(f"cannot tell the format of {path.name}", where=str(path),
                          hint="pass --format csv, json or hex")


class _Validator:
    def __init__(self, result: FileImport, *, ledger: LedgerView | None, service_point: str,
                 source: str, zone: ZoneInfo, producer: str) -> None:
        self.result = result
        self.ledger = ledger
        self.admission = Admission(ledger, mode="ledger") if ledger is not None else None
        self.service_point = service_point
        self.source = source
        self.zone = zone
        self.producer = producer
        self.received_at = datetime.now(UTC)
        self._keys: dict[tuple[str, str, datetime], int] = {}

    def reject(self, line: int, reason: str, text: str = "") -> None:
        self.result.rejected.append(RejectedLine(line, reason, text))

    def timestamp(self, raw: Any) -> datetime:
        if isinstance(raw, datetime):
            value = raw
        else:
            text = str(raw or "").strip()
            if not text:
                raise ValueError("no time stamp")
            try:
                value = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"time stamp '{text}' is not ISO 8601 (e.g. "
                                 "2026-07-01T08:00:00+08:00)") from None
        if value.tzinfo is None:
            value = value.replace(tzinfo=self.zone)
        value = value.astimezone(UTC)
        if value > self.received_at.replace(microsecond=0) + _FUTURE_SLACK:
            raise ValueError(f"time stamp {value.isoformat()} is in the future")
        return value

    def meter(self, *, meter_id: str, address: str, protocol: str = "") -> str:
        if self.ledger is None:
            if not meter_id and not address:
                raise ValueError("neither meter_id nor address given")
            return meter_id or address
        if meter_id:
            meter = self.ledger.meters.get(meter_id)
            if meter is None:
                raise ValueError(f"meter {meter_id} is not in the ledger")
            if meter.status not in ("installed", "active"):
                raise ValueError(f"meter {meter_id} is '{meter.status}' in the ledger")
            return meter_id
        if not address:
            raise ValueError("neither meter_id nor address given")
        assert self.admission is not None
        link = ""
        candidates = self.ledger.by_address(address, protocol)
        if candidates and candidates[0].link_id:
            link = candidates[0].link_id
        decision = self.admission.admit_meter(
            self.service_point or (candidates[0].service_point or "" if candidates else ""),
            link, address, protocol)
        if not decision.admitted:
            raise ValueError(decision.reason.split(": ", 1)[-1])
        return decision.meter_id or address

    def add(self, line: int, text: str, *, meter_id: str, register: str, ts: datetime,
            value: Decimal, unit: str, kind: str = "cumulative", status: tuple[str, ...] = (),
            protocol: str = "", frame_id: str | None = None,
            meter_clock: datetime | None = None) -> None:
        key = (meter_id, register, ts)
        if key in self._keys:
            first = self._keys[key]
            previous = next(r for r in self.result.readings
                            if (r.meter_id, r.register, r.ts) == key)
            if previous.value != value:
                self.reject(line, f"conflicts with line {first}: same meter, register and "
                                  f"time with value {previous.value}", text)
            return  # an exact repeat inside the file is harmless
        self._keys[key] = line
        self.result.readings.append(Reading(
            meter_id=meter_id, register=register, ts=ts, value=value, unit=unit,
            received_at=self.received_at, kind=kind,  # type: ignore[arg-type]
            source=self.source, fep=self.producer, protocol=protocol, status=status,
            frame_id=frame_id, meter_clock=meter_clock))


_FUTURE_SLACK = timedelta(minutes=10)


def _row_reading(v: _Validator, line: int, row: dict[str, Any], text: str) -> None:
    try:
        meter_id = v.meter(meter_id=str(row.get("meter_id") or "").strip(),
                           address=str(row.get("address") or "").strip(),
                           protocol=str(row.get("protocol") or ""))
        register = str(row.get("register") or "").strip()
        if not register:
            raise ValueError("no register (e.g. volume, energy_import)")
        ts = v.timestamp(row.get("ts"))
        raw_value = row.get("value")
        if raw_value is None or str(raw_value).strip() == "":
            raise ValueError("no value")
        try:
            value = Decimal(str(raw_value).strip())
        except InvalidOperation:
            raise ValueError(f"value '{raw_value}' is not a decimal number") from None
        if not value.is_finite():
            raise ValueError(f"value '{raw_value}' is not finite")
        unit = str(row.get("unit") or "").strip()
        if unit not in CANONICAL_UNITS:
            raise ValueError(f"unit '{unit}' is not canonical (allowed: "
                             f"{', '.join(sorted(u for u in CANONICAL_UNITS if u))})")
        kind = str(row.get("kind") or "cumulative").strip()
        if kind not in _KINDS:
            raise ValueError(f"kind '{kind}' (allowed: {', '.join(sorted(_KINDS))})")
        status_raw = row.get("status") or ()
        status = tuple(s for s in (status_raw.split("|") if isinstance(status_raw, str)
                                   else status_raw) if s)
    except ValueError as exc:
        v.reject(line, str(exc), text)
        return
    v.add(line, text, meter_id=meter_id, register=register, ts=ts, value=value, unit=unit,
          kind=kind, status=status)


def _csv_rows(text: str) -> Iterator[tuple[int, dict[str, Any], str]]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return
    lines = text.splitlines()
    for row in reader:
        line = reader.line_num
        yield line, {k.strip().lower(): v for k, v in row.items() if k}, \
            lines[line - 1] if line - 1 < len(lines) else ""


def _json_rows(text: str) -> Iterator[tuple[int, Any, str]]:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            yield exc.lineno, exc, text.splitlines()[exc.lineno - 1] if text else ""
            return
        for number, row in enumerate(rows, start=1):
            yield number, row, json.dumps(row)[:200]
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), line
        except json.JSONDecodeError as exc:
            yield number, exc, line


def parse_upload(path: Path, *, fmt: str | None = None, ledger: LedgerView | None = None,
                 stack_for: Callable[[str], LinkStack] | None = None,
                 default_protocol: str | None = None, service_point: str = "",
                 source: str = "handheld", timezone: str = "Asia/Shanghai",
                 producer: str = "upload") -> FileImport:
    """Validate a whole upload; nothing is published here."""
    data = path.read_bytes()
    kind = _format_of(path, fmt)
    result = FileImport(path=str(path), format=kind, sha256=hashlib.sha256(data).hexdigest())
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        result.rejected.append(RejectedLine(0, f"not UTF-8 text (byte {exc.start})"))
        return result
    v = _Validator(result, ledger=ledger, service_point=service_point, source=source,
                   zone=ZoneInfo(timezone), producer=producer)
    if kind == "csv":
        for line, row, raw in _csv_rows(text):
            result.lines += 1
            _row_reading(v, line, row, raw)
        if result.lines == 0:
            result.rejected.append(RejectedLine(1, "no data rows (a header row and at least one "
                                                   "reading are needed)"))
    elif kind == "json":
        for line, row, raw in _json_rows(text):
            result.lines += 1
            if isinstance(row, Exception):
                v.reject(line, f"not JSON: {row}", raw)
            elif not isinstance(row, dict):
                v.reject(line, "not a JSON object", raw)
            else:
                _row_reading(v, line, row, raw)
    elif kind == "hex":
        _hex_lines(v, text, stack_for, default_protocol)
    else:
        raise FileImportError(f"unknown format '{kind}'", hint="use csv, json or hex")
    return result


def _hex_lines(v: _Validator, text: str, stack_for: Callable[[str], LinkStack] | None,
               default_protocol: str | None) -> None:
    result = v.result
    if stack_for is None:
        raise FileImportError("hex dumps need the protocol engine", hint="internal error")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        result.lines += 1
        ts_text, protocol, hex_text = "", default_protocol or "", line
        if line.startswith("{"):
            try:
                doc = json.loads(line)
                protocol = doc.get("protocol") or protocol
                hex_text, ts_text = doc.get("hex", ""), doc.get("ts", "")
            except (json.JSONDecodeError, AttributeError) as exc:
                v.reject(number, f"not JSON: {exc}", raw)
                continue
        else:
            parts = line.split(None, 2)
            if len(parts) == 3 and not _is_hex(parts[0]) and not _is_hex(parts[1]):
                ts_text, protocol, hex_text = parts
            elif len(parts) >= 2 and not _is_hex(parts[0]):
                protocol, hex_text = parts[0], line.split(None, 1)[1]
        if not protocol:
            v.reject(number, "no protocol (write 'PROTOCOL HEX' or pass --protocol)", raw)
            continue
        try:
            data = bytes.fromhex(hex_text.replace(" ", ""))
        except ValueError:
            v.reject(number, "not hexadecimal", raw)
            continue
        try:
            stack = stack_for(protocol)
            inbound = stack.interpret(data)
        except UnimeterError as exc:
            v.reject(number, f"{protocol}: {exc}", raw)
            continue
        if not inbound.readings:
            v.reject(number, f"{protocol} frame ({inbound.kind}) carries no readings", raw)
            continue
        frame_id = f"{v.producer}/{result.sha256[:12]}/{number}"
        line_ts = None
        if ts_text:
            try:
                line_ts = v.timestamp(ts_text)
            except ValueError as exc:
                v.reject(number, str(exc), raw)
                continue
        ok = True
        for draft in inbound.readings:
            try:
                meter_id = v.meter(meter_id="", address=draft.address, protocol=protocol)
                ts = draft.ts or line_ts
                if ts is None:
                    raise ValueError("the frame carries no meter time and the line no TS")
                ts = v.timestamp(ts)
            except ValueError as exc:
                v.reject(number, str(exc), raw)
                ok = False
                break
            v.add(number, raw, meter_id=meter_id, register=draft.register, ts=ts,
                  value=draft.value, unit=draft.unit, kind=draft.kind, status=draft.status,
                  protocol=protocol, frame_id=frame_id, meter_clock=draft.meter_clock)
        if ok:
            result.frames.append(RawFrame(
                frame_id=frame_id, device_id=inbound.address or "", fep=v.producer,
                service_point=v.service_point or "upload", peer=f"file:{Path(result.path).name}",
                protocol=protocol, direction="in", received_at=v.received_at, data=data))


def _is_hex(token: str) -> bool:
    try:
        bytes.fromhex(token)
    except ValueError:
        return False
    return len(token) >= 2


async def publish_upload(result: FileImport, kafka: KafkaSettings, *, producer: str,
                         record: Callable[[FileImport, str], Any] | None = None) -> str:
    """Publish a validated file in one Kafka transaction; returns the import id."""
    from aiokafka import AIOKafkaProducer

    if not result.ok:
        raise FileImportError(
            f"{len(result.rejected)} rejected line(s); nothing was imported",
            where=result.path, hint="fix every line listed in the report and upload again",
            report=json.dumps(result.report()))
    import_id = uuid.uuid4().hex
    client = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all",
                              enable_idempotence=True,
                              transactional_id=f"{kafka.client_id}-upload-{result.sha256[:24]}",
                              client_id=f"{kafka.client_id}-upload")
    await client.start()
    try:
        async with client.transaction():
            for frame in result.frames:
                await client.send(kafka.topic("frames.raw"), codec.encode(frame, producer=producer),
                                  key=frame.key())
            for batch in batches_of(result.readings):
                await client.send(kafka.topic("readings.raw"),
                                  codec.encode(batch, producer=producer), key=batch.key())
    finally:
        await client.stop()
    if record is not None:
        await record(result, import_id)
    return import_id


async def find_import(database: DatabaseSettings, sha256: str) -> dict[str, Any] | None:
    """The earlier import of a file with this SHA-256, if any."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(database.conninfo("ingest"),
                                                     autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT import_id, file_name, imported_by, imported_at, readings "
            "FROM ops.file_imports WHERE sha256 = %s", (sha256,))
        row = await cur.fetchone()
    if row is None:
        return None
    return {"import_id": row[0], "file_name": row[1], "imported_by": row[2],
            "imported_at": row[3].isoformat(), "readings": row[4]}


async def record_import(database: DatabaseSettings, result: FileImport, import_id: str, *,
                        source: str, imported_by: str) -> None:
    """Remember an imported file (a forced re-import replaces the earlier record)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(database.conninfo("ingest"),
                                                     autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO ops.file_imports (import_id, sha256, file_name, format, source, "
            "imported_by, readings, lines) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (sha256) DO NOTHING",
            (import_id, result.sha256, Path(result.path).name, result.format, source,
             imported_by, len(result.readings), result.lines))
