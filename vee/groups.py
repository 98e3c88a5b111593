"""Rule sets and rule groups: YAML documents, checked at load, resolved per meter.

A rule set (one YAML file) holds the calendar, reference consumption, state limits, the
*rule groups* and per-meter overrides::

    version: 1
    calendar: {timezone: Asia/Shanghai, holidays: [2026-10-01/2026-10-07], workdays: [2026-09-28]}
    history:
      average_daily_use: {residential: 0.9, commercial: 14}    # units per day, by customer type
      classes: {low: 0.3, medium: 2.0, high: null}              # history class by own ADU
      # ... or per medium (a meter's unit differs by medium: m3 of gas, kWh of electricity);
      # plain numbers beside the media are the fallback of any other medium
      # average_daily_use: {gas: {residential: 0.9}, electricity: {residential: 8}}
      # and month factors of the average per medium (January first): a winter day of gas
      # heating is not a high reading
      # seasonal: {gas: [1.9, 1.8, 1.4, 1.0, 0.75, 0.6, 0.55, 0.55, 0.65, 0.9, 1.3, 1.7]}
    state: {window_points: 16, history_days: 21}
    groups:
      gas-residential:
        purpose: validation          # validation | estimation | initial_load | manual_override
        applies_to: {medium: gas, customer_type: [residential]}
        rules:
          - future_timestamp
          - {rule: spike, tolerance_pct: 200, action: estimate}
      gas-estimation:
        purpose: estimation
        applies_to: {medium: gas}
        methods: [{method: linear, max_gap: 2h}, like_day, average_daily, scaled_to_register]
    meters:
      GM-0001:
        groups: {validation: gas-commercial}
        params: {spike: {tolerance_pct: 300}}
        attributes: {qmax: 4, register_digits: 5}     # used where no ledger is at hand

A group is an *ordered* list of rules (validation purposes) or methods (estimation). For
each meter and purpose the group is chosen in this order: the meter's entry in ``meters``;
the group the ledger names for the meter (``vee_group`` — per meter or its device type's
default); the group whose ``applies_to`` matches most specifically (device type, then
customer type / history class, then medium; an empty ``applies_to`` is the default).
Groups published on ``ledger.vee_groups`` (a group document as ``spec``) replace file groups
of the same id. Every mistake is a :class:`~vee.errors.RuleConfigError` naming the file, the
path inside it (``groups.gas-residential.rules[1].tolerance_pct``) and the reason.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from vee.calendar import DayCalendar, day_of
from vee.errors import RuleConfigError
from vee.model import MeterInfo
from vee.registry import (
    ESTIMATION_METHODS,
    VALIDATION_RULES,
    EstimationMethod,
    ValidationRule,
    _load_builtins,
)

__all__ = [
    "PURPOSES",
    "CompiledGroup",
    "GroupSet",
    "RuleSet",
    "load_rule_set",
    "parse_group",
    "parse_rule_set",
]

Purpose = Literal["validation", "estimation", "initial_load", "manual_override"]
PURPOSES: tuple[Purpose, ...] = ("validation", "estimation", "initial_load", "manual_override")
_SELECTORS = ("device_type", "customer_type", "history_class", "medium")
_SPECIFICITY = {"device_type": 8, "customer_type": 4, "history_class": 2, "medium": 1}
_MICRO = 1_000_000


def default_rules_path() -> Path:
    """The rule set shipped with unimeter (``vee/rulesets/default.yaml``)."""
    return Path(__file__).with_name("rulesets") / "default.yaml"


@dataclass(frozen=True)
class CompiledGroup:
    """A group with its rules instantiated, split by how the engine runs them."""

    id: str
    purpose: Purpose
    description: str = ""
    applies_to: dict[str, frozenset[str]] = field(default_factory=dict)
    rules: tuple[ValidationRule, ...] = ()
    methods: tuple[EstimationMethod, ...] = ()
    source: str = ""
    version: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_rules", tuple(r for r in self.rules if r.input_only))
        object.__setattr__(self, "point_rules", tuple(
            r for r in self.rules if not r.input_only and r.scope == "point"))
        object.__setattr__(self, "day_rules", tuple(r for r in self.rules if r.scope == "day"))
        object.__setattr__(self, "day_ids", frozenset(r.id for r in self.day_rules))
        object.__setattr__(self, "day_scopes", frozenset(
            getattr(r.params, "scope", "day") for r in self.day_rules))
        point = self.point_rules
        # the subsets the engine's hot path iterates (value kind x has events x consumption)
        subsets = {}
        for marker in (False, True):
            for events in (False, True):
                for consumption in (False, True):
                    subsets[marker, events, consumption] = tuple(
                        r for r in point
                        if (not marker or r.on_markers)
                        and (events or not r.needs_events)
                        and (consumption or not r.needs_consumption))
        object.__setattr__(self, "point_subsets", subsets)
        # what the fast path runs on an in-order value, per (has events, channel kind)
        object.__setattr__(self, "append_rules", {
            (events, kind): tuple(r for r in subsets[False, events, True]
                                  if kind in r.kinds and kind not in r.quiet_in_order)
            for events in (False, True) for kind in ("cumulative", "interval")})
        missing = next((r for r in self.rules if r.id == "missing"), None)
        object.__setattr__(self, "gap_tolerance_pct", None if missing is None
                           else getattr(missing.params, "tolerance_pct", 0))
        object.__setattr__(self, "input_plain", tuple(
            r for r in self.input_rules if not r.needs_events))
        object.__setattr__(self, "input_events", self.input_rules)
        object.__setattr__(self, "uses_history_class", "history_class" in self.applies_to)
        ranks: dict[str, int] = {}
        for r in self.rules:
            for flag in (r.id, *r.emits):
                ranks[flag] = max(ranks.get(flag, 0), r.rank)
        object.__setattr__(self, "flag_ranks", ranks)
        object.__setattr__(self, "by_id", {r.id: r for r in self.rules})

    # set in __post_init__ (frozen dataclass)
    input_rules: tuple[ValidationRule, ...] = field(init=False, default=())
    point_rules: tuple[ValidationRule, ...] = field(init=False, default=())
    day_rules: tuple[ValidationRule, ...] = field(init=False, default=())
    day_ids: frozenset[str] = field(init=False, default=frozenset())
    #: The scopes the day rules were given (``day``, ``window``, ``auto``).
    day_scopes: frozenset[str] = field(init=False, default=frozenset())
    flag_ranks: dict[str, int] = field(init=False, default_factory=dict)
    by_id: dict[str, ValidationRule] = field(init=False, default_factory=dict)
    point_subsets: dict[tuple[bool, bool, bool], tuple[ValidationRule, ...]] = field(
        init=False, default_factory=dict)
    append_rules: dict[tuple[bool, str], tuple[ValidationRule, ...]] = field(
        init=False, default_factory=dict)
    #: The missing rule's tolerance on the interval (None: no missing rule, no markers).
    gap_tolerance_pct: float | None = field(init=False, default=None)
    input_plain: tuple[ValidationRule, ...] = field(init=False, default=())
    input_events: tuple[ValidationRule, ...] = field(init=False, default=())
    uses_history_class: bool = field(init=False, default=False)

    def rule(self, rule_id: str) -> ValidationRule | None:
        return self.by_id.get(rule_id)

    def specificity(self) -> int:
        return sum(_SPECIFICITY[k] for k in self.applies_to)

    def matches(self, attrs: dict[str, str | None]) -> bool:
        for key, allowed in self.applies_to.items():
            value = attrs.get(key)
            if value is None or value not in allowed:
                return False
        return True


EMPTY = {p: CompiledGroup(id=f"(none:{p})", purpose=p) for p in PURPOSES}


@dataclass(frozen=True)
class GroupSet:
    """The groups that apply to one meter, one per purpose."""

    validation: CompiledGroup
    estimation: CompiledGroup
    initial_load: CompiledGroup
    manual_override: CompiledGroup


@dataclass
class MeterOverride:
    groups: dict[str, str] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class RuleSet:
    """A loaded rule set: calendar, reference consumption, groups, per-meter overrides."""

    groups: dict[str, CompiledGroup]
    calendar: DayCalendar
    #: customer type → average daily use (micro-units), for any medium without its own table
    average_daily_use_by_type: dict[str, float] = field(default_factory=dict)
    history_classes: list[tuple[str, float | None]] = field(default_factory=list)
    #: the same two, per medium (they win over the tables above for that medium)
    average_daily_use_by_medium: dict[str, dict[str, float]] = field(default_factory=dict)
    history_classes_by_medium: dict[str, list[tuple[str, float | None]]] = field(
        default_factory=dict)
    #: medium → twelve month factors (January first) of its group average daily use
    seasonal_by_medium: dict[str, tuple[float, ...]] = field(default_factory=dict)
    window_points: int = 16
    history_days: int = 21
    meters: dict[str, MeterOverride] = field(default_factory=dict)
    source: str = ""
    _resolved: dict[tuple[Any, ...], GroupSet] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ reference data

    def average_daily_use(self, customer_type: str | None, medium: str | None = None,
                          month: int | None = None) -> float | None:
        """Average daily use of a customer group in micro-units of the meter's unit (None
        if not configured): the medium's table (the type, else ``*``), else the table of
        any medium (the type, else ``*``); times the medium's factor for ``month`` (1-12)."""
        for table in (self.average_daily_use_by_medium.get(medium or ""),
                      self.average_daily_use_by_type):
            if table:
                found = table.get(customer_type) if customer_type is not None else None
                if found is None:
                    found = table.get("*")
                if found is not None:
                    factors = self.seasonal_by_medium.get(medium or "")
                    if factors and month is not None:
                        return found * factors[month - 1]
                    return found
        return None

    @property
    def uses_history_classes(self) -> bool:
        return bool(self.history_classes or self.history_classes_by_medium) and any(
            g.uses_history_class for g in self.groups.values())

    def history_class(self, own_adu_micro: float | None, medium: str | None = None
                      ) -> str | None:
        """The consumption history class for an average daily use (micro-units), by the
        medium's classes if it has its own."""
        classes = self.history_classes_by_medium.get(medium or "") or self.history_classes
        if own_adu_micro is None or not classes:
            return None
        for name, upper in classes:
            if upper is None or own_adu_micro <= upper:
                return name
        return None

    # ------------------------------------------------------------------ resolution

    def with_groups(self, extra: dict[str, CompiledGroup]) -> RuleSet:
        """A copy where ``extra`` (e.g. groups from ``ledger.vee_groups``) replace file groups."""
        merged = dict(self.groups)
        merged.update(extra)
        return RuleSet(groups=merged, calendar=self.calendar,
                       average_daily_use_by_type=self.average_daily_use_by_type,
                       history_classes=self.history_classes,
                       average_daily_use_by_medium=self.average_daily_use_by_medium,
                       history_classes_by_medium=self.history_classes_by_medium,
                       seasonal_by_medium=self.seasonal_by_medium,
                       window_points=self.window_points,
                       history_days=self.history_days, meters=self.meters, source=self.source)

    def resolve(self, meter: MeterInfo, history_class: str | None = None) -> GroupSet:
        """The group of each purpose for ``meter`` (cached by the attributes that decide)."""
        key = (meter.meter_id if meter.meter_id in self.meters else None, meter.vee_group,
               meter.device_type, meter.customer_type, meter.medium, history_class)
        found = self._resolved.get(key)
        if found is None:
            found = self._resolve(meter, history_class)
            self._resolved[key] = found
        return found

    def _resolve(self, meter: MeterInfo, history_class: str | None) -> GroupSet:
        override = self.meters.get(meter.meter_id)
        attrs = {"device_type": meter.device_type or None, "customer_type": meter.customer_type,
                 "history_class": history_class, "medium": meter.medium}
        chosen: dict[str, CompiledGroup] = {}
        for purpose in PURPOSES:
            group = None
            if override is not None and purpose in override.groups:
                group = self.groups.get(override.groups[purpose])
            if group is None and meter.vee_group:
                named = self.groups.get(meter.vee_group)
                if named is not None and named.purpose == purpose:
                    group = named
            if group is None:
                best: CompiledGroup | None = None
                for candidate in self.groups.values():
                    if candidate.purpose != purpose or not candidate.matches(attrs):
                        continue
                    if best is None or candidate.specificity() > best.specificity():
                        best = candidate
                group = best
            group = group or EMPTY[purpose]
            if override is not None and override.params:
                group = _with_params(group, override.params,
                                     where=f"{self.source}: meters.{meter.meter_id}.params")
            chosen[purpose] = group
        return GroupSet(**chosen)

    def meter_info(self, meter_id: str, base: MeterInfo | None = None) -> MeterInfo:
        """``base`` (or an unknown meter) with the rule file's ``attributes`` applied."""
        info = base or MeterInfo(meter_id=meter_id, known=False)
        override = self.meters.get(meter_id)
        if override is None or not override.attributes:
            return info
        from dataclasses import replace

        return replace(info, **override.attributes)


