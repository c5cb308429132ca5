"""The Ray executor: the same tasks, run on a Ray cluster (local or remote).

``ray`` is an optional dependency (``pip install 'datacomp[ray]'``) and is imported only here.
Tasks are submitted as Ray remote calls with at most ``2*workers`` in flight; results come back as
they finish. A worker that dies (process killed, node lost) is Ray's to retry (``max_retries``);
an exception raised by the task itself is not retried and is re-raised in the caller unwrapped, as
the local executors do. Tasks write their outputs atomically, so a retried task never leaves a
half-written file under a final name.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from datacomp.engine.base import Task
from datacomp.errors import DataCompError

log = logging.getLogger(__name__)

# Environment a task may need on a worker (object-store credentials and endpoints, datacomp's own
# settings, the import path). Sent with every submission, so a variable set after ``ray.init``
# (say, an S3 endpoint chosen by a test) still reaches the workers.
FORWARD_PREFIXES = ("AWS_", "DATACOMP_", "GOOGLE_", "GCS_", "HF_", "FSSPEC_", "OMP_NUM_THREADS", "PYTHONPATH")
MAX_RETRIES = 3  # re-runs of a task whose worker died (not of a task that raised)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise DataCompError("--executor ray needs Ray: pip install 'datacomp[ray]'") from None
    if not hasattr(ray, "remote"):  # a directory named "ray" in the working directory shadows the package
        raise DataCompError(f"'import ray' found {getattr(ray, '__path__', ray)}, not the Ray package; "
                            "run from another directory")
    return ray


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARD_PREFIXES)}


def _run(task: Task) -> tuple[dict[str, Any], float, int]:
    t0 = time.perf_counter()
    stats = task()
    return stats, time.perf_counter() - t0, os.getpid()


class RayExecutor:
    """Runs tasks on Ray: ``address`` None starts a local cluster of ``workers`` CPUs (stopped at
    exit), ``auto``/``host:port``/``ray://host:port`` connects to a running one; if Ray is already
    initialised in this process that connection is used as is."""

    def __init__(self, workers: int | None = None, address: str | None = None, max_retries: int = MAX_RETRIES):
        self.ray = _import_ray()
        self.address = address or os.environ.get("DATACOMP_RAY_ADDRESS") or None
        self.max_retries = max_retries
        self._workers = workers
        self._started = False

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        kw: dict[str, Any] = {"log_to_driver": False, "configure_logging": False,
                              "runtime_env": {"env_vars": forwarded_env()}}
        try:
            if self.address:
                ray.init(address=self.address, **kw)
            else:
                ray.init(num_cpus=max(1, self._workers or (os.cpu_count() or 1)), include_dashboard=False, **kw)
                self._started = True
                atexit.register(self.close)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = self.address or "a local cluster"
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataCompError(f"could not start or reach Ray at {where}: {msg}; check --ray-address / "
                                "DATACOMP_RAY_ADDRESS (e.g. 'auto' on a node of a running cluster)") from None
        log.info("ray: %s", "started a local cluster" if self._started else f"connected to {self.address}")

    @property
    def workers(self) -> int:
        if self._workers:
            return self._workers
        if self.ray.is_initialized():
            return max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        return max(1, os.cpu_count() or 1)

    def close(self) -> None:
        """Shut down a cluster this executor started (a no-op for one it connected to)."""
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def imap(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, dict[str, Any], float]]:
        for task, stats, seconds, _pid in self.imap_with_pid(tasks):
            yield task, stats, seconds

    def imap_with_pid(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, dict[str, Any], float, int]]:
        """Like :meth:`imap`, plus the process id that ran each task."""
        if not tasks:
            return
        ray = self.ray
        self._connect()
        limit = 2 * self.workers
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        remote = ray.remote(_run)
        env = {"env_vars": forwarded_env()}
        pending: dict[Any, Task] = {}
        it = iter(tasks)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    t = next(it, None)
                    if t is None:
                        exhausted = True
                        break
                    opts: dict[str, Any] = {"max_retries": self.max_retries, "retry_exceptions": False,
                                            "runtime_env": env, "num_cpus": t.resources.get("num_cpus", 1)}
                    if has_gpu and t.resources.get("num_gpus"):
                        opts["num_gpus"] = t.resources["num_gpus"]
                    pending[remote.options(**opts).remote(t)] = t
                if not pending:
                    return
                finished, _ = ray.wait(list(pending), num_returns=1)
                for ref in finished:
                    t = pending.pop(ref)
                    try:
                        stats, seconds, pid = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        cause = getattr(e, "cause", None)
                        if isinstance(cause, BaseException):
                            raise cause from None
                        raise
                    yield t, stats, seconds, pid
        finally:
            for ref in pending:
                ray.cancel(ref, force=False)
