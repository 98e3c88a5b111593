"""Exporting the ledger in the import format: an Excel workbook (one sheet per kind) or a
folder of CSV files (one per kind). An exported file imports back without a change."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from devices.importer.files import format_cell
from devices.importer.spec import KIND_ORDER, KINDS, Kind

__all__ = ["EXPORT_GROUPS", "export_ledger", "export_rows", "resolve_kinds"]

#: Names that stand for several kinds on the command line.
EXPORT_GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(k for k in KIND_ORDER if k != "network"),
    "catalog": ("manufacturers", "vee_groups", "device_types"),
    "topology": ("org_units", "locations", "supply_nodes", "service_points",
                 "fep_assignments"),
    "billing": ("customers", "tariffs", "tariff_versions", "accounts"),
    "customers": ("customers", "accounts"),
    "equipment": ("devices", "meters"),
}

_ORDER_BY = {
    "locations": "cardinality(path), location_id",
    "devices": "cardinality(path), device_id",
    "meters": "meter_id",
    "org_units": "org_unit_id",
    "supply_nodes": "supply_node_id",
}


def resolve_kinds(names: Iterable[str]) -> list[str]:
    """Kinds and group names -> kinds in application order; ``KeyError`` names the known."""
    wanted: set[str] = set()
    for name in names:
        if name in EXPORT_GROUPS:
            wanted.update(EXPORT_GROUPS[name])
        elif name in KINDS:
            wanted.add(name)
        else:
            raise KeyError(f"unknown kind '{name}'; known: "
                           f"{', '.join([*EXPORT_GROUPS, *KIND_ORDER])}")
    return [k for k in KIND_ORDER if k in wanted]


def _query(kind: Kind) -> sql.Composed:
    columns = [c.name for c in kind.columns if c.name != "targets"]
    if kind.name == "meters":
        select = sql.SQL(", ").join(
            sql.SQL("d.device_id AS meter_id") if name == "meter_id" else
            sql.SQL("{}.{}").format(sql.Identifier("m" if kind.columns_by_name[name].table
                                                   else "d"), sql.Identifier(name))
            for name in columns)
        return sql.SQL("SELECT {} FROM ledger.devices d JOIN ledger.meters m "
                       "ON m.meter_id = d.device_id ORDER BY cardinality(d.path), d.device_id"
                       ).format(select)
    select = sql.SQL(", ").join(map(sql.Identifier, columns))
    where = sql.SQL("")
    if kind.name == "devices":
        where = sql.SQL(" WHERE kind <> 'meter'")
    if kind.name == "collection_plans":
        select = sql.SQL("{}, (SELECT string_agg(CASE WHEN target_kind = 'all' THEN 'all' "
                         "ELSE target_kind || ':' || target_id END, ';' ORDER BY target_kind, "
                         "target_id) FROM ledger.collection_plan_targets t "
                         "WHERE t.plan_id = p.plan_id) AS targets").format(select)
        return sql.SQL("SELECT {} FROM ledger.collection_plans p ORDER BY plan_id").format(
            select)
    order = _ORDER_BY.get(kind.name, ", ".join(kind.key))
    return sql.SQL("SELECT {} FROM ledger.{}{} ORDER BY {}").format(
        select, sql.Identifier(kind.table), where, sql.SQL(order))


def export_rows(conn: psycopg.Connection, kind_name: str,
                zone: ZoneInfo) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of one kind, parents first."""
    kind = KINDS[kind_name]
    header = [c.name for c in kind.columns]
    cur = conn.execute(_query(kind))
    names = [d.name for d in cur.description or ()]
    out = []
    for record in cur.fetchall():
        values: dict[str, Any] = dict(zip(names, record, strict=True))
        if kind_name == "collection_plans":
            values["targets"] = (values.get("targets") or "").split(";") if values.get(
                "targets") else []
        out.append([format_cell(kind.columns_by_name[h], values.get(h), zone) for h in header])
    return header, out


def export_ledger(conn: psycopg.Connection, target: Path, kinds: Sequence[str],
                  zone: ZoneInfo) -> dict[str, int]:
    """Write ``kinds`` to ``target``: ``.xlsx`` = one workbook, otherwise a CSV folder."""
    counts: dict[str, int] = {}
    if target.suffix.lower() == ".xlsx":
        from openpyxl import Workbook

        workbook = Workbook(write_only=True)
        for kind_name in kinds:
            header, rows = export_rows(conn, kind_name, zone)
            sheet = workbook.create_sheet(kind_name)
            sheet.append(header)
            for row in rows:
                sheet.append(row)
            counts[kind_name] = len(rows)
        target.parent.mkdir(parents=True, exist_ok=True)
        workbook.save(target)
        return counts
    target.mkdir(parents=True, exist_ok=True)
    for kind_name in kinds:
        header, rows = export_rows(conn, kind_name, zone)
        with (target / f"{kind_name}.csv").open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        counts[kind_name] = len(rows)
    return counts
