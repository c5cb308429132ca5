"""Global top-fraction thresholds over a pool's score column, exact, without gathering the pool.

The original loads the whole pool's scores into pandas and sorts them (51 GB at xlarge). Here every
pass is one engine task per metadata file (so the passes run wherever the executor runs them: on
this machine's cores or across a Ray cluster), and the driver only combines small results:
pass 1 histograms the order-preserving integer keys of the scores (as float64, so float32 and
float64 columns compare as pandas does) over their top 20 bits (a sparse histogram per file);
pass 2 returns only the values in the bin holding the wanted rank, where ``np.partition`` finds the
exact value; pass 3 (only when an exact count is asked for) counts the rows above it and returns
each file's tied uids, sorted, whose k-way merge breaks the tie by uid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.engine import Executor, Task, ThreadExecutor, run_tasks
from datacomp.uids import UID_DTYPE, merge_sorted, sort_uids

SHIFT = 44
BINS = 1 << (64 - SHIFT)


def order_keys(scores: np.ndarray) -> np.ndarray:
    """float -> uint64 keys with the same order; NaN sorts lowest (as pandas puts it last)."""
    s = np.ascontiguousarray(scores, np.float64)
    bits = s.view(np.uint64)
    sign = np.uint64(1 << 63)
    keys = np.where(bits & sign, ~bits, bits | sign)
    keys[np.isnan(s)] = 0
    return keys


def _scores(parquet: str, col: str, cfg: Any = None) -> np.ndarray:
    """A score column: from the metadata, or (``cfg``: a SignalConfig) a cached signal column."""
    from datacomp.filters import metadata as md

    if cfg is not None:
        from datacomp.filters.signals import load_columns

        t = load_columns(parquet, [col], cfg)
    else:
        t = md.read_columns(parquet, [col])
    return np.asarray(t.column(col).to_numpy(zero_copy_only=False), np.float64)


def _uids(parquet: str) -> np.ndarray:
    from datacomp.filters.signals import load_columns

    t = load_columns(parquet, ["uid_f0", "uid_f1"], None)
    u = np.empty(t.num_rows, UID_DTYPE)
    u["f0"], u["f1"] = t["uid_f0"].to_numpy(), t["uid_f1"].to_numpy()
    return u


def hist_task(parquet: str, col: str, cfg: Any = None) -> dict[str, Any]:
    """Pass 1 (one file): the non-empty bins of the score keys' top bits and their counts."""
    bins, counts = np.unique(order_keys(_scores(parquet, col, cfg)) >> SHIFT, return_counts=True)
    return {"bins": bins, "counts": counts.astype(np.int64)}


def bin_values_task(parquet: str, col: str, b: int, cfg: Any = None) -> dict[str, Any]:
    """Pass 2 (one file): the scores whose key falls in bin ``b``."""
    s = _scores(parquet, col, cfg)
    return {"values": s[(order_keys(s) >> SHIFT) == np.uint64(b)]}


def ties_task(parquet: str, col: str, t: float, cfg: Any = None) -> dict[str, Any]:
    """Pass 3 (one file): rows scoring above ``t``, and the sorted uids of the rows scoring ``t``."""
    s = _scores(parquet, col, cfg)
    with np.errstate(invalid="ignore"):
        greater = int(np.count_nonzero(s > t))
        eq = s == t
    return {"greater": greater, "tied": sort_uids(_uids(parquet)[eq]) if eq.any() else np.zeros(0, UID_DTYPE)}


def _pass(fn: Any, files: list[Path], executor: Executor | None, *args: Any) -> list[dict[str, Any]]:
    tasks = [Task(f"{i:06d}-{f.stem}", fn, (str(f), *args)) for i, f in enumerate(files)]
    return [r.stats for r in run_tasks(tasks, executor or ThreadExecutor(), progress=False)]


def kth_largest(files: list[Path], col: str, k: int, executor: Executor | None = None, cfg: Any = None) -> float:
    """The k-th largest score (1-based) of column ``col`` across files, exactly (``cfg``: a signal column)."""
    hist = np.zeros(BINS, np.int64)
    for r in _pass(hist_task, files, executor, col, cfg):
        np.add.at(hist, r["bins"].astype(np.intp), r["counts"])
    total = int(hist.sum())
    if not 1 <= k <= total:
        raise ValueError(f"rank {k} outside 1..{total}")
    above = np.cumsum(hist[::-1])  # above[i] = rows in the top i+1 bins
    top_bin = int(np.searchsorted(above, k))  # first index where cumulative >= k
    b = BINS - 1 - top_bin
    before = int(above[top_bin - 1]) if top_bin else 0
    v = np.concatenate([r["values"] for r in _pass(bin_values_task, files, executor, col, b, cfg)])
    r = k - before  # rank within the bin, 1-based from the top
    idx = v.size - r
    return float(np.partition(v, idx)[idx])


@dataclass(frozen=True)
class Cut:
    """Keep ``score > threshold``, and ``score == threshold`` rows with uid <= ``tie_uid`` if set."""

    threshold: float
    target: int  # rows wanted (exact mode) or the original's index n = int(N * f)
    tie_uid: tuple[int, int] | None = None
    ties_kept: int | None = None

    def mask(self, scores: np.ndarray, uids: np.ndarray | None = None) -> np.ndarray:
        s = np.asarray(scores, np.float64)
        t = np.float64(self.threshold)
        with np.errstate(invalid="ignore"):
            if self.tie_uid is None:
                return s >= t
            keep = s > t
            eq = s == t
        if eq.any():
            assert uids is not None
            hi, lo = self.tie_uid
            u0, u1 = uids["f0"], uids["f1"]
            keep |= eq & ((u0 < hi) | ((u0 == hi) & (u1 <= lo)))
        return keep


def compat_cut(files: list[Path], col: str, total: int, fraction: float, executor: Executor | None = None) -> Cut:
    """The original: sort descending, threshold = element at index ``int(N * f)``, keep ``>=``."""
    n = int(total * fraction)
    k = min(n, total - 1) + 1
    return Cut(kth_largest(files, col, k, executor), n)


def exact_cut(files: list[Path], col: str, total: int, fraction: float, executor: Executor | None = None,
              cfg: Any = None) -> Cut:
    """Exactly ``round(N * f)`` rows: the top scores, ties at the boundary broken by smaller uid."""
    n = int(math.floor(total * fraction + 0.5))
    if n <= 0:
        return Cut(math.inf, 0, (0, 0), 0)
    if n >= total:
        return Cut(-math.inf, total)
    t = np.float64(kth_largest(files, col, n, executor, cfg))
    if np.isnan(t):  # fewer than n rows have a score: keep every scored row
        return Cut(-math.inf, n)
    res = _pass(ties_task, files, executor, col, float(t), cfg)
    need = n - sum(r["greater"] for r in res)
    tied = merge_sorted([r["tied"] for r in res], stop=need)
    last = tied[need - 1]
    return Cut(float(t), n, (int(last["f0"]), int(last["f1"])), need)
