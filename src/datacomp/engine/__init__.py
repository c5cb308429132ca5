"""One executor interface over idempotent tasks: plan with pure functions, run locally (or on Ray).

A step plans a list of :class:`Task` (one per input file or shard). Each task writes its outputs
under temporary names, renames them, and returns a small stats dict; the engine then writes the
task's completion marker. Resume is therefore "skip tasks whose marker exists".
"""

from datacomp.engine.base import Executor, Task, TaskResult, completed_tasks, is_done, is_url, mark_done, run_tasks
from datacomp.engine.local import (
    EXECUTORS,
    LocalExecutor,
    ParentAndPoolExecutor,
    ThreadExecutor,
    get_executor,
    is_distributed,
    resolve_executor,
)

__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "ParentAndPoolExecutor",
    "Task",
    "TaskResult",
    "ThreadExecutor",
    "completed_tasks",
    "get_executor",
    "is_distributed",
    "is_done",
    "is_url",
    "mark_done",
    "resolve_executor",
    "run_tasks",
]
