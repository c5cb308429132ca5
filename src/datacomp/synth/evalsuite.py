"""The embedded evaluation suite, written in CLIP_benchmark's webdataset layout.

Per task ``<suite>/<key with / -> ->/``: ``test/0.tar`` (``<k>.png`` + ``<k>.cls``, or ``<k>.txt`` with
several captions for retrieval, plus ``<k>.npy`` group metadata for the fairness task),
``test/nshards.txt``, ``classnames.txt``, ``zeroshot_classification_templates.txt`` and ``manifest.json``
(the sample count evaluation checks). The task registry is the evaluate package's suite file
``evaluate/suites/embedded.json``; the world writes the suite beside its data as ``eval_tasks.json``.
Every task draws from its own RNG stream, never the pool's, so test images never enter the pool.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.errors import DataCompError
from datacomp.io import atomic_path, write_bytes_atomic
from datacomp.synth import concepts as C
from datacomp.synth.noise import english_caption
from datacomp.synth.render import Scenes, encode_png, render, sample_scenes

log = logging.getLogger(__name__)

TASKS_FILE = Path(__file__).parent.parent / "evaluate" / "suites" / "embedded.json"
STREAM_EVAL = 3
EVAL_MTIME = 1_700_000_000
SHARD_SIZE = 2000  # samples per test/<i>.tar
SEEN_BG = tuple(range(len(C.BACKGROUNDS)))
UNSEEN_BG = tuple(C.ALL_BACKGROUNDS.index(b) for b in C.UNSEEN_BACKGROUNDS)
SHAPE_GLYPHS = tuple(range(len(C.SHAPES)))
DIGIT_GLYPHS = tuple(range(len(C.SHAPES), len(C.SHAPES) + 10))


@cache
def embedded_tasks() -> tuple[dict[str, Any], ...]:
    """The embedded task registry (the ``tasks`` of ``evaluate/suites/embedded.json``)."""
    return tuple(json.loads(TASKS_FILE.read_text())["tasks"])


def task_dir(suite: str | os.PathLike[str], key: str) -> Path:
    return Path(suite) / key.replace("/", "-")


@dataclass
class TaskData:
    images: np.ndarray  # (n, 32, 32, 3) uint8
    labels: np.ndarray | None = None  # classification
    captions: list[list[str]] | None = None  # retrieval
    metadata: np.ndarray | None = None  # (n, fields) int64 for group metrics
    classnames: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()


def _scenes(rng: np.random.Generator, n: int, **kw: Any) -> Scenes:
    kw.setdefault("sketch_share", 0.0)
    kw.setdefault("digit_share", 0.0)
    kw.setdefault("glyphs", SHAPE_GLYPHS)
    return sample_scenes(rng, n, **kw)


def _shapes(rng: np.random.Generator, n: int, **kw: Any) -> TaskData:
    s = _scenes(rng, n, **kw)
    return TaskData(render(s), labels=s.glyph.copy(), classnames=C.SHAPES, templates=C.SHAPE_TEMPLATES)


def _shapes_small(rng: np.random.Generator, n: int) -> TaskData:
    s = _scenes(rng, n, count_p=(0.0, 0.4, 0.3, 0.3))
    s.size[:] = 0
    return TaskData(render(s), labels=s.glyph.copy(), classnames=C.SHAPES, templates=C.SHAPE_TEMPLATES)


def _colours(rng: np.random.Generator, n: int) -> TaskData:
    s = _scenes(rng, n)
    return TaskData(render(s), labels=s.colour.copy(), classnames=C.COLOUR_NAMES, templates=C.COLOUR_TEMPLATES)


def _count(rng: np.random.Generator, n: int) -> TaskData:
    s = _scenes(rng, n, count_p=(0.25, 0.25, 0.25, 0.25))
    return TaskData(render(s), labels=s.count - 1, classnames=C.COUNT_WORDS, templates=C.COUNT_TEMPLATES)


def _backgrounds(rng: np.random.Generator, n: int) -> TaskData:
    s = _scenes(rng, n)
    s.size[:] = 0  # small objects: the texture is what the image mostly shows
    return TaskData(render(s), labels=s.background.copy(), classnames=C.BACKGROUNDS,
                    templates=C.BACKGROUND_TEMPLATES)


def _position(rng: np.random.Generator, n: int) -> TaskData:
    s = _scenes(rng, n, count_p=(1.0, 0, 0, 0))
    s.size[:] = 0
    names = tuple(C.POSITION_PHRASES[p] for p in C.POSITIONS)
    return TaskData(render(s), labels=s.position.copy(), classnames=names, templates=C.POSITION_TEMPLATES)


def _size(rng: np.random.Generator, n: int) -> TaskData:
    s = _scenes(rng, n, count_p=(1.0, 0, 0, 0))
    return TaskData(render(s), labels=s.size.copy(), classnames=C.SIZES, templates=C.SIZE_TEMPLATES)


def _digits(rng: np.random.Generator, n: int) -> TaskData:
    s = _scenes(rng, n, glyphs=DIGIT_GLYPHS)
    return TaskData(render(s), labels=s.glyph - len(C.SHAPES), classnames=C.DIGITS,
                    templates=C.DIGIT_CLASS_TEMPLATES)


def _uci_digits() -> tuple[np.ndarray, np.ndarray]:
    """The UCI handwritten digits shipped in ``synth/data`` (the file behind scikit-learn's
    ``load_digits``): images (1797, 8, 8) float64 in 0..16 and integer labels."""
    import gzip

    with gzip.open(Path(__file__).with_name("data") / "digits.csv.gz", "rt") as f:
        rows = np.loadtxt(f, delimiter=",")
    return rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(np.int64)


def _real_digits(rng: np.random.Generator, n: int) -> TaskData:
    """scikit-learn's handwritten digits (UCI, 8x8, real scans) upscaled to 32x32: an MNIST analog."""
    from PIL import Image

    images, target = _uci_digits()
    idx = np.sort(rng.permutation(len(target))[:n])
    imgs = np.empty((len(idx), 32, 32, 3), np.uint8)
    for j, i in enumerate(idx):
        a = (images[i] * (255.0 / 16.0)).astype(np.uint8)
        imgs[j] = np.asarray(Image.fromarray(a).resize((32, 32), Image.BILINEAR).convert("RGB"))
    return TaskData(imgs, labels=target[idx].astype(np.int64), classnames=C.DIGITS,
                    templates=C.DIGIT_CLASS_TEMPLATES)