# --------------------------------------------------------------------------- parsing


def load_rule_set(path: Path | str, *, timezone: str | None = None) -> RuleSet:
    """Read and check a rule-set file (see the module docstring for its format)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleConfigError(f"cannot read the rule set: {exc.strerror}", where=str(path),
                              hint="give an existing YAML file (see vee/rulesets/default.yaml)"
                              ) from None
    return parse_rule_set(text, source=str(path), timezone=timezone)


class _Loader(yaml.SafeLoader):
    """Safe YAML without implicit timestamps: dates stay text, checked by this module."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise RuleConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", where=where,
                              hint="fix the YAML syntax") from None


def parse_rule_set(text: str, *, source: str = "<rules>", timezone: str | None = None
                   ) -> RuleSet:
    _load_builtins()
    doc = _yaml(text, source)
    if not isinstance(doc, dict):
        raise RuleConfigError("a rule set is a mapping with 'groups'", where=source,
                              hint="see vee/rulesets/default.yaml")
    _only(doc, {"version", "calendar", "history", "state", "groups", "meters", "description"},
          source, "")
    if doc.get("version", 1) != 1:
        raise RuleConfigError(f"rule-set format version {doc.get('version')} is not known",
                              where=f"{source}: version", hint="this unimeter reads version 1")
    calendar = _calendar(doc.get("calendar") or {}, source, timezone)
    history = doc.get("history") or {}
    _only(history, {"average_daily_use", "classes", "seasonal"}, source, "history")
    adu_tables = _by_medium(history.get("average_daily_use"), source,
                            "history.average_daily_use", nullable=False)
    adu = {name: value for name, value in adu_tables.pop("", [])}
    adu_by_medium = {medium: {name: value for name, value in table}
                     for medium, table in adu_tables.items()}
    class_tables = _by_medium(history.get("classes"), source, "history.classes", nullable=True)
    for table in class_tables.values():
        table.sort(key=lambda c: float("inf") if c[1] is None else c[1])
    classes = class_tables.pop("", [])
    seasonal = _seasonal(history.get("seasonal"), source)
    state = doc.get("state") or {}
    _only(state, {"window_points", "history_days"}, source, "state")
    window_points = _int(state.get("window_points", 16), source, "state.window_points", 2, 10000)
    history_days = _int(state.get("history_days", 21), source, "state.history_days", 0, 400)
    groups_doc = doc.get("groups")
    if not isinstance(groups_doc, dict) or not groups_doc:
        raise RuleConfigError("'groups' must be a mapping of group id to group",
                              where=f"{source}: groups", hint="define at least one group")
    groups = {str(gid): parse_group(str(gid), body, source=source, path=f"groups.{gid}")
              for gid, body in groups_doc.items()}
    meters = {}
    for meter_id, body in (doc.get("meters") or {}).items():
        meters[str(meter_id)] = _meter_override(str(meter_id), body, groups, source)
    return RuleSet(groups=groups, calendar=calendar, average_daily_use_by_type=adu,
                   history_classes=classes, average_daily_use_by_medium=adu_by_medium,
                   history_classes_by_medium=class_tables, seasonal_by_medium=seasonal,
                   window_points=window_points,
                   history_days=history_days, meters=meters, source=source)


