"""Image-based baseline geometry: k-means centroids (faiss), target clusters, nearest-centroid ids.

The original clusters with L2 k-means but assigns by the largest dot product (spec §7.1.6), which
is not the nearest centroid when centroids are not unit length. ``metric="dot"`` reproduces that
(compat); ``metric="l2"`` assigns to the truly nearest centroid, the metric the centroids were
trained with. ``build_centroids(spherical=True)`` (our default) trains unit-length centroids, for
which the two metrics agree.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import numpy as np

from datacomp.errors import DataCompError, MissingDependencyError
from datacomp.storage import as_location

log = logging.getLogger(__name__)
CHUNK = 8192
# Multiply-adds above which assigning on a GPU pays for importing torch (3-5 s): numpy does ~2e11 in that time.
GPU_MIN_WORK = 2e11


TARGET_PARTS = 5  # the official ImageNet-1k l14 embeddings: in1k_clip_vit_l14_{0..4}.pt
TARGET_PART = re.compile(r"in1k_clip_vit_l14_(\d+)\.pt")


def load_matrix(path: str | os.PathLike[str], what: str) -> np.ndarray:
    """A float32 (n, d) matrix from ``.npy``, ``.npz`` (first array) or the original's ``.pt`` assets.

    ``.pt`` covers the official centroid files (a numpy array saved with ``torch.save``) and the
    official target embeddings, five files ``in1k_clip_vit_l14_{0..4}.pt`` (dicts with
    ``image_features``): pass the directory holding all five (concatenated in order); one part alone
    is refused. ``.pt`` files load with ``weights_only=True`` (tensors, containers and plain numpy
    arrays only), so a crafted file cannot run code. Non-finite values are refused.
    """
    loc = as_location(path)
    if not loc.is_local and loc.isfile():  # (a URL: read from a temporary local copy)
        with loc.local_copy() as local:
            return load_matrix(local, what)
    path = Path(path)
    if path.is_dir():
        parts = _target_parts(path, what)
        arr = np.concatenate([_read_matrix(p, what) for p in parts]) if parts else None
        if arr is None:
            raise DataCompError(
                f"{path}: no {what} file in this directory; pass a .npy/.npz/.pt file or the directory "
                f"holding in1k_clip_vit_l14_{{0..{TARGET_PARTS - 1}}}.pt"
            )
        return arr
    if not path.is_file():
        raise DataCompError(f"{path}: {what} file not found")
    if TARGET_PART.fullmatch(path.name):
        raise DataCompError(
            f"{path}: one of the five official target parts (in1k_clip_vit_l14_{{0..{TARGET_PARTS - 1}}}.pt); "
            f"pass their directory, {path.parent}, to use all five"
        )
    return _read_matrix(path, what)


def _target_parts(d: Path, what: str) -> list[Path]:
    """The five official target parts in ``d``, in order; a partial set is refused."""
    found = {int(m.group(1)): d / m.group(0) for p in d.iterdir() if (m := TARGET_PART.fullmatch(p.name))}
    if not found:
        return []
    lost = [f"in1k_clip_vit_l14_{i}.pt" for i in range(TARGET_PARTS) if i not in found]
    extra = sorted(i for i in found if i >= TARGET_PARTS)
    if lost or extra:
        why = f"missing {', '.join(lost)}" if lost else f"unexpected part(s) {extra}"
        raise DataCompError(
            f"{d}: the {what} are five files in1k_clip_vit_l14_{{0..{TARGET_PARTS - 1}}}.pt; {why}; "
            "download the missing parts (a partial set would silently drop classes)"
        )
    return [found[i] for i in range(TARGET_PARTS)]


def _read_matrix(path: Path, what: str) -> np.ndarray:
    try:
        if path.suffix == ".pt":
            obj = _torch_load(path)
            if isinstance(obj, dict):
                obj = obj.get("image_features", obj.get("centroids"))
            arr = obj.float().numpy() if hasattr(obj, "float") and hasattr(obj, "numpy") else obj
            if arr is not None and not isinstance(arr, np.ndarray):
                raise DataCompError(f"{path}: {what} must hold an array, found {type(arr).__name__}")
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arr = z[z.files[0]]
        else:
            arr = np.load(path, allow_pickle=False)
    except DataCompError:
        raise
    except Exception as e:  # noqa: BLE001 - numpy/torch raise several types for bad files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataCompError(f"{path}: cannot read {what} ({type(e).__name__}: {msg[:200]})") from None
    if arr is None or np.ndim(arr) != 2:
        raise DataCompError(f"{path}: {what} must be a 2-D (n, dim) array, got {np.shape(arr)}")
    if arr.dtype.kind not in "fiu":
        raise DataCompError(f"{path}: {what} must be numbers, got dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    check_finite(out, f"{path}: {what}")
    return out


def _torch_load(path: Path) -> object:
    """``torch.load(weights_only=True)``, also allowing plain numpy arrays (the official centroids)."""
    import torch

    rec = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct
    allowed = [rec, (rec, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
               *(type(np.dtype(t)) for t in (np.float16, np.float32, np.float64))]
    if not hasattr(torch.serialization, "safe_globals"):  # torch < 2.5: tensors and containers only
        return torch.load(path, map_location="cpu", weights_only=True)
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def check_finite(x: np.ndarray, what: str) -> None:
    """Raise a one-line error naming ``what`` when ``x`` holds NaN or inf (faiss and argmax would
    silently misplace those rows)."""
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1)) if x.ndim == 2 else np.flatnonzero(bad)
        raise DataCompError(
            f"{what} has {rows.size} row(s) with non-finite values (NaN or inf; first at row {int(rows[0])}); "
            "recompute the embeddings or drop those rows"
        )


def _torch_device(work: float = 0.0) -> str | None:
    """``"cuda"`` when a CUDA GPU is worth using for ``work`` multiply-adds, else None (numpy).

    Importing torch costs seconds and hundreds of MB, so it is asked only when it is already
    imported, or when the work is large and the machine shows an NVIDIA device (device files, and
    ``CUDA_VISIBLE_DEVICES`` not hiding them).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        if work < GPU_MIN_WORK or os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1"):
            return None
        if not Path("/dev/nvidiactl").exists() and not Path("/dev/nvidia0").exists():
            return None
        try:
            import torch
        except ImportError:
            return None
    return "cuda" if torch.cuda.is_available() else None


