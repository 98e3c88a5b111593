"""``unimeter audit verify | head | show``: the hash-chained audit log of the control plane.

``verify`` walks the whole chain and exits 1 at the first record whose content, link or
number is wrong. Publish ``head`` somewhere outside the database (a ticket, a signed mail)
and give it back to ``verify --expect SEQ:HASH`` to detect even a rewrite of the whole chain.
"""

from __future__ import annotations

import click
import psycopg

from devices import audit
from devices.commands.settings import CommandSettings
from schemas.settings import load_settings
from unimeter.cli._control import as_json_option, echo_json, echo_table
from unimeter.config import load_config


def _connect() -> psycopg.Connection:
    return psycopg.connect(load_config().database.conninfo("api"), autocommit=True)


@click.group(name="audit")
def command() -> None:
    """Verify and read the append-only, hash-chained audit log."""


@command.command(name="verify")
@click.option("--expect", default=None, metavar="SEQ:HASH",
              help="A head published earlier that must still be part of the chain.")
@as_json_option
def verify(expect: str | None, as_json: bool) -> int:
    """Check every record's hash and link; exit 1 when the log was tampered with."""
    expected = None
    if expect:
        seq, sep, digest = expect.partition(":")
        if not sep or not seq.isdigit() or len(digest) != 64:
            raise click.BadParameter("give SEQ:HASH as printed by `unimeter audit head`",
                                     param_hint="--expect")
        expected = audit.ChainHead(int(seq), digest)
    key = load_settings(CommandSettings).audit_key_bytes()
    with _connect() as conn:
        report = audit.verify_chain(conn, key=key, expect=expected)
    if as_json:
        echo_json(report.to_dict())
    elif report.ok:
        click.echo(f"audit log intact: {report.checked} records, head "
                   f"{report.head.seq}:{report.head.hash}")
    else:
        click.secho(f"AUDIT LOG TAMPERED: {report.problem} (first bad record "
                    f"{report.first_bad_seq}; {report.checked} records verified before it)",
                    fg="red", err=True)
    return 0 if report.ok else 1


@command.command(name="head")
def head() -> None:
    """Print the newest record's SEQ:HASH (publish it to anchor the chain)."""
    with _connect() as conn:
        h = audit.chain_head(conn)
    click.echo(f"{h.seq}:{h.hash}")


@command.command(name="show")
@click.option("--object", "object_ref", default=None, metavar="TYPE:ID",
              help="Only the records of one object, e.g. command:5c0f… or operator:op-li.")
@click.option("--after", "after_seq", default=0, type=int, help="Records after this number.")
@click.option("--limit", default=50, type=click.IntRange(1, 10000), show_default=True)
@as_json_option
def show(object_ref: str | None, after_seq: int, limit: int, as_json: bool) -> None:
    """Audit records in order."""
    object_type = object_id = None
    if object_ref:
        object_type, _, object_id = object_ref.partition(":")
    with _connect() as conn, conn.transaction():
        rows = [{"seq": r.seq, "ts": r.ts.isoformat(timespec="seconds"), "actor": r.actor,
                 "action": r.action, "object": f"{r.object_type}:{r.object_id}",
                 "details": dict(r.details)}
                for r in audit.records(conn, object_type=object_type, object_id=object_id,
                                       after_seq=after_seq, limit=limit)]
    if as_json:
        echo_json(rows)
    else:
        echo_table([{**r, "details": str(r["details"])[:100]} for r in rows],
                   ("seq", "ts", "actor", "action", "object", "details"))
