"""One self-contained HTML report: leaderboard, plots, retention funnels, score histograms, galleries.

Everything is inline (CSS, PNG plots and thumbnails as ``data:`` URIs), so the file can be mailed,
attached to an issue or opened offline.
"""

from __future__ import annotations

import html
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.errors import DataCompError
from datacomp.io import write_bytes_atomic
from datacomp.report import plots
from datacomp.report.experiments import AGGREGATES, Experiment
from datacomp.report.leaderboard import EMBEDDED_HEADINGS, HEADINGS, fmt_size, fmt_value, leaderboard_rows
from datacomp.report.pool import PoolScores, Sample, pick_gallery, read_samples, read_scores, resolve_pool
from datacomp.uids import read_subset

log = logging.getLogger(__name__)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;margin:8px 0}th,td{padding:4px 10px;border-bottom:1px solid #eee}
th{background:#f4f4f4;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.best td{font-weight:bold}.muted{color:#777;font-size:.9em}
.grid{display:flex;flex-wrap:wrap;gap:8px}.card{width:140px;font-size:11px;line-height:1.25}
.card img{width:96px;height:96px;image-rendering:pixelated;display:block;border:1px solid #ccc}
.kept img{border-color:#55a868}.dropped img{border-color:#c44e52}
.plot{max-width:100%}
"""


def _funnel(summary: dict[str, Any] | None) -> tuple[int, list[tuple[str, int]], int] | None:
    """``(pool, [(rule, removed)], kept)`` from a filter summary, whichever spelling it uses."""
    if not summary:
        return None
    pool = next((summary[k] for k in ("pool_size", "total", "pool", "n_total") if isinstance(summary.get(k), int)),
                None)
    kept = next((summary[k] for k in ("kept", "subset_size", "n_kept") if isinstance(summary.get(k), int)), None)
    if pool is None or kept is None:
        return None
    removed = next((summary[k] for k in ("removed", "removed_per_rule", "removed_by_rule", "dropped")
                    if summary.get(k) is not None), {})
    if isinstance(removed, dict):
        steps = [(str(k), int(v)) for k, v in removed.items() if isinstance(v, int | float)]
    else:
        steps = [(str(r.get("rule") or r.get("name")), int(r.get("removed", 0))) for r in removed
                 if isinstance(r, dict)]
    return int(pool), steps, int(kept)


def _leaderboard_html(rows: list[dict[str, Any]], embedded: bool) -> str:
    heads = EMBEDDED_HEADINGS if embedded else HEADINGS
    best = max((r["Average"][0] for r in rows if not math.isnan(r["Average"][0])), default=None)
    out = ['<table id="leaderboard"><thead><tr><th>Filtering strategy</th><th>Dataset size</th>']
    out += [f"<th>{html.escape(heads[k])}</th>" for k in AGGREGATES] + ["<th>seeds</th></tr></thead><tbody>"]
    for r in rows:
        cls = ' class="best"' if best is not None and r["Average"][0] == best else ""
        cells = "".join(f'<td class="num">{html.escape(fmt_value(*r[k], seeds=r["seeds"]))}</td>' for k in AGGREGATES)
        out.append(f'<tr{cls}><td>{html.escape(r["name"])}</td><td class="num">{fmt_size(r["size"])}</td>'
                   f'{cells}<td class="num">{r["seeds"]}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _comparison_section(experiments: list[Experiment], baseline: str | None, level: float) -> list[str]:
    """The comparison table (mean ± std, difference to the baseline with its interval) and its plot."""
    from datacomp.report.compare import _columns, compare_experiments, legend, mean_interval, table_cells

    cmp = compare_experiments(experiments, baseline, level)
    out = ['<table id="comparison"><thead><tr><th>Method</th><th>Dataset size</th><th>seeds</th>']
    out += [f"<th>{html.escape(h)}</th>" for h, _ in _columns(cmp)] + ["</tr></thead><tbody>"]
    for r in cmp.rows:
        cells = "".join(f'<td class="num">{"<b>" + html.escape(c) + "</b>" if c.endswith(" *") else html.escape(c)}'
                        "</td>" for c in table_cells(cmp, r))
        cls = ' class="baseline"' if r.name == cmp.baseline else ""
        out.append(f'<tr{cls}><td>{html.escape(r.name)}</td><td class="num">{fmt_size(r.size)}</td>'
                   f'<td class="num">{len(r.seeds)}</td>{cells}</tr>')
    out.append("</tbody></table>")
    avg = cmp.average
    means = [r.stats[avg].mean for r in cmp.rows]
    ivs = [mean_interval(r.stats[avg], cmp.level) for r in cmp.rows]
    lows, highs = [lo for lo, _ in ivs], [hi for _, hi in ivs]
    return ["<h2>Comparison with confidence</h2>", "".join(out), f'<p class="muted">{html.escape(legend(cmp))}</p>',
            _img(plots.compare_intervals([r.name for r in cmp.rows], means, lows, highs, cmp.baseline, avg, cmp.level),
                 f"{avg} per method with interval")]


def _img(uri: str, alt: str) -> str:
    return f'<img class="plot" src="{uri}" alt="{html.escape(alt)}">'


def _gallery(samples: list[Sample], cls: str) -> str:
    if not samples:
        return '<p class="muted">none in the sampled shards</p>'
    cards = [f'<div class="card {cls}"><img src="{s.image_uri}" alt="{html.escape(s.uid)}">'
             f"{html.escape(s.caption[:120])}</div>" for s in samples]
    return f'<div class="grid gallery-{cls}">' + "".join(cards) + "</div>"


def build_report(
    experiments: list[Experiment],
    output: str | Path,
    pool: str | Path | None = None,
    gallery_size: int = 12,
    seed: int = 0,
    title: str = "DataComp experiments",
    baseline: str | None = None,
    level: float = 0.95,
) -> Path:
    """Write the report for ``experiments`` to ``output``; ``pool`` adds histograms and galleries.

    ``baseline``: the method the comparison section measures the others against (default
    ``clip_score_l14_30`` when present, else the first experiment); ``level``: of its intervals."""
    if not experiments:
        raise DataCompError("no experiments to report: pass one or more experiment directories")
    output = Path(output)
    rows = leaderboard_rows(experiments)
    embedded = all(r.suite == "embedded" for e in experiments for r in e.runs)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="muted">{len(experiments)} experiment(s); generated {stamp}'
             " by <code>datacomp report</code>. Values are mean ± sample std over training seeds.</p>",
             "<h2>Leaderboard</h2>", _leaderboard_html(rows, embedded)]

    parts += ["<h2>Average score</h2>", _img(plots.bar_average(rows), "average per experiment")]
    if any(e.runs for e in experiments):
        parts += _comparison_section(experiments, baseline, level)
    if any(r["size"] for r in rows):
        parts += ["<h2>Average vs subset size</h2>", _img(plots.scatter_size(rows), "average vs subset size")]
    task_means = [e.task_means() for e in experiments]
    tasks = sorted({t for tm in task_means for t in tm})
    if tasks:
        vals = np.array([[tm.get(t, math.nan) for t in tasks] for tm in task_means], dtype=float)
        parts += ["<h2>Per-task main metric</h2>",
                  _img(plots.heatmap([e.name for e in experiments], tasks, vals), "per-task heat map")]

    parts.append("<h2>Retention per filter rule</h2>")
    any_funnel = False
    for e in experiments:
        f = _funnel(e.summary)
        if f is None:
            continue
        any_funnel = True
        pool_n, steps, kept = f
        parts += [f"<h3>{html.escape(e.name)}</h3>",
                  f'<p class="muted">kept {kept:,} of {pool_n:,} ({kept / max(pool_n, 1):.1%}). '
                  "Rules apply in order: each bar is what that rule removed of the samples the earlier rules kept.</p>",
                  _img(plots.funnel(pool_n, steps, kept), f"retention funnel {e.name}")]
    if not any_funnel:
        parts.append('<p class="muted">no filter summaries found in the experiment directories</p>')

    if pool is not None:
        parts += _pool_sections(experiments, pool, gallery_size, seed)
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    write_bytes_atomic(output, page.encode())
    log.info("wrote %s (%.1f kB)", output, output.stat().st_size / 1e3)
    return output


def _pool_sections(experiments: list[Experiment], pool: str | Path, n: int, seed: int) -> list[str]:
    meta_dir, shards_dir = resolve_pool(pool)
    scores: PoolScores | None = read_scores(meta_dir) if meta_dir else None
    samples = read_samples(shards_dir) if shards_dir else []
    parts = ["<h2>CLIP scores: kept vs dropped</h2>"] if scores is not None else []
    gal = ["<h2>Samples: kept and dropped</h2>",
           f'<p class="muted">{n} random kept and dropped samples per experiment, drawn from the first '
           f"{len(samples):,} downloaded samples of the pool (seed {seed}).</p>"] if samples else []
    for e in experiments:
        if e.subset is None:
            continue
        subset = read_subset(e.subset)
        if scores is not None:
            show = {k: v for k, v in scores.scores.items() if np.isfinite(v).any()}
            if show:
                parts += [f"<h3>{html.escape(e.name)}</h3>",
                          _img(plots.score_histograms(show, scores.kept_mask(subset)), f"CLIP scores {e.name}")]
        if samples:
            kept, dropped = pick_gallery(samples, subset, n, seed)
            gal += [f"<h3>{html.escape(e.name)}</h3>", "<h4>kept</h4>", _gallery(kept, "kept"),
                    "<h4>dropped</h4>", _gallery(dropped, "dropped")]
    return parts + gal
