"""JSON meters: NB-IoT / LoRa meters whose platform delivers JSON documents, not frames.

An NB-IoT gas or water meter talks to the operator's IoT platform (CoAP/LwM2M); the
platform — or the meter's vendor cloud — hands the utility each uplink as a JSON document
on MQTT, and takes downlink commands as JSON. Every vendor names the fields differently::

    {"imei": "868...", "msgType": "report", "msgId": 17, "ts": 1764201600,
     "data": {"totalFlow": 1234.567, "valve": 0, "battery": 3.52, "balance": "88.20"}}

Strategy: a *JSON map* (``decoders/protocols/json-maps/*.yaml``, format
``unimeter-json-map/1``) says per device type, without Python, where the address, message
type, message id and clock are, which field is which data item (type, unit, scale, enum
values), and which JSON document each unified command is (a template whose ``"{param}"``
strings are replaced by the typed parameters, ``"{sequence}"`` by the message id). The map
binds to the protocol as a variant, ``nbiot-json:<map>``, like a Modbus register map.
Decoding yields an ordinary :class:`~decoders.frame.Frame` (``report`` for uploads,
``reply`` for command answers, matched by message id), so report templates, admission,
deduplication, command matching and read-back work as for binary frames. Bad JSON, a
missing address or a value of the wrong type is a :class:`~decoders.errors.DecodeError`
naming the JSON path. Messages are whole MQTT payloads (or file lines): no framer.

Series (``series:`` in the map): an NB-IoT meter typically wakes once a day or every few
hours and uploads its frozen interval data in one message — e.g. the 24 hourly cumulative
register values since its last upload::

    {"imei": "868...", "meterTime": "20261127080512",
     "data": {"startTime": "20261126090000", "hourly": [1230.1, 1230.4, null, 1231.0, ...]}}

A series names the array (oldest value first), the field whose type, scale and unit the
values have, the time of the first value and the interval between values. Each non-null
value becomes one item of that field's name, with its own time in ``attrs["time"]``
(``start + i × interval``, as the meter states it); report templates stamp the reading
with that time, not with the upload's clock, so every value has its natural key (meter,
register, interval time) and a redelivered message is recognised reading by reading.
A ``null`` is an interval the meter did not record: no item, never a zero.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from decoders.errors import (
    CommandNotSupportedError,
    EncodeError,
    FieldValueError,
    FramingError,
    TemplateError,
)
from decoders.frame import DataItem, Frame
from decoders.framing import FrameSpec
from decoders.protocol import CommandFrame, CommandOutcome, Protocol
from decoders.template.loader import format_path, line_of, load_document

__all__ = ["MAP_DIR", "JsonMap", "JsonMeter", "load_json_map", "load_json_maps"]

MAP_DIR = Path(__file__).parent / "protocols" / "json-maps"
PROTOCOL = "nbiot-json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Model):
    """One data item: where it is and what it holds."""

    path: str
    type: Literal["decimal", "int", "bool", "str", "enum", "time"] = "decimal"
    unit: str = ""
    scale: str | None = None                 # decimal multiplier of the raw number
    values: dict[str, Any] = Field(default_factory=dict)  # enum: raw (as text) -> value
    time_format: Literal["epoch_s", "epoch_ms", "iso", "compact"] = "iso"


class ClockSpec(_Model):
    path: str
    format: Literal["epoch_s", "epoch_ms", "iso", "compact"] = "iso"


class SeriesSpec(_Model):
    """Interval values of one field carried by one message (see the module docstring)."""

    path: str                                # JSON path of the array, oldest value first
    field: str                               # the ``fields`` entry the values are
    start: ClockSpec                         # time of the first value
    interval_min: int = Field(gt=0, le=44640)  # minutes between values (at most a month)


#: More values than this in one series is not a meter's upload: the message is rejected.
MAX_SERIES_POINTS = 10_000


class CommandSpec(_Model):
    document: dict[str, Any]
    reply: Literal["expected", "none"] = "expected"


class JsonMapModel(_Model):
    format: Literal["unimeter-json-map/1"]
    map: str = Field(pattern=r"^[a-z][a-z0-9_\-]*$")
    title: str
    description: str = ""
    address: str                             # JSON path of the device address (IMEI …)
    message_type: str | None = None          # JSON path of the message type
    reply_types: list[str] = Field(default_factory=list)  # message types that answer commands
    message_id: str | None = None            # JSON path of the id a reply echoes
    result: str | None = None                # JSON path of a reply's result code
    result_ok: list[Any] = Field(default_factory=lambda: [0, "0", "ok", "OK", "success"])
    clock: ClockSpec | None = None
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    series: list[SeriesSpec] = Field(default_factory=list)
    commands: dict[str, CommandSpec] = Field(default_factory=dict)


class JsonMap:
    """A validated JSON map (see the module docstring)."""

    def __init__(self, model: JsonMapModel) -> None:
        self.model = model
        self.name = model.map
        self.commands = model.commands


def load_json_map(path: Path | str, *, text: str | None = None) -> JsonMap:
    """Load and validate a JSON map; raises TemplateError with file, path and line."""
    file = str(path)
    data, node = load_document(path, text)
    try:
        model = JsonMapModel.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        reason = f"unknown key {loc[-1]!r}" if first["type"] == "extra_forbidden" \
            else first["msg"]
        raise TemplateError(reason, file=file, path=format_path(loc),
                            line=line_of(node, loc)) from None
    for name, spec in model.fields.items():
        if spec.scale is not None:
            try:
                Decimal(spec.scale)
            except InvalidOperation:
                raise TemplateError(f"scale {spec.scale!r} is not a decimal", file=file,
                                    path=format_path(("fields", name, "scale")),
                                    line=line_of(node, ("fields", name, "scale"))) from None
    for index, series in enumerate(model.series):
        where = ("series", index, "field")
        values_spec = model.fields.get(series.field)
        problem = (f"no field {series.field!r} in fields (known: {sorted(model.fields)})"
                   if values_spec is None else
                   f"field {series.field!r} is {values_spec.type}: a series holds decimal or "
                   "int values" if values_spec.type not in ("decimal", "int") else None)
        if problem is not None:
            raise TemplateError(problem, file=file, path=format_path(where),
                                line=line_of(node, where))
    return JsonMap(model)


_MAPS: dict[str, JsonMap] | None = None


def load_json_maps() -> dict[str, JsonMap]:
    """The built-in JSON maps, loaded once."""
    global _MAPS
    if _MAPS is None:
        _MAPS = {m.name: m for m in (load_json_map(p) for p in sorted(MAP_DIR.glob("*.yaml")))}
    return _MAPS


_MISSING = object()


def _get(doc: Any, path: str) -> Any:
    node = doc
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _time(raw: Any, fmt: str) -> datetime:
    if fmt == "epoch_s":
        return datetime.fromtimestamp(float(raw), UTC)
    if fmt == "epoch_ms":
        return datetime.fromtimestamp(float(raw) / 1000, UTC)
    if fmt == "compact":  # YYYYMMDDhhmmss, the meter's local time
        return datetime.strptime(str(raw), "%Y%m%d%H%M%S")  # noqa: DTZ007 - meter local time
    return datetime.fromisoformat(str(raw))


class JsonMeter(Protocol):
    """JSON documents of NB-IoT / LoRa meters, bound to a JSON map as variant."""

    name = PROTOCOL
    title = "JSON meter messages (NB-IoT / LoRa platforms), field mapping per device type"

    def __init__(self, json_map: JsonMap | None = None,
                 maps: Mapping[str, JsonMap] | None = None) -> None:
        self._maps = dict(maps) if maps is not None else load_json_maps()
        self.map = json_map
        self.variants = ("default", *sorted(self._maps))
        self.variant = json_map.name if json_map else "default"
        self._siblings: dict[str, JsonMeter] = {}

    def with_variant(self, variant: str) -> Protocol:
        if variant in ("", "default"):
            return self
        if variant not in self._maps:
            raise CommandNotSupportedError(
                f"no JSON map {variant!r}; known: {sorted(self._maps)}", protocol=self.name,
                hint="add a map to decoders/protocols/json-maps/")
        if variant not in self._siblings:
            self._siblings[variant] = JsonMeter(self._maps[variant], self._maps)
        return self._siblings[variant]

    def frame_specs(self) -> Sequence[FrameSpec]:
        return ()  # whole documents (MQTT payloads, file lines): nothing to delimit

    def _need_map(self) -> JsonMap:
        if self.map is None:
            raise CommandNotSupportedError(
                "a JSON meter needs its JSON map: use nbiot-json:<map>", protocol=self.name,
                hint=f"known maps: {', '.join(sorted(self._maps)) or 'none'}")
        return self.map

    # --------------------------------------------------------------- decode
    def decode(self, data: bytes) -> Frame:
        json_map = self._need_map().model
        try:
            doc = json.loads(bytes(data))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FramingError(f"not a JSON document: {exc}", protocol=self.name,
                               data=bytes(data), field="json",
                               offset=getattr(exc, "pos", 0) or 0) from None
        if not isinstance(doc, dict):
            raise FramingError("a JSON meter message is an object", protocol=self.name,
                               data=bytes(data), field="json", offset=0)
        address = _get(doc, json_map.address)
        if address is _MISSING or address in (None, ""):
            raise FieldValueError(f"no device address at '{json_map.address}'",
                                  protocol=self.name, data=bytes(data),
                                  field=json_map.address, offset=0)
        kind = _get(doc, json_map.message_type) if json_map.message_type else _MISSING
        kind_text = "report" if kind is _MISSING or kind is None else str(kind)
        reply = kind_text in json_map.reply_types
        message_id = _get(doc, json_map.message_id) if json_map.message_id else _MISSING
        sequence = None
        if message_id is not _MISSING and message_id is not None:
            try:
                sequence = int(str(message_id))
            except (TypeError, ValueError):
                sequence = None
        items: list[DataItem] = []
        header: dict[str, Any] = {"map": json_map.map, "message_type": kind_text}
        if message_id is not _MISSING and message_id is not None:
            header["message_id"] = message_id
        abnormal = False
        if reply and json_map.result:
            result = _get(doc, json_map.result)
            if result is not _MISSING:
                header["result"] = result
                abnormal = result not in json_map.result_ok
                if abnormal:
                    items.append(DataItem(name="error", value=(f"result_{result}",)))
        if json_map.clock is not None:
            raw = _get(doc, json_map.clock.path)
            if raw is not _MISSING and raw is not None:
                items.append(DataItem(name="meter_time", value=self._value(
                    "meter_time", raw, "time", data, time_format=json_map.clock.format)))
        for name, spec in json_map.fields.items():
            raw = _get(doc, spec.path)
            if raw is _MISSING or raw is None:
                continue  # a field the message does not carry: no item, never a zero
            value = self._value(name, raw, spec.type, data, spec=spec)
            items.append(DataItem(name=name, value=value, unit=spec.unit, id=spec.path))
        for series in json_map.series:
            items.extend(self._series(doc, series, json_map.fields[series.field], data))
        return Frame(protocol=self.name, direction="reply" if reply else "report",
                     function=kind_text, address=str(address), abnormal=abnormal,
                     identifier=kind_text, sequence=sequence, header=header,
                     items=tuple(items))

    def _series(self, doc: Any, series: SeriesSpec, spec: FieldSpec,
                data: bytes) -> list[DataItem]:
        """One item per recorded value of a series, each with its own time."""
        values = _get(doc, series.path)
        if values is _MISSING or values is None:
            return []  # this message carries no interval data
        if not isinstance(values, list):
            raise FieldValueError(f"{series.path} is {type(values).__name__}: a series is a "
                                  "JSON array", protocol=self.name, data=bytes(data),
                                  field=series.path, offset=0)
        if len(values) > MAX_SERIES_POINTS:
            raise FieldValueError(f"{series.path} holds {len(values)} values (at most "
                                  f"{MAX_SERIES_POINTS})", protocol=self.name,
                                  data=bytes(data), field=series.path, offset=0)
        raw_start = _get(doc, series.start.path)
        if raw_start is _MISSING or raw_start is None:
            raise FieldValueError(f"{series.path} has values but no start time at "
                                  f"'{series.start.path}'", protocol=self.name,
                                  data=bytes(data), field=series.start.path, offset=0)
        start = self._value(series.start.path, raw_start, "time", data,
                            time_format=series.start.format)
        step = timedelta(minutes=series.interval_min)
        items = []
        for index, raw in enumerate(values):
            if raw is None:
                continue  # an interval the meter did not record: no value, never a zero
            path = f"{series.path}.{index}"
            value = self._value(path, raw, spec.type, data, spec=spec, path=path)
            items.append(DataItem(name=series.field, value=value, unit=spec.unit, id=path,
                                  attrs={"time": start + index * step}))
        return items

    def _value(self, name: str, raw: Any, kind: str, data: bytes, *,
               spec: FieldSpec | None = None, time_format: str = "iso",
               path: str | None = None) -> Any:
        try:
            if kind == "decimal":
                if isinstance(raw, bool):
                    raise ValueError("a boolean is not a number")
                # floats arrive as JSON numbers: their shortest decimal text is the value
                value = Decimal(str(raw))
                if not value.is_finite():
                    raise ValueError("not a finite number")
                if spec is not None and spec.scale is not None:
                    value = value * Decimal(spec.scale)
                return value
            if kind == "int":
                if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                    raise ValueError("not an integer")
                return int(raw)
            if kind == "bool":
                if isinstance(raw, str):
                    if raw.lower() not in ("true", "false", "1", "0"):
                        raise ValueError("not a boolean")
                    return raw.lower() in ("true", "1")
                return bool(raw)
            if kind == "enum":
                assert spec is not None
                key = str(raw).lower() if isinstance(raw, bool) else str(raw)
                if key not in spec.values:
                    raise ValueError(f"not one of {sorted(spec.values)}")
                return spec.values[key]
            if kind == "time":
                return _time(raw, spec.time_format if spec is not None else time_format)
            return str(raw)
        except (ValueError, TypeError, InvalidOperation, OverflowError) as exc:
            path = path or (spec.path if spec is not None else name)
            raise FieldValueError(f"{path} = {raw!r} is not a valid {kind}: {exc}",
                                  protocol=self.name, data=bytes(data), field=path,
                                  offset=0) from None

    def encode(self, frame: Frame) -> bytes:
        """A downlink document is produced by :meth:`encode_command`; a decoded frame
        re-encodes as the document of its items (not byte-identical to the original)."""
        return json.dumps({"address": frame.address, "type": frame.function,
                           **{i.name: _jsonable(i.value) for i in frame.items}},
                          separators=(",", ":")).encode()

    # --------------------------------------------------------------- commands
    def commands(self) -> Sequence[str]:
        return tuple(self.map.commands) if self.map is not None else ()

    def encode_command(self, command: str, address: str,
                       params: Mapping[str, Any] | None = None, *, sequence: int = 0,
                       timezone: str = "Asia/Shanghai") -> CommandFrame:
        json_map = self._need_map()
        spec = json_map.commands.get(command)
        if spec is None:
            raise CommandNotSupportedError(
                f"JSON map {json_map.name} has no document for {command!r}",
                protocol=self.name, field="command", hint=f"supported: {sorted(json_map.commands)}")
        values: dict[str, Any] = {**dict(params or {}), "sequence": sequence,
                                  "address": address}
        if "time" in values:
            values["time"] = _local_time(values["time"], timezone)
        document = _fill(spec.document, values, command)
        data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        request = Frame(protocol=self.name, direction="request", function=command,
                        address=address, identifier=command, sequence=sequence,
                        header={"map": json_map.name},
                        items=tuple(DataItem(name=k, value=v) for k, v in document.items()
                                    if not isinstance(v, dict | list)))
        return CommandFrame(protocol=self.name, command=command, address=address, data=data,
                            request=request, expects_reply=spec.reply == "expected",
                            match_on=("address", "sequence"))

    def matches(self, request: CommandFrame, reply: Frame) -> bool:
        if reply.direction != "reply" or reply.protocol != self.name:
            return False
        if reply.address != request.address:
            return False
        return reply.sequence is None or reply.sequence == request.request.sequence

    def interpret(self, request: CommandFrame, reply: Frame) -> CommandOutcome:
        outcome = super().interpret(request, reply)
        if outcome.status == "ok":
            data = {k: v for k, v in outcome.data.items() if k != "error"}
            return CommandOutcome(status="ok", command=request.command, data=data)
        return outcome


def _jsonable(value: Any) -> Any:
    from decoders.frame import to_jsonable

    return to_jsonable(value)


def _local_time(value: Any, timezone: str) -> str:
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if at.tzinfo is None:
        raise EncodeError("time needs a time zone", protocol=PROTOCOL, field="time")
    return at.astimezone(ZoneInfo(timezone)).strftime("%Y%m%d%H%M%S")


def _fill(template: Any, values: Mapping[str, Any], command: str) -> Any:
    """The template with every ``"{name}"`` string replaced by the typed value."""
    if isinstance(template, dict):
        return {k: _fill(v, values, command) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values, command) for v in template]
    if isinstance(template, str) and template.startswith("{") and template.endswith("}"):
        name = template[1:-1]
        if name not in values or values[name] is None:
            raise EncodeError(f"{command} needs parameter {name!r}", protocol=PROTOCOL,
                              field=name)
        value = values[name]
        if isinstance(value, Decimal):
            return str(value)
        return value
    return template
