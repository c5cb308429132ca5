"""``datacomp dedup``: pool samples whose image nearly duplicates an evaluation image.

The paper removed CommonPool samples that near-duplicate any test image (with a dedicated copy
detection model, threshold 0.604 on its score). Here every evaluation image is embedded with the
same model that produced the pool's ``l14_img`` embeddings (``--model``, an open_clip spec; the
embedded world's "l14" reference model by default only for a world's pool) and a pool sample is
flagged when its cosine similarity to some evaluation image is at least ``threshold`` (default
0.95: re-encoded, slightly shifted copies sit above it, distinct images of the same class below;
see docs/filter.md). The flagged uids are written as a subset file that any filter can drop with
``--exclude-uids``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.artifacts import IMAGE_EXTS, is_embedded_world, summary_path
from datacomp.engine import Executor, Task, resolve_executor, run_tasks
from datacomp.errors import DataCompError
from datacomp.filters import metadata as md
from datacomp.filters.embed import ModelSpec, embed_images, load
from datacomp.io import atomic_path, write_json_atomic
from datacomp.storage import as_location, load_numpy
from datacomp.uids import UID_DTYPE, hex_to_uids, write_subset

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.95
DEFAULT_MODEL = ModelSpec("l14", "datacomp-ref-l14")  # for an embedded world's pool only


def eval_images(eval_suite: str | os.PathLike[str], tasks: list[str] | None = None) -> list[tuple[str, list[bytes]]]:
    """``(task dir name, encoded test images)`` for the tasks (default all) of a CLIP_benchmark-layout suite."""
    from datacomp.pool.shards import iter_tar_samples

    root = Path(eval_suite)
    if not root.is_dir():
        raise DataCompError(f"{root}: evaluation suite folder not found")
    out = []
    dirs = sorted(p for p in root.iterdir() if (p / "test").is_dir())
    if tasks:
        wanted = {t.replace("/", "-") for t in tasks}
        unknown = wanted - {d.name for d in dirs}
        if unknown:
            raise DataCompError(f"{root}: no evaluation task(s) {sorted(unknown)}; have {[d.name for d in dirs]}")
        dirs = [d for d in dirs if d.name in wanted]
    for task in dirs:
        imgs = []
        for tar in sorted((task / "test").glob("*.tar")):
            for _, sample in iter_tar_samples(tar):
                b = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
                if b is not None:
                    imgs.append(b)
        if imgs:
            out.append((task.name, imgs))
    if not out:
        raise DataCompError(f"{root}: no evaluation tasks with test/*.tar images")
    return out


def embed_eval_suite(eval_suite: str | os.PathLike[str], model: ModelSpec = DEFAULT_MODEL,
                     tasks: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(embeddings float32 (n, d), task index per row, task names)."""
    from datacomp.models import torch_threads

    tasks = eval_images(eval_suite, tasks)
    lm = load(model)
    embs, idx = [], []
    with torch_threads(1):  # small models: one thread beats two that spin-wait on a shared machine
        for i, (_, imgs) in enumerate(tasks):
            embs.append(embed_images(lm, imgs))
            idx.append(np.full(len(imgs), i, np.int32))
    return np.concatenate(embs), np.concatenate(idx), [t for t, _ in tasks]


