"""Reading import files (CSV, Excel) into raw rows with their line numbers, and turning cells
into typed values.

CSV and Excel are read with the standard ``csv`` module and ``openpyxl`` directly rather than
pandas: pandas infers types per column and would turn a meter address ``00012345`` into
12345 or a phone number into a float; here every cell stays the text a person typed until
its column's type parses it, and a bad cell gets its own precise reason.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from devices.importer.spec import Column, kind_of

__all__ = ["CellError", "RawSheet", "format_cell", "parse_cell", "read_file"]


@dataclass
class RawSheet:
    """The rows of one kind from one file: header and ``(line, {column: text})`` rows."""

    source: str
    kind: str | None
    header: list[str]
    rows: list[tuple[int, dict[str, str]]]


class CellError(ValueError):
    """A cell cannot be read as its column's type (the message says why)."""


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value).strip()


def _normalise_header(name: Any) -> str:
    return re.sub(r"\s+", "_", _cell_text(name).strip().lower()).lstrip("\ufeff")


def read_file(path: Path, kind: str | None = None) -> list[RawSheet]:
    """Read a CSV file (one kind) or an Excel workbook (one kind per sheet)."""
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return _read_excel(path, kind)
    if suffix in (".csv", ".txt", ".tsv"):
        return [_read_csv(path, kind)]
    raise CellError(f"{path.name}: unknown file type '{suffix}' (use .csv or .xlsx)")


def _read_csv(path: Path, kind: str | None) -> RawSheet:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        delimiter = "\t" if path.suffix.lower() == ".tsv" else (
            ";" if sample.count(";") > sample.count(",") else ",")
        reader = csv.reader(fh, delimiter=delimiter)
        header: list[str] = []
        rows: list[tuple[int, dict[str, str]]] = []
        for record in reader:
            if not header:
                if not any(cell.strip() for cell in record) or record[0].startswith("#"):
                    continue
                header = [_normalise_header(h) for h in record]
                continue
            if not any(cell.strip() for cell in record) or record[0].startswith("#"):
                continue
            cells = {name: (record[i].strip() if i < len(record) else "")
                     for i, name in enumerate(header) if name}
            if len(record) > len(header) and any(c.strip() for c in record[len(header):]):
                cells["\x00extra"] = ",".join(record[len(header):])
            rows.append((reader.line_num, cells))
    return RawSheet(str(path), kind or kind_of(path.name), header, rows)


def _read_excel(path: Path, kind: str | None) -> list[RawSheet]:
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True, data_only=True)
    sheets = []
    try:
        for sheet in workbook.worksheets:
            header: list[str] = []
            rows: list[tuple[int, dict[str, str]]] = []
            for line, record in enumerate(sheet.iter_rows(values_only=True), start=1):
                texts = [_cell_text(v) for v in record]
                if not any(texts) or texts[0].startswith("#"):
                    continue
                if not header:
                    header = [_normalise_header(v) for v in record]
                    continue
                rows.append((line, {name: texts[i] if i < len(texts) else ""
                                    for i, name in enumerate(header) if name}))
            if header or rows:
                sheets.append(RawSheet(f"{path}[{sheet.title}]",
                                       kind if kind and len(workbook.worksheets) == 1
                                       else kind_of(sheet.title), header, rows))
    finally:
        workbook.close()
    return sheets


_TRUE = {"1", "true", "yes", "y", "t", "on", "是", "有"}
_FALSE = {"0", "false", "no", "n", "f", "off", "否", "无"}
_ID = re.compile(r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]{0,62}[^\s\x00-\x1f\x7f])?$")


