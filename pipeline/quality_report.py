"""Daily data-quality reports over stored validated readings, per meter group, with
great-expectations (``unimeter vee report``).

Strategy: great-expectations documents the quality of *stored* data; it does not repeat the
stream's rules. For one local day (in the utility's time zone) the current versions of
``data.validated_readings_current`` are read and split by VEE group (the ``vee_group``
dimension each reading carries). Each group gets two expectation suites — one over its
readings, one over a per-meter summary of the day — run by a checkpoint that writes the
validation results as JSON and updates the Data Docs site (HTML). A compact
``report.json`` summarises the day: for each group and expectation, success, the observed
value and the threshold.

The expectations (thresholds are options of :func:`daily_report`):

* one current version per (meter, register, time);
* values present (missing markers ≤ ``max_missing``);
* good data: validated, edited or final values ≥ ``min_good`` of all;
* no negative consumption stored;
* every reading attributed to an account (billing can use it);
* per meter: the share of estimated values ≤ ``max_estimated_per_meter`` for most meters.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

__all__ = ["GroupResult", "QualityReport", "daily_report", "readings_frame"]

_COLUMNS = ("meter_id", "register", "ts", "version", "value", "quality", "method", "flags",
            "consumption", "account_id", "vee_group", "medium", "unit")


@dataclass
class GroupResult:
    group: str
    readings: int
    meters: int
    success: bool
    expectations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class QualityReport:
    day: date
    timezone: str
    groups: list[GroupResult]
    json_path: Path
    html_index: Path | None

    @property
    def success(self) -> bool:
        return all(g.success for g in self.groups)


def readings_frame(conn: psycopg.Connection[Any], start: datetime, end: datetime,
                   group: str | None = None) -> Any:
    """The current versions of one period as a pandas DataFrame."""
    import pandas as pd

    sql = (f"SELECT {', '.join(_COLUMNS)} FROM data.validated_readings_current "
           "WHERE ts >= %s AND ts < %s")
    params: list[Any] = [start, end]
    if group is not None:
        sql += " AND vee_group = %s"
        params.append(group)
    with conn.cursor() as cur:
        rows = cur.execute(sql, params).fetchall()
    frame = pd.DataFrame(rows, columns=list(_COLUMNS))
    frame["vee_group"] = frame["vee_group"].fillna("(none)")
    for column in ("value", "consumption"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def _meter_summary(frame: Any) -> Any:
    import pandas as pd

    if frame.empty:
        return pd.DataFrame({"meter_id": [], "register": [], "readings": [],
                             "estimated_share": [], "missing": []})
    grouped = frame.groupby(["meter_id", "register"])
    return pd.DataFrame({
        "readings": grouped.size(),
        "estimated_share": grouped["quality"].apply(lambda q: float((q == "estimated").mean())),
        "missing": grouped["quality"].apply(lambda q: int((q == "missing").sum())),
    }).reset_index()


def daily_report(conn: psycopg.Connection[Any], day: date, out_dir: Path, *,
                 timezone: str = "Asia/Shanghai", groups: list[str] | None = None,
                 min_good: float = 0.95, max_missing: float = 0.01,
                 max_estimated_per_meter: float = 0.2) -> QualityReport:
    """Validate one local day of stored readings per VEE group; write JSON and HTML."""
    import great_expectations as gx

    zone = ZoneInfo(timezone)
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    end = start + timedelta(days=1)
    frame = readings_frame(conn, start, end)
    names = sorted(set(frame["vee_group"])) if groups is None else groups
    out_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(out_dir))
    source = _replace(context.data_sources, "stored_readings",
                      lambda: context.data_sources.add_pandas("stored_readings"))
    results: list[GroupResult] = []
    for name in names:
        part = frame[frame["vee_group"] == name]
        summary = _meter_summary(part)
        runs: list[Any] = []
        for kind, data, suite_builder in (
                ("readings", part, lambda s: _reading_expectations(s, min_good, max_missing)),
                ("meters", summary,
                 lambda s: _meter_expectations(s, max_estimated_per_meter))):
            suite_name = f"vee-{name}-{kind}"
            suite = _replace(context.suites, suite_name,
                             lambda n=suite_name: context.suites.add(gx.ExpectationSuite(name=n)))
            if not suite.expectations:
                suite_builder(suite)
                suite.save()
            asset_name = f"{name}-{kind}"
            asset = _replace_asset(source, asset_name)
            batch = asset.add_batch_definition_whole_dataframe("day")
            definition_name = f"{suite_name}-{day.isoformat()}"
            _delete(context.validation_definitions, definition_name)
            definition = context.validation_definitions.add(gx.ValidationDefinition(
                name=definition_name, data=batch, suite=suite))
            checkpoint_name = f"daily-{definition_name}"
            _delete(context.checkpoints, checkpoint_name)
            checkpoint = context.checkpoints.add(gx.Checkpoint(
                name=checkpoint_name, validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data-docs")],
                result_format="SUMMARY"))
            outcome = checkpoint.run(batch_parameters={"dataframe": data})
            runs.extend(outcome.run_results.values())
        expectations: list[dict[str, Any]] = []
        for run in runs:
            for item in run.results:
                config = item.expectation_config
                expectations.append({
                    "expectation": config.type, "kwargs": {
                        k: v for k, v in config.kwargs.items() if k != "batch_id"},
                    "success": bool(item.success),
                    "observed": _observed(item.result)})
        results.append(GroupResult(group=name, readings=len(part),
                                   meters=int(part["meter_id"].nunique()) if len(part) else 0,
                                   success=all(e["success"] for e in expectations),
                                   expectations=expectations))
    json_path = out_dir / "reports" / f"{day.isoformat()}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({
        "day": day.isoformat(), "timezone": timezone,
        "success": all(g.success for g in results),
        "groups": [g.__dict__ for g in results]}, indent=2, default=str))
    html = next((out_dir / "gx").rglob("data_docs/local_site/index.html"), None)
    return QualityReport(day=day, timezone=timezone, groups=results, json_path=json_path,
                         html_index=html)


def _reading_expectations(suite: Any, min_good: float, max_missing: float) -> None:
    import great_expectations as gx

    e = gx.expectations
    suite.add_expectation(e.ExpectCompoundColumnsToBeUnique(
        column_list=["meter_id", "register", "ts"]))
    suite.add_expectation(e.ExpectColumnValuesToNotBeNull(column="value",
                                                          mostly=1 - max_missing))
    suite.add_expectation(e.ExpectColumnValuesToBeInSet(
        column="quality", value_set=["validated", "edited", "final"], mostly=min_good))
    suite.add_expectation(e.ExpectColumnValuesToBeBetween(column="consumption", min_value=0))
    suite.add_expectation(e.ExpectColumnValuesToNotBeNull(column="account_id", mostly=0.99))


def _meter_expectations(suite: Any, max_estimated: float) -> None:
    import great_expectations as gx

    suite.add_expectation(gx.expectations.ExpectColumnValuesToBeBetween(
        column="estimated_share", max_value=max_estimated, mostly=0.99))


def _observed(result: dict[str, Any]) -> Any:
    for key in ("observed_value", "unexpected_percent", "unexpected_count"):
        if key in result:
            return result[key]
    return None


def _replace(store: Any, name: str, create: Any) -> Any:
    try:
        return store.get(name)
    except Exception:  # great-expectations raises its own not-found errors per store
        return create()


def _delete(store: Any, name: str) -> None:
    with contextlib.suppress(Exception):  # not there yet
        store.delete(name)


def _replace_asset(source: Any, name: str) -> Any:
    with contextlib.suppress(Exception):  # not there yet
        source.delete_asset(name)
    return source.add_dataframe_asset(name)