def assign(x: np.ndarray, centroids: np.ndarray, metric: str = "l2", chunk: int = CHUNK,
           device: str | None = "auto") -> np.ndarray:
    """Nearest centroid id per row (int32), in chunks; on a CUDA GPU when torch sees one.

    ``dot``: ``argmax <x, c>`` (the original). ``l2``: ``argmin ||x - c||``.
    """
    if metric not in ("dot", "l2"):
        raise DataCompError(f"unknown centroid metric {metric!r}: choose 'dot' or 'l2'")
    if x.shape[1] != centroids.shape[1]:
        raise DataCompError(
            f"embeddings have dimension {x.shape[1]} but centroids {centroids.shape[1]}; "
            "use centroids built from the same embedding key (l14_img)"
        )
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    bias = -0.5 * np.einsum("ij,ij->i", c, c) if metric == "l2" else None
    dev = _torch_device(float(x.shape[0]) * c.shape[0] * c.shape[1]) if device == "auto" else device
    out = np.empty(x.shape[0], np.int32)
    if dev is not None and dev.startswith("cuda"):
        import torch

        ct = torch.from_numpy(c).to(dev)
        bt = torch.from_numpy(bias).to(dev) if bias is not None else None
        for s in range(0, x.shape[0], chunk):
            xb = torch.from_numpy(np.ascontiguousarray(x[s : s + chunk], np.float32)).to(dev)
            sc = xb @ ct.T
            if bt is not None:
                sc += bt
            out[s : s + chunk] = sc.argmax(1).cpu().numpy()
        return out
    ct = c.T.copy()
    for s in range(0, x.shape[0], chunk):
        sc = np.asarray(x[s : s + chunk], np.float32) @ ct
        if bias is not None:
            sc += bias
        out[s : s + chunk] = sc.argmax(1)
    return out


def target_clusters(reference: np.ndarray, centroids: np.ndarray, metric: str) -> np.ndarray:
    """Sorted unique centroid ids that reference (ImageNet-like) images fall into."""
    return np.unique(assign(reference, centroids, metric))


