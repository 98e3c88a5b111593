"""Hourly, daily and monthly aggregates by meter, dimension and price tier, on both backends.

Continuous aggregates on TimescaleDB, the same relations kept by an incremental refresher on
plain PostgreSQL (:mod:`aggregates.refresh`), described once in :mod:`aggregates.definitions`.
"""

from aggregates.definitions import HIERARCHIES, LEVELS, Hierarchy, Measure, relation_names
from aggregates.errors import AggregateError, AggregatesNotInstalledError
from aggregates.refresh import LevelRefresh, RefreshReport, refresh_aggregates, refresh_with

__all__ = [
    "HIERARCHIES",
    "LEVELS",
    "AggregateError",
    "AggregatesNotInstalledError",
    "Hierarchy",
    "LevelRefresh",
    "Measure",
    "RefreshReport",
    "refresh_aggregates",
    "refresh_with",
    "relation_names",
]
