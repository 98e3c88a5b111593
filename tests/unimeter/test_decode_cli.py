"""``unimeter decode`` keeps the DESIGN.md §6 contract."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tests.decoders.conftest import CONSTRUCTED, VECTORS
from unimeter.cli.main import cli


def run(*args: str, input: str | None = None) -> tuple[int, list[dict]]:
    result = CliRunner().invoke(cli, ["decode", *args], input=input)
    lines = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    return result.exit_code, lines


def test_one_frame_gives_one_json_object_with_items_and_readings() -> None:
    code, docs = run("--protocol", "cjt188-2004", CONSTRUCTED[0]["hex"])
    assert code == 0
    assert len(docs) == 1
    doc = docs[0]
    assert doc["protocol"] == "cjt188-2004"
    assert doc["address"] == "78330011223344"
    assert doc["control"] == "0x81"
    assert doc["function"] == "read_data"
    items = {i["name"]: i for i in doc["items"]}
    assert items["current_volume"] == {"name": "current_volume", "value": "12345.67",
                                       "unit": "m3", "id": "901F"}
    readings = {r["register"]: r for r in doc["readings"]}
    assert readings["volume"]["value"] == "12345.67"
    assert readings["volume"]["unit"] == "m3"


def test_invalid_frame_gives_a_json_error_and_exit_status_1() -> None:
    bad = next(r for r in VECTORS if not r["checksum_ok"])
    code, docs = run("--protocol", bad["protocol"], bad["hex"])
    assert code == 1
    assert docs[0]["error"] == "ChecksumError"
    assert docs[0]["field"] == "checksum"
    assert docs[0]["offset"] == 18
    assert docs[0]["reason"]


def test_not_hex_is_an_error_too() -> None:
    code, docs = run("--protocol", "dlt645-2007", "68 ZZ")
    assert code == 1
    assert docs[0]["error"] == "HexError"


def test_unknown_protocol() -> None:
    code, docs = run("--protocol", "nope", "68")
    assert code == 1
    assert docs[0]["error"] == "UnknownProtocolError"


def test_back_to_back_frames_in_one_hex() -> None:
    rows = [r for r in VECTORS if r["protocol"] == "dlt645-2007" and r["frame_valid"]][:3]
    code, docs = run("--protocol", "dlt645-2007", " ".join(r["hex"] for r in rows))
    assert code == 0
    assert [d["hex"] for d in docs] == [r["hex"] for r in rows]


def test_jsonl_input(tmp_path: Path) -> None:
    lines = [{"protocol": r["protocol"], "hex": r["hex"]} for r in VECTORS
             if r["protocol"] in ("cjt188-2004", "dlt645-2007", "dlt645-1997")]
    path = tmp_path / "frames.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    code, docs = run("--jsonl", str(path))
    assert code == 1  # one invalid checksum and one bad line
    assert len(docs) == len(lines) + 1
    assert sum(1 for d in docs if "error" in d) == 2
    assert docs[-1]["error"] == "InputError"
