"""``unimeter decode``: decode meter frames to JSON (one object per frame).

The contract (DESIGN.md §6): ``unimeter decode --protocol NAME HEX`` prints one JSON object
per frame — protocol, address, control and function, every data item with its value and
unit, and the canonical readings the report template derives; ``--jsonl FILE`` reads
``{"protocol": ..., "hex": ...}`` lines (``-`` for stdin). An invalid frame prints a JSON
error object (reason, field path, byte offset, hex excerpt) and the exit status is 1.
Several frames back to back in one HEX are split with the protocol's framer.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import click

from decoders import DecodeError, Frame, Protocol, TrailingBytesError, apply_report, get_protocol
from decoders.frame import to_jsonable
from decoders.reports import ReportResult
from schemas.errors import UnimeterError

__all__ = ["command", "decode_hex"]


def _parse_hex(text: str) -> bytes:
    cleaned = "".join(text.split()).replace(":", "").replace("-", "")
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    return bytes.fromhex(cleaned)


def _frame_doc(frame: Frame, raw: bytes, report: ReportResult | None) -> dict[str, Any]:
    doc = frame.to_dict()
    doc["hex"] = raw.hex(" ").upper()
    if report is not None:
        doc["report"] = report.report
        doc["readings"] = [to_jsonable({k: getattr(r, k) for k in r.__struct_fields__})
                           for r in report.readings]
        doc["events"] = [to_jsonable({k: getattr(e, k) for k in e.__struct_fields__})
                         for e in report.events]
    else:
        doc["readings"] = []
        doc["events"] = []
    return doc


def _error_doc(error: UnimeterError, raw: bytes | None, protocol: str) -> dict[str, Any]:
    doc = {"protocol": protocol, **error.to_dict()}
    if raw is not None:
        doc["hex"] = raw.hex(" ").upper()
    return doc


def _decode_one(proto: Protocol, raw: bytes, timezone: str, with_report: bool
                ) -> dict[str, Any]:
    frame = proto.decode(raw)
    report = apply_report(frame, timezone=timezone) if with_report else None
    return _frame_doc(frame, raw, report)


def decode_hex(protocol: str, text: str, *, timezone: str = "Asia/Shanghai",
               with_report: bool = True) -> Iterator[tuple[bool, dict[str, Any]]]:
    """``(ok, JSON object)`` for each frame in ``text`` (hex)."""
    try:
        raw = _parse_hex(text)
    except ValueError as exc:
        yield False, {"protocol": protocol, "error": "HexError", "fault": "caller",
                      "reason": f"not hexadecimal: {exc}", "field": None, "offset": None}
        return
    try:
        proto = get_protocol(protocol)
    except UnimeterError as exc:
        yield False, _error_doc(exc, raw, protocol)
        return
    try:
        yield True, _decode_one(proto, raw, timezone, with_report)
        return
    except TrailingBytesError:
        pass  # several frames (or a frame and garbage): split them below
    except DecodeError as exc:
        yield False, _error_doc(exc, raw, protocol)
        return
    framer = proto.framer(max_buffer=max(65536, 2 * len(raw)))
    framer.feed(raw)
    position = 0
    while True:
        chunk = framer.next_frame()
        if not isinstance(chunk, bytes):
            break
        garbage = framer.take_garbage()
        if garbage:
            yield False, _garbage_doc(proto, garbage, position)
            position += len(garbage)
        try:
            yield True, _decode_one(proto, chunk, timezone, with_report)
        except DecodeError as exc:
            yield False, _error_doc(exc, chunk, protocol)
        position += len(chunk)
    rest = framer.take_garbage() + framer.close()
    if rest:
        yield False, _garbage_doc(proto, rest, position)


def _garbage_doc(proto: Protocol, garbage: bytes, position: int) -> dict[str, Any]:
    try:
        proto.decode(garbage)
    except DecodeError as exc:
        doc = _error_doc(exc, garbage, proto.name)
        doc["stream_offset"] = position
        return doc
    return {"protocol": proto.name, "error": "Garbage", "fault": "peer",
            "reason": f"{len(garbage)} bytes are not a frame", "field": None,
            "offset": position, "hex": garbage.hex(" ").upper()}


def _lines(stream: TextIO) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(stream, 1):
        if line.strip():
            yield number, line


@click.command(name="decode")
@click.option("--protocol", "-p", "protocol", default=None,
              help="Protocol name (or name:variant), e.g. cjt188-2004, dlt645-2007.")
@click.option("--jsonl", "jsonl", type=click.File("r"), default=None,
              help='Read {"protocol": ..., "hex": ...} lines from FILE ("-" = stdin).')
@click.option("--timezone", default="Asia/Shanghai", show_default=True,
              help="The meters' local time zone (meter clocks carry none).")
@click.option("--no-report", is_flag=True, help="Skip the canonical readings and events.")
@click.option("--pretty", is_flag=True, help="Indent the JSON.")
@click.option("--list", "list_protocols", is_flag=True, help="List the known protocols.")
@click.argument("hex_frames", nargs=-1)
def command(protocol: str | None, jsonl: TextIO | None, timezone: str, no_report: bool,
            pretty: bool, list_protocols: bool, hex_frames: tuple[str, ...]) -> int:
    """Decode meter frames to JSON; invalid frames give a JSON error and exit status 1."""
    from decoders import protocol_names

    if list_protocols:
        for name in protocol_names():
            proto = get_protocol(name)
            click.echo(f"{name:18} {proto.title}  variants: {', '.join(proto.variants)}")
        return 0
    indent = 2 if pretty else None
    failed = False

    def emit(ok: bool, doc: dict[str, Any]) -> None:
        nonlocal failed
        failed = failed or not ok
        click.echo(json.dumps(doc, ensure_ascii=False, indent=indent))

    if jsonl is not None:
        for number, line in _lines(jsonl):
            try:
                entry = json.loads(line)
                name = str(entry.get("protocol") or protocol or "")
                text = str(entry["hex"])
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                emit(False, {"error": "InputError", "fault": "caller", "line": number,
                             "reason": f"not a {{\"protocol\", \"hex\"}} JSON line: {exc}"})
                continue
            if not name:
                emit(False, {"error": "InputError", "fault": "caller", "line": number,
                             "reason": "no protocol on the line and no --protocol given"})
                continue
            for ok, doc in decode_hex(name, text, timezone=timezone,
                                      with_report=not no_report):
                emit(ok, {"line": number, **doc})
    else:
        if not protocol:
            raise click.UsageError("give --protocol NAME HEX, or --jsonl FILE "
                                   "(unimeter decode --list shows the protocols)")
        if not hex_frames:
            text = sys.stdin.read() if not sys.stdin.isatty() else ""
            if not text.strip():
                raise click.UsageError("give the frame as HEX (or pipe it on stdin)")
            hex_frames = (text,)
        for text in hex_frames:
            for ok, doc in decode_hex(protocol, text, timezone=timezone,
                                      with_report=not no_report):
                emit(ok, doc)
    if failed:
        click.get_current_context().exit(1)
    return 0
