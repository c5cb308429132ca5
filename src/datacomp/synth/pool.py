"""Write a generated pool in exactly CommonPool's formats, one engine task per shard.

Per shard ``s``: ``metadata/<stem>.parquet`` + row-aligned ``metadata/<stem>.npz`` (the files
``download`` reads), ``shards/<8-digit s>.{tar,parquet}`` + ``_stats.json`` (what img2dataset would
have written after downloading them), and ``truth/<stem>.parquet``: the generator's ground truth
(noise kind, language, scene attributes) for calibration and oracle subsets. Filters never read it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.errors import DataCompError
from datacomp.io import atomic_path, write_json_atomic
from datacomp.synth.noise import KINDS, NoiseMix, PlannedSamples, plan_samples
from datacomp.synth.render import (
    add_face,
    decode,
    degrade_aspect,
    degrade_tiny,
    encode_jpeg,
    off_distribution,
    render_scene,
    text_image,
    to_uint8,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8765/images"
POOL_SIZES: dict[str, int] = {"tiny": 60_000, "test": 4_000}
STREAM_POOL = 1  # RNG stream ids: pool, reference training set, assets, evaluation tasks differ
SHARD_MTIME = 1_700_000_000  # fixed tar member mtime: same seed -> byte-identical tars
NPZ_KEYS = ("b32_img", "b32_txt", "l14_img", "l14_txt")
METADATA_COLUMNS = ("uid", "url", "text", "original_width", "original_height", "clip_b32_similarity_score",
                    "clip_l14_similarity_score", "face_bboxes", "sha256")


def pool_size(size: str | int) -> int:
    if isinstance(size, int) or str(size).isdigit():
        n = int(size)
        if n < 1:
            raise DataCompError(f"--size {size}: must be a positive number of samples")
        return n
    try:
        return POOL_SIZES[str(size)]
    except KeyError:
        raise DataCompError(f"--size {size!r}: choose tiny, test or a number of samples") from None


def metadata_schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("uid", pa.string()), ("url", pa.string()), ("text", pa.string()),
        ("original_width", pa.int64()), ("original_height", pa.int64()),
        ("clip_b32_similarity_score", pa.float32()), ("clip_l14_similarity_score", pa.float32()),
        ("face_bboxes", pa.list_(pa.list_(pa.float64()))), ("sha256", pa.string()),
    ])


def shard_stem(seed: int, shard: int) -> str:
    """A hash-like metadata stem, as CommonPool's files are named (not in shard order)."""
    return hashlib.sha256(f"datacomp-synth/{seed}/{shard}".encode()).hexdigest()[:32]


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez``-compatible file with fixed zip timestamps, so equal arrays give equal bytes."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def render_planned(plan: PlannedSamples) -> tuple[list[bytes], list[list[list[float]]]]:
    """JPEG bytes and face boxes of every planned sample (degradations and overlays applied)."""
    out: list[bytes] = []
    boxes: list[list[list[float]]] = []
    tiny, extreme = KINDS.index("tiny"), KINDS.index("extreme_aspect")
    for i in range(len(plan.kind)):
        a = plan.aux[i]
        if plan.shown_text[i]:
            img = text_image(plan.shown_text[i].split("/"), plan.scenes.jitter[i, 26:32])
        elif plan.off_kind[i] >= 0:
            img = off_distribution(int(plan.off_kind[i]), a)
        else:
            img = render_scene(plan.scenes, i)
        face = [add_face(img, a[3:7])] if plan.face[i] else []
        if plan.kind[i] == tiny:
            img = degrade_tiny(img, 4 + int(a[7] * 6))
        elif plan.kind[i] == extreme:
            w, h = int(plan.width[i]), int(plan.height[i])
            img = degrade_aspect(img, max(w, h) / min(w, h), w > h)
        out.append(encode_jpeg(to_uint8(img), quality=75 if plan.dup_of[i] >= 0 else 90))
        boxes.append(face)
    return out, boxes


