"""Batch import and export of the ledger: CSV and Excel files for devices, meters,
customers/accounts, tariffs, topology and collection plans, and a fast bulk loader.

``import_files`` reads every file (CSV: one kind per file, named after it or given with
``kind=``; Excel: one kind per sheet), validates *everything* first against the ledger and the
rest of the import (:mod:`devices.importer.validate`) and then applies all of it in one
transaction — or nothing, raising :class:`~devices.errors.ImportRejectedError` whose
``problems`` give file, line, key, column and reason for every bad row. Re-importing the same
files changes nothing. Every run (applied, unchanged, rejected, dry run) is recorded in
``ledger.import_runs``; ledger history records the actor and the file names as the reason.

``export_ledger`` writes the same format back; ``bulk_load`` loads typed records fast.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from devices.errors import ImportRejectedError
from devices.importer.apply import TableCount, apply_rows, bulk_load
from devices.importer.export import EXPORT_GROUPS, export_ledger, resolve_kinds
from devices.importer.files import CellError, RawSheet, read_file
from devices.importer.spec import KIND_ORDER, KINDS, kind_of
from devices.importer.validate import LedgerKeys, Problem, validate
from devices.ledger.session import acting_as

__all__ = [
    "EXPORT_GROUPS",
    "KINDS",
    "KIND_ORDER",
    "ImportReport",
    "Problem",
    "TableCount",
    "bulk_load",
    "export_ledger",
    "import_files",
    "kind_of",
    "resolve_kinds",
]


@dataclass
class ImportReport:
    """What an import did (or would do, for a dry run)."""

    files: list[dict[str, str]]
    counts: dict[str, TableCount] = field(default_factory=dict)
    dry_run: bool = False

    @property
    def changed(self) -> int:
        return sum(c.inserted + c.updated for c in self.counts.values())

    def summary(self) -> str:
        parts = [f"{kind}: {c.rows} rows, {c.inserted} new, {c.updated} changed, "
                 f"{c.unchanged} unchanged" for kind, c in self.counts.items()]
        return "; ".join(parts) or "no rows"


def _describe(paths: Sequence[Path]) -> list[dict[str, str]]:
    return [{"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
            for p in paths]


def _record(conn: psycopg.Connection, actor: str, files: list[dict[str, str]], status: str,
            counts: dict[str, TableCount], problems: Sequence[Problem]) -> None:
    conn.execute(
        "INSERT INTO ledger.import_runs (actor, files, status, counts, problems) "
        "VALUES (%s, %s, %s, %s, %s)",
        (actor, json.dumps(files), status,
         json.dumps({k: {"rows": c.rows, "inserted": c.inserted, "updated": c.updated}
                     for k, c in counts.items()}),
         json.dumps([{"source": p.source, "line": p.line, "kind": p.kind, "key": p.key,
                      "column": p.column, "reason": p.reason} for p in problems[:1000]])))


def import_files(conn: psycopg.Connection, paths: Sequence[Path], *, actor: str,
                 timezone: str = "Asia/Shanghai", kind: str | None = None,
                 dry_run: bool = False) -> ImportReport:
    """Validate every row of ``paths`` and apply them all in one transaction, or none.

    ``conn`` acts as the api role and must not be inside a transaction. Naive dates and times
    in the files are in ``timezone`` (the utility's). Raises
    :class:`~devices.errors.ImportRejectedError` with ``problems`` (a list of
    :class:`Problem`) when anything is wrong. ``dry_run`` validates and applies inside a
    transaction that is rolled back, so the counts say what an import would do.
    """
    try:
        report = _import(conn, paths, actor=actor, timezone=timezone, kind=kind,
                         dry_run=dry_run)
    except _DryRunDoneError as done:
        _record_outcome(conn, actor, done.report.files, "dry_run", done.report.counts, [])
        return done.report
    except ImportRejectedError as exc:
        _record_outcome(conn, actor, _describe(paths), "rejected", {},
                        exc.context.get("problems", []))
        raise
    _record_outcome(conn, actor, report.files, "unchanged" if report.changed == 0
                    else "applied", report.counts, [])
    return report


def _import(conn: psycopg.Connection, paths: Sequence[Path], *, actor: str, timezone: str,
            kind: str | None, dry_run: bool) -> ImportReport:
    zone = ZoneInfo(timezone)
    if kind is not None and kind not in KINDS:
        kind = kind_of(kind) or kind
    files = _describe(paths)
    sheets: list[RawSheet] = []
    read_problems: list[Problem] = []
    for path in paths:
        try:
            sheets.extend(read_file(path, kind))
        except (CellError, OSError, UnicodeDecodeError, ValueError) as exc:
            read_problems.append(Problem(str(path), 0, f"cannot read the file: {exc}"))
    report = ImportReport(files=files, dry_run=dry_run)
    with conn.transaction():
        keys = LedgerKeys.load(conn)
        batches, problems = validate(sheets, keys, zone)
        problems = read_problems + problems
        if problems:
            raise _rejected(problems)
        acting_as(conn, actor, "import " + ", ".join(f["name"] for f in files))
        try:
            for batch in batches:
                report.counts[batch.kind.name] = apply_rows(
                    conn, batch.kind, batch.columns, [r.values for r in batch.rows])
        except psycopg.Error as exc:
            # Validation should have caught it; the database still has the last word.
            diag = exc.diag
            raise _rejected([Problem(
                "ledger", 0, f"the ledger refused the import: {diag.message_primary or exc}"
                + (f" ({diag.message_hint})" if diag.message_hint else ""))]) from None
        if dry_run:
            raise _DryRunDoneError(report)
    return report


class _DryRunDoneError(Exception):
    def __init__(self, report: ImportReport) -> None:
        self.report = report


def _rejected(problems: list[Problem]) -> ImportRejectedError:
    problems = sorted(problems, key=lambda p: (p.source, p.line))
    lines = len({(p.source, p.line) for p in problems})
    return ImportRejectedError(
        f"import rejected: {len(problems)} problem(s) in {lines} row(s), the first: "
        f"{problems[0]}; nothing was changed",
        hint="fix the rows listed and import the same files again", problems=problems)


def _record_outcome(conn: psycopg.Connection, actor: str, files: list[dict[str, str]],
                    status: str, counts: dict[str, TableCount],
                    problems: Sequence[Problem]) -> None:
    with conn.transaction():
        _record(conn, actor, files, status, counts, problems)
