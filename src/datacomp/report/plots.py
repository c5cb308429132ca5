"""Matplotlib figures for the report, returned as inline ``data:`` PNG URIs (no files beside the HTML)."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np


def _figure(w: float, h: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(w, h), dpi=100)


def to_data_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def bar_average(rows: list[dict[str, Any]]) -> str:
    """Average score per experiment, with the seed spread as error bars."""
    fig, ax = _figure(7, 0.45 * len(rows) + 1.2)
    names = [r["name"] for r in rows]
    means = [r["Average"][0] for r in rows]
    errs = [0 if math.isnan(r["Average"][1]) else r["Average"][1] for r in rows]
    y = np.arange(len(rows))
    ax.barh(y, means, xerr=errs, color="#4c72b0", capsize=3)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("Average (mean ± spread over seeds)")
    return to_data_uri(fig)


def scatter_size(rows: list[dict[str, Any]]) -> str:
    """Average against subset size: does keeping less data cost or pay?"""
    fig, ax = _figure(6, 4)
    for r in rows:
        if r["size"] is None:
            continue
        ax.errorbar(r["size"], r["Average"][0], yerr=r["Average"][1] or 0, fmt="o", capsize=3)
        ax.annotate(r["name"], (r["size"], r["Average"][0]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("subset size (samples)")
    ax.set_ylabel("Average")
    ax.grid(alpha=0.3)
    return to_data_uri(fig)


def heatmap(names: list[str], tasks: list[str], values: np.ndarray) -> str:
    """Per-task main metric: one row per task, one column per experiment, annotated."""
    vals = values.T  # tasks x experiments: long task names read best as row labels
    top = max(1e-6, float(np.nanmax(vals))) if np.isfinite(vals).any() else 1.0
    fig, ax = _figure(4 + 1.1 * len(names), 1.2 + 0.32 * len(tasks))
    im = ax.imshow(vals, aspect="auto", cmap="viridis", vmin=0, vmax=top)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.xaxis.tick_top()
    for lab in ax.get_xticklabels():
        lab.set_ha("left")
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            if not math.isnan(vals[i, j]):
                ax.text(j, i, f"{vals[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if vals[i, j] < 0.6 * top else "black")
    fig.colorbar(im, ax=ax, fraction=0.04)
    return to_data_uri(fig)


def funnel(pool: int, steps: list[tuple[str, int]], kept: int) -> str:
    """Pool size, samples removed per rule, and what is kept."""
    labels = ["pool"] + [f"- {name}" for name, _ in steps] + ["kept"]
    vals = [pool] + [n for _, n in steps] + [kept]
    colors = ["#8c8c8c"] + ["#dd8452"] * len(steps) + ["#55a868"]
    fig, ax = _figure(6, 0.35 * len(labels) + 1)
    y = np.arange(len(labels))
    ax.barh(y, vals, color=colors)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:,}", va="center", fontsize=7)
    ax.set_xlabel("samples")
    ax.set_xlim(0, pool * 1.2 if pool else 1)
    return to_data_uri(fig)


def score_histograms(scores: dict[str, np.ndarray], kept: np.ndarray) -> str:
    """One panel per CLIP score column: kept vs dropped distributions."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scores), figsize=(4.5 * len(scores), 3), dpi=100, squeeze=False)
    for ax, (name, s) in zip(axes[0], scores.items()):
        ok = np.isfinite(s)
        bins = np.linspace(np.nanmin(s[ok]), np.nanmax(s[ok]), 40) if ok.any() else 10
        ax.hist(s[ok & ~kept], bins=bins, alpha=0.6, label=f"dropped ({int((ok & ~kept).sum()):,})",
                color="#c44e52")
        ax.hist(s[ok & kept], bins=bins, alpha=0.6, label=f"kept ({int((ok & kept).sum()):,})", color="#55a868")
        ax.set_xlabel(name)
        ax.legend(fontsize=7)
    return to_data_uri(fig)


def compare_intervals(names: list[str], means: list[float], lows: list[float], highs: list[float],
                      baseline: str, label: str = "Average", level: float = 0.95) -> str:
    """Each method's mean on one aggregate with its interval over seeds; the baseline's mean is a dashed line."""
    fig, ax = _figure(7, 0.45 * len(names) + 1.4)
    y = np.arange(len(names))
    m = np.asarray(means, dtype=float)
    lo = np.nan_to_num(m - np.asarray(lows, dtype=float), nan=0.0)
    hi = np.nan_to_num(np.asarray(highs, dtype=float) - m, nan=0.0)
    colors = ["#c44e52" if n == baseline else "#4c72b0" for n in names]
    ax.errorbar(m, y, xerr=[lo, hi], fmt="none", ecolor="#555", capsize=4)
    ax.scatter(m, y, c=colors, zorder=3)
    if baseline in names:
        ax.axvline(m[names.index(baseline)], color="#c44e52", ls="--", lw=1, label=f"baseline: {baseline}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, names)
    ax.set_ylim(len(names) - 0.5, -0.5)  # first method on top, no point on the frame
    ax.margins(x=0.1)
    ax.set_xlabel(f"{label} (mean with {level:.0%} interval over seeds)")
    ax.grid(axis="x", alpha=0.3)
    return to_data_uri(fig)
