"""Pure planning: join the subset against the shard index, then cut the selection into output shards.

Output shard contents are fixed here, before any copying, so every output shard is an independent,
idempotent task (resume = skip finished shards) and all shards are full except the last.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datacomp import uids as U
from datacomp.reshard.index import ShardIndex, index_shard

log = logging.getLogger(__name__)


@dataclass
class Selection:
    """The selected samples of one input shard and how many times each is written."""

    tar: Path
    keys: np.ndarray  # S: utf-8 member keys
    uids: np.ndarray  # u8,u8
    counts: np.ndarray  # int64 multiplicity (>= 1)

    @property
    def total(self) -> int:
        return int(self.counts.sum())


@dataclass
class Piece:
    """Samples of one input shard that go into one output shard: write ``n[i]`` copies from ``j0[i]``.

    Numpy arrays, not lists: a plan holds every selected sample, so it stays compact (about 100 bytes
    per sample) and pickles fast to worker processes.
    """

    tar: str
    keys: np.ndarray  # S: utf-8 tar member keys
    uids: np.ndarray  # S32: 32-hex uids
    j0: np.ndarray  # int64
    n: np.ndarray  # int64


@dataclass
class OutputPlan:
    index: int
    pieces: list[Piece] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(int(p.n.sum()) for p in self.pieces)


@dataclass
class SelectStats:
    pool_samples: int = 0
    shards_indexed_from_tar: int = 0
    pool_duplicate_uids: int = 0
    found: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # per unique subset uid


def iter_indexes(tars: list[Path], threads: int) -> Iterator[ShardIndex]:
    """Shard indexes in listing order, read by a few threads (parquet reads release the GIL)."""
    threads = max(1, min(threads, len(tars)))
    if threads == 1:
        yield from map(index_shard, tars)
        return
    with ThreadPoolExecutor(threads) as pool:
        window = 4 * threads  # bounded read-ahead keeps memory flat on big pools
        futures = [pool.submit(index_shard, t) for t in tars[:window]]
        for i in range(len(tars)):
            if i + window < len(tars):
                futures.append(pool.submit(index_shard, tars[i + window]))
            yield futures[i].result()
            futures[i] = None  # type: ignore[call-overload]


def select(indexes: Iterable[ShardIndex], subset: np.ndarray) -> tuple[list[Selection], SelectStats]:
    """Join the (sorted) subset against each shard; a uid present twice in the pool is taken once."""
    ukeys, ucounts = np.unique(U._order_key(subset), return_counts=True)
    stats = SelectStats(found=np.zeros(ukeys.size, bool))
    out: list[Selection] = []
    for idx in indexes:
        stats.pool_samples += idx.uids.size
        stats.shards_indexed_from_tar += idx.source == "tar"
        if not idx.uids.size or not ukeys.size:
            continue
        sk = U._order_key(idx.uids)
        pos = np.minimum(np.searchsorted(ukeys, sk), ukeys.size - 1)
        rows = np.flatnonzero(ukeys[pos] == sk)
        if not rows.size:
            continue
        _, first = np.unique(pos[rows], return_index=True)  # first occurrence within the shard
        keep = np.sort(rows[first])
        seen = stats.found[pos[keep]]
        stats.pool_duplicate_uids += int(seen.sum()) + rows.size - first.size
        keep = keep[~seen]
        if not keep.size:
            continue
        stats.found[pos[keep]] = True
        out.append(Selection(idx.tar, idx.keys[keep], idx.uids[keep], ucounts[pos[keep]].astype(np.int64)))
    return out, stats


def missing_uids(subset: np.ndarray, stats: SelectStats) -> np.ndarray:
    """Unique subset uids that no input shard holds (sorted)."""
    uniq = U.unique(subset)
    return uniq[~stats.found] if stats.found.size == uniq.size else uniq


def plan_outputs(selections: list[Selection], shard_size: int, seed: int | None = None) -> list[OutputPlan]:
    """Cut the concatenated selection (shard order, or a seeded permutation of it) into full shards."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    order = list(range(len(selections)))
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(selections)).tolist()
    plans: list[OutputPlan] = []
    g = 0  # emissions planned so far
    for i in order:
        sel = selections[i]
        hexes = U.uids_to_hex(sel.uids).astype("S32")
        end = np.cumsum(sel.counts)
        start = end - sel.counts
        total = int(end[-1]) if end.size else 0
        lo = 0
        while lo < total:
            s = (g + lo) // shard_size
            hi = min(total, (s + 1) * shard_size - g)
            rows = np.flatnonzero((end > lo) & (start < hi))
            j0 = np.maximum(start[rows], lo) - start[rows]
            n = np.minimum(end[rows], hi) - np.maximum(start[rows], lo)
            if s == len(plans):
                plans.append(OutputPlan(s))
            plans[s].pieces.append(
                Piece(str(sel.tar), sel.keys[rows], hexes[rows], j0.astype(np.int64), n.astype(np.int64))
            )
            lo = hi
        g += total
    return plans


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)
