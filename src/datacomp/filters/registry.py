"""Filters and signals by name: the DataComp baselines, the built-in signals and user plug-ins.

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

A plug-in file can also add a per-sample *signal* (cached columns a filter or ``--where`` reads)
with :func:`register_signal` (see :class:`SignalDef`; ``tests/plugins/brightness.py`` is a whole
example reading image pixels). A pip-installed package adds both through the entry-point group
``datacomp.plugins``: each entry point names a module (or a callable) imported on first use.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
    # A method ranking by a signal column: params -> the column the --fraction/--threshold cut applies
    # to (the exact global cut of :mod:`datacomp.filters.threshold`, as clip_score's).
    rank_column: Callable[[FilterParams], str] | None = None
    # A method whose global signal takes the target fraction: --fraction sets this method option.
    fraction_option: str | None = None
    rank_optional: bool = False  # the rank cut may be left out (the method's other rules still apply)


_REGISTRY: dict[str, FilterDef] = {}


def register_filter(name: str, needs: tuple[str, ...] | list[str] | Callable[[FilterParams], tuple[str, ...]],
                    description: str = "",
                    uses_score: bool = False, image_based: bool = False, needs_synsets: bool = False,
                    late_rules: dict[str, tuple[str, ...]] | None = None,
                    rank_column: Callable[[FilterParams], str] | None = None,
                    fraction_option: str | None = None,
                    rank_optional: bool = False) -> Callable[[FilterFn], FilterFn]:
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
                                    _summary(description, fn), dict(late_rules or {}), rank_column,
                                    fraction_option, rank_optional)
        return fn

    return deco


def _registered(kind: str, registry: dict[str, Any], name: str) -> Any:
    _ensure_builtin()
    if name not in registry:
        load_entry_points()  # (installed plug-ins are looked for only when a name is not built in)
    if name not in registry:
        raise DataCompError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(registry))}")
    return registry[name]


def _summary(description: str, fn: Callable[..., Any]) -> str:
    return description or (fn.__doc__ or "").strip().split("\n")[0]


def get_filter(name: str) -> FilterDef:
    return _registered("filter", _REGISTRY, name)


def list_filters() -> list[FilterDef]:
    _ensure_builtin()
    load_entry_points()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def _ensure_builtin() -> None:
    import datacomp.filters.baselines  # noqa: F401 - registers the baselines
    import datacomp.filters.builtin_signals  # noqa: F401 - registers the built-in signals
    import datacomp.filters.methods  # noqa: F401 - registers the post-DataComp methods (docs/methods/)


ENTRY_POINT_GROUP = "datacomp.plugins"
_ENTRY_POINTS_LOADED = False


def load_entry_points(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Import the plug-ins installed packages declare under ``[project.entry-points."datacomp.plugins"]``.

    Each entry point is a module (importing it registers its filters and signals) or a callable
    (called once with no arguments). Loaded once per process; returns the names loaded now.
    """
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED and group == ENTRY_POINT_GROUP:
        return []
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        except Exception as e:  # noqa: BLE001 - an installed plug-in may raise anything on import
            raise DataCompError(f"plug-in entry point {ep.name!r} ({ep.value}) failed to load "
                                f"({type(e).__name__}: {e}); fix or uninstall the package providing it") from None
        loaded.append(ep.name)
    if group == ENTRY_POINT_GROUP:
        _ENTRY_POINTS_LOADED = True
    return loaded


def load_plugins(paths: list[str] | tuple[str, ...]) -> None:
    """Import user plug-in files (each registers its filters and signals when imported)."""
    if paths:
        _ensure_builtin()  # (built-ins first: a plug-in column that clashes with one is refused, listings keep order)
    from datacomp.plugins import import_file

    for p in paths:
        import_file(p, "filter plugin")


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


# --------------------------------------------------------------------------------------------------
# Signals: cached per-sample columns, one declarative unit each (computed by filters.signals).

ColumnValues = Any  # a numpy array, a pyarrow Array/ChunkedArray or a list, one value per row asked for
SignalFn = Callable[[Any], "Mapping[str, ColumnValues]"]


