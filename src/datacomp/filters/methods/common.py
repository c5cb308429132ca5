"""Helpers the methods share: L2-normalised embeddings, ranking filters over a signal column."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from datacomp.filters.registry import FilterParams, Mask, register_filter


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32; zero rows stay zero)."""
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def file_rng(seed: int, stem: str, *salt: int) -> np.random.Generator:
    """A generator fixed by the seed and the metadata file's name (the same on any executor)."""
    return np.random.default_rng([int(seed), zlib.crc32(stem.encode()), *salt])


def arch_of(p: FilterParams) -> str:
    return p.arch or "l14"


def _rank_needs(column: Callable[[FilterParams], str], optional: bool) -> Callable[[FilterParams], tuple[str, ...]]:
    def needs(p: FilterParams) -> tuple[str, ...]:
        cols: tuple[str, ...] = ()
        if not optional or p.cut is not None or p.threshold is not None:
            cols = (column(p),)
        if p.cut is not None and p.cut.tie_uid is not None:
            cols += ("uid_f0", "uid_f1")
        return cols

    return needs


def rank_mask(t: pa.Table, p: FilterParams, col: str) -> Mask:
    """Rows in the exact global top fraction of ``col`` (``p.cut``) or at/above ``--threshold``."""
    from datacomp.filters.baselines import at_least

    scores = t[col].to_numpy(zero_copy_only=False)
    if p.cut is not None:
        uids = None
        if p.cut.tie_uid is not None:
            uids = np.empty(t.num_rows, dtype="u8,u8")
            uids["f0"], uids["f1"] = t["uid_f0"].to_numpy(), t["uid_f1"].to_numpy()
        return p.cut.mask(scores, uids)
    return at_least(scores, float(p.threshold))  # type: ignore[arg-type]


def register_rank_filter(name: str, column: Callable[[FilterParams], str], description: str,
                         extra_needs: tuple[str, ...] = (), optional: bool = False,
                         rules: Callable[[pa.Table, FilterParams], dict[str, Mask]] | None = None) -> None:
    """A filter keeping the top ``--fraction`` (or ``>= --threshold``) by ``column(params)``, AND ``rules``.

    ``optional``: the cut may be left out (then only ``rules`` apply).
    """
    base = _rank_needs(column, optional)

    def fn(t: pa.Table, p: FilterParams) -> dict[str, Mask]:
        out = dict(rules(t, p)) if rules else {}
        if p.cut is not None or p.threshold is not None:
            out[f"top {column(p)}"] = rank_mask(t, p, column(p))
        return out

    register_filter(name, needs=lambda p: (*extra_needs, *base(p)), description=description, rank_column=column,
                    rank_optional=optional)(fn)
