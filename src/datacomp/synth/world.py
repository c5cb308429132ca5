"""The embedded world as one object: pool + evaluation suite + baseline assets under one root."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.artifacts import write_world_marker
from datacomp.io import atomic_path, write_bytes_atomic, write_record
from datacomp.synth import concepts as C
from datacomp.synth.noise import NoiseMix
from datacomp.synth.pool import DEFAULT_BASE_URL, make_pool, pool_size

log = logging.getLogger(__name__)

STREAM_ASSETS = 2
ASSET_FILES = ("imagenet_analog_l14_img.npy", "imagenet_analog_labels.npy", "imagenet_analog_images.npy",
               "concepts.txt")


@dataclass(frozen=True)
class World:
    """Paths of a generated world (the shared contract; see ``docs/synth.md``)."""

    root: Path
    pool: Path  # root/pool
    metadata: Path  # pool/metadata: <stem>.parquet + <stem>.npz
    shards: Path  # pool/shards: img2dataset layout
    truth: Path  # pool/truth: generator ground truth per stem (kind, language, scene); filters never read it
    eval_suite: Path  # root/eval
    assets: Path  # root/assets
    seed: int = 0

    @classmethod
    def at(cls, root: str | os.PathLike[str], seed: int = 0) -> World:
        root = Path(root)
        pool = root / "pool"
        return cls(root, pool, pool / "metadata", pool / "shards", pool / "truth", root / "eval",
                   root / "assets", seed)


def make_assets(out: str | os.PathLike[str], seed: int = 0, per_class: int = 100) -> dict[str, Any]:
    """Baseline assets in miniature: a clean class-centric set (ImageNet-1k train analog) with its
    "l14" embeddings (for the image-based filter's centroids) and a concept list (ImageNet-21k analog).
    """
    from datacomp.synth.embed import embed_images, load_reference, torch_threads
    from datacomp.synth.render import render, sample_scenes

    out = Path(out)
    if all((out / f).exists() for f in ASSET_FILES):
        return {"assets": str(out), "written": False}
    rng = np.random.default_rng([seed, STREAM_ASSETS])
    n = per_class * len(C.SHAPES)
    s = sample_scenes(rng, n, sketch_share=0.0, digit_share=0.0, count_p=(1.0, 0, 0, 0),
                      glyphs=tuple(range(len(C.SHAPES))))
    s.glyph[:] = np.repeat(np.arange(len(C.SHAPES)), per_class)
    images = render(s)
    with torch_threads(1):
        emb = embed_images(load_reference("l14"), images)
    for name, arr in (("imagenet_analog_l14_img.npy", emb.astype(np.float32)),
                      ("imagenet_analog_labels.npy", s.glyph.astype(np.int64)),
                      ("imagenet_analog_images.npy", images)):
        with atomic_path(out / name) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
    write_bytes_atomic(out / "concepts.txt", ("\n".join(C.concept_names()) + "\n").encode())
    return {"assets": str(out), "written": True, "images": n}


def make_world(root: str | os.PathLike[str], size: str | int = "tiny", seed: int = 0,
               base_url: str = DEFAULT_BASE_URL, mix: NoiseMix | None = None, workers: int | None = None,
               eval_scale: str = "full", progress: bool = True, executor: Any = None) -> World:
    """Generate (or complete) a world: pool, evaluation suite and assets. Reuses what exists."""
    from datacomp.synth.evalsuite import make_eval_suite

    started = time.time()
    w = World.at(root, seed)
    w.root.mkdir(parents=True, exist_ok=True)
    ev = make_eval_suite(w.eval_suite, seed=seed, scale=eval_scale, progress=progress,
                         executor=executor, workers=workers or 1)
    assets = make_assets(w.assets, seed=seed, per_class=100 if eval_scale == "full" else 30)
    pool = make_pool(w.pool, size=size, seed=seed, base_url=base_url, mix=mix, workers=workers,
                     progress=progress, executor=executor)
    write_world_marker(w.metadata, w.assets, {"seed": seed, "size": pool_size(size)})
    write_record(w.root / "world_record.json", "synth world",
                 {"size": pool_size(size), "seed": seed, "base_url": base_url, "eval_scale": eval_scale,
                  "mix": pool["config"]["mix"]},
                 counts={"pool": pool["samples"], "shards": pool["shards"], "eval_tasks": ev["tasks"],
                         "asset_images": assets.get("images"),
                         "kinds": pool["kinds"]}, started=started)
    return w


def make_test_world(root: str | os.PathLike[str], seed: int = 0) -> World:
    """The small world the test suite shares: 4,000 pool samples, a quarter-size suite, in-process."""
    return make_world(root, size="test", seed=seed, workers=1, eval_scale="test", progress=False)