def max_similarity(x: np.ndarray, ref: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``x``: the largest cosine to any row of ``ref`` and its index (chunked matmul)."""
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    ref = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
    rt = np.ascontiguousarray(ref.T, np.float32)
    best = np.empty(len(x), np.float32)
    arg = np.empty(len(x), np.int64)
    for s in range(0, len(x), chunk):
        sim = x[s : s + chunk].astype(np.float32) @ rt
        arg[s : s + chunk] = sim.argmax(1)
        best[s : s + chunk] = sim[np.arange(sim.shape[0]), arg[s : s + chunk]]
    return best, arg


def dedup_task(parquet: str, work: str, ref_file: str, threshold: float, embedding_key: str) -> dict[str, Any]:
    """Flag one metadata file's near-duplicates; write their uids and best matches."""
    f = as_location(parquet)
    try:
        uids = hex_to_uids(md.read_columns(f, ["uid"]).column("uid"))
    except DataCompError as e:
        raise DataCompError(f"{f}: {e}") from None
    with load_numpy(ref_file) as z:
        ref, task_idx = z["emb"], z["task"]
    emb = md.read_embeddings(f, embedding_key, rows=len(uids), dim=ref.shape[1],
                             dim_source="the evaluation images' embeddings")
    best, arg = max_similarity(emb, ref)
    flag = best >= threshold
    out = as_location(work) / f"{f.stem}.npz"
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, f0=uids["f0"][flag], f1=uids["f1"][flag], task=task_idx[arg[flag]], sim=best[flag])
    return {"rows": len(uids), "flagged": int(flag.sum())}


def dedup(
    metadata_dir: str | os.PathLike[str],
    eval_suite: str | os.PathLike[str],
    output: str | os.PathLike[str],
    threshold: float = DEFAULT_THRESHOLD,
    model: ModelSpec | None = None,
    embedding_key: str = "l14_img",
    tasks: list[str] | None = None,
    workers: int | None = None,
    executor: str | Executor | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the uids of pool samples near-duplicating an evaluation image (sorted ``u8,u8`` .npy).

    The evaluation embeddings are kept beside the output (``<output>.eval.npz``) and reused by a
    later run with the same suite, tasks and model.
    """
    started = time.time()
    if model is None:
        if not is_embedded_world(metadata_dir):
            raise DataCompError(f"{metadata_dir}: not an embedded world's pool, so no default model: pass --model, "
                                "the model behind its l14_img embeddings (e.g. --model ViT-L-14:openai)")
        model = DEFAULT_MODEL
    if not 0.0 < threshold <= 1.0:
        raise DataCompError(f"--threshold must be in (0, 1], got {threshold}")
    files = md.list_parquets(metadata_dir)
    output = as_location(output)
    work = output.with_name(f".{output.name}.dedup-work")
    work.mkdirs()
    ref_file = output.with_suffix(".eval.npz")
    ident = json.dumps({"suite": str(Path(eval_suite).resolve()), "tasks": tasks, "model": model.__dict__},
                       sort_keys=True)
    cached = None
    if ref_file.isfile():
        with load_numpy(ref_file) as z:
            if str(z["ident"]) == ident:
                cached = z["emb"], z["task"], [str(n) for n in z["names"]]
    if cached is None:
        ref, task_idx, names = embed_eval_suite(eval_suite, model, tasks)
        with atomic_path(ref_file) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, emb=ref, task=task_idx, names=np.array(names), ident=np.array(ident))
    else:
        ref, task_idx, names = cached
    tasks = [Task(f.stem, dedup_task, (str(f), str(work), str(ref_file), threshold, embedding_key)) for f in files]
    res = run_tasks(tasks, resolve_executor(executor, workers), desc="dedup", unit="file", progress=progress)
    parts, per_task, sims = [], np.zeros(len(names), np.int64), []
    for f in files:
        with load_numpy(work / f"{f.stem}.npz") as z:
            u = np.empty(len(z["f0"]), UID_DTYPE)
            u["f0"], u["f1"] = z["f0"], z["f1"]
            parts.append(u)
            per_task += np.bincount(z["task"], minlength=len(names))
            sims.append(z["sim"])
    flagged = np.concatenate(parts) if parts else np.zeros(0, UID_DTYPE)
    write_subset(output, flagged)
    rows = sum(r.stats["rows"] for r in res)
    summary = {
        "output": str(output), "pool_size": rows, "flagged": int(len(flagged)), "threshold": threshold,
        "eval_images": int(len(ref)), "eval_tasks": names,
        "flagged_per_task": {n: int(c) for n, c in zip(names, per_task) if c},
        "model": model.__dict__, "embedding_key": embedding_key, "seconds": round(time.time() - started, 3),
    }
    write_json_atomic(summary_path(output), summary)
    work.rm(recursive=True)
    return summary