def parse_cell(column: Column, text: str, zone: ZoneInfo) -> Any:
    """The typed value of ``text`` in ``column``; ``CellError`` says why it is not valid."""
    if text == "":
        return None if column.keep_if_empty else column.empty
    kind = column.type
    if kind == "text":
        if column.choices and text not in column.choices:
            raise CellError(f"'{text}' is not one of {', '.join(column.choices)}")
        return text
    if kind == "id":
        if not _ID.match(text):
            raise CellError(f"'{text}' is not a valid id (1–64 characters, no control "
                            "characters or surrounding blanks)")
        return text
    if kind == "int":
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise CellError(f"'{text}' is not a whole number") from None
        if number != number.to_integral_value():
            raise CellError(f"'{text}' is not a whole number")
        return int(number)
    if kind == "decimal":
        try:
            value = Decimal(text.replace(",", "")) if text.count(".") <= 1 else None
        except InvalidOperation:
            value = None
        if value is None or not value.is_finite():
            raise CellError(f"'{text}' is not a number")
        return value
    if kind == "bool":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise CellError(f"'{text}' is not yes/no")
    if kind == "ts":
        return _parse_ts(text, zone)
    if kind == "time":
        try:
            return time.fromisoformat(text)
        except ValueError:
            raise CellError(f"'{text}' is not a time of day (HH:MM)") from None
    if kind == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CellError(f"not valid JSON: {exc.msg} at character {exc.pos}") from None
    if kind == "list":
        return [part.strip() for part in re.split(r"[;\n]", text) if part.strip()]
    if kind == "tiers":
        return _parse_tiers(text)
    raise AssertionError(f"unknown column type {kind}")  # pragma: no cover


def _parse_ts(text: str, zone: ZoneInfo) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace(" ", "T", 1) if len(text) > 10 else text)
    except ValueError:
        raise CellError(f"'{text}' is not a date or date-time (YYYY-MM-DD[THH:MM[:SS][+08:00]])"
                        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value


def _parse_tiers(text: str) -> list[dict[str, Any]]:
    """``400:2.67;900:3.15;:3.94`` (upper:price, empty upper = no limit) or a JSON list."""
    if text.lstrip().startswith("["):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CellError(f"tiers are not valid JSON: {exc.msg}") from None
    else:
        raw = []
        for part in filter(None, (p.strip() for p in text.split(";"))):
            upper_text, sep, price_text = part.partition(":")
            if not sep:
                raise CellError(f"tier '{part}' is not upper:price (e.g. 400:2.67)")
            raw.append({"upper": upper_text.strip() or None, "price": price_text.strip()})
    tiers = []
    previous: Decimal | None = None
    for i, tier in enumerate(raw):
        if not isinstance(tier, dict) or "price" not in tier:
            raise CellError(f"tier {i + 1} has no price")
        try:
            price = Decimal(str(tier["price"]))
            upper = None if tier.get("upper") in (None, "") else Decimal(str(tier["upper"]))
        except InvalidOperation:
            raise CellError(f"tier {i + 1} has a non-numeric upper limit or price") from None
        if price < 0:
            raise CellError(f"tier {i + 1} has a negative price")
        if previous is None and i > 0:
            raise CellError("only the last tier may be without an upper limit")
        if upper is not None and previous is not None and upper <= previous:
            raise CellError(f"tier {i + 1} upper limit {upper} is not above {previous}")
        previous = upper
        item: dict[str, Any] = {"upper": None if upper is None else str(upper),
                                "price": str(price)}
        if tier.get("components"):
            item["components"] = {str(k): str(Decimal(str(v)))
                                  for k, v in tier["components"].items()}
        tiers.append(item)
    return tiers


def format_cell(column: Column, value: Any, zone: ZoneInfo) -> str:
    """The text of a ledger value in an export (the inverse of :func:`parse_cell`)."""
    if value is None:
        return ""
    if column.type == "bool":
        return "yes" if value else "no"
    if column.type == "ts":
        return value.astimezone(zone).isoformat() if isinstance(value, datetime) else str(value)
    if column.type == "time":
        return value.isoformat(timespec="minutes") if isinstance(value, time) else str(value)
    if column.type == "json":
        return "" if value == column.empty else json.dumps(value, ensure_ascii=False,
                                                           sort_keys=True)
    if column.type == "list":
        return ";".join(value)
    if column.type == "tiers":
        if any(t.get("components") for t in value):
            return json.dumps(value, ensure_ascii=False)
        return ";".join(f"{t.get('upper') or ''}:{t['price']}" for t in value)
    if column.type == "decimal":
        text = format(value, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(value)
