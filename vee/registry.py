"""The rule registry: validation rules and estimation methods are small classes registered by
id, each with a typed parameter model checked when a rule set is loaded.

Strategy (the psycopg habit of one registry per extension axis, built from the classes
themselves): a class declares ``id``, its ``Params`` (a frozen pydantic model that refuses
unknown fields) and its behaviour; :func:`register` adds it to :data:`VALIDATION_RULES` or
:data:`ESTIMATION_METHODS`. Rule groups in YAML name rules by id; loading instantiates the
class with its validated parameters, so a typo or a wrong value is an error at load time
naming the file, the path in it and the reason — never a surprise in the stream.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict

if TYPE_CHECKING:
    from vee.context import Hole, PointContext

__all__ = [
    "ESTIMATION_METHODS",
    "VALIDATION_RULES",
    "Action",
    "Duration",
    "EstimationMethod",
    "MethodParams",
    "RuleParams",
    "ValidationRule",
    "estimation_method",
    "parse_duration",
    "register",
    "validation_rule",
]

Action = Literal["flag", "questionable", "estimate"]
#: How serious an action is; the worst action of the rules that fired decides the quality.
ACTION_RANK: dict[str, int] = {"flag": 0, "questionable": 1, "estimate": 2}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$")
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400,
                 "w": 604800}


def parse_duration(value: Any) -> int:
    """``"15m"`` / ``"2h"`` / ``"1d"`` / ``90`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text such as 15m, 2h, 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"'{value}' is not a duration (write e.g. 90s, 15m, 2h, 1d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return int(seconds)


#: A duration parameter: seconds, or text such as ``15m``, ``2h``, ``1d``.
Duration = Annotated[int, BeforeValidator(parse_duration)]


class RuleParams(BaseModel):
    """Parameters every validation rule accepts; a rule's own model adds its fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Override the rule's default action: flag only, mark questionable, or estimate.
    action: Action | None = None


class MethodParams(BaseModel):
    """Parameters every estimation method accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ValidationRule:
    """A check of one value in the context of its channel.

    ``check`` returns True when the rule fires (the rule's id becomes a flag) or a string
    to use as the flag instead. ``input_only`` rules look at fields only the arriving
    reading has (meter clock, status tags); they run once, on arrival, and their flags stay
    with the point. ``scope='day'`` rules compare a value with the other values of its local
    day: instead of ``check`` the engine calls ``check_day(ctx, points, rates)`` once the day
    is over (and again when a late value or an edit changes its evidence) with the rates of
    what the meter sent; it returns the points it flags (see :mod:`vee._day_rules`).
    """

    id: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    #: Flags the rule may return instead of its id.
    emits: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type[RuleParams]] = RuleParams
    default_action: ClassVar[Action] = "flag"
    input_only: ClassVar[bool] = False
    scope: ClassVar[Literal["point", "day"]] = "point"
    kinds: ClassVar[frozenset[str]] = frozenset({"cumulative", "interval"})
    #: Fires on markers (expected values that never arrived) too.
    on_markers: ClassVar[bool] = False
    #: Can only fire when the value carries event flags (status tags, duplicate): skipped
    #: for the (many) values without any.
    needs_events: ClassVar[bool] = False
    #: Can only fire when the value has a consumption: skipped for the first value.
    needs_consumption: ClassVar[bool] = False
    #: Channel kinds on which the rule cannot fire for the engine's common case — an actual
    #: value after the last one, that no rule rejects, whose register did not go back — so
    #: the engine's fast path skips it there.
    quiet_in_order: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, params: RuleParams) -> None:
        self.params = params
        self.action: Action = params.action or self.default_action
        self.rank = ACTION_RANK[self.action]

    def check(self, ctx: PointContext) -> bool | str:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<rule {self.id} {self.params.model_dump(exclude_defaults=True)}>"


class EstimationMethod:
    """A way to fill a hole (values that failed validation or never arrived).

    ``estimate`` returns one consumption per piece of the hole, in micro-units (see
    :class:`vee.context.Hole`), or None when the method does not apply to this hole.
    """

    id: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type[MethodParams]] = MethodParams
    kinds: ClassVar[frozenset[str]] = frozenset({"cumulative", "interval"})
    #: Needs the value after the hole (False: works one-sided, as a forward estimate).
    two_sided: ClassVar[bool] = False
    #: For a register, the pieces are only relative weights (always scaled to the advance).
    relative_shape: ClassVar[bool] = False

    def __init__(self, params: MethodParams) -> None:
        self.params = params

    def estimate(self, hole: Hole) -> list[int] | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<method {self.id} {self.params.model_dump(exclude_defaults=True)}>"


VALIDATION_RULES: dict[str, type[ValidationRule]] = {}
ESTIMATION_METHODS: dict[str, type[EstimationMethod]] = {}

R = TypeVar("R", bound=type[ValidationRule])
E = TypeVar("E", bound=type[EstimationMethod])


def register(cls: Any) -> Any:
    """Class decorator: add a rule or a method to its registry under its id and aliases."""
    if not cls.id:
        raise TypeError(f"{cls.__name__} has no id")
    registry: dict[str, Any]
    if issubclass(cls, ValidationRule):
        registry = VALIDATION_RULES
    elif issubclass(cls, EstimationMethod):
        registry = ESTIMATION_METHODS
    else:
        raise TypeError(f"{cls.__name__} is neither a ValidationRule nor an EstimationMethod")
    for name in (cls.id, *cls.aliases):
        existing = registry.get(name)
        if existing is not None and existing is not cls:
            raise TypeError(f"rule id '{name}' is taken by {existing.__name__}")
        registry[name] = cls
    return cls


def validation_rule(rule_id: str) -> type[ValidationRule]:
    _load_builtins()
    return VALIDATION_RULES[rule_id]


def estimation_method(method_id: str) -> type[EstimationMethod]:
    _load_builtins()
    return ESTIMATION_METHODS[method_id]


def _load_builtins() -> None:
    import vee.rules  # noqa: F401  (registers the built-in rules and methods)
