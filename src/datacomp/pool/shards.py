"""Webdataset shards in the img2dataset / DataComp layout: write them atomically, list them, read them.

Per shard ``S`` (8-digit id): ``S.tar`` with ``K.jpg``, ``K.txt``, ``K.json`` per successful sample,
``S.parquet`` with one row per input row (successes and failures), and ``S_stats.json``, whose presence
marks the shard complete. Every writer in the project (embedded world, download, reshard) goes
through :class:`ShardWriter`, so the layout is defined once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datacomp.errors import DataCompError
from datacomp.io import atomic_path, write_json_atomic
from datacomp.pool.tario import BLOCK, TarOut, iter_members, mapped, scan_layout
from datacomp.storage import Location, as_location

SHARD_DIGITS = 8
_TAR_RE = re.compile(r"^(.*?)(\d+)\.tar$")


def shard_name(shard_id: int, digits: int = SHARD_DIGITS) -> str:
    return f"{shard_id:0{digits}d}"


def sample_key(shard_id: int, index: int, samples_per_shard: int = 10_000) -> str:
    """img2dataset's key: ``shard_id * 10**oom + index`` zero-padded to 12 digits (oom from shard size)."""
    oom = len(str(samples_per_shard - 1)) if samples_per_shard > 1 else 1
    return f"{shard_id * 10**oom + index:012d}"


def list_shards(directory: str | os.PathLike[str] | Location) -> list[Path | Location]:
    """The ``*.tar`` files of a directory (local or a storage URL), sorted by name: discovered by
    listing, gaps are normal."""
    d = as_location(directory)
    if not d.isdir():
        d.check_bucket()
        raise DataCompError(f"{d}: shard directory not found")
    return [p.native for p in d.ls("*.tar") if not p.name.startswith(".")]


def completed_shards(directory: str | os.PathLike[str] | Location) -> list[Path | Location]:
    """Tars whose ``_stats.json`` exists (img2dataset's completion marker)."""
    d = as_location(directory)
    tars = list_shards(d)
    names = {p.name for p in d.ls("*_stats.json")}  # one listing, not one request per shard
    return [p for p in tars if stats_path(p).name in names]


def stats_path(tar: Path | Location) -> Path | Location:
    tar = as_location(tar)
    return tar.with_name(tar.name[: -len(".tar")] + "_stats.json").native


def shard_id_of(tar: str | os.PathLike[str] | Location) -> int:
    m = _TAR_RE.match(as_location(tar).name)
    if not m:
        raise DataCompError(f"{tar}: shard names must end in digits and .tar (e.g. 00000000.tar)")
    return int(m.group(2))


