"""``datacomp embed``: CLIP embeddings and similarity scores for pools without npz files (BYOD).

Phase 1 (one task per shard tar): decode each sample's image, embed it with every model, write
``<work>/<shard>.npz`` holding the sample uids and image embeddings. Phase 2 (one task per metadata
parquet): embed the captions, look each row's image embedding up by uid, and write the parquet
(with ``clip_<key>_similarity_score`` recomputed) and the row-aligned npz (``<key>_img``,
``<key>_txt``, float16, L2-normalised) under the output folder. Rows whose image is not in any
shard get a zero image embedding and a NaN score, so score rules drop them.

Models are open_clip specs resolved by :func:`datacomp.models.resolve_model` (``ViT-B-32:openai``,
``ViT-L-14:/path.pt``, ``hf-hub:org/name``); the embedded world's reference models are the default
only for a pool whose metadata carries the world marker. On a GPU images and captions are encoded
in batches under AMP; on the CPU each worker process uses one torch thread.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datacomp.artifacts import IMAGE_EXTS, is_embedded_world, read_world_marker, world_assets, write_world_marker
from datacomp.engine import Executor, Task, resolve_executor, run_tasks
from datacomp.errors import DataCompError
from datacomp.filters import metadata as md
from datacomp.filters.pixels import lookup_sorted
from datacomp.io import atomic_path
from datacomp.models import REFERENCE_MODELS
from datacomp.storage import Location, as_location, load_numpy
from datacomp.uids import UID_DTYPE, hex_to_uids, sort_order

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """One embedding model: the npz key prefix (``b32``/``l14``), model spec (see ``resolve_model``), weights."""

    key: str
    name: str
    checkpoint: str | None = None


REFERENCE_SPECS = tuple(ModelSpec(k, n) for k, n in REFERENCE_MODELS.items())
MODEL_FLAG_HELP = "--model b32=ViT-B-32:openai --model l14=ViT-L-14:openai"


def default_models(metadata_dir: str | os.PathLike[str]) -> tuple[ModelSpec, ...]:
    """The reference models for an embedded world's pool; any other pool must name its models."""
    if not is_embedded_world(metadata_dir):
        raise DataCompError(f"{metadata_dir}: not an embedded world's pool, so no default model: pass "
                            f"{MODEL_FLAG_HELP} (open_clip names with pretrained tags, a checkpoint path, "
                            "or hf-hub:ORG/NAME)")
    return REFERENCE_SPECS


def parse_models(specs: list[str] | None, checkpoints: list[str] | None = None,
                 metadata_dir: str | os.PathLike[str] | None = None) -> tuple[ModelSpec, ...]:
    """``["b32=ViT-B-32:openai", ...]`` and ``["b32=/path.pt", ...]`` -> specs.

    Without ``specs``: the reference models when ``metadata_dir`` is an embedded world's pool, else refused.
    """
    if not specs:
        if metadata_dir is None:
            raise DataCompError(f"no embedding model given: pass {MODEL_FLAG_HELP}")
        models = {m.key: m for m in default_models(metadata_dir)}
    else:
        models = {}
    for s in specs or []:
        key, sep, name = s.partition("=")
        if not sep or not key or not name:
            raise DataCompError(f"--model {s!r}: expected KEY=MODEL, e.g. b32=ViT-B-32:openai")
        models[key] = ModelSpec(key, name)
    for c in checkpoints or []:
        key, sep, path = c.partition("=")
        if not sep or key not in models:
            raise DataCompError(f"--checkpoint {c!r}: expected KEY=PATH with KEY one of {', '.join(models)}")
        models[key] = ModelSpec(key, models[key].name, path)
    return tuple(models.values())


_LOADED: dict[ModelSpec, Any] = {}


def load(spec: ModelSpec) -> Any:
    """The model (cached per process), through :func:`datacomp.models.resolve_model`."""
    if spec not in _LOADED:
        from datacomp.models import resolve_model

        _LOADED[spec] = resolve_model(spec.name, spec.checkpoint)
    return _LOADED[spec]


def embed_images(lm: Any, images: list[bytes], batch: int = 256) -> np.ndarray:
    """L2-normalised float32 embeddings of encoded images, through the model's own preprocessing."""
    import torch

    from datacomp.pool.resize import ImageError, open_image

    def decode(i: int, b: bytes) -> Any:
        try:
            return open_image(b)  # pixel-capped before decoding
        except ImageError as e:
            raise DataCompError(f"image {i} of the shard is unusable ({e.message}); re-download it") from None

    from datacomp.models import embed_pixels

    def batches() -> Any:
        for a in range(0, len(images), batch):
            yield torch.stack([lm.preprocess_val(decode(a + i, b)) for i, b in enumerate(images[a : a + batch])])

    return embed_pixels(lm, batches())