@dataclass(frozen=True)
class SignalDef:
    """One cached per-sample signal: what it writes, what it reads, how it is computed.

    ``compute(inputs)`` receives a :class:`datacomp.filters.signals.SignalInputs` restricted to the
    rows to compute (all rows, or for a ``row_lazy`` signal the rows a rule reached) and returns
    ``{column: values}`` with one value per such row (null/NaN where unknown).
    """

    name: str  # also the cache folder's name (followed by the fingerprint parts)
    columns: tuple[tuple[str, pa.DataType], ...]  # output columns and their Arrow types
    compute: SignalFn
    meta: tuple[str, ...] = ()  # metadata parquet columns read
    arrays: tuple[str, ...] = ()  # npz arrays read; "{embedding_key}" stands for the configured key
    images: bool = False  # decoded pixels from the pool's shards (``--shards-dir``)
    assets: tuple[str, ...] = ()  # named input files (``SignalConfig.asset``); their content hash names the cache
    row_lazy: bool = False  # can be computed for some rows only (null elsewhere), completed later
    params: Callable[[Any], str] | None = None  # SignalConfig -> parameter fingerprint (cache folder name)
    version: str = ""  # bump when ``compute`` changes: cached files of another version are recomputed
    description: str = ""
    # A global signal (semdedup, density): ``prepare(metadata_dir, files, cfg, executor)`` fills the
    # cache for every file through engine tasks before any per-file task reads the column.
    prepare: Callable[..., None] | None = None
    on_demand: bool = False  # computed when a run names it, not by `datacomp filter signals` without --groups

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)


_SIGNALS: dict[str, SignalDef] = {}


def register_signal(name: str, columns: Mapping[str, pa.DataType | str], *, meta: tuple[str, ...] | list[str] = (),
                    arrays: tuple[str, ...] | list[str] = (), images: bool = False,
                    assets: tuple[str, ...] | list[str] = (), row_lazy: bool = False,
                    params: Callable[[Any], str] | None = None, version: str = "",
                    description: str = "",
                    prepare: Callable[..., None] | None = None,
                    on_demand: bool = False) -> Callable[[SignalFn], SignalFn]:
    """Decorator: register ``compute(inputs) -> {column: values}`` as the signal ``name``.

    ``columns``: ``{column: arrow type}`` (a type or its name: ``"float32"``, ``"string"``, ``"bool"``).
    A column name must be unique across signals and metadata columns.
    """
    if not name or "-" in name or "/" in name:
        raise DataCompError(f"signal name {name!r}: use letters, digits and underscores")
    cols = tuple((c, t if isinstance(t, pa.DataType) else pa.type_for_alias(str(t))) for c, t in columns.items())
    if not cols:
        raise DataCompError(f"signal {name!r} declares no columns")

    def deco(fn: SignalFn) -> SignalFn:
        from datacomp.filters.signals import DERIVED, META_COLUMNS

        taken = {c: s.name for s in _SIGNALS.values() if s.name != name for c in s.column_names}
        for c, _ in cols:
            if c in taken or c in META_COLUMNS or c in DERIVED:
                raise DataCompError(f"signal {name!r}: column {c!r} is already provided by "
                                    f"{taken.get(c, 'the metadata')}; choose another column name")
        _SIGNALS[name] = SignalDef(name, cols, fn, tuple(meta), tuple(arrays), images, tuple(assets), row_lazy,
                                   params, version, _summary(description, fn), prepare, on_demand)
        return fn

    return deco


def get_signal(name: str) -> SignalDef:
    return _registered("signal", _SIGNALS, name)


def list_signals() -> list[SignalDef]:
    """Registered signals (installed plug-ins included), built-ins first, in registration order."""
    _ensure_builtin()
    load_entry_points()
    return list(_SIGNALS.values())


def signal_of(column: str) -> SignalDef | None:
    """The signal providing ``column``, or ``None``; installed plug-ins are scanned only when no loaded one does.

    (Scanning the installed distributions' entry points costs 0.1-0.25 s per process, which a run
    of built-in rules does not pay.)
    """
    _ensure_builtin()
    for _ in range(2):
        for sig in _SIGNALS.values():
            if column in sig.column_names:
                return sig
        if _ENTRY_POINTS_LOADED:
            return None
        load_entry_points()
    return None
