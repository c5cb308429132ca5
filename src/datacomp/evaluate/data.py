"""Evaluation data: find a task's CLIP_benchmark-layout folder, read it in one pass, or fetch it from the Hub.

Layout per task (what ``download_evalsets.py`` and the embedded world write)::

    <data_dir>/<key with '/'->'-'>/            (or the original's wds_<folder>_test/)
        classnames.txt                         one class per line (classification tasks)
        zeroshot_classification_templates.txt  one template per line, ``{c}`` placeholder
        test/nshards.txt, test/0.tar, 1.tar, ...
        manifest.json                          optional: {"samples": N}, the count the tars must hold

Which members a sample needs is its family's loader (:mod:`datacomp.evaluate.families`).
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
from datacomp.io import write_bytes_atomic, write_json_atomic
from datacomp.pool.shards import TarSampleWriter, iter_tar_samples

log = logging.getLogger(__name__)

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")
DEFAULT_DATA_DIR = Path(os.environ.get("DATACOMP_EVAL_DIR", Path.home() / ".cache" / "datacomp" / "evalsets"))


@dataclass(frozen=True)
class TaskData:
    task: EvalTask
    root: Path
    shards: list[Path]
    classnames: list[str] | None
    templates: list[str] | None
    expected: int = 0  # samples the tars must hold (0: unknown)


MANIFEST_NAME = "manifest.json"  # optional, per task: {"samples": N}; written by the embedded world and our converter
MAX_PIXELS = 64_000_000  # an evaluation image larger than this is refused, not decoded


def _read_lines(path: Path) -> list[str] | None:
    """Non-blank lines (clip_benchmark 1.4.0 drops blank ones; later versions broke FairFace by keeping them)."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataCompError(f"{path}: not UTF-8 text (byte {e.start}); re-download this task") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _shards_of(test_dir: Path) -> list[Path]:
    tars = [p for p in test_dir.glob("*.tar") if not p.name.startswith(".")]
    return sorted(tars, key=lambda p: (int(p.stem) if p.stem.isdigit() else 1 << 62, p.name))


def hub_source(task: EvalTask) -> str | None:
    """The task's Hugging Face dataset repo (``owner/name``), if its source is one."""
    src = task.source or ""
    return src if re.fullmatch(r"[\w.-]+/[\w.-]+", src) else None


def how_to_get(task: EvalTask, data_dir: Path) -> str:
    if not hub_source(task):
        return (f"write the task's data under {data_dir} (the embedded world writes its suite with `datacomp synth`; "
                "pass that world's eval/ folder with --data-dir)")
    return (f"run `datacomp download-evalsets --tasks {task.key} --data-dir {data_dir}` (needs network, "
            f"source {task.source}) or add --download")


def candidate_dirs(task: EvalTask, data_dir: Path) -> list[Path]:
    return [data_dir / task.folder, data_dir / task.wds_folder]


def _read_int(path: Path, what: str) -> int:
    raw = path.read_bytes()[:64].strip()
    if not raw.isdigit():
        raise DataCompError(f"{path}: {what} is {raw[:20]!r}, not a non-negative integer; re-download this task")
    return int(raw)


def expected_size(task: EvalTask, root: Path) -> int:
    """Samples the task must have: its own manifest's count if it carries one, else the suite's size (0: unknown)."""
    m = root / MANIFEST_NAME
    if m.is_file():
        try:
            n = json.loads(m.read_text(encoding="utf-8")).get("samples")
        except (ValueError, AttributeError):
            n = None
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise DataCompError(f"{m}: expected {{\"samples\": <count>}}; delete it to check against the suite's size")
        return n
    return task.size


def count_samples(shards: list[Path]) -> int:
    """Distinct sample keys over the shards, from the tar headers alone (no member is decoded)."""
    from datacomp.pool.tario import iter_members, mapped

    n = 0
    for shard in shards:
        last = None
        with mapped(shard) as buf:
            for key, _ext, _off, _size, _mtime in iter_members(buf, shard):
                if key != last:
                    n += 1
                    last = key
    return n


