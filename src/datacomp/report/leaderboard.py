"""The leaderboard in DataComp's layout, and the paper's Table 3 baselines to compare against."""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from typing import Any

from datacomp.errors import DataCompError
from datacomp.report.experiments import AGGREGATES, Experiment

# Column headings as the paper prints them, keyed by the aggregate names.
HEADINGS = {
    "ImageNet": "ImageNet",
    "ImageNet dist. shifts": "ImageNet dist. shifts",
    "VTAB": "VTAB",
    "Retrieval": "Retrieval",
    "Average": "Average over 38 datasets",
}
EMBEDDED_HEADINGS = {
    "ImageNet": "ImageNet analog",
    "ImageNet dist. shifts": "dist. shifts",
    "VTAB": "VTAB-like",
    "Retrieval": "Retrieval",
    "Average": "Average",
}


@cache
def paper_table() -> dict[str, Any]:
    """The shipped copy of the paper's Table 3 (plus the Appendix R B/32 CLIP-score rows)."""
    text = resources.files("datacomp.report").joinpath("paper_table3.json").read_text()
    return json.loads(text)


def paper_rows(scale: str) -> list[dict[str, Any]]:
    """The paper's baseline rows for ``scale``; the embedded and debug scales have none."""
    scales = paper_table()["scales"]
    if scale not in scales:
        raise DataCompError(
            f"the paper reports no baselines for scale {scale!r}: choose one of {', '.join(scales)}"
        )
    return scales[scale]


def leaderboard_rows(experiments: list[Experiment]) -> list[dict[str, Any]]:
    """One row per experiment: name, size, seeds and ``(mean, spread)`` per aggregate."""
    rows = []
    for e in experiments:
        st = e.stats()
        rows.append({
            "name": e.name,
            "size": e.size,
            "seeds": max((n for _, _, n in st.values()), default=0),
            **{k: (st[k][0], st[k][1]) for k in AGGREGATES},
        })
    return rows


def fmt_value(mean: float, spread: float | None = None, seeds: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if seeds > 1 and spread is not None and not math.isnan(spread):
        return f"{mean:.3f} ± {spread:.3f}"
    return f"{mean:.3f}"


def fmt_size(n: int | None) -> str:
    if n is None:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:,}"


def leaderboard_table(rows: list[dict[str, Any]], title: str, embedded: bool = False,
                      paper: list[dict[str, Any]] | None = None):
    """A rich table: the user's rows (best average in bold), then the paper's rows when given."""
    from rich.table import Table

    heads = EMBEDDED_HEADINGS if embedded else HEADINGS
    t = Table(title=title)
    t.add_column("Filtering strategy")
    t.add_column("Dataset size", justify="right")
    for k in AGGREGATES:
        t.add_column(heads[k], justify="right")
    if any(r.get("seeds", 1) > 1 for r in rows):
        t.add_column("seeds", justify="right")
    best = max((r["Average"][0] for r in rows if not math.isnan(r["Average"][0])), default=None)
    for r in rows:
        cells = [fmt_value(*r[k], seeds=r.get("seeds", 1)) for k in AGGREGATES]
        if best is not None and r["Average"][0] == best:
            cells[-1] = f"[bold]{cells[-1]}[/bold]"
        extra = [str(r["seeds"])] if len(t.columns) > 2 + len(AGGREGATES) else []
        t.add_row(r["name"], fmt_size(r["size"]), *cells, *extra)
    if paper:
        t.add_section()
        for p in paper:
            extra = [""] if len(t.columns) > 2 + len(AGGREGATES) else []
            t.add_row(f"[dim]paper: {p['strategy']}[/dim]", f"[dim]{fmt_size(p['size'])}[/dim]",
                      *[f"[dim]{p[k]:.3f}[/dim]" for k in AGGREGATES], *extra)
    return t


def compare_to_paper(rows: list[dict[str, Any]], scale: str) -> list[dict[str, Any]]:
    """Each user row placed against the paper: rank of its average among the paper's baselines."""
    paper = paper_rows(scale)
    out = []
    for r in rows:
        avg = r["Average"][0]
        beaten = [p["strategy"] for p in paper if not math.isnan(avg) and avg > p["Average"]]
        best = max(paper, key=lambda p: p["Average"])
        out.append({
            "name": r["name"],
            "Average": avg,
            "beats": beaten,
            "delta_vs_best": None if math.isnan(avg) else avg - best["Average"],
            "best_baseline": best["strategy"],
        })
    return out


def rows_to_json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leaderboard rows as strict JSON (NaN becomes null), for records and benchmarks."""

    def clean(v: float) -> float | None:
        return None if v is None or math.isnan(v) else round(float(v), 6)

    return [{"name": r["name"], "size": r["size"], "seeds": r["seeds"],
             **{k: {"mean": clean(r[k][0]), "spread": clean(r[k][1])} for k in AGGREGATES}} for r in rows]
