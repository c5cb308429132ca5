"""Filtering: the DataComp baselines, user filters and cached per-sample signals.

``run_filter(name, metadata_dir, output, **params)`` writes the sorted ``u8,u8`` subset and a
summary; ``register_filter`` adds a filter by name, ``register_signal`` a cached per-sample signal;
``build_centroids`` is the image-based baseline's clustering step. See ``docs/filter.md``.
"""

from datacomp.filters.baselines import BASELINES
from datacomp.filters.clusters import build_centroids
from datacomp.filters.registry import (
    FilterParams,
    SignalDef,
    get_filter,
    get_signal,
    list_filters,
    list_signals,
    load_plugins,
    register_filter,
    register_signal,
)
from datacomp.filters.run import compute_signals, run_filter, summary_path
from datacomp.filters.signals import ALL_COLUMNS, SignalConfig, SignalInputs

__all__ = [
    "ALL_COLUMNS",
    "BASELINES",
    "FilterParams",
    "SignalConfig",
    "SignalDef",
    "SignalInputs",
    "build_centroids",
    "compute_signals",
    "get_filter",
    "get_signal",
    "list_filters",
    "list_signals",
    "load_plugins",
    "register_filter",
    "register_signal",
    "run_filter",
    "summary_path",
]
