"""Helpers of the VEE tests: feed readings through the engine, keep the latest versions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from schemas.messages import Alert, CommandRequest, Reading, ValidatedReading
from vee.engine import VeeEngine
from vee.groups import RuleSet, parse_rule_set
from vee.model import MeterInfo, MeterState

T0 = datetime(2026, 7, 6, tzinfo=UTC)  # a Monday, 08:00 in Shanghai


def reading(hours: float, value: str | None, *, meter: str = "GM-1", register: str = "volume",
            kind: str = "cumulative", interval_s: int | None = None, status: tuple[str, ...] = (),
            received_after_s: float = 30, unit: str = "m3", source: str = "tcp",
            meter_clock_offset_s: float | None = None, t0: datetime = T0) -> Reading:
    ts = t0 + timedelta(hours=hours)
    return Reading(meter_id=meter, register=register, ts=ts, value=Decimal(value or "0"),
                   unit=unit, received_at=ts + timedelta(seconds=received_after_s), kind=kind,
                   interval_s=interval_s, status=status, source=source,
                   meter_clock=None if meter_clock_offset_s is None
                   else ts + timedelta(seconds=received_after_s + meter_clock_offset_s))


def rule_set(validation: str, estimation: str = "[]", extra: str = "") -> RuleSet:
    """A rule set with one validation group (YAML list) and one estimation group."""
    return parse_rule_set(f"""
groups:
  v: {{purpose: validation, rules: {validation}}}
  e: {{purpose: estimation, methods: {estimation}}}
{extra}
""", source="<test>")


@dataclass
class Run:
    """Everything an engine produced over a sequence of inputs."""

    engine: VeeEngine
    meter: MeterInfo
    state: MeterState = field(default_factory=MeterState)
    outputs: list[ValidatedReading] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    commands: list[CommandRequest] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def feed(self, readings: Iterable[Reading], **kwargs: Any) -> Run:
        for r in readings:
            self._keep(self.engine.process(r, self.meter, self.state, **kwargs))
        return self

    def close(self) -> Run:
        """The end of the input: judge the days still open, as a batch run does."""
        return self._keep(self.engine.close(self.meter, self.state))

    def _keep(self, result: Any) -> Run:
        self.state = result.state
        self.outputs.extend(result.outputs)
        self.alerts.extend(result.alerts)
        self.commands.extend(result.commands)
        if result.dropped:
            self.dropped.append(result.dropped)
        return self

    def latest(self, register: str | None = None) -> dict[datetime, ValidatedReading]:
        """(ts -> the highest version) of one register (default: all of the first)."""
        out: dict[datetime, ValidatedReading] = {}
        register = register or (self.outputs[0].register if self.outputs else "volume")
        for o in self.outputs:
            if o.register == register and (o.ts not in out or o.version > out[o.ts].version):
                out[o.ts] = o
        return dict(sorted(out.items()))

    def at(self, hours: float, register: str | None = None) -> ValidatedReading:
        return self.latest(register)[T0 + timedelta(hours=hours)]


def run(validation: str, readings: Iterable[Reading], *, estimation: str = "[]",
        extra: str = "", meter: MeterInfo | None = None, **engine_kw: Any) -> Run:
    engine = VeeEngine(rule_set(validation, estimation, extra), **engine_kw)
    return Run(engine, meter or gas_meter()).feed(readings)


def gas_meter(**kw: Any) -> MeterInfo:
    base: dict[str, Any] = {"meter_id": "GM-1", "qmax": Decimal("4"), "register_digits": 5,
                            "register_decimals": 3, "customer_type": "residential",
                            "account_id": "A-1", "has_valve": True}
    base.update(kw)
    return MeterInfo(**base)


@pytest.fixture
def t0() -> datetime:
    return T0
