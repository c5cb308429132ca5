"""Local executors: a process pool (in-process for one worker), threads for GIL-free tasks, or the
calling process beside a pool for CPU-bound tasks whose imports are costly."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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


class ParentAndPoolExecutor:
    """The engine's executor interface: the calling process runs tasks too, beside ``workers - 1``
    spawned processes.

    Why: CPU-bound tasks (computing filter signals) want every core, and each spawned process first spends about
    a second of CPU on imports (numpy, pyarrow, pandas through pyarrow, fastText); the parent has
    paid them already. Each slot (the parent's thread, one per process) takes the next task when it
    is free, so the slots finish together.
    """

    def __init__(self, workers: int):
        self.workers = max(1, workers)

    def imap(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, dict[str, Any], float]]:
        todo = list(tasks)
        if self.workers == 1 or len(todo) <= 1:
            yield from ThreadExecutor(1).imap(todo)
            return
        lock = threading.Lock()
        it = iter(todo)
        stop = threading.Event()
        out: queue.Queue[tuple[Task | None, Any, float]] = queue.Queue()

        def take() -> Task | None:
            with lock:
                return None if stop.is_set() else next(it, None)

        def slot(pool: ProcessPoolExecutor | None) -> None:
            try:
                while (t := take()) is not None:
                    t0 = time.perf_counter()
                    try:
                        stats = pool.submit(t.fn, *t.args, **t.kwargs).result() if pool else t()
                    except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                        stop.set()
                        out.put((t, e, 0.0))
                        return
                    out.put((t, stats, time.perf_counter() - t0))
            finally:
                out.put((None, None, 0.0))

        with ProcessPoolExecutor(self.workers - 1, mp_context=mp.get_context("spawn")) as pool:
            slots = [threading.Thread(target=slot, args=(pool,), daemon=True) for _ in range(self.workers - 1)]
            slots.append(threading.Thread(target=slot, args=(None,), daemon=True))
            for th in slots:
                th.start()
            running = len(slots)
            try:
                while running:
                    try:
                        t, stats, sec = out.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    if t is None:
                        running -= 1
                    elif isinstance(stats, BaseException):
                        raise stats
                    else:
                        yield t, stats, sec
            finally:
                stop.set()
                for th in slots:
                    th.join()


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


EXECUTORS = ("local", "threads", "ray")


def get_executor(name: str | None = None, workers: int | None = None, address: str | None = None) -> Executor:
    """The executor by name: ``local`` (processes), ``threads``, ``ray`` (``address``: a running
    cluster; default ``DATACOMP_RAY_ADDRESS``, else a local one). ``None``: ``DATACOMP_EXECUTOR``,
    else ``local``."""
    name = name or os.environ.get("DATACOMP_EXECUTOR") or "local"
    if name == "local":
        return LocalExecutor(workers)
    if name == "threads":
        return ThreadExecutor(workers)
    if name == "ray":
        from datacomp.engine.ray import RayExecutor

        return RayExecutor(workers, address)
    from datacomp.errors import DataCompError

    raise DataCompError(f"unknown executor {name!r}: choose one of {', '.join(EXECUTORS)} "
                        "(--executor or DATACOMP_EXECUTOR)")


def resolve_executor(executor: str | Executor | None, workers: int | None = None,
                     default: Callable[[int | None], Executor] | None = None) -> Executor:
    """What a step runs its tasks on.

    ``executor``: an executor (used as is), a name, or None (``DATACOMP_EXECUTOR``, else local).
    ``default``: the step's own fast local choice (threads for GIL-free tasks, the parent beside a
    pool for costly imports), used when the user asked for ``local`` or nothing.
    """
    if executor is not None and not isinstance(executor, str):
        return executor
    name = executor or os.environ.get("DATACOMP_EXECUTOR") or "local"
    if name == "local" and default is not None:
        return default(workers)
    return get_executor(name, workers)


def is_distributed(executor: Executor) -> bool:
    """True for executors whose tasks may run on other machines (so nothing may be passed in memory)."""
    return type(executor).__name__ == "RayExecutor"
