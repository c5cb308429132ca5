"""The global pass of the cluster methods (``semdedup``, ``density``), without gathering the pool.

1. Centroids (kept as ``<signal dir>/centroids.npy``): spherical faiss k-means
   (:func:`datacomp.filters.clusters.build_centroids`) on a seeded sample of the image embeddings
   (at most ``SAMPLE_PER_CLUSTER`` points per centroid).
2. One engine task per metadata file: the nearest centroid of each row (the cached ``clusters``
   signal with these centroids), its cosine similarity to that centroid, and the rows written into
   ``buckets`` files by ``cluster % buckets`` (with the embeddings when the method needs them);
   each task returns its per-cluster counts and summed distances.
3. One engine task per bucket: reads that bucket's rows from every file, decides keep/drop per
   cluster (the method's rule) and writes each file's decisions.
4. One engine task per file: writes the method's signal column from its decisions into the signals
   cache, where ``--where`` and the filter read it like any signal.

Every task runs through the run's executor (local threads, processes, or ``--executor ray``);
tasks write atomically and the pass keeps engine markers, so a killed pass resumes. The result is a
function of the seed and the pool alone: rows are ordered by (file name, row) wherever they run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from datacomp.engine import Executor, Task, run_tasks
from datacomp.errors import DataCompError
from datacomp.filters import metadata as md
from datacomp.filters.methods.common import unit
from datacomp.filters.signals import SignalConfig, SignalInputs
from datacomp.storage import Location, as_location

log = logging.getLogger(__name__)

SAMPLE_PER_CLUSTER = 256
MAX_BUCKETS = 64


def work_dir(cfg: SignalConfig, group: str) -> Location:
    return cfg.group_dir(group) / "_global"


def centroids_path(cfg: SignalConfig, group: str) -> Location:
    """The pass's centroids, kept beside its signal files (to inspect or reproduce its decisions)."""
    return cfg.group_dir(group) / "centroids.npy"


def _save(loc: Location, **arrays: np.ndarray) -> None:
    with loc.atomic_open("wb") as f:
        np.savez(f, **arrays)


