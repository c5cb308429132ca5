"""Download pool images into img2dataset-layout shards: one idempotent task per output shard.

Input parquets (local or any fsspec location) are listed, sorted by name and cut into shards of
``samples_per_shard`` rows with global ids assigned in order, as img2dataset does. Each task reads its
rows, fetches them with a thread pool (:mod:`datacomp.pool.http`), decodes/resizes/blurs them
(:mod:`datacomp.pool.resize`) and writes the shard through :class:`~datacomp.pool.shards.ShardWriter`
(tar, parquet of every row, then ``_stats.json`` last). A shard with a stats file is done; anything
else is redone, so a killed run resumes with only the missing shards.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from datacomp.engine import Executor, Task, is_distributed, resolve_executor, run_tasks
from datacomp.errors import DataCompError
from datacomp.io import output_lock, read_json_file, write_record
from datacomp.pool.http import FetchConfig, Fetcher, FetchError
from datacomp.pool.resize import ImageConfig, ImageError, process_image
from datacomp.pool.shards import ShardWriter, sample_key, shard_name, stats_path
from datacomp.storage import Location, as_location

log = logging.getLogger(__name__)

STATE_DIR = ".download_state"  # engine completion markers, inside the shard dir
RECORD = "download_record.json"
_STALE_TMP = re.compile(r"^\.\d+(\.tar|\.parquet|_stats\.json)\.\d+\.tmp$")
# Rough bytes per stored pixel of a q95 JPEG of a photo, and per-sample tar/json/txt overhead.
_BYTES_PER_PIXEL = {"jpg": 0.3, "webp": 0.2, "png": 2.0}
_SAMPLE_OVERHEAD = 2600
_BYTES_PER_ROW_UNKNOWN = 35_000  # 450 GB / 12.8M rows, the small pool's published size


@dataclass(frozen=True)
class DownloadOptions:
    """Everything a shard task needs besides its rows; picklable, so tasks run in any process."""

    fetch: FetchConfig = field(default_factory=FetchConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    thread_count: int = 32  # concurrent requests per task
    samples_per_shard: int = 10_000  # rows per output shard (DataComp: 10,000)
    url_col: str = "url"
    caption_col: str = "text"
    bbox_col: str | None = "face_bboxes"  # None: no blurring and no face_bboxes column in the output
    additional_columns: tuple[str, ...] = ("uid",)
    verify_hash: bool = False  # compare sha256 of downloaded bytes with ``hash_col``
    hash_col: str = "sha256"
    progress: bool = False  # a per-shard progress bar inside each task

    def input_columns(self) -> list[str]:
        """Output column order of img2dataset: additional columns (+ bbox column), caption, url."""
        extra = list(self.additional_columns) + ([self.bbox_col] if self.bbox_col else [])
        cols = extra + ["caption", "url"]
        return cols + (["sha256_mismatch"] if self.verify_hash else [])

    def read_columns(self) -> list[str]:
        cols = [self.url_col, self.caption_col, *self.additional_columns]
        if self.bbox_col:
            cols.append(self.bbox_col)
        if self.verify_hash:
            cols.append(self.hash_col)
        return list(dict.fromkeys(cols))


@dataclass(frozen=True)
class ShardSpec:
    """Rows ``[start, stop)`` of one input parquet become output shard ``shard_id``."""

    shard_id: int
    file: str
    start: int
    stop: int


# ---------------------------------------------------------------- planning


def list_metadata(location: str | Path) -> list[str]:
    """The parquet files of a local directory or fsspec URL, sorted by file name (img2dataset's order)."""
    loc = as_location(location).resolve()
    if loc.isfile():
        return [loc.url]
    if not loc.isdir():
        loc.check_bucket()
        raise DataCompError(f"{location}: metadata location not found (give a directory of .parquet files)")
    paths = [p.url for p in loc.ls("*.parquet")]
    if not paths:
        raise DataCompError(f"{location}: no .parquet files found")
    return paths


def _parquet_file(path: str):  # noqa: ANN202 - pyarrow ParquetFile on any fsspec location
    import pyarrow.parquet as pq

    loc = as_location(path)
    try:
        return pq.ParquetFile(loc.path if loc.is_local else loc.open("rb"))
    except Exception as e:  # noqa: BLE001 - any reader error is the user's file
        raise DataCompError(f"{path}: not a readable parquet file ({e})") from None


def plan_shards(files: list[str], options: DownloadOptions) -> list[ShardSpec]:
    """Cut each file into ``ceil(rows / samples_per_shard)`` shards with sequential global ids."""
    specs: list[ShardSpec] = []
    n = options.samples_per_shard
    needed = options.read_columns()
    for f in files:
        pf = _parquet_file(f)
        names = set(pf.schema_arrow.names)
        missing = [c for c in needed if c not in names]
        if missing:
            hint = " (or pass --skip-bbox-blurring)" if options.bbox_col in missing else ""
            raise DataCompError(f"{f}: missing column(s) {', '.join(missing)}{hint}; found {sorted(names)}")
        _check_types(f, pf.schema_arrow, options)
        rows = pf.metadata.num_rows
        for start in range(0, rows, n):
            specs.append(ShardSpec(len(specs), f, start, min(rows, start + n)))
    return specs


def _check_types(path: str, schema: Any, options: DownloadOptions) -> None:
    """Refuse, before any fetching, a column whose type the shard parquet cannot store (one line naming it)."""
    import pyarrow as pa

    t = pa.types

    def stringy(ty: Any) -> bool:
        return t.is_null(ty) or t.is_string(ty) or t.is_large_string(ty) or t.is_string_view(ty)

    def listy(ty: Any) -> bool:
        return t.is_list(ty) or t.is_large_list(ty) or t.is_list_view(ty) or t.is_fixed_size_list(ty)

    def boxes(ty: Any) -> bool:
        return t.is_null(ty) or (listy(ty) and (t.is_null(ty.value_type) or (
            listy(ty.value_type) and (t.is_floating(ty.value_type.value_type) or t.is_integer(ty.value_type.value_type)
                                      or t.is_null(ty.value_type.value_type)))))

    want = {options.url_col: ("a string", stringy), options.caption_col: ("a string", stringy)}
    if "uid" in options.additional_columns:
        want["uid"] = ("a string", stringy)
    if options.verify_hash:
        want[options.hash_col] = ("a string", stringy)
    if options.bbox_col:
        want[options.bbox_col] = ("a list of [x0, y0, x1, y1] number lists", boxes)
    for col, (what, ok) in want.items():
        ty = schema.field(col).type
        if not ok(ty):
            raise DataCompError(f"{path}: column {col!r} has type {ty}, expected {what}; fix the metadata file")


def estimate_bytes(files: list[str], image: ImageConfig) -> dict[str, Any]:
    """Rough disk needed for the shards: stored pixels (from original sizes when known) x bytes/pixel.

    Reads only ``original_width``/``original_height``; without them, 35 kB per row (the small pool's
    published 450 GB over 12.8M rows).
    """
    import numpy as np

    rows = 0
    total = 0.0
    per_px = _BYTES_PER_PIXEL.get(image.encode_format, 0.3)
    for f in files:
        pf = _parquet_file(f)
        n = pf.metadata.num_rows
        rows += n
        if {"original_width", "original_height"} <= set(pf.schema_arrow.names):
            t = pf.read(columns=["original_width", "original_height"])
            w = np.nan_to_num(t["original_width"].to_numpy(zero_copy_only=False).astype(np.float64), nan=512)
            h = np.nan_to_num(t["original_height"].to_numpy(zero_copy_only=False).astype(np.float64), nan=512)
            px = w * h
            if image.resize_mode != "no":
                side = np.maximum(w, h) if image.resize_mode in ("keep_ratio_largest", "border") else np.minimum(w, h)
                scale = image.image_size / np.maximum(side, 1)
                if image.resize_only_if_bigger:
                    scale = np.minimum(scale, 1.0)
                px = px * scale**2
                if image.resize_mode in ("center_crop", "border"):
                    px = np.where(scale < 1 if image.resize_only_if_bigger else True, image.image_size**2, px)
            total += float(px.sum()) * per_px + n * _SAMPLE_OVERHEAD
        else:
            total += n * _BYTES_PER_ROW_UNKNOWN
    return {"rows": rows, "bytes": int(total), "files": len(files)}


# ---------------------------------------------------------------- one shard


def _read_rows(spec: ShardSpec, options: DownloadOptions) -> dict[str, list[Any]]:
    """The spec's rows, reading only the row groups that overlap them."""
    import pyarrow as pa

    pf = _parquet_file(spec.file)
    md = pf.metadata
    groups, offset, first = [], 0, None
    for g in range(md.num_row_groups):
        n = md.row_group(g).num_rows
        if offset < spec.stop and offset + n > spec.start:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    table = pf.read_row_groups(groups, columns=options.read_columns()) if groups else pa.table({})
    table = table.slice(spec.start - (first or 0), spec.stop - spec.start)
    return {c: table[c].to_pylist() for c in options.read_columns()}


def _fetch_one(fetcher: Fetcher, options: DownloadOptions, url: Any, bboxes: Any) -> dict[str, Any]:
    """Download and process one row; never raises (failures become a status)."""
    if not isinstance(url, str) or not url:
        return {"status": "failed_to_download", "kind": "bad_url", "error": "missing url"}
    try:
        got = fetcher.fetch(url)
    except FetchError as e:
        return {"status": "failed_to_download", "kind": e.kind, "error": e.message}
    digest = hashlib.sha256(got.data).hexdigest()
    try:
        img = process_image(got.data, options.image, bboxes if options.bbox_col else None)
    except ImageError as e:
        return {"status": "failed_to_resize", "kind": e.kind, "error": e.message, "nbytes": len(got.data)}
    return {"status": "success", "image": img, "sha256": digest, "nbytes": len(got.data)}


_COUNTS = ("count", "successes", "failed_to_download", "failed_to_resize", "bytes_downloaded", "bytes_written",
           "sha256_mismatches")


def read_shard_stats(path: Path) -> dict[str, Any]:
    """A finished shard's ``_stats.json`` (ours or img2dataset's), its counts checked: a damaged one is one line."""
    fix = f"delete it and {path.name[: -len('_stats.json')]}.tar to download that shard again"
    st = read_json_file(path, fix)
    bad = [k for k in _COUNTS if k in st and (not isinstance(st[k], int) or isinstance(st[k], bool) or st[k] < 0)]
    kinds = st.get("failure_kinds", {})
    if not isinstance(kinds, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in kinds.values()):
        bad.append("failure_kinds")
    if bad:
        raise DataCompError(f"{path}: {', '.join(bad)} not counts (non-negative integers); {fix}")
    return st


def download_shard(spec: ShardSpec, output_dir: str, options: DownloadOptions) -> dict[str, Any]:
    """Write one output shard (idempotent: an existing ``_stats.json`` means done)."""

    out = as_location(output_dir)
    done = stats_path(out / f"{shard_name(spec.shard_id)}.tar")
    if done.exists():
        return {**read_shard_stats(done), "reused": True}
    rows = _read_rows(spec, options)
    n = spec.stop - spec.start
    writer = ShardWriter(out, spec.shard_id, input_columns=options.input_columns())
    kinds: dict[str, int] = {}
    nbytes = 0
    written = 0
    mismatches = 0
    fetcher = Fetcher(options.fetch, pool_size=options.thread_count)
    bar = _bar(n, shard_name(spec.shard_id), options.progress)
    try:
        with ThreadPoolExecutor(options.thread_count) as pool:
            pending: dict[Future[dict[str, Any]], int] = {}
            nxt = 0
            window = 4 * options.thread_count
            while nxt < n or pending:
                while nxt < n and len(pending) < window:
                    bb = rows[options.bbox_col][nxt] if options.bbox_col else None
                    pending[pool.submit(_fetch_one, fetcher, options, rows[options.url_col][nxt], bb)] = nxt
                    nxt += 1
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    i = pending.pop(fut)
                    res = fut.result()
                    row = _output_row(rows, i, spec, options)
                    nbytes += res.get("nbytes", 0)
                    if res["status"] == "success":
                        img = res["image"]
                        row.update(width=img.width, height=img.height, original_width=img.original_width,
                                   original_height=img.original_height, exif=img.exif, sha256=res["sha256"])
                        if options.verify_hash:
                            bad = rows[options.hash_col][i] != res["sha256"]
                            row["sha256_mismatch"] = bad
                            mismatches += bad
                        writer.add_success(row, img.data, image_ext=img.ext)
                        written += len(img.data)
                    else:
                        kinds[res["kind"]] = kinds.get(res["kind"], 0) + 1
                        writer.add_failure(row, res["status"], res["error"])
                    bar.update(1)
        extra: dict[str, Any] = {
            "failure_kinds": dict(sorted(kinds.items())),
            "bytes_downloaded": nbytes,
            "bytes_written": written,
            "input_file": spec.file,
            "input_rows": [spec.start, spec.stop],
        }
        if options.verify_hash:
            extra["sha256_mismatches"] = mismatches
        stats = writer.close(extra_stats=extra)
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
        fetcher.http.clear()
    return stats


def _output_row(rows: dict[str, list[Any]], i: int, spec: ShardSpec, options: DownloadOptions) -> dict[str, Any]:
    row: dict[str, Any] = {c: rows[c][i] for c in options.additional_columns}
    if options.bbox_col:
        row[options.bbox_col] = rows[options.bbox_col][i]
    row["caption"] = rows[options.caption_col][i]
    row["url"] = rows[options.url_col][i]
    row["key"] = sample_key(spec.shard_id, i, options.samples_per_shard)
    for c in ("width", "height", "original_width", "original_height", "exif", "sha256"):
        row[c] = None
    if options.verify_hash:
        row["sha256_mismatch"] = None
    return row


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False, dynamic_ncols=True)


