"""Evaluation data: find a task's CLIP_benchmark-layout folder, read it in one pass, or fetch it from the Hub.

Layout per task (what ``download_evalsets.py`` and the embedded world write)::

    <data_dir>/<key with '/'->'-'>/            (or the original's wds_<folder>_test/)
        classnames.txt                         one class per line (classification tasks)
        zeroshot_classification_templates.txt  one template per line, ``{c}`` placeholder
        test/nshards.txt, test/0.tar, 1.tar, ...

Samples carry the image (first of webp/png/jpg/jpeg) plus ``cls`` (label), ``npy`` (int64 metadata
vector), ``txt`` (captions, one per line) or, for WinoGAViL, ``json`` (cue, candidates,
associations) with candidate images ``<i>.<ext>``. Everything a task needs is read in the same pass
over the tars, so predictions and group metadata cannot drift apart (the original read them twice).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.errors import DataCompError
from datacomp.evaluate.registry import EvalTask
from datacomp.pool.shards import TarSampleWriter, iter_tar_samples

log = logging.getLogger(__name__)

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")
_CANDIDATE_RE = re.compile(r"^(\d+)\.(webp|png|jpg|jpeg)$")
DEFAULT_DATA_DIR = Path(os.environ.get("DATACOMP_EVAL_DIR", Path.home() / ".cache" / "datacomp" / "evalsets"))


@dataclass(frozen=True)
class TaskData:
    task: EvalTask
    root: Path
    shards: list[Path]
    classnames: list[str] | None
    templates: list[str] | None


def _read_lines(path: Path) -> list[str] | None:
    """Non-blank lines (clip_benchmark 1.4.0 drops blank ones; later versions broke FairFace by keeping them)."""
    if not path.is_file():
        return None
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _shards_of(test_dir: Path) -> list[Path]:
    tars = [p for p in test_dir.glob("*.tar") if not p.name.startswith(".")]
    return sorted(tars, key=lambda p: (int(p.stem) if p.stem.isdigit() else 1 << 62, p.name))


def how_to_get(task: EvalTask, data_dir: Path) -> str:
    if task.suite == "embedded":
        return ("the embedded world writes its evaluation suite (`datacomp synth`, or datacomp.synth.make_world); "
                "pass that world's eval/ folder with --data-dir")
    return (f"run `datacomp download-evalsets --tasks {task.key} --data-dir {data_dir}` (needs network, "
            f"source {task.source}) or add --download")


def candidate_dirs(task: EvalTask, data_dir: Path) -> list[Path]:
    return [data_dir / task.folder, data_dir / task.wds_folder]


def locate(task: EvalTask, data_dir: str | os.PathLike[str]) -> TaskData:
    """The task's data under ``data_dir``; a missing or incomplete folder is one error naming the task and the fix."""
    data_dir = Path(data_dir)
    for root in candidate_dirs(task, data_dir):
        test = root / "test"
        if not test.is_dir():
            continue
        shards = _shards_of(test)
        ns = test / "nshards.txt"
        if ns.is_file():
            want = int(ns.read_text().strip() or 0)
            names = {p.name for p in shards}
            if want > len(names) + 100:  # a damaged count: never enumerate it
                raise DataCompError(f"task {task.key}: {ns} names {want:,} shards but {test} holds {len(names):,}; "
                                    + how_to_get(task, data_dir))
            missing = [f"{i}.tar" for i in range(want) if f"{i}.tar" not in names]
            if missing:
                raise DataCompError(
                    f"task {task.key}: {test} lacks {len(missing)} of {want} shards ({', '.join(missing[:3])}...); "
                    + how_to_get(task, data_dir)
                )
        if not shards:
            raise DataCompError(f"task {task.key}: {test} holds no .tar shards; " + how_to_get(task, data_dir))
        classnames = _read_lines(root / "classnames.txt")
        templates = _read_lines(root / "zeroshot_classification_templates.txt")
        if task.family not in ("retrieval", "winogavil") and (not classnames or not templates):
            raise DataCompError(
                f"task {task.key}: {root} needs classnames.txt and zeroshot_classification_templates.txt; "
                + how_to_get(task, data_dir)
            )
        return TaskData(task, root, shards, classnames, templates)
    raise DataCompError(
        f"task {task.key}: no data under {data_dir} (looked for {task.folder}/test and {task.wds_folder}/test); "
        + how_to_get(task, data_dir)
    )


# ----------------------------------------------------------------------------------------------
# one pass over the tars


def decode_image(data: bytes) -> Any:
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB")


def image_member(members: dict[str, bytes]) -> bytes | None:
    for ext in IMAGE_EXTS:
        if ext in members:
            return members[ext]
    return None


@dataclass
class Sample:
    image: Any  # preprocessed tensor (or a list of them for WinoGAViL)
    label: int = -1
    meta: np.ndarray | None = None
    captions: list[str] | None = None
    wino: dict[str, Any] | None = None


