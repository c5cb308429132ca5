"""``reshard``: subset file + pool shards -> training shards (or a no-copy uid filter), resumable."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from datacomp import storage
from datacomp import uids as U
from datacomp.engine import Executor, Task, get_executor, resolve_executor, run_tasks
from datacomp.errors import DataCompError
from datacomp.io import file_fingerprint, locks_output, write_json_atomic, write_record
from datacomp.pool.shards import list_shards, shard_name
from datacomp.reshard.copy import write_output_shard
from datacomp.reshard.plan import OutputPlan, iter_indexes, missing_uids, plan_outputs, select
from datacomp.reshard.uidfilter import META
from datacomp.storage import Location, as_location

log = logging.getLogger(__name__)

STATE_DIR = ".reshard"  # completion markers and the run's fingerprint (hidden: never listed as a shard)
OUTPUT_SHARD_FORMAT = "{:08d}.tar"
OUTPUT_STATS_FORMAT = "{:08d}_stats.json"
MISSING_FILE = "missing_uids.txt"
# Starting a worker process costs about a second (spawn + imports) while one process copies hundreds of
# thousands of samples per second, so small outputs are copied by threads of this process (the kernel
# copies and numpy release the GIL); --workers is the cap.
MIN_SAMPLES_PER_PROCESS = 100_000


@locks_output("output_dir")
def reshard(
    input_dirs: str | os.PathLike[str] | list[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    subset_file: str | os.PathLike[str],
    *,
    shard_size: int = 10_000,
    shuffle_bufsize: int = 0,
    seed: int = 0,
    blur: bool = False,
    blur_metadata: str | os.PathLike[str] | None = None,
    blur_quality: int = 95,
    overwrite: bool = False,
    workers: int | None = None,
    no_copy: bool = False,
    executor: str | Executor | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the subset's samples from ``input_dirs`` as webdataset shards in ``output_dir``.

    A uid listed k times is written k times (keys ``<uid>-0`` .. ``<uid>-<k-1>``). Subset uids absent
    from the pool are counted and listed in ``missing_uids.txt``. Re-running after a kill resumes;
    ``overwrite`` first deletes everything in ``output_dir``. With ``no_copy`` only ``meta.json`` (a
    uid filter over the original shards, see :func:`load_uid_filter`) and ``sample_ids.npy`` are written.
    Returns the summary that ``meta.json`` also records. One run per output dir at a time (the lock
    is ``.<dir>.lock`` beside it); a second gets a one-line error.
    """
    started = time.time()
    ins = [as_location(d).resolve() for d in (input_dirs if isinstance(input_dirs, list | tuple) else [input_dirs])]
    out = as_location(output_dir).resolve()
    subset_path = as_location(subset_file).resolve()
    _check_args(ins, out, shard_size, shuffle_bufsize, blur, blur_metadata, blur_quality, workers)
    if out.isfile():
        raise DataCompError(f"{out}: output path exists and is not a directory")
    if subset_path.is_relative_to(out):
        raise DataCompError(f"{subset_path}: the subset file is inside the output dir; move it out first")
    subset = U.read_subset(subset_path)  # validates dtype and order (duplicates allowed: they upsample)
    tars = [t for d in ins for t in list_shards(d)]
    if not tars:
        raise DataCompError(f"no .tar shards in {', '.join(map(str, ins))}; pass the pool's shards/ dir with -i")
    workers = max(1, workers or os.cpu_count() or 1)
    config = {
        "input_dir": [str(d) for d in ins], "output_dir": str(out), "subset_file": str(subset_path),
        "shard_size": shard_size, "shuffle_bufsize": shuffle_bufsize, "seed": seed, "blur": blur,
        "blur_metadata": str(blur_metadata) if blur_metadata else None, "blur_quality": blur_quality,
        "no_copy": no_copy, "max_workers": workers, "output_shard_format": OUTPUT_SHARD_FORMAT,
        "output_shard_stats_format": OUTPUT_STATS_FORMAT,
    }
    fingerprint = {
        "config": {k: v for k, v in config.items() if k not in ("output_dir", "max_workers")},
        "subset": {k: v for k, v in file_fingerprint(subset_path).items() if k != "path"},
        "shards": [[str(t), as_location(t).size()] for t in tars],
    }
    resumed = _prepare_output(out, overwrite, fingerprint)

    selections, sst = select(iter_indexes(tars, threads=min(8, 2 * workers)), subset)
    missing = missing_uids(subset, sst)
    _write_missing(out, missing)
    storage.copy(subset_path, out / "sample_ids.npy")
    dups = U.count_duplicates(subset)
    counts: dict[str, Any] = {
        "input_shards": len(tars),
        "input_shards_selected": len(selections),
        "input_shards_indexed_from_tar": sst.shards_indexed_from_tar,
        "pool_samples": sst.pool_samples,
        "pool_duplicate_uids": sst.pool_duplicate_uids,
        "subset_uids": int(subset.size),
        "subset_unique_uids": int(subset.size) - dups,
        "subset_duplicates": dups,
        "missing_uids": int(missing.size),
        "output_count": sum(s.total for s in selections),
    }
    if missing.size:
        log.warning("%d subset uid(s) are not in the input shards; listed in %s", missing.size, out / MISSING_FILE)

    if no_copy:
        if dups:
            log.warning("--no-copy keeps each uid once: %d repeated uid(s) in the subset are not upsampled", dups)
        counts["output_count"] = sum(s.keys.size for s in selections)
        extra = {"uid_filter": {"subset": str(out / "sample_ids.npy"), "shards": [str(s.tar) for s in selections]},
                 "output_shard_count": 0, "output_shard_format": OUTPUT_SHARD_FORMAT}
        rec = _finish(out, config, counts, started, extra)
        return _summary(rec, out)

    plans = plan_outputs(selections, shard_size, seed=seed if shuffle_bufsize > 0 else None)
    del selections
    boxes = _load_boxes(blur_metadata, plans) if blur and blur_metadata else None
    tasks = [
        Task(shard_name(p.index), write_output_shard,
             (str(out), p.index, p.pieces),
             {"shuffle_bufsize": shuffle_bufsize, "seed": seed, "blur": blur, "blur_quality": blur_quality,
              "boxes": _task_boxes(boxes, p) if boxes is not None else None},
             weight=p.count)
        for p in plans
    ]
    total = sum(p.count for p in plans)
    per_process = MIN_SAMPLES_PER_PROCESS // (20 if blur else 1)  # blurring costs ms per image
    procs = max(1, min(workers, len(tasks), -(-total // per_process)))
    if procs == 1 and not blur and min(workers, len(tasks)) > 1:  # copies release the GIL; no process start
        ex = resolve_executor(executor, workers, lambda _: get_executor("threads", min(workers, len(tasks))))
    else:
        ex = resolve_executor(executor, workers, lambda _: get_executor("local", procs))
    t0 = time.perf_counter()
    results = run_tasks(tasks, ex, state_dir=str(out / STATE_DIR), desc="reshard", unit="sample", progress=progress)
    copy_seconds = time.perf_counter() - t0
    copied = [r for r in results if not r.skipped]
    counts.update(
        output_shard_count=len(plans),
        output_shards_resumed=len(results) - len(copied),
        blur_count=sum(r.stats.get("blurred", 0) for r in results),
        blur_time=round(sum(r.stats.get("blur_seconds", 0.0) for r in results), 3),
        bytes_written=sum(r.stats.get("bytes", 0) for r in results),
        output_shards_general_path=sum(r.stats.get("path") == "general" for r in results),
    )
    n_now = sum(r.stats["samples"] for r in copied)
    b_now = sum(r.stats["bytes"] for r in copied)
    counts["copy_seconds"] = round(copy_seconds, 3)
    counts["workers"] = ex.workers
    counts["executor"] = type(ex).__name__
    counts["samples_per_s"] = round(n_now / copy_seconds, 1) if copy_seconds > 0 else None
    counts["mb_per_s"] = round(b_now / 1e6 / copy_seconds, 2) if copy_seconds > 0 else None
    if resumed or counts["output_shards_resumed"]:
        log.info("resumed: %d output shard(s) were already complete", counts["output_shards_resumed"])
    extra = {"output_shard_count": len(plans), "output_shard_format": OUTPUT_SHARD_FORMAT,
             "output_shard_stats_format": OUTPUT_STATS_FORMAT}
    rec = _finish(out, config, counts, started, extra)
    return _summary(rec, out)


def _check_args(ins: list[Location], out: Location, shard_size: int, bufsize: int, blur: bool,
                blur_metadata: Any, quality: int, workers: int | None) -> None:
    if shard_size < 1:
        raise DataCompError(f"--shard-size must be at least 1 (got {shard_size})")
    if bufsize < 0:
        raise DataCompError(f"--shuffle-bufsize must be 0 (keep order) or more (got {bufsize})")
    if workers is not None and workers < 1:
        raise DataCompError(f"--workers must be at least 1 (got {workers})")
    if not 1 <= quality <= 100:
        raise DataCompError(f"--blur-quality must be between 1 and 100 (got {quality})")
    if blur_metadata and not blur:
        raise DataCompError("--blur-metadata is only used with --blur; add --blur or drop --blur-metadata")
    if blur_metadata and not as_location(blur_metadata).exists():
        raise DataCompError(f"{blur_metadata}: blur metadata not found (a parquet file or a dir of parquets)")
    out.check_bucket()
    for d in ins:
        if not d.isdir():
            d.check_bucket()
            raise DataCompError(f"{d}: input shard directory not found")
        if d == out or d.is_relative_to(out):
            raise DataCompError(f"output dir {out} contains the input dir {d}; choose a separate output dir")


def _prepare_output(out: Location, overwrite: bool, fingerprint: dict[str, Any]) -> bool:
    """Make ``out`` ready: empty it (overwrite), resume the same run, or refuse. True when resuming."""
    state = out / STATE_DIR
    plan_file = state / "run.json"
    contents = [*out.ls(dirs=True), *out.ls()] if out.isdir() else []
    resuming = False
    if contents and overwrite:
        log.info("--overwrite: removing %d entries from %s", len(contents), out)
        for p in contents:
            p.rm(recursive=True)
    elif contents:
        previous = plan_file.read_json() if plan_file.isfile() else None
        if previous is None:
            raise DataCompError(f"{out}: output dir is not empty; pass --overwrite to replace it or pick another dir")
        if previous != json.loads(json.dumps(fingerprint)):
            raise DataCompError(
                f"{out}: holds a reshard of different inputs or settings; pass --overwrite to replace it"
            )
        resuming = True
        for p in out.glob(".*.tmp"):  # leftovers of a killed run (never under a final name)
            p.rm()
    state.mkdirs()
    if not resuming:
        write_json_atomic(plan_file, fingerprint)
    return resuming


def _write_missing(out: Location, missing: np.ndarray) -> None:
    path = out / MISSING_FILE
    if not missing.size:
        path.rm()
        return
    path.write_text("".join(h + "\n" for h in U.uids_to_hex(missing)))


def _load_boxes(source: str | os.PathLike[str], plans: list[OutputPlan]) -> dict[str, list[list[float]]]:
    """Face boxes of the selected uids from a metadata parquet (file or dir), only non-empty ones."""
    import pyarrow.parquet as pq

    src = Path(source)
    files = sorted(src.glob("*.parquet")) if src.is_dir() else [src]
    if not files:
        raise DataCompError(f"{src}: no .parquet files with uid and face_bboxes columns")
    wanted = U.hex_to_uids(np.concatenate([pc.uids for p in plans for pc in p.pieces]))
    boxes: dict[str, list[list[float]]] = {}
    for f in files:
        names = pq.read_schema(f).names
        if "uid" not in names or "face_bboxes" not in names:
            raise DataCompError(f"{f}: needs columns uid and face_bboxes (has {', '.join(names)})")
        for batch in pq.ParquetFile(f).iter_batches(batch_size=65_536, columns=["uid", "face_bboxes"]):
            hit = np.flatnonzero(U.isin(U.hex_to_uids(batch.column(0)), wanted))
            if not hit.size:
                continue
            sub = batch.take(hit)
            for uid, bb in zip(sub.column(0).to_pylist(), sub.column(1).to_pylist(), strict=True):
                if bb:
                    boxes[uid] = bb
    return boxes


def _task_boxes(boxes: dict[str, list[list[float]]], plan: OutputPlan) -> dict[str, list[list[float]]]:
    return {u: boxes[u] for pc in plan.pieces for u in pc.uids.astype("U32").tolist() if u in boxes}


def _finish(out: Location, config: dict[str, Any], counts: dict[str, Any], started: float,
            extra: dict[str, Any]) -> dict[str, Any]:
    inputs = [file_fingerprint(config["subset_file"])]
    return write_record(out / META, "reshard", config, counts, inputs, started, **extra)


def _summary(rec: dict[str, Any], out: Location) -> dict[str, Any]:
    return {"output_dir": str(out), "seconds": rec["seconds"], **rec["counts"],
            **{k: rec[k] for k in ("output_shard_count", "uid_filter") if k in rec}}