def embed_texts(lm: Any, texts: list[str], batch: int = 1024) -> np.ndarray:
    """L2-normalised float32 caption embeddings; each distinct caption encoded once."""
    from datacomp.models import embed_texts as _embed

    return _embed(lm, texts, batch)


def _threads() -> Any:
    from datacomp.models import torch_threads

    return torch_threads(1)


def shard_task(tar: str, work: str, models: tuple[ModelSpec, ...], image_ext: tuple[str, ...] = IMAGE_EXTS,
               batch: int = 256) -> dict[str, Any]:
    """Embed one shard's images; write ``<work>/<shard>.npz`` with uids and ``<key>_img`` arrays."""
    from datacomp.pool.shards import iter_tar_samples

    uids: list[str] = []
    images: list[bytes] = []
    for key, sample in iter_tar_samples(tar):
        meta = json.loads(sample["json"]) if "json" in sample else {}
        uid = meta.get("uid")
        img = next((sample[e] for e in image_ext if e in sample), None)
        if uid is None or img is None:
            raise DataCompError(f"{tar}: sample {key} lacks a json uid or an image ({'/'.join(image_ext)})")
        uids.append(uid)
        images.append(img)
    try:
        u = hex_to_uids(np.asarray(uids, dtype="U32") if uids else np.zeros(0, "U32"))
    except DataCompError as e:
        raise DataCompError(f"{tar}: {e}") from None
    arrays: dict[str, np.ndarray] = {"uid_f0": u["f0"], "uid_f1": u["f1"]}
    with _threads():
        for m in models:
            lm = load(m)
            try:
                arrays[f"{m.key}_img"] = embed_images(lm, images, batch).astype(np.float16)
            except DataCompError as e:
                raise DataCompError(f"{tar}: {e}") from None
    out = as_location(work) / f"{as_location(tar).stem}.npz"
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return {"samples": len(uids)}


def metadata_task(parquet: str, work: str, output_dir: str, models: tuple[ModelSpec, ...]) -> dict[str, Any]:
    """Write one metadata file's parquet (scores) and npz (embeddings), rows matched by uid."""
    f = as_location(parquet)
    md.check_columns(f, md.read_schema(f), ["uid", "text"])
    table = md.read_columns(f, md.read_schema(f).names)
    try:
        uids = hex_to_uids(table.column("uid"))
    except DataCompError as e:
        raise DataCompError(f"{f}: {e}") from None
    index_u, index_src = _load_index(as_location(work))
    pos, found = lookup_sorted(index_u, uids)
    texts = [t or "" for t in table.column("text").to_pylist()]
    arrays: dict[str, np.ndarray] = {}
    with _threads():
        for m in models:
            lm = load(m)
            txt = embed_texts(lm, texts)
            img = np.zeros_like(txt)
            for shard, rows in _group_rows(index_src, pos, found):
                with load_numpy(as_location(work) / f"{shard}.npz") as z:
                    img[rows[0]] = z[f"{m.key}_img"][rows[1]].astype(np.float32)
            score = np.einsum("ij,ij->i", img, txt).astype(np.float32)
            score[~found] = np.nan
            arrays[f"{m.key}_img"] = img.astype(np.float16)
            arrays[f"{m.key}_txt"] = txt.astype(np.float16)
            col = f"clip_{m.key}_similarity_score"
            scores = pa.array(score, pa.float32())
            if col in table.column_names:
                table = table.set_column(table.schema.get_field_index(col), col, scores)
            else:
                table = table.append_column(col, scores)
    out = as_location(output_dir)
    with atomic_path(out / f"{f.stem}.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    with atomic_path(out / f"{f.stem}.parquet") as tmp:
        pq.write_table(table, tmp)
    return {"rows": table.num_rows, "with_image": int(found.sum())}


_INDEX: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}


def _load_index(work: Location) -> tuple[np.ndarray, tuple[np.ndarray, list[str]]]:
    """All embedded uids (sorted) and, per uid, ``(shard number, row in shard)`` (cached per process)."""
    shards = sorted(p.stem for p in work.ls("*.npz"))
    key = f"{work}:{','.join(shards)}"
    if key not in _INDEX:
        parts, src = [], []
        for i, s in enumerate(shards):
            with load_numpy(work / f"{s}.npz") as z:
                u = np.empty(len(z["uid_f0"]), UID_DTYPE)
                u["f0"], u["f1"] = z["uid_f0"], z["uid_f1"]
            parts.append(u)
            src.append(np.stack([np.full(len(u), i), np.arange(len(u))], 1))
        allu = np.concatenate(parts) if parts else np.zeros(0, UID_DTYPE)
        alls = np.concatenate(src) if src else np.zeros((0, 2), np.int64)
        order = sort_order(allu)
        _INDEX.clear()
        _INDEX[key] = (allu[order], alls[order], shards)
    u, s, names = _INDEX[key]
    return u, (s, names)


