"""Local executors: in-process for one worker, else a process pool (or threads, for GIL-free tasks)."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures import Executor as Executor_
from typing import Any

from datacomp.engine.base import Executor, Task


def _timed(task: Task) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    stats = task()
    return stats, time.perf_counter() - t0


class LocalExecutor:
    """Runs tasks on this machine; at most ``workers`` at once, at most ``2*workers`` queued.

    Bounded submission keeps memory flat however many tasks a step plans.
    """

    def __init__(self, workers: int | None = None, start_method: str = "spawn"):
        self.workers = max(1, workers or (os.cpu_count() or 1))
        self.start_method = start_method

    def imap(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, dict[str, Any], float]]:
        if self.workers == 1 or len(tasks) <= 1:
            for t in tasks:
                stats, sec = _timed(t)
                yield t, stats, sec
            return
        ctx = mp.get_context(self.start_method)
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx) as pool:
            yield from _bounded_imap(pool, tasks, self.workers)


class ThreadExecutor:
    """Runs tasks on threads of this process: no start-up cost, for tasks whose heavy parts release
    the GIL (kernel copies, numpy, parquet I/O). Same bounded submission as :class:`LocalExecutor`."""

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or (os.cpu_count() or 1))

    def imap(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, dict[str, Any], float]]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            yield from _bounded_imap(pool, tasks, self.workers)


def _bounded_imap(pool: Executor_, tasks: Sequence[Task], workers: int
                  ) -> Iterator[tuple[Task, dict[str, Any], float]]:
    """Results as tasks finish, with at most ``2*workers`` submitted at once."""
    pending: dict[Future[tuple[dict[str, Any], float]], Task] = {}
    it = iter(tasks)
    exhausted = False
    while True:
        while not exhausted and len(pending) < 2 * workers:
            try:
                t = next(it)
            except StopIteration:
                exhausted = True
                break
            pending[pool.submit(_timed, t)] = t
        if not pending:
            return
        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
        for fut in finished:
            t = pending.pop(fut)
            stats, sec = fut.result()
            yield t, stats, sec


def get_executor(name: str = "local", workers: int | None = None) -> Executor:
    """The executor by name: ``local`` (processes), ``threads``; ``ray`` plugs in behind the same interface."""
    if name == "local":
        return LocalExecutor(workers)
    if name == "threads":
        return ThreadExecutor(workers)
    from datacomp.errors import DataCompError

    raise DataCompError(f"unknown executor {name!r}: choose 'local' or 'threads'")