def _retrieval(rng: np.random.Generator, n: int, captions_per_image: int = 5) -> TaskData:
    s = sample_scenes(rng, n, sketch_share=0.1, digit_share=0.1)
    caps = []
    for i in range(n):
        seen: list[str] = []
        for _ in range(20 * captions_per_image):
            c = english_caption(s, i, rng.random(4))
            if c not in seen:
                seen.append(c)
            if len(seen) == captions_per_image:
                break
        caps.append(seen)
    return TaskData(render(s), captions=caps)


def _fairness(rng: np.random.Generator, n: int) -> TaskData:
    """Shape classification whose worst group (by background) is the score, as GeoDE's regions."""
    s = _scenes(rng, n)
    meta = np.stack([s.background, s.colour], 1).astype(np.int64)
    return TaskData(render(s), labels=s.glyph.copy(), metadata=meta, classnames=C.SHAPES,
                    templates=C.SHAPE_TEMPLATES)


GENERATORS: dict[str, Callable[[np.random.Generator, int], TaskData]] = {
    "embedded/shapes": lambda r, n: _shapes(r, n),
    "embedded/shapes_v2": lambda r, n: _shapes(r, n),
    "embedded/shapes_sketch": lambda r, n: _shapes(r, n, sketch_share=1.0),
    "embedded/shapes_unseen_backgrounds": lambda r, n: _shapes(r, n, backgrounds=UNSEEN_BG),
    "embedded/shapes_small": _shapes_small,
    "embedded/colours": _colours,
    "embedded/count": _count,
    "embedded/backgrounds": _backgrounds,
    "embedded/position": _position,
    "embedded/size": _size,
    "embedded/digits": _digits,
    "embedded/handwritten_digits": _real_digits,
    "embedded/retrieval": _retrieval,
    "embedded/fairness": _fairness,
}