def locate(task: EvalTask, data_dir: str | os.PathLike[str], check_size: bool = True) -> TaskData:
    """The task's data under ``data_dir``; a missing, incomplete or short folder is one error naming the task.

    Every shard ``nshards.txt`` names must be there, and the samples in the tars must number what the
    task's manifest (or else the suite) says: a tar cut at a sample boundary is refused, not scored.
    """
    from datacomp.evaluate.families import get_family

    data_dir = Path(data_dir)
    for root in candidate_dirs(task, data_dir):
        test = root / "test"
        if not test.is_dir():
            continue
        shards = _shards_of(test)
        ns = test / "nshards.txt"
        if ns.is_file():
            want = _read_int(ns, "the shard count")
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
        if get_family(task.family).needs_classnames and (not classnames or not templates):
            raise DataCompError(
                f"task {task.key}: {root} needs classnames.txt and zeroshot_classification_templates.txt; "
                + how_to_get(task, data_dir)
            )
        data = TaskData(task, root, shards, classnames, templates, expected_size(task, root))
        if check_size and data.expected:
            found = count_samples(shards)
            if found != data.expected:
                own = (root / MANIFEST_NAME).is_file()
                raise DataCompError(
                    f"task {task.key}: {test} holds {found:,} samples, expected {data.expected:,} "
                    f"({'its manifest.json' if own else 'the suite size'}): "
                    f"the set is {'incomplete' if found < data.expected else 'not this task'}; "
                    + how_to_get(task, data_dir)
                    + ("" if own else f" (a set you know is complete can state its count in {root / MANIFEST_NAME})")
                )
        return data
    raise DataCompError(
        f"task {task.key}: no data under {data_dir} (looked for {task.folder}/test and {task.wds_folder}/test); "
        + how_to_get(task, data_dir)
    )


# ----------------------------------------------------------------------------------------------
# one pass over the tars; decoding helpers for families' loaders (each error names tar and key)


def decode_image(data: bytes, where: Path | str = "?", key: str = "?") -> Any:
    """An RGB PIL image; a corrupt, truncated or oversized image is one error naming the tar and sample.

    Pixel-capped before decoding (``resize.open_image``, the one capped decoder, like download's)."""
    from datacomp.pool.resize import ImageError, open_image

    try:
        return open_image(data, max_pixels=MAX_PIXELS)
    except ImageError as e:
        what = "image does not decode" if e.kind == "decode_error" else "image is unusable"
        raise DataCompError(f"{where}: sample {key}: {what} ({' '.join(e.message.split())[:160]}); "
                            "re-download this task's tars") from None


def image_member(members: dict[str, bytes]) -> bytes | None:
    for ext in IMAGE_EXTS:
        if ext in members:
            return members[ext]
    return None


def read_image(members: dict[str, bytes], preprocess: Any, task: EvalTask, where: Path, key: str) -> Any:
    """The sample's preprocessed image (first of webp/png/jpg/jpeg); a sample without one is an error."""
    img = image_member(members)
    if img is None:
        raise DataCompError(f"{where}: sample {key} has no image ({'/'.join(IMAGE_EXTS)}) (task {task.key}; "
                            f"members: {', '.join(sorted(members))})")
    return preprocess(decode_image(img, where, key))


def read_label(members: dict[str, bytes], task: EvalTask, where: Path, key: str) -> int:
    """The integer ``cls`` label."""
    if "cls" not in members:
        raise DataCompError(f"{where}: sample {key} has no cls label (task {task.key})")
    raw = bytes(members["cls"]).strip()
    if not raw.lstrip(b"-").isdigit() or len(raw) > 18:
        raise DataCompError(f"{where}: sample {key}: cls is {raw[:20]!r}, not an integer class index (task {task.key})")
    return int(raw)


def read_metadata(members: dict[str, bytes], task: EvalTask, where: Path, key: str) -> np.ndarray:
    """The ``npy`` int64 metadata vector, one value per ``metadata_fields`` entry."""
    if "npy" not in members:
        raise DataCompError(f"{where}: sample {key} has no npy metadata (task {task.key} needs "
                            f"{', '.join(task.metadata_fields)})")
    try:
        arr = np.load(io.BytesIO(members["npy"]), allow_pickle=False)
        meta = arr.astype(np.int64).reshape(-1)
    except Exception as e:  # noqa: BLE001 - numpy raises ValueError, TypeError, EOFError, SyntaxError...
        raise DataCompError(f"{where}: sample {key}: npy metadata does not decode ({type(e).__name__}); "
                            "re-download this task's tars") from None
    if len(meta) != len(task.metadata_fields):
        raise DataCompError(f"{where}: sample {key}: npy metadata has {len(meta)} values, the suite names "
                            f"{len(task.metadata_fields)} ({', '.join(task.metadata_fields)}) for task {task.key}")
    return meta


