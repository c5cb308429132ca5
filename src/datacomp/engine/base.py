"""Task, executor protocol and the resumable runner shared by every executor."""

from __future__ import annotations

import json
import logging
import os
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
    # What one run needs beyond one CPU, e.g. {"num_gpus": 1}; executors that schedule resources
    # (Ray) request it when the cluster has it, the local ones ignore it.
    resources: dict[str, float] = field(default_factory=dict)

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


def is_url(path: str | os.PathLike[str]) -> bool:
    return "://" in os.fspath(path)


class _Markers:
    """Completion markers ``<task>.done.json`` in a local directory or under a URL (fsspec)."""

    def __init__(self, state_dir: str | os.PathLike[str]):
        self.url = is_url(state_dir)
        if self.url:
            from fsspec.core import url_to_fs

            self.fs, self.root = url_to_fs(os.fspath(state_dir))
            self.root = self.root.rstrip("/")
        else:
            self.dir = Path(state_dir)

    def ensure(self) -> None:
        if not self.url:
            self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> str:
        safe = name.replace("/", "_") + ".done.json"
        return f"{self.root}/{safe}" if self.url else str(self.dir / safe)

    def read_all(self) -> dict[str, dict[str, Any]]:
        out = {}
        if self.url:
            self.fs.invalidate_cache(self.root)  # (listings may be cached; markers come from other runs)
            paths = self.fs.glob(f"{self.root}/*.done.json") if self.fs.exists(self.root) else []
            texts = self.fs.cat(paths) if paths else {}
            for p in paths:
                rec = json.loads(texts[p])
                out[rec["name"]] = rec["stats"]
        elif self.dir.is_dir():
            for p in self.dir.glob("*.done.json"):
                rec = json.loads(p.read_text())
                out[rec["name"]] = rec["stats"]
        return out

    def write(self, name: str, record: dict[str, Any]) -> None:
        if not self.url:
            write_json_atomic(self.path(name), record)
            return
        # One PUT: object stores show an object whole or not at all, so the marker needs no rename.
        text = json.dumps(record, indent=2, allow_nan=False, default=str) + "\n"
        self.fs.pipe_file(self.path(name), text.encode())


def completed_tasks(state_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Stats of every task completed under ``state_dir`` (a directory or a URL), by any run."""
    return _Markers(state_dir).read_all()


def is_done(state_dir: str | os.PathLike[str], name: str) -> bool:
    """Whether ``name`` has a completion marker under ``state_dir`` (work run outside :func:`run_tasks`)."""
    m = _Markers(state_dir)
    return m.fs.exists(m.path(name)) if m.url else Path(m.path(name)).is_file()


def mark_done(state_dir: str | os.PathLike[str], name: str, stats: dict[str, Any] | None = None,
              seconds: float = 0.0) -> None:
    """Write ``name``'s completion marker (after its outputs), as :func:`run_tasks` does for a task."""
    m = _Markers(state_dir)
    m.ensure()
    m.write(name, {"name": name, "stats": stats or {}, "seconds": seconds, "finished_at": time.time()})


def run_tasks(
    tasks: Sequence[Task],
    executor: Executor,
    state_dir: str | os.PathLike[str] | None = None,
    desc: str = "tasks",
    unit: str = "it",
    progress: bool = True,
) -> list[TaskResult]:
    """Run the tasks not yet completed; return results for all, in plan order.

    With ``state_dir`` (a directory or a URL such as ``s3://bucket/run/state``), a task whose
    completion marker exists is skipped and its recorded stats are returned; each finished task's
    marker is written after its outputs, so a killed run resumes and reruns only unfinished tasks.
    """
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError("task names must be unique within a step")
    done: dict[str, dict[str, Any]] = {}
    markers = _Markers(state_dir) if state_dir is not None else None
    if markers is not None:
        markers.ensure()
        wanted = set(names)
        done = {n: s for n, s in markers.read_all().items() if n in wanted}
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
            if markers is not None:
                markers.write(task.name, {"name": task.name, "stats": stats, "seconds": seconds,
                                          "finished_at": time.time()})
            results[task.name] = TaskResult(task.name, stats, seconds)
            bar.update(task.weight)
    finally:
        bar.close()
    return [results[n] for n in names]


def _progress(total: int, initial: int, desc: str, unit: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    # TQDM_DISABLE (set by `--no-progress` and inside the demo) wins over a step's own progress=True
    off = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")
    return tqdm(
        total=total, initial=initial, desc=desc, unit=unit, unit_scale=True, disable=off or not enabled,
        dynamic_ncols=True, leave=False,
    )
