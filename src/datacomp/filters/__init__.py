"""Filtering: the DataComp baselines, user filters and cached per-sample signals.

``run_filter(name, metadata_dir, output, **params)`` writes the sorted ``u8,u8`` subset and a
summary; ``register_filter`` adds a filter by name; ``build_centroids`` is the image-based
baseline's clustering step. See ``docs/filter.md``.
"""

from datacomp.filters.clusters import build_centroids
from datacomp.filters.registry import FilterParams, get_filter, list_filters, load_plugins, register_filter
from datacomp.filters.run import compute_signals, run_filter, summary_path
from datacomp.filters.signals import ALL_COLUMNS, SignalConfig

BASELINES = (
    "no_filter",
    "basic_filter",
    "text_based",
    "image_based",
    "clip_score",
    "laion2b",
    "image_based_intersect_clip_score",
)

__all__ = [
    "ALL_COLUMNS",
    "BASELINES",
    "FilterParams",
    "SignalConfig",
    "build_centroids",
    "compute_signals",
    "get_filter",
    "list_filters",
    "load_plugins",
    "register_filter",
    "run_filter",
    "summary_path",
]