# ---------------------------------------------------------------- the step


def _clean_stale(out: Location, state: Location) -> None:
    """Remove temporaries of killed runs and markers of shards whose stats file is gone."""
    if not out.isdir():
        return
    for p in out.ls():
        if _STALE_TMP.match(p.name):
            p.rm()
    if state.isdir():
        stats = {p.name for p in out.ls("*_stats.json")}
        for m in state.glob("*.done.json"):
            name = m.name[: -len(".done.json")]
            if f"{name}_stats.json" not in stats:
                m.rm()


def download(
    metadata_dir: str | Path,
    output_dir: str | Path,
    options: DownloadOptions | None = None,
    processes: int = 1,
    skip_shards: tuple[int, ...] | None = None,
    progress: bool = True,
    executor: str | Executor | None = None,
) -> dict[str, Any]:
    """Download every row of the metadata parquets into shards under ``output_dir``; return the summary.

    Re-running finishes only shards without a ``_stats.json``. The summary counts the whole output
    (earlier runs included); ``this_run`` holds what this call did and its images/s.
    """
    started = time.time()
    options = options or DownloadOptions()
    out = as_location(output_dir).resolve()
    out.check_bucket()
    out.mkdirs()
    state = out / STATE_DIR
    with output_lock(out, out / ".download.lock"):  # released by the OS even on SIGKILL
        _clean_stale(out, state)
        # Inner per-shard bars only in-process: bars of several worker processes would overwrite each other.
        ex = resolve_executor(executor, processes)
        options = replace(options, progress=progress and processes == 1 and not is_distributed(ex))
        files = list_metadata(metadata_dir)
        specs = plan_shards(files, options)
        if skip_shards:
            specs = [s for s in specs if s.shard_id not in set(skip_shards)]
        free = shutil.disk_usage(out.path).free if out.is_local else None
        have = {p.name for p in out.ls("*_stats.json")} if out.isdir() else set()
        todo = [s for s in specs if stats_path(out / f"{shard_name(s.shard_id)}.tar").name not in have]
        log.info("%d input file(s), %d shard(s) planned, %d to download", len(files), len(specs), len(todo))
        tasks = [
            Task(shard_name(s.shard_id), download_shard, (s, str(out), options), weight=s.stop - s.start) for s in specs
        ]
        results = run_tasks(tasks, ex, state_dir=str(state), desc="download", unit="img",
                            progress=progress)
        seconds = time.time() - started
        summary = summarize([r.stats for r in results],
                            [r.stats for r in results if not r.skipped and not r.stats.get("reused")], seconds)
        summary.update(output_dir=str(out), metadata=files if len(files) <= 20 else f"{len(files)} files",
                       free_bytes_at_start=free)
        write_record(out / RECORD, "download", _config(options, processes, str(metadata_dir)), counts=summary,
                     started=started)
    return summary


