"""The fault report: the oracle's verdict plus what was injected, as text and as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unimeter.faults.oracle import CLASSES, Verdict

__all__ = ["format_verdict", "write_report"]


def format_verdict(verdict: Verdict) -> str:
    lines = [f"readings sent {verdict.sent:,}, acknowledged {verdict.acknowledged:,}"]
    header = f"  {'stage':<10}" + "".join(f"{c:>12}" for c in CLASSES)
    lines.append(header)
    for stage, counts in verdict.classes.items():
        lines.append(f"  {stage:<10}" + "".join(f"{counts.get(c, 0):>12,}" for c in CLASSES)
                     + (f"   (+{counts['estimates']:,} estimates)" if counts.get("estimates")
                        else "")
                     + (f"   ({counts['flip_flops']:,} keys revised back to an earlier result)"
                        if counts.get("flip_flops") else ""))
    c = verdict.consumption
    if c:
        lines.append(f"consumption: {c['channels']:,} meter registers, log {c['expected_total']}"
                     f", stored {c['stored_total']}, differing {c['differing_meters']}")
    b = verdict.billing
    if b:
        lines.append(f"billing: {b['accounts']:,} accounts, recomputed {b['expected_volume']} "
                     f"worth {b['expected_value']} ({b['expected_amount']} rounded per "
                     f"advance), stored {b['stored_volume']} worth {b['stored_value']} "
                     f"({b['stored_amount']} in {b['stored_charges']:,} charges; rounding of "
                     f"corrections {b['rounding_difference']}), differing "
                     f"{b['differing_accounts']}, doubled charges {b['duplicated_charges']}, "
                     f"misrounded {b['misrounded_charges']}")
    for kind, shown in sorted(verdict.examples.items()):
        lines.append(f"  e.g. {kind}: " + "; ".join(shown[:3]))
    lines.append(f"verdict: {'PASS' if verdict.passed else 'FAIL'} — lost {verdict.lost}, "
                 f"duplicated {verdict.duplicated}, wrong {verdict.wrong}, totals "
                 f"{'equal' if verdict.totals_equal else 'DIFFER'}")
    return "\n".join(lines)


def write_report(path: Path, verdict: Verdict, extra: Mapping[str, Any] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**(extra or {}), "verdict": verdict.as_dict()}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