def generate_task(key: str, size: int, seed: int = 0) -> TaskData:
    """The task's samples, drawn from a stream of their own (never the pool's)."""
    idx = [t["key"] for t in embedded_tasks()].index(key)
    rng = np.random.default_rng([seed, STREAM_EVAL, idx])
    return GENERATORS[key](rng, size)


def write_task(suite: str, key: str, size: int, seed: int = 0) -> dict[str, Any]:
    """Engine task: write one task's tars and text files; ``test/nshards.txt`` last marks it done."""
    from datacomp.pool.shards import TarSampleWriter

    data = generate_task(key, size, seed)
    d = task_dir(suite, key)
    n = len(data.images)
    nshards = max(1, -(-n // SHARD_SIZE))
    for sh in range(nshards):
        with TarSampleWriter(d / "test" / f"{sh}.tar", mtime=EVAL_MTIME) as w:
            for i in range(sh * SHARD_SIZE, min(n, (sh + 1) * SHARD_SIZE)):
                members: dict[str, Any] = {"png": encode_png(data.images[i])}
                if data.labels is not None:
                    members["cls"] = str(int(data.labels[i]))
                if data.captions is not None:
                    members["txt"] = "\n".join(data.captions[i])
                if data.metadata is not None:
                    buf = io.BytesIO()
                    np.save(buf, data.metadata[i])
                    members["npy"] = buf.getvalue()
                w.write(f"s{i:07d}", members)
    if data.classnames:
        write_bytes_atomic(d / "classnames.txt", ("\n".join(data.classnames) + "\n").encode())
        write_bytes_atomic(d / "zeroshot_classification_templates.txt", ("\n".join(data.templates) + "\n").encode())
    write_bytes_atomic(d / "manifest.json", json.dumps({"samples": n}).encode() + b"\n")
    write_bytes_atomic(d / "test" / "nshards.txt", f"{nshards}\n".encode())
    return {"count": n, "nshards": nshards}


def task_sizes(scale: str = "full") -> dict[str, int]:
    """Samples per task: ``full`` (the tiny world's suite) or ``test`` (the test world's)."""
    if scale not in ("full", "test"):
        raise DataCompError(f"eval suite scale {scale!r}: choose full or test")
    div = 1 if scale == "full" else 4
    return {t["key"]: max(40, t["size"] // div) for t in embedded_tasks()}


def make_eval_suite(out: str | os.PathLike[str], seed: int = 0, scale: str = "full", workers: int = 1,
                    tasks: list[str] | None = None, progress: bool = True, executor: Any = None) -> dict[str, Any]:
    """Write the embedded evaluation suite under ``out``; tasks already written are kept."""
    from datacomp.engine import Task, resolve_executor, run_tasks

    sizes = task_sizes(scale)
    keys = tasks or list(sizes)
    unknown = [k for k in keys if k not in sizes]
    if unknown:
        raise DataCompError(f"unknown embedded task(s) {', '.join(unknown)}: see {TASKS_FILE.name}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = [Task(k, write_task, (str(out), k, sizes[k], seed), weight=sizes[k]) for k in keys
            if not (task_dir(out, k) / "test" / "nshards.txt").exists()]
    results = run_tasks(plan, resolve_executor(executor, workers), desc="synth eval suite", unit="img",
                        progress=progress)
    with atomic_path(out / "eval_tasks.json") as tmp:
        suite = json.loads(TASKS_FILE.read_text())
        suite["tasks"] = [t for t in suite["tasks"] if t["key"] in keys]
        tmp.write_text(json.dumps(suite, indent=2) + "\n")
    return {"eval_suite": str(out), "tasks": len(keys), "written": len(results),
            "samples": {k: sizes[k] for k in keys}}