def _load(loc: Location) -> dict[str, np.ndarray]:
    with loc.open("rb") as f, np.load(f, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def build(metadata_dir: Location, files: list[Any], cfg: SignalConfig, group: str, key: str, k: int,
          seed: int) -> tuple[Location, SignalConfig]:
    """Centroids for the pass (under the pass's work folder) and the config whose clusters signal uses them."""
    from datacomp.filters.clusters import build_centroids

    path = centroids_path(cfg, group)
    if not path.isfile():
        total = sum(md.num_rows(f) for f in files)
        if k > total:
            raise DataCompError(f"{group}: {k} clusters for a pool of {total} rows; lower --param {group}.clusters")
        ratio = min(1.0, SAMPLE_PER_CLUSTER * k / max(1, total))
        build_centroids(metadata_dir, path, num_clusters=k, embedding_key=key, sample_ratio=ratio,
                        caption_filter=False, seed=seed, signals_dir=cfg.signals_dir, executor=None)
    return path, replace(cfg, centroids_file=str(path), embedding_key=key)


def bucket_task(parquet: str, cfg: SignalConfig, centroids: str, buckets: int, work: str,
                with_embeddings: bool) -> dict[str, Any]:
    """Step 2 for one file: cluster ids, similarity to the centroid, rows written per bucket."""
    from datacomp.filters.clusters import load_matrix
    from datacomp.filters.signals import load_columns

    f = as_location(parquet)
    cents = unit(load_matrix(centroids, "centroids"))
    cid = load_columns(f, ["cluster_l2"], cfg).column("cluster_l2").to_numpy(zero_copy_only=False).astype(np.int64)
    emb = unit(md.read_embeddings(f, cfg.embedding_key, dim=cents.shape[1], dim_source="the centroids"))
    sim = np.einsum("ij,ij->i", emb, cents[cid]).astype(np.float32)
    rows = np.arange(cid.size, dtype=np.int64)
    b = cid % buckets
    for g in np.unique(b):
        m = b == g
        arrays = {"row": rows[m], "cid": cid[m], "sim": sim[m]}
        if with_embeddings:
            arrays["emb"] = emb[m].astype(np.float16)
        _save(as_location(work) / "buckets" / f"{int(g):04d}" / f"{f.stem}.npz", **arrays)
    k = cents.shape[0]
    return {"rows": int(cid.size), "count": np.bincount(cid, minlength=k).tolist(),
            "dist": np.bincount(cid, weights=1.0 - sim.astype(np.float64), minlength=k).tolist()}


Decide = Callable[[dict[str, np.ndarray], int, Any], np.ndarray]


def decide_task(bucket: int, stems: list[str], work: str, decide: Decide, arg: Any) -> dict[str, Any]:
    """Step 3 for one bucket: gather its rows from every file, decide per cluster, write per-file decisions."""
    root = as_location(work)
    parts = []
    for i, stem in enumerate(stems):
        p = root / "buckets" / f"{bucket:04d}" / f"{stem}.npz"
        if p.isfile():
            d = _load(p)
            d["file"] = np.full(d["row"].size, i, np.int64)
            parts.append(d)
    if not parts:
        return {"rows": 0, "kept": 0}
    allr = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keep = np.zeros(allr["row"].size, bool)
    order = np.lexsort((allr["row"], allr["file"], allr["cid"]))  # by cluster, then (file, row)
    cids = allr["cid"][order]
    starts = np.flatnonzero(np.r_[True, cids[1:] != cids[:-1]])
    for a, z in zip(starts, np.r_[starts[1:], cids.size]):
        idx = order[a:z]
        keep[idx] = decide({k: v[idx] for k, v in allr.items()}, int(cids[a]), arg)
    for i, stem in enumerate(stems):
        m = allr["file"] == i
        if m.any():
            _save(root / "decisions" / stem / f"{bucket:04d}.npz", row=allr["row"][m], keep=keep[m])
    return {"rows": int(keep.size), "kept": int(keep.sum())}


def read_decisions(x: SignalInputs, group: str) -> np.ndarray:
    """The signal column of one file from the global pass's decisions (all rows covered, else an error)."""
    d = work_dir(x.cfg, group) / "decisions" / as_location(x.parquet).stem
    keep = np.zeros(x.total_rows, bool)
    seen = np.zeros(x.total_rows, bool)
    for p in (d.glob("*.npz") if d.isdir() else []):
        z = _load(p)
        keep[z["row"]] = z["keep"]
        seen[z["row"]] = True
    if not seen.all():
        raise DataCompError(f"{x.parquet}: the {group} signal is decided by a global pass over the pool; "
                            f"run it through `datacomp filter --name {group}` (or --where on its column)")
    return keep[x.rows]


def register_keep_signal(group: str, fingerprint: Callable[[SignalConfig], str], prepare: Callable[..., None],
                         description: str) -> None:
    """The signal ``<group>`` with the bool column ``<group>_keep``, filled by ``prepare``'s global pass."""
    from datacomp.filters.registry import register_signal

    register_signal(group, {f"{group}_keep": "bool"}, arrays=("l14_img",), params=fingerprint, version="1",
                    on_demand=True, prepare=prepare, description=description,
                    )(lambda x: {f"{group}_keep": read_decisions(x, group)})


def run_pass(group: str, metadata_dir: Location, files: list[Any], cfg: SignalConfig, executor: Executor,
             key: str, k: int, seed: int, with_embeddings: bool,
             decide: Decide, plan: Callable[[np.ndarray, np.ndarray, np.ndarray], Any]) -> None:
    """Steps 1-4 (``plan(counts, dist, centroids)`` turns the pool-wide cluster stats into ``decide``'s argument)."""
    from datacomp.filters.clusters import load_matrix
    from datacomp.filters.signals import signals_task

    work = work_dir(cfg, group)
    cents_path, ccfg = build(metadata_dir, files, cfg, group, key, k, seed)
    cents = unit(load_matrix(str(cents_path), "centroids"))
    buckets = int(min(MAX_BUCKETS, cents.shape[0]))
    stems = [as_location(f).stem for f in files]
    res = run_tasks([Task(f"b-{s}", bucket_task, (str(f), ccfg, str(cents_path), buckets, str(work), with_embeddings))
                     for f, s in zip(files, stems)], executor, state_dir=str(work / "state-buckets"),
                    desc=f"{group}: clusters", unit="file", progress=False)
    counts = np.sum([r.stats["count"] for r in res], axis=0)
    dist = np.sum([r.stats["dist"] for r in res], axis=0)
    arg = plan(counts, dist, cents)
    run_tasks([Task(f"d-{g:04d}", decide_task, (g, stems, str(work), decide, arg)) for g in range(buckets)],
              executor, state_dir=str(work / "state-decide"), desc=f"{group}: decide", unit="bucket", progress=False)
    run_tasks([Task(f"s-{s}", signals_task, (str(f), [group], cfg)) for f, s in zip(files, stems)],
              executor, desc=f"{group}: write", unit="file", progress=False)
    work.rm(recursive=True)