def parse_group(group_id: str, body: Any, *, source: str, path: str = "",
                version: int = 0) -> CompiledGroup:
    """One group document (also what ``ledger.vee_groups`` carries as ``spec``)."""
    _load_builtins()
    where = path or group_id
    if isinstance(body, str):
        body = _yaml(body, source)
    if isinstance(body, list):
        body = {"rules": body}
    if not isinstance(body, dict):
        raise RuleConfigError("a group is a mapping with 'rules' (or 'methods')",
                              where=f"{source}: {where}", hint="write e.g. rules: [spike]")
    _only(body, {"purpose", "description", "applies_to", "rules", "methods"}, source, where)
    purpose = body.get("purpose", "validation")
    if purpose not in PURPOSES:
        raise RuleConfigError(f"unknown purpose '{purpose}'", where=f"{source}: {where}.purpose",
                              hint=f"allowed: {', '.join(PURPOSES)}")
    applies: dict[str, frozenset[str]] = {}
    raw_applies = body.get("applies_to") or {}
    if not isinstance(raw_applies, dict):
        raise RuleConfigError("'applies_to' must be a mapping", where=f"{source}: {where}",
                              hint=f"keys: {', '.join(_SELECTORS)}")
    _only(raw_applies, set(_SELECTORS), source, f"{where}.applies_to")
    for key, value in raw_applies.items():
        values = value if isinstance(value, list) else [value]
        applies[key] = frozenset(str(v) for v in values)
    entries = body.get("methods") if purpose == "estimation" else body.get("rules")
    if entries is None and purpose == "estimation":
        entries = body.get("rules")
    if entries is None:
        entries = []
    key = "methods" if "methods" in body else "rules"
    if not isinstance(entries, list):
        raise RuleConfigError(f"'{key}' must be a list", where=f"{source}: {where}.{key}",
                              hint="write e.g. [spike, {rule: max_flow, tolerance_pct: 10}]")
    rules: list[ValidationRule] = []
    methods: list[EstimationMethod] = []
    for n, entry in enumerate(entries):
        entry_where = f"{source}: {where}.{key}[{n}]"
        rule_id, params = _entry(entry, entry_where)
        if purpose == "estimation":
            methods.append(_build(ESTIMATION_METHODS, rule_id, params, entry_where, "method"))
        else:
            rules.append(_build(VALIDATION_RULES, rule_id, params, entry_where, "rule"))
    return CompiledGroup(id=group_id, purpose=purpose, description=str(body.get("description",
                         "")), applies_to=applies, rules=tuple(rules), methods=tuple(methods),
                         source=source, version=version)