def read_text(members: dict[str, bytes], ext: str, task: EvalTask, where: Path, key: str) -> str:
    if ext not in members:
        raise DataCompError(f"{where}: sample {key} has no {ext} member (task {task.key})")
    try:
        return bytes(members[ext]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataCompError(f"{where}: sample {key}: {ext} is not UTF-8 text (byte {e.start})") from None


@dataclass
class Sample:
    image: Any  # preprocessed tensor (or a list of them for WinoGAViL)
    label: int = -1
    meta: np.ndarray | None = None
    captions: list[str] | None = None
    wino: dict[str, Any] | None = None


def iter_samples(data: TaskData, preprocess: Any, shards: list[Path] | None = None) -> Iterator[Sample]:
    """The task's samples as its family's loader reads them, in archive order."""
    from datacomp.evaluate.families import get_family

    load = get_family(data.task.family).load_sample
    for shard in shards if shards is not None else data.shards:
        for key, members in iter_tar_samples(shard):
            s = load(key, members, data.task, preprocess, shard)
            if s is not None:
                yield s


def iter_batches(data: TaskData, preprocess: Any, batch_size: int, workers: int) -> Iterator[list[Sample]]:
    """Lists of up to ``batch_size`` samples; with ``workers`` > 0 and several shards, DataLoader processes."""
    if workers <= 0 or len(data.shards) == 1:
        batch: list[Sample] = []
        for s in iter_samples(data, preprocess):
            batch.append(s)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
        return
    import torch.utils.data as tud

    from datacomp.evaluate.stream import SampleStream

    yield from tud.DataLoader(SampleStream(data, preprocess), batch_size=batch_size,
                              num_workers=min(workers, len(data.shards)), collate_fn=list)


# ----------------------------------------------------------------------------------------------
# fetching from the Hugging Face Hub


def fetch(task: EvalTask, data_dir: str | os.PathLike[str]) -> Path:
    """Download one DataComp task into ``data_dir`` in the CLIP_benchmark layout; returns its folder.

    ``djghosh/wds_*_test`` repos are already in that layout (``snapshot_download`` verifies and
    resumes). The ``nlphuji/*`` retrieval and WinoGAViL sets are read from the Hub's parquet export
    and rewritten as webdataset tars, so evaluation reads every task the same way.
    """
    if not hub_source(task):
        raise DataCompError(f"task {task.key}: has no download source; " + how_to_get(task, Path(data_dir)))
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - a core dependency
        raise DataCompError(f"huggingface_hub is required to download evaluation sets ({e})") from None
    from datacomp.evaluate.families import get_family

    hub_rows = get_family(task.family).hub_rows
    out = Path(data_dir) / task.wds_folder
    try:
        if hub_rows is not None:
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


def convert_hf_parquet(files: list[Path], out: Path, family: str, per_shard: int = 10_000) -> int:
    """Rewrite a Hub parquet export as CLIP_benchmark-layout tars with the family's ``hub_rows``
    (retrieval: ``image``, ``caption``; WinoGAViL: ``candidate_images``, ``candidates``, ``associations``,
    ``cue``); writes ``manifest.json`` with the sample count and ``nshards.txt`` last; returns the count."""
    import pyarrow.parquet as pq

    from datacomp.evaluate.families import get_family

    to_members = get_family(family).hub_rows
    if to_members is None:
        raise DataCompError(f"family {family!r} is downloaded as webdataset tars, not converted from parquet")
    test = out / "test"
    test.mkdir(parents=True, exist_ok=True)
    n = shard = 0
    writer: TarSampleWriter | None = None
    for f in files:
        table = pq.read_table(f)
        for row in table.to_pylist():
            if writer is None:
                writer = TarSampleWriter(test / f"{shard}.tar", mtime=0)
            writer.write(f"s{n:08d}", to_members(row))
            n += 1
            if n % per_shard == 0:
                writer.close()
                writer, shard = None, shard + 1
    if writer is not None:
        writer.close()
        shard += 1
    write_json_atomic(out / MANIFEST_NAME, {"samples": n})
    write_bytes_atomic(test / "nshards.txt", f"{shard}\n".encode())
    return n


def image_bytes(v: Any) -> bytes:
    """An image cell of a Hub parquet export: ``{"bytes": ..., "path": ...}`` or raw bytes."""
    if isinstance(v, dict):
        v = v.get("bytes")
    if not isinstance(v, bytes | bytearray):
        raise DataCompError("parquet image cell holds no bytes (expected the Hub's {bytes, path} struct)")
    return bytes(v)