def default_num_clusters(n: int) -> int:
    """The original's k=100,000 for 12.8M (small) is ~128 points per centroid; keep that ratio."""
    return int(min(100_000, max(8, n // 128)))


def kmeans(x: np.ndarray, k: int, niter: int = 20, seed: int = 0, spherical: bool = True,
           gpu: bool | None = None) -> np.ndarray:
    """faiss k-means as the original (``Clustering``, exact flat index, 10M points per centroid)."""
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError("faiss-cpu", why="k-means for the image-based filter") from None
    x = np.ascontiguousarray(x, np.float32)
    if k > x.shape[0]:
        raise DataCompError(f"cannot build {k} clusters from {x.shape[0]} embeddings; lower --num-clusters")
    d = x.shape[1]
    cl = faiss.Clustering(d, k)
    cl.niter = niter
    cl.seed = seed
    cl.spherical = spherical
    cl.max_points_per_centroid = 10_000_000
    ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if (gpu or gpu is None) and ngpu > 0:
        res = faiss.StandardGpuResources()
        index = faiss.GpuIndexFlatL2(res, d)
    else:
        index = faiss.IndexFlatL2(d)
    cl.train(x, index)
    return faiss.vector_to_array(cl.centroids).reshape(k, d).astype(np.float32)


def save_centroids(path: str | os.PathLike[str], centroids: np.ndarray) -> Path:
    with as_location(path).atomic_open("wb") as f:  # (a local path or a URL)
        np.save(f, centroids.astype(np.float32), allow_pickle=False)
    return as_location(path).local_path or path  # type: ignore[return-value]


def build_centroids(
    metadata_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    num_clusters: int | None = None,
    embedding_key: str = "l14_img",
    sample_ratio: float | None = None,
    caption_filter: bool = True,
    seed: int = 0,
    niter: int = 20,
    compat: bool = False,
    signals_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    executor: object = None,  # an engine Executor, a name, or None (see engine.resolve_executor)
) -> dict[str, object]:
    """The original's clustering recipe (spec §2.4) over a pool's embeddings; writes ``(k, d)`` npy.

    Default: spherical k-means (unit centroids, so dot product and L2 assignment agree) on a seeded
    sample drawn without replacement. ``compat``: L2 k-means on ``np.random.choice`` samples drawn
    with replacement, as the original (seeded here; the original's workers were not).
    """
    from datacomp.engine import Task, resolve_executor, run_tasks
    from datacomp.filters import metadata as md
    from datacomp.filters.signals import (
        SignalConfig,
        default_signals_dir,
        groups_for,
        load_columns,
        signals_task,
    )

    files = md.list_parquets(metadata_dir)
    sdir = as_location(signals_dir or default_signals_dir(output))
    cfg = SignalConfig(str(sdir))
    if caption_filter:
        groups = groups_for(["lang", "ft_tokens", "text_chars"])
        tasks = [Task(f.stem, signals_task, (str(f), groups, cfg), weight=1) for f in files]
        run_tasks(tasks, resolve_executor(executor, workers), desc="caption signals", unit="file")
    parts = []
    legacy = np.random.RandomState(seed)
    dim = None
    for i, f in enumerate(files):
        emb = md.read_embeddings(f, embedding_key, dim=dim, dim_source=files[0].with_suffix(".npz").name)
        dim = emb.shape[1]
        if caption_filter:
            t = load_columns(f, ["lang", "ft_tokens", "text_chars"], cfg)
            from datacomp.filters.baselines import _caption_prefilter

            keep = np.logical_and.reduce(list(_caption_prefilter(t).values()))
            emb = emb[keep]
        if sample_ratio is not None and sample_ratio > 0:
            n = emb.shape[0]
            m = int(n * sample_ratio)
            if compat:
                idx = legacy.choice(n, m) if n else np.zeros(0, int)
            else:
                idx = np.sort(np.random.default_rng([seed, i]).choice(n, m, replace=False))
            emb = emb[idx]
        parts.append(emb)
    x = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
    k = num_clusters or default_num_clusters(x.shape[0])
    log.info("k-means: %d points, k=%d, %d iterations (%s)", x.shape[0], k, niter,
             "L2, compat" if compat else "spherical")
    cents = kmeans(x, k, niter=niter, seed=seed, spherical=not compat)
    save_centroids(output, cents)
    return {"output": str(output), "points": int(x.shape[0]), "num_clusters": k, "dim": int(x.shape[1]),
            "spherical": not compat, "embedding_key": embedding_key, "seed": seed}
