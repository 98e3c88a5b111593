"""``unimeter storage``: retention of the stored data, and how much of it there is.

``policies`` applies the ``retention`` settings (``UNIMETER_RETENTION_*``): TimescaleDB
retention policies, or batched deletes on plain PostgreSQL (run it nightly from the
scheduler). ``status`` shows the size of every stored table.
"""

from __future__ import annotations

import click

from unimeter.config import load_config


@click.group(name="storage")
def command() -> None:
    """Retention policies and sizes of the stored data."""


@command.command(name="policies")
@click.option("--dry-run", is_flag=True, help="Show what would change, change nothing.")
def policies(dry_run: bool) -> None:
    """Apply the retention settings (days per kind of data; 0 keeps it for ever)."""
    from schemas.settings import load_settings
    from sinks.retention import apply_retention
    from sinks.settings import RetentionSettings

    config = load_config()
    retention = load_settings(RetentionSettings)
    for action in apply_retention(config.database, retention, config.utility, dry_run=dry_run):
        click.echo(f"  {action.relation:<36} {action.action}")


@command.command(name="status")
def status() -> None:
    """Rows (estimated) and size on disk of every table the sink and the aggregates keep."""
    import psycopg

    config = load_config()
    with psycopg.connect(config.database.conninfo("api"), autocommit=True) as conn:
        backend = conn.execute("SELECT value FROM unimeter_meta.settings WHERE key = 'backend'"
                               ).fetchone()
        timescale = backend is not None and backend[0] == "timescale"
        if timescale:
            rows = conn.execute(
                "SELECT format('%I.%I', hypertable_schema, hypertable_name), "
                "(SELECT sum(c.reltuples)::bigint FROM show_chunks(format('%I.%I', "
                "hypertable_schema, hypertable_name)) s JOIN pg_class c ON c.oid = s), "
                "hypertable_size(format('%I.%I', hypertable_schema, hypertable_name)::regclass),"
                " num_chunks, compression_enabled FROM timescaledb_information.hypertables "
                "WHERE hypertable_schema IN ('data', 'billing', 'ops') ORDER BY 1").fetchall()
        else:
            rows = conn.execute(
                "SELECT format('%I.%I', n.nspname, c.relname), c.reltuples::bigint, "
                "pg_total_relation_size(c.oid), NULL, NULL FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
                "AND n.nspname IN ('data', 'billing', 'ops', 'agg') ORDER BY 1").fetchall()
    click.echo(f"backend {'timescale' if timescale else 'postgres'}")
    for name, tuples, size, chunks, compressed in rows:
        extra = f"  {chunks} chunk(s){', compressed past the late window' if compressed else ''}" \
            if chunks is not None else ""
        click.echo(f"  {name:<36} ~{max(tuples or 0, 0):>12,} rows  "
                   f"{(size or 0) / 1048576:>10,.1f} MiB{extra}")
