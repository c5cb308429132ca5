"""Retrain the embedded world's reference models reproducibly (``datacomp synth train-reference``).

Both are open_clip ModifiedResNets (conv towers see shape; tiny ViTs stay shape-blind, see
``docs/synth.md``): "b32" (width 8, embed 48, text width 32) on fewer samples, "l14" (width 16,
embed 96, text width 64) on more. They train with the project's one training loop
(:func:`datacomp.train.train`) on a separate clean set drawn from its own RNG stream (never the
pool, never the evaluation suite), and ship as fp16 safetensors in ``datacomp/model_weights/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.errors import DataCompError
from datacomp.io import write_json_atomic
from datacomp.models import WORLD_MODELS
from datacomp.synth import concepts as C
from datacomp.synth.embed import WEIGHTS_DIR, embed_images, embed_texts
from datacomp.synth.noise import english_caption, make_text_scene, text_lines
from datacomp.synth.render import encode_jpeg, render, sample_scenes, text_image, to_uint8

log = logging.getLogger(__name__)

STREAM_REFERENCE = 4


@dataclass(frozen=True)
class ReferenceRecipe:
    """How one reference model is trained (fixed, so retraining reproduces the shipped weights)."""

    which: str
    samples_seen: int
    batch_size: int = 256
    lr: float = 2e-3
    warmup: int = 40
    text_share: float = 0.0  # share of the clean set shown as text cards (see TEXT_SHARE)


# Share of the clean set whose image is its caption's words written out (signs, posters, covers):
# web-trained CLIP models learn to read, which is why text-only images score high (T-MARS).
TEXT_SHARE = 0.3
RECIPES: dict[str, ReferenceRecipe] = {
    # b32 reads less: half the text share, so its shape accuracy (trained on half l14's samples) holds
    "b32": ReferenceRecipe("b32", samples_seen=102_400, batch_size=128, warmup=50, text_share=TEXT_SHARE / 2),
    "l14": ReferenceRecipe("l14", samples_seen=204_800, text_share=TEXT_SHARE),
    # the filtering network: l14's architecture and recipe on curated pairs only (no text cards),
    # as DFN's network learns from high-quality data rather than from the web-like pool
    "dfn": ReferenceRecipe("dfn", samples_seen=204_800, text_share=0.0),
}
CLEAN_SET_SIZE = 20_000
COLOUR_DROP = 0.5  # clean-set captions without a colour word: shape must carry the match


def write_clean_set(out: str | os.PathLike[str], n: int = CLEAN_SET_SIZE, seed: int = 0,
                    per_shard: int = 5000, text_share: float = TEXT_SHARE) -> list[Path]:
    """Clean image-caption pairs from the reference stream, as webdataset shards (jpg/txt/json).

    ``text_share``: the share of pairs whose image is a card with the caption's words; the other
    pairs are the same for every share.
    """
    from datacomp.pool.shards import TarSampleWriter

    out = Path(out)
    rng = np.random.default_rng([seed, STREAM_REFERENCE])
    s = sample_scenes(rng, n, sketch_share=0.1, digit_share=0.08)
    u = rng.random((n, 4))
    t = rng.random((n, 10))
    texts = np.flatnonzero(t[:, 0] < text_share)
    for i in texts:
        make_text_scene(s, int(i), int(t[i, 1] * 10))
    images = render(s)
    captions = [english_caption(s, i, u[i], colour_drop=COLOUR_DROP) for i in range(n)]
    for i in texts:  # the card writes the caption's own words
        images[i] = to_uint8(text_image(text_lines(s, int(i), captions[i]), t[i, 4:10]))
    tars = []
    for sh, a in enumerate(range(0, n, per_shard)):
        path = out / f"{sh:08d}.tar"
        with TarSampleWriter(path, mtime=1_700_000_000) as w:
            for i in range(a, min(n, a + per_shard)):
                uid = hashlib.md5(f"ref/{seed}/{i}".encode()).hexdigest()
                w.write(f"{i:012d}", {"jpg": encode_jpeg(images[i]),
                                      "txt": captions[i],
                                      "json": {"uid": uid, "key": f"{i:012d}"}})
        tars.append(path)
    return tars


def zero_shot_accuracy(lm: Any, images: np.ndarray, labels: np.ndarray, classnames: tuple[str, ...],
                       templates: tuple[str, ...]) -> float:
    """CLIP zero-shot top-1: mean of normalised template embeddings per class, argmax of cosine."""
    w = []
    for c in classnames:
        e = embed_texts(lm, [t.replace("{c}", c) for t in templates]).mean(0)
        w.append(e / np.linalg.norm(e))
    pred = (embed_images(lm, images) @ np.stack(w).T).argmax(1)
    return float(np.mean(pred == labels))


def train_reference(work_dir: str | os.PathLike[str], which: tuple[str, ...] = ("b32", "l14"), seed: int = 0,
                    weights_dir: str | os.PathLike[str] = WEIGHTS_DIR, threads: int | None = 1,
                    progress: bool = True) -> dict[str, Any]:
    """Train the reference models with ``datacomp.train`` and write their fp16 safetensors."""
    import torch
    from safetensors.torch import save_file

    from datacomp.models import load_model, load_state_dict
    from datacomp.synth.evalsuite import generate_task
    from datacomp.train import TrainConfig, train

    unknown = [w for w in which if w not in RECIPES]
    if unknown:
        raise DataCompError(f"unknown reference model(s) {unknown}: choose from {', '.join(RECIPES)}")
    work = Path(work_dir)
    test = generate_task("embedded/shapes", 1200, seed)

    report: dict[str, Any] = {"seed": seed, "clean_set": CLEAN_SET_SIZE, "models": {}}
    for w in which:
        r = RECIPES[w]
        data = work / f"clean_set_text{r.text_share:g}"
        if not (data / f"{(CLEAN_SET_SIZE - 1) // 5000:08d}.tar").exists():
            write_clean_set(data, seed=seed, text_share=r.text_share)
        cfg = TrainConfig(model=WORLD_MODELS[w], batch_size=r.batch_size, lr=r.lr,
                          train_num_samples=r.samples_seen, warmup=r.warmup, num_checkpoints=1,
                          precision="fp32", seed=seed, workers=1, grad_checkpointing=False)
        t0 = time.time()
        res = train(str(data), work / "runs", f"ref-{w}", cfg, threads=threads, progress=progress)
        sd = load_state_dict(res.checkpoint)
        out = Path(weights_dir) / f"{w}.safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.to(torch.float16).contiguous() if v.is_floating_point() else v.contiguous()
                   for k, v in sd.items()}, str(out))
        lm = load_model(WORLD_MODELS[w], checkpoint=out)
        acc = zero_shot_accuracy(lm, test.images, test.labels, C.SHAPES, C.SHAPE_TEMPLATES)
        report["models"][w] = {"config": cfg.to_dict(), "seconds": round(time.time() - t0, 1),
                               "weights": str(out), "bytes": out.stat().st_size, "shapes_acc1": acc}
        log.info("reference %s: shapes zero-shot acc1 %.3f (%s)", w, acc, out)
    write_json_atomic(work / "reference_report.json", report)
    from datacomp.synth.embed import load_reference

    load_reference.cache_clear()
    return report
