"""Global top-fraction thresholds over a pool's score column, exact, with bounded memory.

The original loads the whole pool's scores into pandas and sorts them (51 GB at xlarge). Here each
pass reads one file's score column at a time: pass 1 histograms the order-preserving integer keys
of the scores (as float64, so float32 and float64 columns compare as pandas does) over their top
20 bits; pass 2 keeps only the values in the bin holding the
wanted rank and finds the exact value with ``np.partition``; a third pass over the tied rows
breaks ties by uid when an exact count is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datacomp.uids import UID_DTYPE, sort_uids

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


def kth_largest(read_scores: Callable[[Path], np.ndarray], files: list[Path], k: int) -> float:
    """The k-th largest score (1-based) across files, exactly, reading one file at a time."""
    hist = np.zeros(BINS, np.int64)
    for f in files:
        hist += np.bincount(order_keys(read_scores(f)) >> SHIFT, minlength=BINS)
    total = int(hist.sum())
    if not 1 <= k <= total:
        raise ValueError(f"rank {k} outside 1..{total}")
    above = np.cumsum(hist[::-1])  # above[i] = rows in the top i+1 bins
    top_bin = int(np.searchsorted(above, k))  # first index where cumulative >= k
    b = BINS - 1 - top_bin
    before = int(above[top_bin - 1]) if top_bin else 0
    vals = []
    for f in files:
        s = np.asarray(read_scores(f), np.float64)
        vals.append(s[(order_keys(s) >> SHIFT) == b])
    v = np.concatenate(vals)
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


def compat_cut(read_scores: Callable[[Path], np.ndarray], files: list[Path], total: int, fraction: float) -> Cut:
    """The original: sort descending, threshold = element at index ``int(N * f)``, keep ``>=``."""
    n = int(total * fraction)
    k = min(n, total - 1) + 1
    return Cut(kth_largest(read_scores, files, k), n)


def exact_cut(read_scores: Callable[[Path], np.ndarray], read_uids: Callable[[Path], np.ndarray],
              files: list[Path], total: int, fraction: float) -> Cut:
    """Exactly ``round(N * f)`` rows: the top scores, ties at the boundary broken by smaller uid."""
    n = int(math.floor(total * fraction + 0.5))
    if n <= 0:
        return Cut(math.inf, 0, (0, 0), 0)
    if n >= total:
        return Cut(-math.inf, total)
    t = np.float64(kth_largest(read_scores, files, n))
    if np.isnan(t):  # fewer than n rows have a score: keep every scored row
        return Cut(-math.inf, n)
    greater = 0
    tied = []
    for f in files:
        s = np.asarray(read_scores(f), np.float64)
        with np.errstate(invalid="ignore"):
            greater += int(np.count_nonzero(s > t))
            eq = s == t
        if eq.any():
            tied.append(read_uids(f)[eq])
    need = n - greater
    tu = sort_uids(np.concatenate(tied)) if tied else np.zeros(0, UID_DTYPE)
    last = tu[need - 1]
    return Cut(float(t), n, (int(last["f0"]), int(last["f1"])), need)
