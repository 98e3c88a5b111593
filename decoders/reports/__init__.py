"""Report templates: decoded data items → canonical reading drafts and device events.

Parsing says what a frame contains; a report template says what it means for the meter
data platform, per device type, without Python: which item is which canonical register
(``schemas.registers``), in which unit, which item is the meter's clock, which items are
status tags on the readings, and which values raise device events. A FEP applies the
report to every decoded frame and publishes the drafts as ``schemas.messages.Reading`` /
``DeviceEvent`` (``ReadingDraft.to_reading`` fills in the identity fields it knows).

Strategy: report templates live in ``decoders/reports/*.yaml`` (format
``unimeter-report-template/1``), are validated and compiled once, and are chosen per frame
by protocol and ``when`` (header fields such as the CJ/T 188 meter type). Units are
converted exactly with :func:`schemas.registers.convert`; a value the meter marks as not
available is skipped, never turned into zero. An item that carries its own time
(``attrs["time"]``: one interval value of a load profile or of an NB-IoT pack) gives its
reading that time as ``ts``; the frame's clock stays the ``meter_clock``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from decoders.errors import TemplateError
from decoders.frame import DataItem, Frame
from decoders.template.loader import format_path, line_of, load_document
from schemas.messages import DeviceEvent, Reading
from schemas.registers import REGISTERS, UNITS, UnitConversionError, convert

__all__ = [
    "REPORT_DIR",
    "EventDraft",
    "ReadingDraft",
    "ReportResult",
    "ReportTemplate",
    "apply_report",
    "load_report",
    "reports",
]

REPORT_DIR = Path(__file__).parent


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReadingRule(_Model):
    item: str
    register_name: str = Field(alias="register")
    identifier: str | None = None     # only items from this identifier (exact or LOW..HIGH)
    index: int | None = None          # an entry of a list item (0 = total of a block)
    unit: str | None = None           # the item's unit when the protocol does not state it
    attrs: dict[str, Any] = Field(default_factory=dict)  # item attrs that must match
    kind: Literal["cumulative", "instantaneous", "state"] | None = None


class EventRule(_Model):
    item: str
    kind: str
    equals: Any = None                # fire when the value equals this (default: truthy)
    severity: Literal["info", "warning", "major", "critical"] = "info"
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)


class ReportModel(_Model):
    format: Literal["unimeter-report-template/1"]
    report: str = Field(pattern=r"^[a-z][a-z0-9_.\-]*$")
    protocol: str
    title: str
    when: dict[str, list[Any]] = Field(default_factory=dict)
    clock: str | None = None
    readings: list[ReadingRule] = Field(default_factory=list)
    status: list[str] = Field(default_factory=list)
    events: list[EventRule] = Field(default_factory=list)
    description: str = ""


class ReadingDraft(msgspec.Struct, frozen=True, kw_only=True):
    """A canonical reading before it has a meter id and a timestamp policy applied."""

    register: str
    value: Decimal
    unit: str
    kind: Literal["cumulative", "instantaneous", "state"]
    meter_clock: datetime | None = None
    #: the value's own time (an interval value of a series), else None: the frame's clock
    #: (or the reception time) stamps it
    ts: datetime | None = None
    status: tuple[str, ...] = ()
    identifier: str = ""
    source_item: str = ""
    source_unit: str = ""

    def to_reading(self, *, meter_id: str, received_at: datetime, device_id: str = "",
                   fep: str = "", protocol: str = "", source: str = "tcp",
                   frame_id: str | None = None, use_meter_clock: bool = False) -> Reading:
        """The ``readings.raw`` message; ``ts`` is the reception time unless
        ``use_meter_clock`` (for meters whose clocks are kept in sync)."""
        ts = self.ts or (self.meter_clock if use_meter_clock and self.meter_clock
                         else received_at)
        return Reading(meter_id=meter_id, register=self.register, ts=ts, value=self.value,
                       unit=self.unit, received_at=received_at, kind=self.kind,
                       meter_clock=self.meter_clock, source=source, device_id=device_id,
                       fep=fep, protocol=protocol, status=self.status, frame_id=frame_id)


class EventDraft(msgspec.Struct, frozen=True, kw_only=True):
    """A device event a frame implies (status, alarm…)."""

    kind: str
    severity: Literal["info", "warning", "major", "critical"] = "info"
    attributes: dict[str, str | int | float | bool | None] = msgspec.field(
        default_factory=dict)

    def to_event(self, *, event_id: str, device_id: str, ts: datetime,
                 meter_id: str | None = None, fep: str = "") -> DeviceEvent:
        return DeviceEvent(event_id=event_id, device_id=device_id, kind=self.kind, ts=ts,
                           meter_id=meter_id, fep=fep, severity=self.severity,
                           attributes=dict(self.attributes))


class ReportResult(msgspec.Struct, frozen=True, kw_only=True):
    report: str
    readings: tuple[ReadingDraft, ...] = ()
    events: tuple[EventDraft, ...] = ()
    meter_clock: datetime | None = None


class ReportTemplate:
    """A compiled report template."""

    def __init__(self, model: ReportModel, file: str, node: Any) -> None:
        self.model = model
        self.name = model.report
        self.protocol = model.protocol
        for index, rule in enumerate(model.readings):
            path = ("readings", index)
            if rule.register_name not in REGISTERS:
                raise TemplateError(f"unknown register {rule.register_name!r}; the canonical "
                                    f"registers are {sorted(REGISTERS)} (schemas/registers.py)",
                                    file=file, path=format_path((*path, "register")),
                                    line=line_of(node, (*path, "register")))
            if rule.unit is not None and rule.unit not in UNITS:
                raise TemplateError(f"unknown unit {rule.unit!r}; known: {sorted(UNITS)}",
                                    file=file, path=format_path((*path, "unit")),
                                    line=line_of(node, (*path, "unit")))
        self._rules = model.readings

    def applies_to(self, frame: Frame) -> bool:
        if frame.protocol != self.protocol:
            return False
        header = frame.header  # a plain loop: this runs for every frame an FEP receives
        for key, allowed in self.model.when.items():  # noqa: SIM110 (no generator per frame)
            if header.get(key) not in allowed:
                return False
        return True

    def apply(self, frame: Frame, timezone: str = "Asia/Shanghai") -> ReportResult:
        zone = ZoneInfo(timezone)
        clock = None
        if self.model.clock:
            item = frame.item(self.model.clock)
            if item is not None and isinstance(item.value, datetime):
                clock = item.value.replace(tzinfo=zone) if item.value.tzinfo is None \
                    else item.value
        status = tuple(_status_tag(item) for name in self.model.status
                       if (item := frame.item(name)) is not None)
        readings = []
        for rule in self._rules:
            for item in frame.items:
                if item.name != rule.item or not _identifier_matches(rule.identifier, item.id):
                    continue
                if rule.attrs and any((item.attrs or {}).get(k) != v
                                      for k, v in rule.attrs.items()):
                    continue
                draft = self._reading(rule, item, clock, status, zone)
                if draft is not None:
                    readings.append(draft)
        events = []
        for event in self.model.events:
            item = frame.item(event.item)
            if item is None:
                continue
            fired = bool(item.value) if event.equals is None else item.value == event.equals
            if fired:
                attributes: dict[str, Any] = {"item": event.item,
                                              "value": _scalar(item.value)}
                attributes.update(event.attributes)
                events.append(EventDraft(kind=event.kind, severity=event.severity,
                                         attributes=attributes))
        return ReportResult(report=self.name, readings=tuple(readings), events=tuple(events),
                            meter_clock=clock)

    def _reading(self, rule: ReadingRule, item: DataItem, clock: datetime | None,
                 status: tuple[str, ...], zone: ZoneInfo) -> ReadingDraft | None:
        value = item.value
        if rule.index is not None:
            if not isinstance(value, list) or rule.index >= len(value):
                return None
            value = value[rule.index]
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, int):
            value = Decimal(value)
        if not isinstance(value, Decimal):
            return None
        register = REGISTERS[rule.register_name]
        source_unit = item.unit or rule.unit or register.unit
        try:
            converted = convert(value, source_unit, register.unit)
        except UnitConversionError:
            return None  # a unit code the register cannot take: not this register
        at = (item.attrs or {}).get("time")
        ts = (at.replace(tzinfo=zone) if at.tzinfo is None else at) \
            if isinstance(at, datetime) else None
        return ReadingDraft(register=register.name, value=converted, unit=register.unit,
                            kind=rule.kind or register.kind, meter_clock=clock, ts=ts,
                            status=status,
                            identifier=item.id, source_item=item.name, source_unit=source_unit)


def _identifier_matches(rule: str | None, identifier: str) -> bool:
    if rule is None:
        return True
    if ".." in rule:
        low, _, high = rule.partition("..")
        try:
            return len(identifier) == len(low) and \
                int(low, 16) <= int(identifier, 16) <= int(high, 16)
        except ValueError:
            return False
    return rule.upper() == identifier.upper()


def _status_tag(item: DataItem) -> str:
    if isinstance(item.value, bool):
        return item.name if item.value else f"{item.name}:no"
    return f"{item.name}:{item.value}"


def _scalar(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def load_report(path: Path | str, *, text: str | None = None) -> ReportTemplate:
    """Load and validate a report template; raises TemplateError."""
    file = str(path)
    data, node = load_document(path, text)
    try:
        model = ReportModel.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        reason = f"unknown key {loc[-1]!r}" if first["type"] == "extra_forbidden" \
            else first["msg"]
        raise TemplateError(reason, file=file, path=format_path(loc),
                            line=line_of(node, loc)) from None
    return ReportTemplate(model, file, node)


_REPORTS: list[ReportTemplate] | None = None
_BY_PROTOCOL: dict[str, tuple[ReportTemplate, ...]] = {}


def reports() -> list[ReportTemplate]:
    """The built-in report templates (``decoders/reports/*.yaml``), loaded once."""
    global _REPORTS
    if _REPORTS is None:
        _REPORTS = [load_report(p) for p in sorted(REPORT_DIR.glob("*.yaml"))]
    return _REPORTS


def _built_in_for(protocol: str) -> tuple[ReportTemplate, ...]:
    """The built-in templates of ``protocol``, in :func:`reports` order (kept per protocol:
    the FEP looks them up for every frame)."""
    found = _BY_PROTOCOL.get(protocol)
    if found is None:
        found = _BY_PROTOCOL[protocol] = tuple(t for t in reports() if t.protocol == protocol)
    return found


def apply_report(frame: Frame, *, timezone: str = "Asia/Shanghai",
                 templates: Sequence[ReportTemplate] | None = None) -> ReportResult | None:
    """Apply the first report template that fits the frame (``None`` if none does)."""
    for template in templates if templates is not None else _built_in_for(frame.protocol):
        if template.applies_to(frame):
            return template.apply(frame, timezone)
    return None