def parse_sample(key: str, members: dict[str, bytes], task: EvalTask, preprocess: Any, where: Path) -> Sample | None:
    """Decode what the task's family needs from one sample's members; None for samples lacking them."""
    fam = task.family
    if fam == "winogavil":
        if "json" not in members:
            return None
        info = json.loads(members["json"])
        cands = sorted(((int(m.group(1)), v) for ext, v in members.items() if (m := _CANDIDATE_RE.match(ext))))
        return Sample([preprocess(decode_image(v)) for _, v in cands], wino=info)
    img = image_member(members)
    if img is None:
        return None
    s = Sample(preprocess(decode_image(img)))
    if fam == "retrieval":
        if "txt" not in members:
            raise DataCompError(f"{where}: sample {key} has no txt captions (task {task.key})")
        s.captions = [c for c in members["txt"].decode("utf-8").splitlines() if c.strip()]
        return s
    if fam != "fairface":
        if "cls" not in members:
            raise DataCompError(f"{where}: sample {key} has no cls label (task {task.key})")
        s.label = int(members["cls"].decode().strip())
    if task.metadata_fields:
        if "npy" not in members:
            raise DataCompError(f"{where}: sample {key} has no npy metadata (task {task.key} needs "
                                f"{', '.join(task.metadata_fields)})")
        s.meta = np.load(io.BytesIO(members["npy"]), allow_pickle=False).astype(np.int64).reshape(-1)
    return s


def iter_samples(data: TaskData, preprocess: Any, shards: list[Path] | None = None) -> Iterator[Sample]:
    for shard in shards if shards is not None else data.shards:
        for key, members in iter_tar_samples(shard):
            s = parse_sample(key, members, data.task, preprocess, shard)
            if s is not None:
                yield s


# ----------------------------------------------------------------------------------------------
# fetching from the Hugging Face Hub


def fetch(task: EvalTask, data_dir: str | os.PathLike[str]) -> Path:
    """Download one DataComp task into ``data_dir`` in the CLIP_benchmark layout; returns its folder.

    ``djghosh/wds_*_test`` repos are already in that layout (``snapshot_download`` verifies and
    resumes). The ``nlphuji/*`` retrieval and WinoGAViL sets are read from the Hub's parquet export
    and rewritten as webdataset tars, so evaluation reads every task the same way.
    """
    if task.suite != "datacomp" or not task.source:
        raise DataCompError(f"task {task.key}: has no download source; " + how_to_get(task, Path(data_dir)))
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - a core dependency
        raise DataCompError(f"huggingface_hub is required to download evaluation sets ({e})") from None
    out = Path(data_dir) / task.wds_folder
    try:
        if task.family in ("retrieval", "winogavil"):
            cache = Path(data_dir) / "hf_cache"
            snap = Path(snapshot_download(repo_id=task.source, repo_type="dataset", revision="refs/convert/parquet",
                                          allow_patterns=["*test*"], cache_dir=str(cache)))
            files = sorted(p for p in snap.rglob("*.parquet") if "test" in str(p.relative_to(snap)))
            if not files:
                raise DataCompError(f"task {task.key}: {task.source} has no test parquet files in its parquet export")
            convert_hf_parquet(files, out, task.family)
        else:
            snapshot_download(repo_id=task.source, repo_type="dataset", local_dir=str(out))
    except DataCompError:
        raise
    except Exception as e:  # noqa: BLE001 - network, auth and offline-mode errors all mean "could not fetch"
        raise DataCompError(
            f"task {task.key}: could not download {task.source} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "check the network (HF_HUB_OFFLINE must be unset) or copy the data into --data-dir"
        ) from None
    return out


def _image_bytes(v: Any) -> bytes:
    """An image cell of a Hub parquet export: ``{"bytes": ..., "path": ...}`` or raw bytes."""
    if isinstance(v, dict):
        v = v.get("bytes")
    if not isinstance(v, bytes | bytearray):
        raise DataCompError("parquet image cell holds no bytes (expected the Hub's {bytes, path} struct)")
    return bytes(v)


def convert_hf_parquet(files: list[Path], out: Path, family: str, per_shard: int = 10_000) -> int:
    """Rewrite a retrieval (``image``, ``caption``) or WinoGAViL (``candidate_images``, ``candidates``,
    ``associations``, ``cue``) parquet export as CLIP_benchmark-layout tars; returns the sample count."""
    import pyarrow.parquet as pq

    test = out / "test"
    test.mkdir(parents=True, exist_ok=True)
    n = shard = 0
    writer: TarSampleWriter | None = None
    for f in files:
        table = pq.read_table(f)
        for row in table.to_pylist():
            if writer is None:
                writer = TarSampleWriter(test / f"{shard}.tar", mtime=0)
            key = f"s{n:08d}"
            if family == "retrieval":
                caps = row.get("caption")
                caps = [caps] if isinstance(caps, str) else list(caps or [])
                writer.write(key, {"jpg": _image_bytes(row["image"]), "txt": "\n".join(c.replace("\n", " ")
                                                                                         for c in caps)})
            else:
                members: dict[str, Any] = {"json": {k: row[k] for k in ("cue", "candidates", "associations")}}
                for i, im in enumerate(row["candidate_images"]):
                    members[f"{i}.jpg"] = _image_bytes(im)
                writer.write(key, members)
            n += 1
            if n % per_shard == 0:
                writer.close()
                writer, shard = None, shard + 1
    if writer is not None:
        writer.close()
        shard += 1
    (test / "nshards.txt").write_text(f"{shard}\n")
    return n