def _entry(entry: Any, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict):
        for key in ("rule", "method", "id"):
            if key in entry:
                params = dict(entry)
                return str(params.pop(key)), params
        if len(entry) == 1:
            (rule_id, params), = entry.items()
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise RuleConfigError("parameters must be a mapping", where=where,
                                      hint=f"write {{{rule_id}: {{name: value}}}}")
            return str(rule_id), dict(params)
    raise RuleConfigError("an entry is a rule id or a mapping with 'rule' and its parameters",
                          where=where, hint="write e.g. spike or {rule: spike, tolerance_pct: 200}")


def _build(registry: dict[str, Any], rule_id: str, params: dict[str, Any], where: str,
           what: str) -> Any:
    cls = registry.get(rule_id)
    if cls is None:
        raise RuleConfigError(f"unknown {what} '{rule_id}'", where=where,
                              hint=f"known: {', '.join(sorted(registry))}")
    try:
        validated = cls.Params.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = f"unknown parameter (allowed: {', '.join(sorted(cls.Params.model_fields))})"
        raise RuleConfigError(f"{what} '{rule_id}': {msg}",
                              where=f"{where}.{loc}" if loc else where,
                              hint=f"value given: {first.get('input')!r}") from None
    return cls(validated)


def _with_params(group: CompiledGroup, overrides: dict[str, dict[str, Any]], *,
                 where: str) -> CompiledGroup:
    if not (any(r.id in overrides for r in group.rules)
            or any(m.id in overrides for m in group.methods)):
        return group
    rules = []
    for rule in group.rules:
        if rule.id in overrides:
            merged = {**rule.params.model_dump(exclude_defaults=True), **overrides[rule.id]}
            rule = _build(VALIDATION_RULES, rule.id, merged, f"{where}.{rule.id}", "rule")
        rules.append(rule)
    methods = []
    for method in group.methods:
        if method.id in overrides:
            merged = {**method.params.model_dump(exclude_defaults=True), **overrides[method.id]}
            method = _build(ESTIMATION_METHODS, method.id, merged, f"{where}.{method.id}",
                            "method")
        methods.append(method)
    return CompiledGroup(id=group.id, purpose=group.purpose, description=group.description,
                         applies_to=group.applies_to, rules=tuple(rules),
                         methods=tuple(methods), source=group.source, version=group.version)


