"""Evaluation: DataComp's 38 scored tasks and the embedded suite, with the original's metrics and aggregates.

- :func:`evaluate` runs a suite for one model and writes ``eval_results.jsonl`` (resumable);
- :func:`aggregate` turns result lines into ImageNet / ImageNet dist. shifts / VTAB / Retrieval / Average;
- :func:`list_tasks` / :func:`get_task` read the task registry; :func:`fetch` downloads a DataComp set.

Importing this package is cheap; torch and open_clip load when :func:`evaluate` runs.
"""

from __future__ import annotations

from typing import Any

from datacomp.evaluate.aggregate import AGGREGATE_KEYS, aggregate
from datacomp.evaluate.data import fetch, locate
from datacomp.evaluate.registry import EvalTask, get_task, list_tasks, select_tasks
from datacomp.evaluate.results import read_results

__all__ = ["AGGREGATE_KEYS", "EvalTask", "aggregate", "evaluate", "fetch", "get_task", "list_tasks", "locate",
           "read_results", "select_tasks"]


def evaluate(output_dir: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Evaluate one model on a suite; see :func:`datacomp.evaluate.runner.evaluate` for the arguments."""
    from datacomp.evaluate.runner import evaluate as _evaluate

    return _evaluate(output_dir, **kwargs)
