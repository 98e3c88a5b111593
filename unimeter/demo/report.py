"""The demo's report: consumption by customer type per local day, as PNG charts and one HTML
page that shows them with the figures behind them.

Strategy: matplotlib (already a dependency, headless ``Agg`` backend) draws one PNG per
customer type, one panel per medium (units differ: m³ and kWh are never summed), bars per
local day from ``agg.dimension_consumption_daily``. PNG files open anywhere and embed in any
document; the HTML page needs no JavaScript or network.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["ReportFiles", "write_report"]


@dataclass(frozen=True)
class ReportFiles:
    index: Path
    charts: dict[str, Path]  # customer type -> PNG


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def write_report(days: list[tuple[Any, str, str, str, Decimal]], out_dir: Path, *,
                 title: str, summary_text: str) -> ReportFiles:
    """``days``: (local day, customer type, medium, unit, consumption) rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, dict[tuple[str, str], dict[str, float]]] = defaultdict(
        lambda: defaultdict(dict))
    all_days = sorted({str(d) for d, *_ in days})
    for day, ctype, medium, unit, value in days:
        by_type[ctype or "unknown"][(medium or "unknown", unit)][str(day)] = float(value or 0)
    charts: dict[str, Path] = {}
    colours = {"gas": "#d9822b", "water": "#2b7bd9", "electricity": "#7b2bd9"}
    for ctype, series in sorted(by_type.items()):
        panels = sorted(series)
        fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), squeeze=False)
        for ax, (medium, unit) in zip(axes[:, 0], panels, strict=True):
            values = [series[(medium, unit)].get(d, 0.0) for d in all_days]
            ax.bar(all_days, values, color=colours.get(medium, "#555555"))
            ax.set_ylabel(unit)
            ax.set_title(f"{medium}", loc="left", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        fig.suptitle(f"Consumption per local day — {ctype}")
        fig.tight_layout()
        path = out_dir / f"consumption_{_safe(ctype)}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        charts[ctype] = path
    rows = "\n".join(
        f"<tr><td>{html.escape(str(d))}</td><td>{html.escape(c)}</td><td>{html.escape(m)}</td>"
        f"<td style='text-align:right'>{float(v or 0):,.1f}</td><td>{html.escape(u)}</td></tr>"
        for d, c, m, u, v in days)
    images = "\n".join(f"<h2>{html.escape(c)}</h2><img src='{p.name}' alt='{html.escape(c)}'>"
                       for c, p in charts.items())
    index = out_dir / "index.html"
    index.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
td,th{{padding:2px 8px;border-bottom:1px solid #ddd}} pre{{background:#f6f6f6;padding:1em;
overflow-x:auto}}</style></head>
<body><h1>{html.escape(title)}</h1>
{images}
<h2>Daily consumption by customer type (agg.dimension_consumption_daily)</h2>
<table><tr><th>local day</th><th>customer type</th><th>medium</th><th>consumption</th>
<th>unit</th></tr>
{rows}
</table>
<h2>Summary</h2><pre>{html.escape(summary_text)}</pre>
</body></html>
""", encoding="utf-8")
    return ReportFiles(index=index, charts=charts)
