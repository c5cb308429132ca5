"""SemDeDup (Abbas et al. 2023, "SemDeDup: data-efficient learning at web-scale through semantic
deduplication", arXiv 2303.09540): drop semantic near-duplicates within embedding clusters.

k-means over the unit image embeddings; within each cluster the rows are ordered from the farthest
to the nearest to the centroid, and a row is dropped when its cosine similarity to any row before
it exceeds ``1 - eps``. So of each group of near-duplicates the one *farthest from the centroid* is
kept, the paper's rule (its ``keep_hard`` default; this is also its code's rule of comparing with
every earlier row, kept or not). Ties in the order are broken by (file name, row): deterministic.

Parameters (``--param``): ``semdedup.eps`` (default 0.05; the paper's range 0.0001-0.1),
``semdedup.clusters`` (k; default ``--num-clusters``, else pool rows / 128),
``semdedup.key`` (npz embeddings, default ``l14_img``); ``--seed`` seeds the k-means sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datacomp.filters.methods import clustered
from datacomp.filters.methods.common import arch_of, register_rank_filter
from datacomp.filters.registry import FilterParams, Mask
from datacomp.filters.signals import SignalConfig

EPS = 0.05
BLOCK = 2048


def duplicates_keep(emb: np.ndarray, sim_to_centroid: np.ndarray, eps: float) -> np.ndarray:
    """Keep mask of one cluster: the paper's rule (rows already in tie-break order)."""
    n = emb.shape[0]
    order = np.argsort(sim_to_centroid, kind="stable")  # farthest from the centroid first
    e = np.asarray(emb, np.float32)[order]
    best = np.full(n, -np.inf, np.float32)
    for a in range(0, n, BLOCK):
        z = min(n, a + BLOCK)
        s = e[:z] @ e[a:z].T  # (rows before z) x (block)
        s[np.arange(z)[:, None] >= np.arange(a, z)[None, :]] = -np.inf  # only rows *before* each one
        best[a:z] = s.max(axis=0)
    keep = np.empty(n, bool)
    keep[order] = best <= 1.0 - eps
    return keep


def semdedup_keep(emb: np.ndarray, cid: np.ndarray, centroids: np.ndarray, eps: float) -> np.ndarray:
    """Keep mask over many clusters (in-memory form of the global pass, for small inputs and tests)."""
    from datacomp.filters.methods.common import unit

    emb, cents = unit(emb), unit(centroids)
    sim = np.einsum("ij,ij->i", emb, cents[cid])
    emb = emb.astype(np.float16).astype(np.float32)  # (as the pass's bucket files hold them)
    keep = np.zeros(cid.size, bool)
    for c in np.unique(cid):
        m = np.flatnonzero(cid == c)
        keep[m] = duplicates_keep(emb[m], sim[m], eps)
    return keep


def decide(rows: dict[str, np.ndarray], cluster: int, eps: float) -> np.ndarray:
    return duplicates_keep(rows["emb"].astype(np.float32), rows["sim"], eps)


def _options(cfg: SignalConfig) -> tuple[float, int | None, str, int]:
    k = cfg.option("semdedup.clusters", cfg.option("num_clusters", None, int), int)
    return (cfg.option("semdedup.eps", EPS, float), k, cfg.option("semdedup.key", "l14_img"),
            cfg.option("seed", 0, int))


def _fingerprint(cfg: SignalConfig) -> str:
    eps, k, key, seed = _options(cfg)
    return f"{key}-e{eps:g}-k{k or 'auto'}-s{seed}"


def prepare(metadata_dir: Any, files: list[Any], cfg: SignalConfig, executor: Any) -> None:
    from datacomp.errors import DataCompError
    from datacomp.filters import metadata as md
    from datacomp.filters.clusters import default_num_clusters

    eps, k, key, seed = _options(cfg)
    if not 0.0 <= eps < 2.0:
        raise DataCompError(f"--param semdedup.eps={eps}: use a value in [0, 2) (the paper's range 0.0001-0.1)")
    k = k or default_num_clusters(sum(md.num_rows(f) for f in files))
    clustered.run_pass("semdedup", metadata_dir, files, cfg, executor, key, k, seed, True, decide,
                       lambda counts, dist, cents: eps)


clustered.register_keep_signal("semdedup", _fingerprint, prepare,
                               "SemDeDup: false for a semantic near-duplicate of a row kept (global, per cluster)")


def _rules(t: Any, p: FilterParams) -> dict[str, Mask]:
    return {"semdedup": t["semdedup_keep"].to_numpy(zero_copy_only=False).astype(bool)}


register_rank_filter("semdedup", lambda p: f"clip_{arch_of(p)}_similarity_score",
                     "SemDeDup (Abbas et al. 2023); with --fraction/--threshold also the CLIP-score cut (--arch)",
                     extra_needs=("semdedup_keep",), optional=True, rules=_rules)