def _meter_override(meter_id: str, body: Any, groups: dict[str, CompiledGroup],
                    source: str) -> MeterOverride:
    where = f"meters.{meter_id}"
    if not isinstance(body, dict):
        raise RuleConfigError("a meter override is a mapping", where=f"{source}: {where}",
                              hint="keys: groups, params, attributes")
    _only(body, {"groups", "params", "attributes"}, source, where)
    override = MeterOverride()
    for purpose, group_id in (body.get("groups") or {}).items():
        if purpose not in PURPOSES:
            raise RuleConfigError(f"unknown purpose '{purpose}'",
                                  where=f"{source}: {where}.groups",
                                  hint=f"allowed: {', '.join(PURPOSES)}")
        group = groups.get(str(group_id))
        if group is None:
            raise RuleConfigError(f"unknown group '{group_id}'",
                                  where=f"{source}: {where}.groups.{purpose}",
                                  hint=f"known: {', '.join(sorted(groups))}")
        if group.purpose != purpose:
            raise RuleConfigError(f"group '{group_id}' is a {group.purpose} group",
                                  where=f"{source}: {where}.groups.{purpose}",
                                  hint=f"name a group with purpose {purpose}")
        override.groups[purpose] = str(group_id)
    for rule_id, params in (body.get("params") or {}).items():
        if rule_id not in VALIDATION_RULES and rule_id not in ESTIMATION_METHODS:
            raise RuleConfigError(f"unknown rule '{rule_id}'",
                                  where=f"{source}: {where}.params",
                                  hint="name a rule or method id")
        if not isinstance(params, dict):
            raise RuleConfigError("parameters must be a mapping",
                                  where=f"{source}: {where}.params.{rule_id}",
                                  hint="write e.g. {tolerance_pct: 300}")
        registry = VALIDATION_RULES if rule_id in VALIDATION_RULES else ESTIMATION_METHODS
        _build(registry, rule_id, params, f"{source}: {where}.params.{rule_id}", "rule")
        override.params[str(rule_id)] = params
    attributes = body.get("attributes") or {}
    allowed = {"status", "medium", "device_type", "size", "qmax", "register_digits",
               "register_decimals", "has_valve", "customer_type", "account_id"}
    _only(attributes, allowed, source, f"{where}.attributes")
    if "qmax" in attributes:
        attributes = {**attributes, "qmax": Decimal(str(attributes["qmax"]))}
    override.attributes = dict(attributes)
    return override


