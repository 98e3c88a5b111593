"""Validating a whole import before anything is written: every bad row with its line and
reason, against the ledger as it is and the rest of the import.

Strategy: read the ledger's keys once (:class:`LedgerKeys`), parse every cell with its
column's type, then check what a database constraint would refuse — but for all rows at once
and with the file and line: duplicate keys, unknown references (to the ledger *or* to rows of
the same import), the nesting of places and of the collection network, cycles, lifecycle
transitions, alarm levels, tariff tiers, collection-plan targets. Rows come out ordered
parents first, ready for :mod:`devices.importer.apply`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from devices.importer.files import CellError, RawSheet, parse_cell
from devices.importer.spec import KIND_ORDER, KINDS, Kind

__all__ = ["Batch", "LedgerKeys", "Problem", "Row", "validate"]

LOCATION_RANK = {"region": 0, "area": 1, "building": 2, "unit": 3}
DEVICE_RANK = {"meter": 0, "collector": 1, "concentrator": 2, "rtu": 2, "dtu": 3}
TARGET_KINDS = {"device": "devices", "subtree": "devices", "location": "locations",
                "device_type": "device_types", "service_point": "service_points",
                "account": "accounts", "all": ""}


@dataclass(frozen=True)
class Problem:
    """One reason a row (or a file) cannot be imported."""

    source: str
    line: int
    reason: str
    kind: str = ""
    key: str = ""
    column: str = ""

    def __str__(self) -> str:
        what = f" {self.kind} '{self.key}'" if self.key else (f" {self.kind}" if self.kind else "")
        col = f" [{self.column}]" if self.column else ""
        return f"{self.source}:{self.line}:{what}{col}: {self.reason}"


@dataclass
class Row:
    source: str
    line: int
    values: dict[str, Any]

    def key(self, kind: Kind) -> str:
        return ":".join(str(self.values.get(k)) for k in kind.key)


@dataclass
class Batch:
    """Valid rows of one kind, parents first, and the columns the files gave."""

    kind: Kind
    columns: list[str]
    rows: list[Row] = field(default_factory=list)


@dataclass
class LedgerKeys:
    """What the ledger holds now, as far as validation needs it."""

    ids: dict[str, set[str]]
    device_types: dict[str, tuple[str, str | None]]
    locations: dict[str, tuple[str, str | None]]
    devices: dict[str, tuple[str, str, str, str | None, str | None]]
    meter_sizes: dict[str, str]
    transitions: set[tuple[str, str]]

    @classmethod
    def load(cls, conn: psycopg.Connection) -> LedgerKeys:
        ids: dict[str, set[str]] = {}
        for table, key in (("manufacturers", "manufacturer_id"), ("vee_groups", "vee_group_id"),
                           ("org_units", "org_unit_id"), ("service_points", "service_point_id"),
                           ("customers", "customer_id"), ("customer_types", "customer_type"),
                           ("tariffs", "tariff_id"), ("accounts", "account_id"),
                           ("supply_nodes", "supply_node_id"), ("meters", "meter_id"),
                           ("collection_plans", "plan_id"),
                           ("fep_assignments", "service_point_id || ':' || fep_id"),
                           ("tariff_versions", "tariff_id || ':' || version")):
            ids[table] = {r[0] for r in conn.execute(
                f"SELECT {key} FROM ledger.{table}").fetchall()}
        device_types = {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT device_type, kind, medium FROM ledger.device_types").fetchall()}
        locations = {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT location_id, kind, parent_id FROM ledger.locations").fetchall()}
        devices = {r[0]: (r[1], r[2], r[3], r[4], r[5]) for r in conn.execute(
            "SELECT device_id, device_type, kind, status, parent_device_id, link_id "
            "FROM ledger.devices").fetchall()}
        sizes: dict[str, str] = dict(conn.execute(
            "SELECT size, medium FROM ledger.meter_sizes").fetchall())
        transitions = {(r[0], r[1]) for r in conn.execute(
            "SELECT status_from, status_to FROM ledger.device_transitions").fetchall()}
        ids["device_types"] = set(device_types)
        ids["locations"] = set(locations)
        ids["devices"] = set(devices)
        ids["meter_sizes"] = set(sizes)
        return cls(ids, device_types, locations, devices, sizes, transitions)


class _Validator:
    def __init__(self, keys: LedgerKeys, zone: ZoneInfo) -> None:
        self.keys = keys
        self.zone = zone
        self.problems: list[Problem] = []
        self.batches: dict[str, Batch] = {}
        self.seen: dict[tuple[str, str], Row] = {}   # (table, key) -> first row
        self.link_holders = {v[4]: k for k, v in keys.devices.items() if v[4]}

    def problem(self, row: Row | None, reason: str, kind: str = "", key: str = "",
                column: str = "", source: str = "", line: int = 0) -> None:
        self.problems.append(Problem(row.source if row else source, row.line if row else line,
                                     reason, kind, key, column))

    # ---------------------------------------------------------------- parsing

    def add_sheet(self, sheet: RawSheet) -> None:
        if sheet.kind is None or sheet.kind not in KINDS:
            self.problem(None, "cannot tell what this sheet holds: name the file or sheet "
                         f"after a kind ({', '.join(KIND_ORDER)}) or pass --kind",
                         source=sheet.source, line=1)
            return
        kind = KINDS[sheet.kind]
        unknown = [h for h in sheet.header if h and h not in kind.columns_by_name]
        for name in unknown:
            self.problem(None, f"unknown column '{name}' for {kind.name} (known: "
                         f"{', '.join(kind.columns_by_name)})", kind.name, column=name,
                         source=sheet.source, line=1)
        missing = [c for c in kind.required if c not in sheet.header]
        if missing:
            self.problem(None, f"required column(s) missing: {', '.join(missing)}", kind.name,
                         source=sheet.source, line=1)
        if unknown or missing:
            return
        batch = self.batches.setdefault(kind.name, Batch(kind, []))
        for name in sheet.header:
            if name and name not in batch.columns:
                batch.columns.append(name)
        for line, cells in sheet.rows:
            row = Row(sheet.source, line, {})
            if "\x00extra" in cells:
                self.problem(row, "more cells than header columns", kind.name)
            ok = True
            for name, text in cells.items():
                if name == "\x00extra":
                    continue
                column = kind.columns_by_name[name]
                try:
                    value = parse_cell(column, text, self.zone)
                except CellError as exc:
                    self.problem(row, str(exc), kind.name, cells.get(kind.key[0], ""), name)
                    ok = False
                    continue
                if column.required and (value is None or value == "" or value == []):
                    self.problem(row, "required value is empty", kind.name,
                                 cells.get(kind.key[0], ""), name)
                    ok = False
                row.values[name] = value
            if ok:
                table = "devices" if kind.table == "devices" and kind.name != "network" else (
                    kind.name)
                seen_key = (table, row.key(kind))
                first = self.seen.get(seen_key)
                if first is not None:
                    self.problem(row, f"duplicate: the same key is also at {first.source}:"
                                      f"{first.line}", kind.name, row.key(kind))
                    continue
                self.seen[seen_key] = row
                batch.rows.append(row)

    # ---------------------------------------------------------------- cross checks

    def rows(self, kind: str) -> list[Row]:
        batch = self.batches.get(kind)
        return batch.rows if batch else []

    def imported(self, table: str) -> dict[str, Row]:
        out: dict[str, Row] = {}
        kinds = {"devices": ("devices", "meters")}.get(table, (table,))
        for kind_name in kinds:
            kind = KINDS.get(kind_name)
            if kind is None:
                continue
            for row in self.rows(kind_name):
                out[row.key(kind)] = row
        return out

    def exists(self, table: str, key: str) -> bool:
        return key in self.keys.ids.get(table, set()) or key in self.imported(table)

    def check(self) -> None:
        self._imported_cache = {t: self.imported(t) for t in KINDS}
        self._imported_cache["devices"] = self.imported("devices")
        for kind_name in KIND_ORDER:
            kind = KINDS[kind_name]
            for row in self.rows(kind_name):
                key = row.key(kind)
                for name, value in row.values.items():
                    column = kind.columns_by_name[name]
                    if column.ref and value not in (None, "") and not (
                            value in self.keys.ids.get(column.ref, set())
                            or value in self._imported_cache.get(column.ref, {})):
                        self.problem(row, f"unknown {column.ref.rstrip('s')} '{value}'",
                                     kind.name, key, name)
                getattr(self, f"_check_{kind_name}", lambda r, k: None)(row, key)
        self._check_device_tree()

    def _check_device_types(self, row: Row, key: str) -> None:
        if row.values.get("kind") == "meter" and not row.values.get("medium"):
            self.problem(row, "a meter type needs its medium", "device_types", key, "medium")

    def _location_kind(self, location_id: str) -> str | None:
        row = self._imported_cache["locations"].get(location_id)
        if row is not None:
            return str(row.values.get("kind"))
        known = self.keys.locations.get(location_id)
        return known[0] if known else None

    def _check_locations(self, row: Row, key: str) -> None:
        kind, parent = row.values.get("kind"), row.values.get("parent_id")
        if kind == "region" and parent:
            self.problem(row, "a region has no parent", "locations", key, "parent_id")
        elif kind != "region" and not parent:
            self.problem(row, f"a {kind} needs a parent place", "locations", key, "parent_id")
        elif parent:
            parent_kind = self._location_kind(parent)
            if parent_kind and LOCATION_RANK[parent_kind] >= LOCATION_RANK[str(kind)]:
                self.problem(row, f"a {kind} cannot lie inside a {parent_kind} ('{parent}')",
                             "locations", key, "parent_id")
        lat, lon = row.values.get("latitude"), row.values.get("longitude")
        if lat is not None and not -90 <= lat <= 90:
            self.problem(row, f"latitude {lat} is outside -90..90", "locations", key, "latitude")
        if lon is not None and not -180 <= lon <= 180:
            self.problem(row, f"longitude {lon} is outside -180..180", "locations", key,
                         "longitude")

    def _check_accounts(self, row: Row, key: str) -> None:
        a1, a2 = row.values.get("alarm1"), row.values.get("alarm2")
        if a1 is not None and a2 is not None and a2 > a1:
            self.problem(row, f"alarm2 ({a2}) must not be above alarm1 ({a1})", "accounts", key,
                         "alarm2")
        if (row.values.get("max_balance") or 1) <= 0:
            self.problem(row, "max_balance must be positive", "accounts", key, "max_balance")
        if (row.values.get("overdraft_limit") or 0) < 0:
            self.problem(row, "overdraft_limit must not be negative", "accounts", key,
                         "overdraft_limit")

    def _check_tariff_versions(self, row: Row, key: str) -> None:
        v = row.values
        if v.get("version", 1) < 1:
            self.problem(row, "version starts at 1", "tariff_versions", key, "version")
        if v.get("effective_to") and v["effective_to"] <= v["effective_from"]:
            self.problem(row, "effective_to must be after effective_from", "tariff_versions",
                         key, "effective_to")
        tiers = v.get("tiers") or []
        if v.get("kind") in ("step", "flat") and not tiers:
            self.problem(row, f"a {v['kind']} tariff needs tiers (upper:price;…)",
                         "tariff_versions", key, "tiers")
        if v.get("kind") == "flat" and len(tiers) > 1:
            self.problem(row, "a flat tariff has exactly one tier", "tariff_versions", key,
                         "tiers")
        if tiers and tiers[-1]["upper"] is not None and v.get("kind") == "step":
            self.problem(row, "the last step needs no upper limit (write ':price')",
                         "tariff_versions", key, "tiers")

    def _check_collection_plans(self, row: Row, key: str) -> None:
        v = row.values
        if v.get("interval_s") is None and not v.get("schedule"):
            self.problem(row, "give interval_s or a cron schedule", "collection_plans", key,
                         "interval_s")
        elif v.get("interval_s") is not None and v["interval_s"] < 60:
            self.problem(row, "interval_s must be at least 60", "collection_plans", key,
                         "interval_s")
        for target in v.get("targets") or []:
            target_kind, _, target_id = target.partition(":")
            table = TARGET_KINDS.get(target_kind)
            if table is None:
                self.problem(row, f"target '{target}': kind must be one of "
                                  f"{', '.join(TARGET_KINDS)}", "collection_plans", key,
                             "targets")
            elif table and not self.exists(table, target_id):
                self.problem(row, f"target '{target}': unknown {target_kind}",
                             "collection_plans", key, "targets")

    def _device_kind(self, device_id: str) -> str | None:
        row = self._imported_cache["devices"].get(device_id)
        dtype = row.values.get("device_type") if row is not None else None
        if dtype is None:
            known = self.keys.devices.get(device_id)
            if known is None:
                return None
            dtype = known[0]
        imported_type = self._imported_cache["device_types"].get(str(dtype))
        if imported_type is not None:
            return str(imported_type.values.get("kind"))
        known_type = self.keys.device_types.get(str(dtype))
        return known_type[0] if known_type else None

    def _check_device_row(self, row: Row, key: str, kind_name: str) -> None:
        v = row.values
        own_kind = self._device_kind(key)
        if kind_name == "meters" and own_kind not in (None, "meter"):
            self.problem(row, f"device type '{v.get('device_type')}' is a {own_kind}, not a "
                              "meter", kind_name, key, "device_type")
        if kind_name == "meters" and v.get("device_type"):
            dtype = self._imported_cache["device_types"].get(v["device_type"])
            type_medium = (dtype.values.get("medium") if dtype is not None else
                           self.keys.device_types.get(v["device_type"], ("", None))[1])
            if type_medium and v.get("medium") and type_medium != v["medium"]:
                self.problem(row, f"medium '{v['medium']}' differs from the device type's "
                                  f"'{type_medium}'", kind_name, key, "medium")
        if kind_name == "meters" and v.get("size"):
            size_medium = self.keys.meter_sizes.get(v["size"])
            if size_medium and v.get("medium") and size_medium != v["medium"]:
                self.problem(row, f"size {v['size']} is a {size_medium} size", kind_name, key,
                             "size")
        status = v.get("status")
        current = self.keys.devices.get(key)
        if status and current and status != current[2] and \
                (current[2], status) not in self.keys.transitions:
            self.problem(row, f"cannot go from {current[2]} to {status} (lifecycle)", kind_name,
                         key, "status")
        link = v.get("link_id")
        holder = self.link_holders.get(link) if link else None
        if holder is not None and holder != key:
            holder_row = self._imported_cache["devices"].get(holder)
            # Taken over only if the import moves the link away from its holder.
            if holder_row is None or holder_row.values.get("link_id", link) == link:
                self.problem(row, f"link '{link}' is held by device '{holder}'", kind_name,
                             key, "link_id")

    def _check_devices(self, row: Row, key: str) -> None:
        self._check_device_row(row, key, "devices")

    def _check_meters(self, row: Row, key: str) -> None:
        self._check_device_row(row, key, "meters")

    def _check_network(self, row: Row, key: str) -> None:
        if key not in self.keys.devices and key not in self._imported_cache["devices"]:
            return  # reported as unknown reference

    def _check_device_tree(self) -> None:
        parents: dict[str, str | None] = {k: v[3] for k, v in self.keys.devices.items()}
        rows: dict[str, tuple[Row, str]] = {}
        links: dict[str, str] = {}
        for kind_name in ("devices", "meters", "network"):
            kind = KINDS[kind_name]
            for row in self.rows(kind_name):
                key = row.key(kind)
                if "parent_device_id" in row.values:
                    parents[key] = row.values["parent_device_id"]
                elif key not in parents:
                    parents[key] = None
                rows[key] = (row, kind_name)
                link = row.values.get("link_id")
                if link:
                    if link in links and links[link] != key:
                        self.problem(row, f"link '{link}' is also given to '{links[link]}'",
                                     kind_name, key, "link_id")
                    links[link] = key
        for key, (row, kind_name) in rows.items():
            parent = parents.get(key)
            if not parent:
                continue
            own, theirs = self._device_kind(key), self._device_kind(parent)
            if own and theirs and DEVICE_RANK[theirs] <= DEVICE_RANK[own]:
                self.problem(row, f"a {own} cannot be connected below a {theirs} ('{parent}')",
                             kind_name, key, "parent_device_id")
                continue
            seen = {key}
            node: str | None = parent
            while node:
                if node in seen:
                    self.problem(row, "the collection network would contain a cycle through "
                                      f"'{parent}'", kind_name, key, "parent_device_id")
                    break
                seen.add(node)
                node = parents.get(node)

    # ---------------------------------------------------------------- order

    def ordered(self) -> list[Batch]:
        out = []
        for kind_name in KIND_ORDER:
            batch = self.batches.get(kind_name)
            if batch is None or not batch.rows:
                continue
            if batch.kind.parent:
                batch.rows = _parents_first(batch.rows, batch.kind)
            if kind_name in ("devices", "meters"):
                batch.rows.sort(key=lambda r: -DEVICE_RANK.get(
                    self._device_kind(r.key(batch.kind)) or "meter", 0))
                batch.rows = _parents_first(batch.rows, batch.kind)
            out.append(batch)
        return out


def _parents_first(rows: list[Row], kind: Kind) -> list[Row]:
    assert kind.parent is not None
    by_key = {row.key(kind): row for row in rows}
    done: set[str] = set()
    out: list[Row] = []

    def visit(row: Row, depth: int = 0) -> None:
        key = row.key(kind)
        if key in done or depth > 64:
            return
        parent = row.values.get(kind.parent or "")
        if parent in by_key:
            visit(by_key[parent], depth + 1)
        done.add(key)
        out.append(row)

    for row in rows:
        visit(row)
    return out


def validate(sheets: Iterable[RawSheet], keys: LedgerKeys,
             zone: ZoneInfo) -> tuple[list[Batch], list[Problem]]:
    """Parse and check every row; returns the batches to apply and every problem found."""
    validator = _Validator(keys, zone)
    for sheet in sheets:
        validator.add_sheet(sheet)
    validator.check()
    return validator.ordered(), validator.problems
