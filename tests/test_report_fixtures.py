"""Small real experiment directories and a pool for the report / leaderboard / submit tests."""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datacomp.io import write_json_atomic
from datacomp.pool.shards import ShardWriter, sample_key
from datacomp.uids import hex_to_uids, write_subset


def make_pool(root: Path, n: int = 300, seed: int = 0) -> tuple[Path, list[str], np.ndarray]:
    """A pool with metadata parquet (uid, text, CLIP scores) and one img2dataset shard of JPEGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    uids = [f"{x:032x}" for x in rng.integers(0, 2**62, n)]
    l14 = rng.normal(0.22, 0.05, n).astype(np.float32)
    meta = root / "pool" / "metadata"
    meta.mkdir(parents=True)
    pq.write_table(pa.table({
        "uid": uids, "text": [f"caption {i}" for i in range(n)],
        "clip_b32_similarity_score": (l14 + rng.normal(0, 0.02, n)).astype(np.float32),
        "clip_l14_similarity_score": l14,
    }), meta / "0000.parquet")
    np.savez(meta / "0000.npz", l14_img=np.zeros((n, 4), np.float16))
    shards = root / "pool" / "shards"
    shards.mkdir()
    w = ShardWriter(shards, 0)
    for i, u in enumerate(uids):
        img = Image.new("RGB", (32, 32), tuple(int(c) for c in rng.integers(0, 255, 3)))
        buf = io.BytesIO()
        img.save(buf, format="JPEG")
        w.add_success({"uid": u, "caption": f"caption {i}", "url": f"http://x/{u}.jpg", "face_bboxes": [],
                       "key": sample_key(0, i), "width": 32, "height": 32, "original_width": 32,
                       "original_height": 32, "exif": None, "sha256": None}, buf.getvalue())
    w.close()
    return root / "pool", uids, l14


def datacomp_results(level: float, rng: np.random.Generator) -> list[dict]:
    """A full 40-task DataComp ``eval_results.jsonl`` with main metrics around ``level``."""
    from datacomp.evaluate.registry import list_tasks

    rows = []
    for t in list_tasks("datacomp"):
        v = None if t.main_metric is None else float(np.clip(level + rng.normal(0, 0.01), 0, 1))
        rows.append({"key": t.key, "dataset": t.name, "metrics": {"acc1": v, "main_metric": v}})
    return rows


def make_experiment(root: Path, name: str, uids: list[str], scores: np.ndarray, fraction: float,
                    level: float, seeds: int = 2) -> Path:
    """Subset = top ``fraction`` by score; summary with per-rule counts; ``seeds`` evaluated runs."""
    exp = root / name
    exp.mkdir(parents=True)
    keep = scores >= np.quantile(scores, 1 - fraction)
    write_subset(exp / f"{name}.npy", hex_to_uids([u for u, k in zip(uids, keep) if k]))
    write_json_atomic(exp / f"{name}.npy.summary.json", {
        "filter": name, "pool_size": len(uids), "kept": int(keep.sum()), "fraction": float(keep.mean()),
        "removed": {"clip_score": int((~keep).sum()), "caption_length": 3},
    })
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for s in range(seeds):
        run = exp / f"seed{s}"
        run.mkdir()
        (run / "eval_results.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in datacomp_results(level, rng)))
        write_json_atomic(run / "train_record.json", {"step": "train", "config": {"seed": s}})
    return exp
