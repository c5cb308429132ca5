"""Filters by name: the DataComp baselines and user filters, all columnar.

A filter is a function over an Arrow table holding the columns it declares in ``needs`` (metadata
columns and cached signals, see :mod:`datacomp.filters.signals`) and returns a boolean mask, or a
dict ``{rule name: mask}`` whose AND is the selection (so the summary can say how many rows each
rule removed). Register your own in one file and pass it with ``--plugin``::

    # my_filter.py
    import pyarrow.compute as pc
    from datacomp.filters import register_filter

    @register_filter("long_english", needs=("lang", "text_words", "clip_l14_similarity_score"))
    def long_english(t, params):
        return {
            "english": pc.equal(t["lang"], "en").to_numpy(zero_copy_only=False),
            "words>=5": t["text_words"].to_numpy() >= 5,
            "l14>=0.3": t["clip_l14_similarity_score"].to_numpy() >= 0.3,
        }

    $ datacomp filter --plugin my_filter.py --name long_english --metadata-dir M --output out.npy
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datacomp.errors import DataCompError

log = logging.getLogger(__name__)

Mask = np.ndarray
FilterFn = Callable[..., "Mask | dict[str, Mask]"]


@dataclass(frozen=True)
class FilterParams:
    """Resolved parameters every filter function receives (a baseline reads what it needs)."""

    compat: bool = False  # reproduce the original's selection (see docs/filter.md)
    arch: str | None = None  # "b32" | "l14" for clip-score rules
    threshold: float | None = None  # resolved score threshold (from --threshold or --fraction)
    cut: Any = None  # threshold.Cut when --fraction was given
    targets: np.ndarray | None = None  # image-based: sorted target centroid ids
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FilterDef:
    name: str
    fn: FilterFn
    needs: tuple[str, ...] | Callable[[FilterParams], tuple[str, ...]]
    uses_score: bool = False  # takes --arch with --threshold/--fraction
    image_based: bool = False  # needs centroids and target clusters
    needs_synsets: bool = False
    description: str = ""
    # rule -> row-lazy signal columns it reads (language ID): such rules are evaluated last, only on
    # the rows the other rules keep, so language ID runs on those rows alone.
    late_rules: dict[str, tuple[str, ...]] = field(default_factory=dict)


_REGISTRY: dict[str, FilterDef] = {}


def register_filter(name: str, needs: tuple[str, ...] | list[str] | Callable[[FilterParams], tuple[str, ...]],
                    description: str = "",
                    uses_score: bool = False, image_based: bool = False, needs_synsets: bool = False,
                    late_rules: dict[str, tuple[str, ...]] | None = None) -> Callable[[FilterFn], FilterFn]:
    """Decorator: register ``fn(table)`` or ``fn(table, params)`` under ``name``.

    ``late_rules``: ``{rule: columns}`` for rules reading row-lazy signals (``lang``); the filter is
    then called twice, first with those columns all null (their rules' masks are ignored), then
    with the columns filled for the rows the other rules keep.
    """

    def deco(fn: FilterFn) -> FilterFn:
        nparams = len(inspect.signature(fn).parameters)
        call = fn if nparams >= 2 else (lambda t, p, _f=fn: _f(t))
        need = needs if callable(needs) else tuple(needs)
        _REGISTRY[name] = FilterDef(name, call, need, uses_score, image_based, needs_synsets,
                                    description or (fn.__doc__ or "").strip().split("\n")[0],
                                    dict(late_rules or {}))
        return fn

    return deco


def get_filter(name: str) -> FilterDef:
    _ensure_builtin()
    if name not in _REGISTRY:
        raise DataCompError(f"unknown filter {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_filters() -> list[FilterDef]:
    _ensure_builtin()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def _ensure_builtin() -> None:
    import datacomp.filters.baselines  # noqa: F401 - registers the baselines


def load_plugins(paths: list[str] | tuple[str, ...]) -> None:
    """Import user filter files (each registers its filters when imported)."""
    for p in paths:
        path = Path(p).resolve()
        if not path.is_file():
            raise DataCompError(f"{path}: filter plugin file not found")
        mod_name = f"datacomp_user_filter_{abs(hash(str(path)))}"
        if mod_name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise DataCompError(f"{path}: not an importable Python file")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as e:  # noqa: BLE001 - a user's file may raise anything on import
            del sys.modules[mod_name]
            raise DataCompError(f"{path}: importing the plugin failed ({type(e).__name__}: {e})") from None


def columns_needed(fdef: FilterDef, params: FilterParams) -> tuple[str, ...]:
    return tuple(fdef.needs(params)) if callable(fdef.needs) else fdef.needs


def apply(fdef: FilterDef, table: pa.Table, params: FilterParams) -> dict[str, Mask]:
    """Run a filter and normalise its result to ``{rule: bool mask}`` of the table's length."""
    res = fdef.fn(table, params)
    rules = res if isinstance(res, dict) else {fdef.name: res}
    out = {}
    for rule, m in rules.items():
        arr = as_mask(m)
        if arr.shape != (table.num_rows,):
            raise DataCompError(
                f"filter {fdef.name!r} rule {rule!r} returned a mask of shape {arr.shape} "
                f"for {table.num_rows} rows"
            )
        out[rule] = arr
    return out


def as_mask(m: Any) -> Mask:
    """bool numpy mask from numpy/pyarrow booleans; null counts as False."""
    if isinstance(m, pa.ChunkedArray | pa.Array):
        m = pc.fill_null(m, False).to_numpy(zero_copy_only=False)
    return np.asarray(m, dtype=bool)