def _calendar(doc: Any, source: str, timezone: str | None) -> DayCalendar:
    if not isinstance(doc, dict):
        raise RuleConfigError("'calendar' must be a mapping", where=f"{source}: calendar",
                              hint="keys: timezone, holidays, workdays")
    _only(doc, {"timezone", "holidays", "workdays"}, source, "calendar")
    zone = str(doc.get("timezone") or timezone or "Asia/Shanghai")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(zone)
    except Exception:
        raise RuleConfigError(f"unknown time zone '{zone}'", where=f"{source}: calendar.timezone",
                              hint="use an IANA name such as Asia/Shanghai") from None
    return DayCalendar(zone, _days(doc.get("holidays") or [], source, "calendar.holidays"),
                       _days(doc.get("workdays") or [], source, "calendar.workdays"))


def _days(items: Any, source: str, where: str) -> frozenset[int]:
    if not isinstance(items, list):
        raise RuleConfigError("a list of dates or date ranges is expected",
                              where=f"{source}: {where}", hint="write e.g. [2026-10-01/2026-10-07]")
    out: set[int] = set()
    for n, item in enumerate(items):
        try:
            if isinstance(item, _dt.date):
                out.add(day_of(item))
                continue
            text = str(item)
            if "/" in text:
                first, last = (_dt.date.fromisoformat(p.strip()) for p in text.split("/", 1))
                if last < first:
                    raise ValueError("range ends before it starts")
                out.update(range(day_of(first), day_of(last) + 1))
            else:
                out.add(day_of(_dt.date.fromisoformat(text.strip())))
        except ValueError as exc:
            raise RuleConfigError(f"'{item}' is not a date or date range: {exc}",
                                  where=f"{source}: {where}[{n}]",
                                  hint="write YYYY-MM-DD or YYYY-MM-DD/YYYY-MM-DD") from None
    return frozenset(out)