def write_shard(pool_dir: str, shard: int, n: int, seed: int, mix: dict[str, float], base_url: str,
                samples_per_shard: int) -> dict[str, Any]:
    """Engine task: plan, render, embed and write one shard's metadata, tar and ground truth."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datacomp.pool.shards import ShardWriter, sample_key
    from datacomp.synth.embed import cosine, embed_all

    pool = Path(pool_dir)
    plan = plan_samples(seed, STREAM_POOL, shard, n, NoiseMix(**mix))
    jpegs, boxes = render_planned(plan)
    pixels = np.stack([decode(b) for b in jpegs])  # embed what a downloader would see
    emb = embed_all(pixels, plan.captions)
    uid_rng = np.random.default_rng([seed, STREAM_POOL, shard, 99])
    uids = [bytes(r).hex() for r in uid_rng.integers(0, 256, (n, 16), dtype=np.uint8)]
    sha = [hashlib.sha256(b).hexdigest() for b in jpegs]
    urls = [f"{base_url.rstrip('/')}/{u}.jpg" for u in uids]
    stem = shard_stem(seed, shard)
    table = pa.table({
        "uid": uids, "url": urls, "text": plan.captions,
        "original_width": plan.width.astype(np.int64), "original_height": plan.height.astype(np.int64),
        "clip_b32_similarity_score": cosine(emb["b32_img"], emb["b32_txt"]),
        "clip_l14_similarity_score": cosine(emb["l14_img"], emb["l14_txt"]),
        "face_bboxes": boxes, "sha256": sha,
    }, schema=metadata_schema())
    meta = pool / "metadata"
    with atomic_path(meta / f"{stem}.parquet") as tmp:
        pq.write_table(table, tmp)
    write_npz(meta / f"{stem}.npz", {k: emb[k].astype(np.float16) for k in NPZ_KEYS})
    s = plan.scenes
    truth = pa.table({
        "uid": uids, "kind": [KINDS[k] for k in plan.kind], "language": plan.language.astype(str).tolist(),
        "glyph": s.glyph, "colour": s.colour, "count": s.count, "size": s.size, "position": s.position,
        "background": s.background, "style": s.style, "off_kind": plan.off_kind, "dup_of": plan.dup_of,
        "shown_text": plan.shown_text,
    })
    with atomic_path(pool / "truth" / f"{stem}.parquet") as tmp:
        pq.write_table(truth, tmp)
    writer = ShardWriter(pool / "shards", shard, mtime=SHARD_MTIME)
    try:
        for i in range(n):
            row = {"uid": uids[i], "face_bboxes": boxes[i], "caption": plan.captions[i], "url": urls[i],
                   "key": sample_key(shard, i, samples_per_shard), "width": 32, "height": 32,
                   "original_width": int(plan.width[i]), "original_height": int(plan.height[i]),
                   "exif": None, "sha256": sha[i]}
            writer.add_success(row, jpegs[i])
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return {"count": n, "stem": stem, "kinds": {k: int(np.sum(plan.kind == i)) for i, k in enumerate(KINDS)}}


def make_pool(out: str | os.PathLike[str], size: str | int = "tiny", seed: int = 0,
              base_url: str = DEFAULT_BASE_URL, mix: NoiseMix | None = None, workers: int | None = None,
              samples_per_shard: int | None = None, progress: bool = True, executor: Any = None) -> dict[str, Any]:
    """Generate a pool under ``out`` (``metadata/``, ``shards/``, ``truth/``); resumable per shard."""
    from datacomp.engine import Task, resolve_executor, run_tasks

    n = pool_size(size)
    mix = mix or NoiseMix()
    sps = samples_per_shard or (1000 if n <= 10_000 else 5000)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"size": n, "seed": seed, "base_url": base_url, "mix": mix.to_dict(), "samples_per_shard": sps}
    cfg_path = out / "synth_pool.json"
    if cfg_path.exists():
        import json

        old = json.loads(cfg_path.read_text())
        if old.get("config") != config:
            raise DataCompError(f"{out}: holds a pool generated with other settings; use an empty --out")
    write_json_atomic(cfg_path, {"config": config})
    tasks = []
    for shard, start in enumerate(range(0, n, sps)):
        cnt = min(sps, n - start)
        tasks.append(Task(f"shard-{shard:08d}", write_shard,
                          (str(out), shard, cnt, seed, {k: v for k, v in mix.to_dict().items() if k != "clean"},
                           base_url, sps), weight=cnt))
    workers = workers if workers is not None else min(len(tasks), os.cpu_count() or 1)
    results = run_tasks(tasks, resolve_executor(executor, workers), state_dir=out / ".synth_state",
                        desc="synth pool", unit="img", progress=progress)
    kinds: dict[str, int] = {}
    for r in results:
        for k, v in r.stats["kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    return {"pool": str(out), "samples": n, "shards": len(tasks), "kinds": kinds, "config": config}