def _config(options: DownloadOptions, processes: int, metadata_dir: str) -> dict[str, Any]:
    cfg = asdict(options)
    cfg["fetch"]["disallowed_directives"] = list(options.fetch.disallowed_directives)
    return {"metadata_dir": metadata_dir, "processes": processes, **cfg}


def summarize(all_stats: list[dict[str, Any]], run_stats: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Totals over shards: successes, failures per status and per kind, rates, bytes."""

    def total(stats: list[dict[str, Any]]) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for s in stats:
            for k, v in s.get("failure_kinds", {}).items():
                kinds[k] = kinds.get(k, 0) + v
        count = sum(s.get("count", 0) for s in stats)
        ok = sum(s.get("successes", 0) for s in stats)
        t = {
            "shards": len(stats),
            "count": count,
            "successes": ok,
            "failed_to_download": sum(s.get("failed_to_download", 0) for s in stats),
            "failed_to_resize": sum(s.get("failed_to_resize", 0) for s in stats),
            "failure_kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
            "success_rate": round(ok / count, 4) if count else 0.0,
            "bytes_downloaded": sum(s.get("bytes_downloaded", 0) for s in stats),
            "bytes_written": sum(s.get("bytes_written", 0) for s in stats),
        }
        if any("sha256_mismatches" in s for s in stats):
            mm = sum(s.get("sha256_mismatches", 0) for s in stats)
            t["sha256_mismatches"] = mm
            t["sha256_mismatch_rate"] = round(mm / ok, 4) if ok else 0.0
        return t

    summary = total(all_stats)
    run = total(run_stats)
    run["seconds"] = round(seconds, 3)
    run["images_per_s"] = round(run["successes"] / seconds, 1) if seconds > 0 else 0.0
    run["rows_per_s"] = round(run["count"] / seconds, 1) if seconds > 0 else 0.0
    summary["this_run"] = run
    return summary