def _only(doc: Any, allowed: set[str], source: str, where: str) -> None:
    if not isinstance(doc, dict):
        raise RuleConfigError("a mapping is expected", where=f"{source}: {where}",
                              hint=f"keys: {', '.join(sorted(allowed))}")
    for key in doc:
        if key not in allowed:
            raise RuleConfigError(f"unknown key '{key}'",
                                  where=f"{source}: {where + '.' if where else ''}{key}",
                                  hint=f"allowed: {', '.join(sorted(allowed))}")


_MEDIA = ("gas", "water", "heat", "electricity")


def _by_medium(doc: Any, source: str, where: str, *, nullable: bool
               ) -> dict[str, list[tuple[str, Any]]]:
    """A reference table — ``{name: number}`` — or tables per medium — ``{gas: {name:
    number}, ...}`` — or both (the plain numbers are the fallback of other media); numbers
    in micro-units. Key ``""`` holds the fallback table."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise RuleConfigError("a mapping of name to number (or of medium to such a mapping) "
                              f"is expected, not {doc!r}", where=f"{source}: {where}",
                              hint="write e.g. {residential: 0.9} or {gas: {residential: 0.9}}")

    def number(value: Any, path: str) -> float | None:
        if value is None and nullable:
            return None
        return _number(value, source, path) * _MICRO

    out: dict[str, list[tuple[str, Any]]] = {}
    for key, value in doc.items():
        name = str(key)
        if isinstance(value, dict):
            if name not in _MEDIA:
                raise RuleConfigError(
                    f"'{name}' holds a table, but only a medium ({', '.join(_MEDIA)}) may",
                    where=f"{source}: {where}.{name}",
                    hint="name the medium, or give a number")
            out[name] = [(str(k), number(v, f"{where}.{name}.{k}")) for k, v in value.items()]
        else:
            out.setdefault("", []).append((name, number(value, f"{where}.{name}")))
    return out


def _seasonal(doc: Any, source: str) -> dict[str, tuple[float, ...]]:
    """``{medium: [12 month factors, January first]}``."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise RuleConfigError(f"a mapping of medium to 12 month factors is expected, not "
                              f"{doc!r}", where=f"{source}: history.seasonal",
                              hint="write e.g. {gas: [1.9, 1.8, 1.4, 1, 0.75, 0.6, 0.55, 0.55, "
                                   "0.65, 0.9, 1.3, 1.7]}")
    out: dict[str, tuple[float, ...]] = {}
    for medium, factors in doc.items():
        where = f"history.seasonal.{medium}"
        if str(medium) not in _MEDIA:
            raise RuleConfigError(f"'{medium}' is not a medium ({', '.join(_MEDIA)})",
                                  where=f"{source}: {where}", hint="name the medium")
        if not isinstance(factors, list) or len(factors) != 12:
            raise RuleConfigError("12 month factors are expected, January first",
                                  where=f"{source}: {where}",
                                  hint="one factor of the annual average per month")
        values = tuple(_number(f, source, f"{where}[{i}]") for i, f in enumerate(factors))
        if any(v <= 0 for v in values):
            raise RuleConfigError("month factors must be greater than 0",
                                  where=f"{source}: {where}", hint="e.g. 0.55 for July")
        out[str(medium)] = values
    return out


def _number(value: Any, source: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleConfigError(f"a number is expected, not {value!r}", where=f"{source}: {where}",
                              hint="write e.g. 1.5")
    return float(value)


def _int(value: Any, source: str, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RuleConfigError(f"an integer from {low} to {high} is expected, not {value!r}",
                              where=f"{source}: {where}", hint=f"write e.g. {low + 1}")
    return value