def _group_rows(index_src: tuple[np.ndarray, list[str]], pos: np.ndarray, found: np.ndarray
                ) -> list[tuple[str, tuple[np.ndarray, np.ndarray]]]:
    src, names = index_src
    rows = np.flatnonzero(found)
    where = src[pos[rows]]
    out = []
    for shard_no in np.unique(where[:, 0]):
        sel = where[:, 0] == shard_no
        out.append((names[int(shard_no)], (rows[sel], where[sel, 1])))
    return out


def embed_pool(
    metadata_dir: str | os.PathLike[str],
    shards_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    models: tuple[ModelSpec, ...] | None = None,
    workers: int | None = None,
    batch_size: int = 256,
    executor: str | Executor | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Embed a pool's images (from its shards) and captions; write parquet + npz per metadata file.

    ``models``: default only for an embedded world's pool (its reference models); else required.
    """
    from datacomp.pool.shards import list_shards

    models = default_models(metadata_dir) if models is None else models
    files = md.list_parquets(metadata_dir)
    tars = list_shards(shards_dir)
    if not tars:
        raise DataCompError(f"{shards_dir}: no .tar shards to read images from")
    out = as_location(output_dir)
    if out.resolve() == as_location(metadata_dir).resolve():
        raise DataCompError(f"{out}: write the embedded metadata to a new folder, not over the input")
    work = out / ".embed-work"
    if workers is None and executor in (None, "local"):
        from datacomp.models import default_device

        if default_device() == "cuda":  # one process feeds the GPU in batches; more would only share it
            workers = 1
    exe = resolve_executor(executor, workers)
    run_tasks([Task(t.stem, shard_task, (str(t), str(work), models), {"batch": batch_size}) for t in tars],
              exe, state_dir=str(work / "state-shards"), desc="embed images", unit="shard", progress=progress)
    res = run_tasks([Task(f.stem, metadata_task, (str(f), str(work), str(out), models)) for f in files],
                    exe, state_dir=str(work / "state-meta"), desc="embed captions", unit="file", progress=progress)
    work.rm(recursive=True)
    world = read_world_marker(metadata_dir)
    if world is not None and out.is_local:  # still the world's pool, with the world's assets
        write_world_marker(out, world_assets(metadata_dir), {k: v for k, v in world.items()
                                                              if k not in ("kind", "assets", "reference_models")})
    rows = sum(r.stats["rows"] for r in res)
    with_image = sum(r.stats["with_image"] for r in res)
    return {"files": len(files), "shards": len(tars), "rows": rows, "with_image": with_image,
            "models": [m.__dict__ for m in models], "output_dir": str(out)}


def build_targets(images: str | os.PathLike[str], output: str | os.PathLike[str], model: str,
                  batch_size: int = 256) -> dict[str, Any]:
    """The image-based filter's reference embeddings: every image under ``images`` embedded with ``model``.

    ``images``: a folder of image files (searched recursively, sorted by path) or of webdataset
    ``.tar`` shards (the ImageNet-1k train set for the original recipe). ``model``: a spec for
    :func:`datacomp.models.resolve_model`, the same model as the pool's ``l14_img``. Writes a float32,
    L2-normalised ``(n, d)`` ``.npy`` for ``--targets``.
    """
    from datacomp.pool.shards import iter_tar_samples

    root = Path(images)
    if not root.is_dir():
        raise DataCompError(f"{root}: reference image folder not found")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTS)
    tars = sorted(root.rglob("*.tar"))
    data: list[bytes] = [p.read_bytes() for p in files]
    for t in tars:
        data += [bytes(next(m[e] for e in IMAGE_EXTS if e in m)) for _, m in iter_tar_samples(t)
                 if any(e in m for e in IMAGE_EXTS)]
    if not data:
        raise DataCompError(f"{root}: no images ({', '.join(IMAGE_EXTS)} files or .tar shards) to embed")
    with _threads():
        emb = embed_images(load(ModelSpec("target", model)), data, batch_size).astype(np.float32)
    out = Path(output)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, emb, allow_pickle=False)
    return {"output": str(out), "images": len(data), "dim": int(emb.shape[1]), "model": model}
