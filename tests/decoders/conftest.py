"""Golden frames for the decoder tests (tests/data/frames)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data" / "frames"


def load_vectors(name: str = "frames.jsonl") -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate((DATA / name).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            row["id"] = f"{name}:{number}:{row['protocol']}"
            row["bytes"] = bytes.fromhex(row["hex"])
            rows.append(row)
    return rows


VECTORS = load_vectors("frames.jsonl")
CONSTRUCTED = load_vectors("constructed.jsonl")
