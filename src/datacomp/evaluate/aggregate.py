"""The five summary numbers of ``aggregate_scores.py``: ImageNet, ImageNet dist. shifts, VTAB, Retrieval, Average.

Each is the mean of ``main_metric`` over a group; ``Average`` is over every scored task. The groups
are the registry's ``aggregate`` field (DataComp's hard-coded lists; the embedded suite's analogs),
and a results set must hold exactly the suite's scored tasks: missing or extra ones are refused,
as the original's ``assert len == 38``, but with the names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.errors import DataCompError
from datacomp.evaluate.registry import list_tasks
from datacomp.evaluate.results import read_results

AGGREGATES = {
    "imagenet": "ImageNet",
    "imagenet_dist_shift": "ImageNet dist. shifts",
    "vtab": "VTAB",
    "retrieval": "Retrieval",
}
AGGREGATE_KEYS = (*AGGREGATES.values(), "Average")


def aggregate(
    results: list[dict[str, Any]] | str | os.PathLike[str], suite: str = "datacomp",
    tasks_file: str | os.PathLike[str] | None = None,
) -> dict[str, float | None]:
    """``{ImageNet, ImageNet dist. shifts, VTAB, Retrieval, Average}`` from result lines (or a jsonl path).

    A group with no task in the suite is None.
    """
    rows = read_results(results) if isinstance(results, str | Path) else list(results)
    tasks = list_tasks(suite, tasks_file)
    by_key = {t.key: t for t in tasks}
    by_name = {t.name: t for t in tasks}
    scores: dict[str, float] = {}
    extra: list[str] = []
    for row in rows:
        main = (row.get("metrics") or {}).get("main_metric")
        if main is None:
            continue
        t = by_key.get(row.get("key", "")) or by_name.get(row.get("dataset", ""))
        label = row.get("key") or row.get("dataset")
        if t is None or t.main_metric is None:
            extra.append(str(label))
            continue
        if t.key in scores:
            raise DataCompError(f"results hold task {t.key} twice; keep one line per task")
        scores[t.key] = float(main)
    expected = [t.key for t in tasks if t.main_metric is not None]
    missing = [k for k in expected if k not in scores]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} ({', '.join(missing)})")
        if extra:
            parts.append(f"not in the suite {len(extra)} ({', '.join(extra)})")
        raise DataCompError(
            f"cannot aggregate: the {suite} suite has {len(expected)} scored tasks, results have {len(scores)}; "
            + "; ".join(parts) + ". Run `datacomp evaluate` for the missing tasks (or pick the right --suite)"
        )
    out: dict[str, float | None] = {}
    for group, label in AGGREGATES.items():
        vals = [scores[t.key] for t in tasks if t.aggregate == group and t.main_metric is not None]
        out[label] = float(np.mean(vals)) if vals else None
    out["Average"] = float(np.mean([scores[k] for k in expected]))
    return out
