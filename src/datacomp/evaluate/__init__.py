"""Evaluation: suites of tasks (DataComp's, the embedded world's, a user's file), scored by registered families.

- :func:`evaluate` runs a suite for one model and writes ``eval_results.jsonl`` (resumable, locked);
- :func:`aggregate` turns result lines into the suite's group means (ImageNet / ImageNet dist. shifts /
  VTAB / Retrieval) and the Average;
- :func:`get_suite` / :func:`list_tasks` / :func:`get_task` read suite files (``suites/*.json`` or a
  user's JSON/YAML); :mod:`datacomp.evaluate.families` registers how each kind of task is scored;
- :func:`read_results` is the one reader of ``eval_results.jsonl``; :func:`fetch` downloads a set.

Importing this package is cheap; torch and open_clip load when :func:`evaluate` runs.
"""

from __future__ import annotations

from typing import Any

from datacomp.evaluate.aggregate import AGGREGATE_KEYS, Aggregates, aggregate, aggregate_partial
from datacomp.evaluate.data import fetch, locate
from datacomp.evaluate.families import Family, TaskRun, get_family, list_families, load_plugins, register_family
from datacomp.evaluate.registry import EvalTask, Suite, get_suite, get_task, list_suites, list_tasks, select_tasks
from datacomp.evaluate.results import RESULTS_NAME, read_results

__all__ = ["AGGREGATE_KEYS", "RESULTS_NAME", "Aggregates", "EvalTask", "Family", "Suite", "TaskRun", "aggregate",
           "aggregate_partial", "evaluate", "fetch", "get_family", "get_suite", "get_task", "list_families",
           "list_suites", "list_tasks", "load_plugins", "locate", "read_results", "register_family", "select_tasks"]


def evaluate(output_dir: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Evaluate one model on a suite; see :func:`datacomp.evaluate.runner.evaluate` for the arguments."""
    from datacomp.evaluate.runner import evaluate as _evaluate

    return _evaluate(output_dir, **kwargs)
