"""Images of metadata rows, read from the pool's shards by uid (for signals that need pixels).

The pool's shards (img2dataset layout) are indexed once per process from their per-shard parquet
(``uid``, ``key``; the tar's jsons when there is none), so a metadata file's rows are matched to tar
members by uid whatever the shard they landed in. Rows without a successful image get ``None``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from datacomp.artifacts import IMAGE_EXTS
from datacomp.errors import DataCompError
from datacomp.uids import UID_DTYPE, _order_key, sort_order

log = logging.getLogger(__name__)


def lookup_sorted(sorted_u: np.ndarray, uids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each of ``uids`` in the sorted ``sorted_u`` (clipped) and whether it is there."""
    keys = _order_key(sorted_u)
    q = _order_key(uids)
    pos = np.searchsorted(keys, q)
    pos_c = np.minimum(pos, max(len(keys) - 1, 0))
    found = (pos < len(keys)) & (keys[pos_c] == q) if len(keys) else np.zeros(len(q), bool)
    return pos_c, found


class ShardImages:
    """uid -> (tar, member key) over every shard of a pool's shards folder."""

    def __init__(self, shards_dir: str | os.PathLike[str]):
        from datacomp.pool.shards import list_shards
        from datacomp.reshard.index import index_shard

        self.dir = Path(shards_dir)
        self.tars = list_shards(self.dir)
        if not self.tars:
            raise DataCompError(f"{self.dir}: no .tar shards to read images from; pass the pool's --shards-dir")
        parts, src, keys = [], [], []
        for i, t in enumerate(self.tars):
            idx = index_shard(t)
            parts.append(idx.uids)
            src.append(np.full(len(idx.uids), i, np.int32))
            keys.append(idx.keys.astype(object))
        u = np.concatenate(parts) if parts else np.zeros(0, UID_DTYPE)
        order = sort_order(u)
        self.uids = u[order]
        self.tar_of = np.concatenate(src)[order]
        self.key_of = np.concatenate(keys)[order]

    def image_bytes(self, uids: np.ndarray) -> list[bytes | None]:
        """Encoded image of each uid (``None`` where no shard holds one)."""
        pos, found = lookup_sorted(self.uids, uids)
        out: list[bytes | None] = [None] * len(uids)
        rows = np.flatnonzero(found)
        for t in np.unique(self.tar_of[pos[rows]]):
            sel = rows[self.tar_of[pos[rows]] == t]
            want: dict[bytes, list[int]] = {}
            for r in sel:  # (a uid repeated in the metadata gets its image on every row)
                want.setdefault(self.key_of[pos[r]], []).append(int(r))
            for key, sample in _iter_samples(self.tars[int(t)]):
                rows_of = want.get(key.encode() if isinstance(key, str) else key)
                if rows_of:
                    img = next((bytes(sample[e]) for e in IMAGE_EXTS if e in sample), None)
                    for r in rows_of:
                        out[r] = img
        return out


def _iter_samples(tar: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    from datacomp.pool.shards import iter_tar_samples

    yield from iter_tar_samples(tar)


_INDEX: dict[str, ShardImages] = {}


def shard_images(shards_dir: str | os.PathLike[str]) -> ShardImages:
    """The shards folder's index (cached per process and per listing of the folder)."""
    d = Path(shards_dir)
    if not d.is_dir():
        raise DataCompError(f"{d}: shards folder not found; pass the pool's shards with --shards-dir")
    tag = f"{d.resolve()}:" + ",".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in sorted(d.glob("*.tar")))
    if tag not in _INDEX:
        _INDEX.clear()
        _INDEX[tag] = ShardImages(d)
    return _INDEX[tag]


def decode_rgb(data: bytes | None) -> np.ndarray | None:
    """uint8 ``(h, w, 3)`` pixels of an encoded image through the project's pixel-capped decoder
    (``None`` stays ``None``; an undecodable or oversized image is logged and treated as missing)."""
    if data is None:
        return None
    from datacomp.pool.resize import ImageError, open_image

    try:
        return np.asarray(open_image(data))
    except ImageError as e:
        log.warning("unusable image (%s): treated as missing", e.message)
        return None
