"""The no-copy path: a training-time uid filter over the original shards instead of new shards.

``datacomp reshard --no-copy`` writes ``meta.json`` with ``{"uid_filter": {"subset": ..., "shards":
[...]}}``; the training data pipeline calls :func:`load_uid_filter` on the data dir and keeps only the
samples whose uid the predicate accepts (Sieve / DBP style: no second copy of the selected data).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from datacomp import uids as U
from datacomp.errors import DataCompError
from datacomp.io import read_json_file
from datacomp.storage import as_location

META = "meta.json"


class UidFilter:
    """Membership test for 32-hex uid strings against a sorted ``u8,u8`` subset; picklable.

    ``filt(uid)`` answers one uid in a few microseconds (binary search on the high 64 bits, then the
    low 64 bits within the tie range); :meth:`contains` answers a whole batch vectorised.
    """

    def __init__(self, subset: np.ndarray):
        subset = U.as_uid_array(subset)
        if not U.is_sorted(subset):
            subset = U.sort_uids(subset)
        self.hi = np.ascontiguousarray(subset["f0"])
        self.lo = np.ascontiguousarray(subset["f1"])

    def __len__(self) -> int:
        return int(self.hi.size)

    def count(self, uid: str) -> int:
        """How many times ``uid`` is listed in the subset (0 when absent)."""
        if len(uid) != 32:
            return 0
        try:
            hi, lo = int(uid[:16], 16), int(uid[16:], 16)
        except ValueError:
            return 0
        h = np.uint64(hi)
        a = int(np.searchsorted(self.hi, h, "left"))
        b = int(np.searchsorted(self.hi, h, "right"))
        if a == b:
            return 0
        lows = self.lo[a:b]
        return int(np.count_nonzero(lows == np.uint64(lo)))

    def __call__(self, uid: str) -> bool:
        return self.count(uid) > 0

    def contains(self, uids: Iterable[str] | np.ndarray | Any) -> np.ndarray:
        """Boolean mask over a batch of 32-hex uids (list, numpy or pyarrow array)."""
        arr = U.hex_to_uids(uids if not isinstance(uids, list | tuple) else np.asarray(uids, dtype="U32"))
        sub = np.empty(self.hi.size, dtype=U.UID_DTYPE)
        sub["f0"], sub["f1"] = self.hi, self.lo
        return U.isin(arr, sub)


def read_meta(data_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``meta.json`` of a reshard output, or None when the dir has none."""
    p = as_location(data_dir) / META
    if not p.isfile():
        return None
    return read_json_file(p, "re-run `datacomp reshard` with --overwrite")


def load_uid_filter(data_dir: str | os.PathLike[str]) -> None | tuple[list[str], UidFilter]:
    """``(shard paths, predicate on uid strings)`` when ``data_dir`` is a no-copy reshard output, else None.

    The predicate is a :class:`UidFilter` (call it on one uid, or ``.contains`` on a batch); it keeps
    every listed uid once (a uid listed k times is not upsampled on this path; ``.count`` tells k).
    """
    meta = read_meta(data_dir)
    if not meta or not meta.get("uid_filter"):
        return None
    spec = meta["uid_filter"]
    d = as_location(data_dir)
    if not (isinstance(spec, dict) and isinstance(spec.get("subset"), str) and isinstance(spec.get("shards", []), list)
            and all(isinstance(s, str) for s in spec.get("shards", []))):
        raise DataCompError(f"{d / META}: malformed uid_filter (needs a 'subset' path and a list of "
                            "'shards'); re-run `datacomp reshard --no-copy` with --overwrite")
    subset = as_location(spec["subset"])
    if subset.is_local and not Path(subset.path).is_absolute():
        subset = d / subset.path
    if not subset.isfile() and (d / "sample_ids.npy").isfile():
        subset = d / "sample_ids.npy"  # the output dir was moved: use its own copy
    shards = [str(s) for s in spec.get("shards", [])]
    missing = [s for s in shards if not as_location(s).isfile()]
    if missing:
        raise DataCompError(
            f"{d / META}: {len(missing)} shard(s) of the uid filter are gone (first: {missing[0]}); "
            "re-run `datacomp reshard --no-copy` on the current pool"
        )
    return shards, UidFilter(U.read_subset(subset))
