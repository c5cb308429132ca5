"""Which input shard holds which uid: read from img2dataset's per-shard parquet, or the tar itself.

The index lets reshard skip shards without a selected sample and know every output count before a
byte is copied (the original streamed the whole pool and parsed every sample's json to find out).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datacomp import uids as U
from datacomp.errors import DataCompError
from datacomp.pool.shards import iter_stream_members
from datacomp.pool.tario import iter_members, mapped
from datacomp.storage import Location, as_location, parquet_file

log = logging.getLogger(__name__)


@dataclass
class ShardIndex:
    """The successful samples of one input shard: tar member key and uid, in the index's row order."""

    tar: Path | Location
    keys: np.ndarray  # S: utf-8 tar member keys (e.g. b"000000000012"), compared as bytes with the tar
    uids: np.ndarray  # u8,u8
    source: str  # "parquet" or "tar"


def index_shard(tar: str | Path | Location) -> ShardIndex:
    """Index one shard from its ``.parquet`` (uid, key, status) when present, else by reading its jsons."""
    tar = as_location(tar)
    pq_path = tar.with_suffix(".parquet")
    if pq_path.isfile():
        idx = _from_parquet(tar, pq_path)
        if idx is not None:
            return idx
    return _from_tar(tar)


def _from_parquet(tar: Location, path: Location) -> ShardIndex | None:
    import pyarrow.compute as pc

    with _open_parquet(path) as f:
        if f is None:
            return None
        names = f.schema_arrow.names
        if "uid" not in names or "key" not in names:
            return None
        cols = ["uid", "key"] + (["status"] if "status" in names else [])
        table = f.read(columns=cols)
    if "status" in names:
        table = table.filter(pc.equal(table.column("status"), "success"))
    try:
        uids = U.hex_to_uids(table.column("uid"))
    except DataCompError as e:
        raise DataCompError(f"{path}: {e}") from None
    return ShardIndex(tar, key_bytes(table.column("key")), uids, "parquet")


@contextlib.contextmanager
def _open_parquet(path: Location) -> Any:
    """:func:`parquet_file`, or None (with a warning) when the file is unreadable: the tar is indexed."""
    try:
        cm = parquet_file(path)
        f = cm.__enter__()
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for unreadable files
        log.warning("%s: unreadable parquet (%s); indexing the tar instead", path, type(e).__name__)
        yield None
        return
    try:
        yield f
    finally:
        cm.__exit__(None, None, None)


def _json_members(tar: Location) -> Any:
    """``(key, json bytes)`` per ``.json`` member: memory-mapped locally, streamed from a URL."""
    if not tar.is_local:
        with tar.open("rb", cache_type="readahead") as f:
            for key, ext, data, _ in iter_stream_members(f, tar):
                if ext == "json":
                    yield key, data
        return
    with mapped(tar.path) as buf:
        for key, ext, off, size, _ in iter_members(buf, tar.path):
            if ext == "json":
                yield key, bytes(buf[off : off + size])


def _from_tar(tar: Location) -> ShardIndex:
    keys: list[str] = []
    hexes: list[str] = []
    for key, data in _json_members(tar):
        try:
            uid = json.loads(data).get("uid")
        except (ValueError, AttributeError):
            uid = None
        if not isinstance(uid, str):
            raise DataCompError(f"{tar}: sample {key} has no uid in its .json; cannot select it by uid")
        keys.append(key)
        hexes.append(uid.rjust(32, "0"))
    try:
        uids = U.hex_to_uids(np.asarray(hexes, dtype="U32") if hexes else np.zeros(0, "U32"))
    except DataCompError as e:
        raise DataCompError(f"{tar}: {e}") from None
    return ShardIndex(tar, _encode(keys), uids, "tar")


def _encode(keys: list[str]) -> np.ndarray:
    return np.char.encode(np.asarray(keys, dtype=str), "utf-8", "surrogateescape") if keys else np.zeros(0, "S1")


def key_bytes(column: Any) -> np.ndarray:
    """An Arrow string column as a numpy ``S`` array; zero-copy when all keys have one length (img2dataset's)."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) and not arr.null_count and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        off_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
        offsets = np.frombuffer(arr.buffers()[1], off_type)[arr.offset : arr.offset + len(arr) + 1]
        width = int(offsets[1] - offsets[0])
        if width > 0 and (np.diff(offsets) == width).all():
            data = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
            if data.all():  # no NUL bytes, which S arrays would strip
                return data.view(f"S{width}")
    if arr.null_count:
        raise DataCompError("the key column has empty (null) values; re-create the shard's parquet")
    return _encode(arr.to_pylist())