class TarSampleWriter:
    """Append samples (``{ext: bytes|str|dict}``) to a tar that appears under its final name on close."""

    def __init__(self, path: str | os.PathLike[str], mtime: float | None = None):
        self.path = as_location(path)
        self.mtime = time.time() if mtime is None else mtime
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()
        self._tar = TarOut(self._file)  # the project's tar writer (pool/tario.py)
        self.count = 0
        self.bytes = 0

    def write(self, key: str, members: dict[str, Any]) -> None:
        for ext, value in members.items():
            data = encode_member(ext, value)
            self._tar.add(f"{key}.{ext}", data, int(self.mtime))
            self.bytes += len(data)
        self.count += 1

    def close(self) -> None:
        self._tar.finish()
        self._file.close()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(RuntimeError):
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> TarSampleWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def encode_member(ext: str, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if ext == "json":
        return json.dumps(value, indent=4).encode("utf-8")
    raise TypeError(f"cannot encode a {type(value).__name__} as .{ext}")


# Columns of the per-shard parquet, in img2dataset's order after the input columns.
STATUS_COLUMNS = ["key", "status", "error_message", "width", "height", "original_width",
                  "original_height", "exif", "sha256"]


def _column_types() -> dict[str, Any]:
    """Fixed parquet types (img2dataset's), so every shard has one schema even when a column is all-null."""
    import pyarrow as pa

    s, i32 = pa.string(), pa.int32()
    return {"uid": s, "caption": s, "url": s, "key": s, "status": s, "error_message": s, "width": i32,
            "height": i32, "original_width": i32, "original_height": i32, "exif": s, "sha256": s,
            "face_bboxes": pa.list_(pa.list_(pa.float64())), "sha256_mismatch": pa.bool_()}


@dataclass
class ShardWriter:
    """One img2dataset-layout shard: tar of successes + parquet of every row + stats json.

    ``add_success`` / ``add_failure`` in any order; ``close()`` writes the tar, then the parquet, then
    ``_stats.json`` last, so a shard with a stats file is always complete.
    """

    out_dir: Path | Location
    shard_id: int
    input_columns: list[str] = field(default_factory=lambda: ["uid", "face_bboxes", "caption", "url"])
    mtime: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    status_counts: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.out_dir = as_location(self.out_dir)
        self.name = shard_name(self.shard_id)
        self._tar = TarSampleWriter(self.out_dir / f"{self.name}.tar", mtime=self.mtime)

    def add_success(self, row: dict[str, Any], image: bytes, image_ext: str = "jpg") -> None:
        """``row`` holds the input columns plus ``key``, sizes, ``exif``, ``sha256``."""
        meta = {**row, "status": "success", "error_message": None}
        meta.setdefault("caption", row.get("caption"))
        members: dict[str, Any] = {image_ext: image, "txt": meta.get("caption") or "", "json": meta}
        self._tar.write(meta["key"], members)
        self.rows.append(meta)

    def add_failure(self, row: dict[str, Any], status: str, error: str) -> None:
        self.rows.append({**row, "status": status, "error_message": error})
        self.status_counts[error] = self.status_counts.get(error, 0) + 1

    def abort(self) -> None:
        self._tar.abort()

    def close(self, extra_stats: dict[str, Any] | None = None) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        # The parquet table is built before the tar gets its final name: a row that does not fit its
        # column type fails the shard with nothing under a final name.
        cols = self.input_columns + [c for c in STATUS_COLUMNS if c not in self.input_columns]
        types = _column_types()
        arrays = {}
        for c in cols:
            try:
                arrays[c] = pa.array([r.get(c) for r in self.rows], type=types.get(c))
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
                self.abort()
                why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                raise DataCompError(
                    f"shard {self.name}: column {c!r} holds a value of the wrong type ({why}); fix the metadata"
                ) from None
        table = pa.table(arrays)
        tar_path = self.out_dir / f"{self.name}.tar"
        try:
            self._tar.close()
            with atomic_path(self.out_dir / f"{self.name}.parquet") as tmp:
                pq.write_table(table, tmp)
        except BaseException:
            tar_path.unlink(missing_ok=True)  # no stats file yet: the shard is redone on the next run
            raise
        successes = sum(r["status"] == "success" for r in self.rows)
        end = time.time()
        stats = {
            "count": len(self.rows),
            "successes": successes,
            "failed_to_download": sum(r["status"] == "failed_to_download" for r in self.rows),
            "failed_to_resize": sum(r["status"] == "failed_to_resize" for r in self.rows),
            "duration": round(end - self.started, 3),
            "start_time": self.started,
            "end_time": end,
            "status_dict": {"success": successes, **self.status_counts},
            **(extra_stats or {}),
        }
        write_json_atomic(self.out_dir / f"{self.name}_stats.json", stats, indent=4)
        return stats


def iter_stream_members(f: Any, path: str | os.PathLike[str] | Location, want: Any = None
                        ) -> Iterator[tuple[str, str, bytes | None, int]]:
    """``(key, ext, data, mtime)`` per regular member of a tar read sequentially from ``f`` (a remote
    shard: one member in memory at a time). Keys and extensions split as in
    :func:`~datacomp.pool.tario.iter_members`; ``want(key)`` False skips a member's bytes (data None).
    """
    try:
        with tarfile.open(fileobj=f, mode="r|") as tf:
            for ti in tf:
                if not ti.isfile():
                    continue
                slash = ti.name.rfind("/") + 1
                dot = ti.name.find(".", slash)
                if dot < 0:
                    continue
                key = ti.name[:dot]
                data = None
                if want is None or want(key):
                    data = tf.extractfile(ti).read()  # type: ignore[union-attr]
                    if len(data) != ti.size:
                        raise tarfile.ReadError(f"member {ti.name} is truncated")
                yield key, ti.name[dot + 1 :], data, int(ti.mtime)
    except (tarfile.TarError, EOFError) as e:
        raise DataCompError(f"{path}: not a readable tar shard ({e}); re-create this shard") from None


def iter_tar_samples(path: str | os.PathLike[str] | Location) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {ext: bytes})`` per sample, grouping consecutive members by key (webdataset's
    rule: the member path up to the first dot of its base name).

    Local shards are memory-mapped and their member table comes from
    :func:`~datacomp.pool.tario.scan_layout` (vectorised, about 20x faster than ``tarfile`` on small
    members) or, for pax/long-name shards, :func:`~datacomp.pool.tario.iter_members`. A shard at a
    storage URL is streamed (:func:`iter_stream_members`).
    """
    loc = as_location(path)
    if not loc.is_local:
        yield from _iter_remote_samples(loc)
        return
    with mapped(loc.path) as buf:
        if 0 < len(buf) < BLOCK:
            raise DataCompError(f"{path}: not a readable tar shard (only {len(buf)} bytes); re-create this shard")
        lay = scan_layout(buf, path)
        if lay is not None:
            start = (lay.hdr + 1) * BLOCK
            table: Any = zip(lay.key.tolist(), lay.ext.tolist(), start.tolist(), (start + lay.size).tolist(),
                             strict=True)
            decode = True
        else:
            table = ((k, e, o, o + n) for k, e, o, n, _ in iter_members(buf, path))
            decode = False
        key: Any = None
        members: dict[str, bytes] = {}
        for k, ext, a, b in table:
            if k != key:
                if key is not None:
                    yield (key.decode("utf-8", "surrogateescape") if decode else key), members
                key, members = k, {}
            members[ext.decode("utf-8", "surrogateescape") if decode else ext] = buf[a:b]
        if key is not None:
            yield (key.decode("utf-8", "surrogateescape") if decode else key), members


def _iter_remote_samples(loc: Location) -> Iterator[tuple[str, dict[str, bytes]]]:
    with loc.open("rb", cache_type="readahead") as f:
        key: str | None = None
        members: dict[str, bytes] = {}
        for k, ext, data, _ in iter_stream_members(f, loc):
            if k != key:
                if key is not None:
                    yield key, members
                key, members = k, {}
            members[ext] = data  # type: ignore[assignment]
        if key is not None:
            yield key, members
