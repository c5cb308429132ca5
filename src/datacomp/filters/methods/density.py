"""Density-based pruning (Abbas et al. 2024, "Effective pruning of web-scale datasets based on
complexity of concept clusters", arXiv 2401.04578, ICLR'24): keep fewer samples of dense, simple
clusters and more of sparse, complex ones, at a target fraction of the pool.

Per k-means cluster ``j`` (unit image embeddings): ``d_intra`` = mean cosine distance of its rows
to the centroid, ``d_inter`` = mean cosine distance of the centroid to its ``neighbours`` nearest
other centroids, complexity ``C_j = d_intra * d_inter``. The cluster's quota is
``N_j ~ softmax(C / tau) * N`` (``N`` = fraction * pool), capped at its size, the excess given to the
other clusters in proportion (water filling), rounded by largest remainder so the total is exactly
``N``. Within a cluster the ``N_j`` rows farthest from the centroid are kept (the paper prunes the
most prototypical rows, as SSP-pruning does). Ties: (file name, row).

Parameters: ``--fraction`` (share of the pool kept), ``--param density.tau`` (default 0.1),
``density.neighbours`` (default 20), ``density.clusters`` (default ``--num-clusters``, else
max(2, min(100, rows / 200)): the paper uses k=100 on DataComp-medium), ``density.key``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datacomp.filters.methods import clustered
from datacomp.filters.registry import FilterParams, Mask, register_filter
from datacomp.filters.signals import SignalConfig

TAU = 0.1
NEIGHBOURS = 20


def quotas(counts: np.ndarray, d_intra: np.ndarray, centroids: np.ndarray, target: int, tau: float = TAU,
           neighbours: int = NEIGHBOURS) -> np.ndarray:
    """Rows to keep per cluster (ints summing to ``min(target, sum(counts))``)."""
    from datacomp.filters.methods.common import unit

    counts = np.asarray(counts, np.int64)
    k = counts.size
    target = int(min(target, counts.sum()))
    c = unit(centroids)
    dist = 1.0 - c @ c.T
    np.fill_diagonal(dist, np.inf)
    live = counts > 0
    nb = max(1, min(neighbours, int(live.sum()) - 1))
    d_inter = np.zeros(k)
    if live.sum() > 1:
        dl = dist[np.ix_(live, live)]
        d_inter[live] = np.sort(dl, axis=1)[:, :nb].mean(axis=1)
    complexity = np.asarray(d_intra, np.float64) * d_inter
    w = np.where(live, np.exp((complexity - complexity[live].max(initial=0.0)) / tau), 0.0)
    share = np.zeros(k)
    free = live.copy()
    left = float(target)
    while left > 1e-9 and free.any():  # water filling: capped clusters give their excess to the others
        want = left * w * free / max(w[free].sum(), 1e-300)
        cap = counts - share
        over = free & (want >= cap)
        if not over.any():
            share += want
            break
        share[over] = counts[over]
        free &= ~over
        left = target - share.sum()
    base = np.floor(share).astype(np.int64)
    rest = target - int(base.sum())
    if rest > 0:  # largest remainder, ties by cluster id
        room = np.flatnonzero(base < counts)
        frac = (share - base)[room]
        base[room[np.lexsort((room, -frac))[:rest]]] += 1
    return base


def decide(rows: dict[str, np.ndarray], cluster: int, quota: np.ndarray) -> np.ndarray:
    n = int(quota[cluster])
    keep = np.zeros(rows["sim"].size, bool)
    keep[np.argsort(rows["sim"], kind="stable")[:n]] = True  # farthest from the centroid
    return keep


def density_keep(emb: np.ndarray, cid: np.ndarray, centroids: np.ndarray, fraction: float, tau: float = TAU,
                 neighbours: int = NEIGHBOURS) -> np.ndarray:
    """Keep mask (in-memory form of the global pass, for small inputs and tests)."""
    from datacomp.filters.methods.common import unit

    e, c = unit(emb), unit(centroids)
    sim = np.einsum("ij,ij->i", e, c[cid])
    k = c.shape[0]
    counts = np.bincount(cid, minlength=k)
    d_intra = np.bincount(cid, weights=1.0 - sim, minlength=k) / np.maximum(counts, 1)
    q = quotas(counts, d_intra, c, int(np.floor(fraction * cid.size + 0.5)), tau, neighbours)
    keep = np.zeros(cid.size, bool)
    for j in np.unique(cid):
        m = np.flatnonzero(cid == j)
        keep[m] = decide({"sim": sim[m]}, int(j), q)
    return keep


def _options(cfg: SignalConfig) -> tuple[float, float, int, int | None, str, int]:
    k = cfg.option("density.clusters", cfg.option("num_clusters", None, int), int)
    return (cfg.option("density.fraction", 0.5, float), cfg.option("density.tau", TAU, float),
            cfg.option("density.neighbours", NEIGHBOURS, int), k, cfg.option("density.key", "l14_img"),
            cfg.option("seed", 0, int))


def _fingerprint(cfg: SignalConfig) -> str:
    f, tau, nb, k, key, seed = _options(cfg)
    return f"{key}-f{f:g}-t{tau:g}-n{nb}-k{k or 'auto'}-s{seed}"


def prepare(metadata_dir: Any, files: list[Any], cfg: SignalConfig, executor: Any) -> None:
    from datacomp.errors import DataCompError
    from datacomp.filters import metadata as md

    fraction, tau, nb, k, key, seed = _options(cfg)
    if not 0.0 <= fraction <= 1.0 or tau <= 0:
        raise DataCompError(f"density: --fraction must be in [0, 1] and density.tau > 0 (got {fraction}, {tau})")
    total = sum(md.num_rows(f) for f in files)
    k = k or max(2, min(100, total // 200))

    def plan(counts: np.ndarray, dist: np.ndarray, cents: np.ndarray) -> np.ndarray:
        d_intra = dist / np.maximum(counts, 1)
        return quotas(counts, d_intra, cents, int(np.floor(fraction * total + 0.5)), tau, nb)

    clustered.run_pass("density", metadata_dir, files, cfg, executor, key, k, seed, False, decide, plan)


clustered.register_keep_signal("density", _fingerprint, prepare,
                               "density-based pruning: kept at --fraction, more of sparse clusters (global)")


@register_filter("density", needs=("density_keep",), fraction_option="density.fraction",
                 description="density-based pruning (Abbas et al. 2024) keeping --fraction of the pool")
def density_filter(t: Any, p: FilterParams) -> dict[str, Mask]:
    return {"density": t["density_keep"].to_numpy(zero_copy_only=False).astype(bool)}
