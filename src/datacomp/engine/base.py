"""Task, executor protocol and the resumable runner shared by every executor."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from datacomp.io import write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One idempotent unit of work. ``fn`` must be a picklable top-level function."""

    name: str  # unique within a step; names the completion marker
    fn: Callable[..., dict[str, Any]]  # returns a JSON-able stats dict (e.g. {"count": n, ...})
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    weight: int = 1  # units of progress this task represents (rows, samples, shards)

    def __call__(self) -> dict[str, Any]:
        return self.fn(*self.args, **self.kwargs)


@dataclass
class TaskResult:
    name: str
    stats: dict[str, Any]
    seconds: float
    skipped: bool = False  # True when completed by an earlier run


class Executor(Protocol):
    """Runs tasks and yields their results as they finish (any order)."""

    workers: int

    def imap(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, dict[str, Any], float]]: ...


def _marker(state_dir: Path, name: str) -> Path:
    safe = name.replace("/", "_")
    return state_dir / f"{safe}.done.json"


def completed_tasks(state_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Stats of every task completed under ``state_dir`` (by an earlier or the current run)."""
    state_dir = Path(state_dir)
    out = {}
    if state_dir.is_dir():
        for p in state_dir.glob("*.done.json"):
            rec = json.loads(p.read_text())
            out[rec["name"]] = rec["stats"]
    return out


def run_tasks(
    tasks: Sequence[Task],
    executor: Executor,
    state_dir: str | Path | None = None,
    desc: str = "tasks",
    unit: str = "it",
    progress: bool = True,
) -> list[TaskResult]:
    """Run the tasks not yet completed; return results for all, in plan order.

    With ``state_dir``, a task whose completion marker exists is skipped and its recorded stats are
    returned; each finished task's marker is written after its outputs, so a killed run resumes.
    """
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError("task names must be unique within a step")
    done: dict[str, dict[str, Any]] = {}
    if state_dir is not None:
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        done = {n: s for n, s in completed_tasks(state_dir).items() if n in set(names)}
    results: dict[str, TaskResult] = {
        n: TaskResult(n, s, 0.0, skipped=True) for n, s in done.items()
    }
    todo = [t for t in tasks if t.name not in done]
    if done:
        log.info("%s: %d of %d task(s) already complete, resuming", desc, len(done), len(tasks))
    total = sum(t.weight for t in tasks)
    initial = sum(t.weight for t in tasks if t.name in done)
    bar = _progress(total, initial, desc, unit, progress)
    try:
        for task, stats, seconds in executor.imap(todo):
            if state_dir is not None:
                write_json_atomic(
                    _marker(state_dir, task.name),
                    {"name": task.name, "stats": stats, "seconds": seconds, "finished_at": time.time()},
                )
            results[task.name] = TaskResult(task.name, stats, seconds)
            bar.update(task.weight)
    finally:
        bar.close()
    return [results[n] for n in names]


def _progress(total: int, initial: int, desc: str, unit: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit=unit, unit_scale=True, disable=not enabled,
        dynamic_ncols=True, leave=False,
    )
