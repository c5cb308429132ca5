"""The summary numbers of ``aggregate_scores.py`` (ImageNet, ImageNet dist. shifts, VTAB, Retrieval, Average).

Each group is the mean of ``main_metric`` over the suite's tasks in that group (the suite file's
``aggregates`` name the groups and their labels; a task's group is its suite entry's ``aggregate``
or else its family's); the average is over every scored task. :func:`aggregate` demands all scored
tasks, as the original's ``assert len == 38`` (but with the names); :func:`aggregate_partial` gives
each group whose tasks are all present and None for the others. Lines of tasks outside the suite
(a task a user's own suite adds) are ignored by both, so adding a task never breaks the aggregation
of a suite that does not have it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.errors import DataCompError
from datacomp.evaluate.registry import DEFAULT_AGGREGATES, DEFAULT_AVERAGE, Suite, get_suite
from datacomp.evaluate.results import read_results

log = logging.getLogger(__name__)

AGGREGATE_KEYS = (*DEFAULT_AGGREGATES.values(), DEFAULT_AVERAGE)  # DataComp's five summary columns


@dataclass
class Aggregates:
    values: dict[str, float | None]  # label -> mean (None: a task of that group is missing, or no task)
    missing: list[str] = field(default_factory=list)  # scored tasks of the suite without a result
    ignored: list[str] = field(default_factory=list)  # result lines of tasks not in the suite


def aggregate_partial(results: list[dict[str, Any]] | str | os.PathLike[str],
                      suite: str | os.PathLike[str] | Suite = "datacomp",
                      tasks_file: str | os.PathLike[str] | None = None) -> Aggregates:
    """Every group whose scored tasks all have a result; None for the others; never raises on missing tasks."""
    rows = read_results(results) if isinstance(results, str | Path) else list(results)
    s = get_suite(suite, tasks_file=tasks_file)
    by_key = {t.key: t for t in s.tasks}
    by_name = {t.name: t for t in s.tasks}
    scores: dict[str, float] = {}
    ignored: list[str] = []
    for row in rows:
        label = str(row.get("key") or row.get("dataset"))
        t = by_key.get(row.get("key") or "") or by_name.get(row.get("dataset") or "")
        if t is None:
            ignored.append(label)
            continue
        main = (row.get("metrics") or {}).get("main_metric")
        if main is None or t.main_metric is None:
            continue
        if t.key in scores:
            raise DataCompError(f"results hold task {t.key} twice; keep one line per task")
        scores[t.key] = float(main)
    if ignored:
        log.info("aggregating the %s suite: ignored %d line(s) of other tasks (%s)", s.name, len(ignored),
                 ", ".join(ignored))
    scored = s.scored
    missing = [t.key for t in scored if t.key not in scores]
    values: dict[str, float | None] = {}
    for group, label in s.aggregates.items():
        members = [t.key for t in scored if t.aggregate == group]
        complete = members and all(k in scores for k in members)
        values[label] = float(np.mean([scores[k] for k in members])) if complete else None
    if s.average:
        values[s.average] = float(np.mean([scores[t.key] for t in scored])) if scored and not missing else None
    return Aggregates(values, missing, ignored)


def aggregate(
    results: list[dict[str, Any]] | str | os.PathLike[str], suite: str | os.PathLike[str] | Suite = "datacomp",
    tasks_file: str | os.PathLike[str] | None = None,
) -> dict[str, float | None]:
    """``{ImageNet, ImageNet dist. shifts, VTAB, Retrieval, Average}`` (the suite's labels) from result lines
    (or a jsonl path); refuses results that lack a scored task of the suite. A group with no task is None."""
    agg = aggregate_partial(results, suite, tasks_file)
    if agg.missing:
        s = get_suite(suite, tasks_file=tasks_file)
        raise DataCompError(
            f"cannot aggregate: the {s.name} suite has {len(s.scored)} scored tasks, results have "
            f"{len(s.scored) - len(agg.missing)}; missing {len(agg.missing)} ({', '.join(agg.missing)}). "
            "Run `datacomp evaluate` for the missing tasks (or pick the right --suite)"
        )
    return agg.values
