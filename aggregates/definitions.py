"""The aggregate relations: what is grouped, what is measured, at which levels.

Strategy: three hierarchies, each materialised at three levels — ``hourly`` (UTC hours),
``daily`` and ``monthly`` (days and months of the utility's zone, recorded when the
aggregates were created). Every level is computed from the level below, and every measure
composes exactly (sums of sums, minima of minima), so a daily row is the same whether it was
computed from hours or from raw rows, and the two backends agree:

* on TimescaleDB the relations are hierarchical continuous aggregates (migration
  ``0300_aggregates.timescale.sql``);
* on plain PostgreSQL they are tables of the same names and columns, kept by
  :mod:`aggregates.refresh` from an invalidation log filled by triggers.

This module is the one description both the plain refresher (which generates its SQL from
it) and the tests (which check both backends' relations against it) use.

``meter_consumption``      per meter and register, with the account and tariff of the reading
``dimension_consumption``  per medium, register and ledger dimension (customer type, region,
                           org unit, supply node, tariff) — no account, no meter
``tier_consumption``       priced volume and money per account, tariff, price tier,
                           component and time-of-use period, from the charge segments, each
                           charge at the last instant of its period (the instant by whose
                           local day the billing engine settles it)

Measures of the consumption hierarchies: ``consumption`` (sum of the hour parts), and
``reading_count`` (readings taken in the bucket — a reading prorated over several hours is
counted once, in the hour it closes), ``interval_count`` (hour parts), ``estimated_count``
(estimated hour parts), ``min_consumption`` / ``max_consumption`` (smallest and largest hour
part).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "HIERARCHIES",
    "LEVELS",
    "Hierarchy",
    "Measure",
    "hierarchy",
    "relation_names",
]

#: Levels, finest first. ``hourly`` buckets are UTC; ``daily``/``monthly`` use the zone.
LEVELS: tuple[str, ...] = ("hourly", "daily", "monthly")

#: The width of each level's bucket, as date_trunc / time_bucket understand it.
LEVEL_UNIT: dict[str, str] = {"hourly": "hour", "daily": "day", "monthly": "month"}


@dataclass(frozen=True)
class Measure:
    """One aggregate column: how it is computed from source rows and from the level below."""

    name: str
    sql_type: str
    from_source: str
    from_level_below: str


@dataclass(frozen=True)
class Hierarchy:
    """A group of three relations ``agg.<name>_hourly|daily|monthly`` over one source table."""

    name: str
    source_table: str
    source_time: str
    invalidation_source: str
    groups: tuple[tuple[str, str], ...]
    measures: tuple[Measure, ...]

    def relation(self, level: str) -> str:
        if level not in LEVELS:
            raise ValueError(f"unknown level '{level}'; known: {', '.join(LEVELS)}")
        return f"agg.{self.name}_{level}"

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.groups)

    def columns(self) -> tuple[tuple[str, str], ...]:
        """(name, SQL type) of every column, in relation order."""
        return (("bucket", "timestamp with time zone"), *self.groups,
                *((m.name, m.sql_type) for m in self.measures))


def _count(name: str, condition: str | None = None) -> Measure:
    source = "count(*)" if condition is None else f"count(*) FILTER (WHERE {condition})"
    return Measure(name, "bigint", source, f"sum({name})::bigint")


_CONSUMPTION_MEASURES = (
    Measure("consumption", "numeric", "sum(volume)", "sum(consumption)"),
    _count("reading_count", "closes_reading"),
    _count("interval_count"),
    _count("estimated_count", "estimated"),
    Measure("min_consumption", "numeric", "min(volume)", "min(min_consumption)"),
    Measure("max_consumption", "numeric", "max(volume)", "max(max_consumption)"),
)

HIERARCHIES: tuple[Hierarchy, ...] = (
    Hierarchy(
        name="meter_consumption",
        source_table="data.consumption_intervals",
        source_time="interval_start",
        invalidation_source="consumption",
        groups=(("meter_id", "text"), ("register", "text"), ("unit", "text"),
                ("medium", "text"), ("account_id", "text"), ("tariff_id", "text")),
        measures=_CONSUMPTION_MEASURES,
    ),
    Hierarchy(
        name="dimension_consumption",
        source_table="data.consumption_intervals",
        source_time="interval_start",
        invalidation_source="consumption",
        groups=(("medium", "text"), ("register", "text"), ("unit", "text"),
                ("customer_type", "text"), ("region", "text"), ("org_unit", "text"),
                ("supply_node", "text"), ("tariff_id", "text")),
        measures=_CONSUMPTION_MEASURES,
    ),
    Hierarchy(
        name="tier_consumption",
        source_table="billing.charge_segments",
        source_time="accounted_at",
        invalidation_source="charges",
        groups=(("account_id", "text"), ("tariff_id", "text"), ("tier", "integer"),
                ("component", "text"), ("price_period", "text")),
        measures=(
            Measure("volume", "numeric", "sum(volume)", "sum(volume)"),
            Measure("amount", "numeric", "sum(amount)", "sum(amount)"),
            _count("segment_count"),
            _count("provisional_count", "provisional"),
            Measure("min_volume", "numeric", "min(volume)", "min(min_volume)"),
            Measure("max_volume", "numeric", "max(volume)", "max(max_volume)"),
        ),
    ),
)

_BY_NAME = {h.name: h for h in HIERARCHIES}


def hierarchy(name: str) -> Hierarchy:
    """The hierarchy called ``name``; ``KeyError`` lists the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown aggregate '{name}'; known: {', '.join(_BY_NAME)}") from None


def relation_names() -> list[str]:
    """Every aggregate relation, hierarchy by hierarchy, finest level first."""
    return [h.relation(level) for h in HIERARCHIES for level in LEVELS]
