"""The Ray executor on a real local Ray cluster: the engine contract, worker loss, URL markers."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from datacomp.engine import Task, completed_tasks, get_executor, resolve_executor, run_tasks
from datacomp.errors import DataCompError
from test_engine import square_to_file

try:  # Ray workers cannot import this test module: ship its task functions by value
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(sys.modules["test_engine"])
except ImportError:
    pass


def fail_on(out_dir: str, i: int, bad: int) -> dict:
    if i == bad:
        raise DataCompError(f"task {i}: boom")
    return square_to_file(out_dir, i)


def slow_square(out_dir: str, i: int, seconds: float) -> dict:
    """Records every start (pid per line), sleeps, then writes its output atomically."""
    with open(Path(out_dir) / f"{i}.starts", "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    p = Path(out_dir) / f"{i}.txt"
    tmp = p.with_suffix(".tmp")
    tmp.write_text(str(i * i))
    os.replace(tmp, p)
    return {"count": i * i, "pid": os.getpid()}


@pytest.mark.ray
@pytest.mark.ci
@pytest.mark.parametrize("workers", [1, 2])
def test_ray_executor_passes_the_engine_contract(ray_cluster, tmp_path, workers):
    out = tmp_path / "out"
    out.mkdir()
    tasks = [Task(f"t{i}", square_to_file, (str(out), i)) for i in range(7)]
    ex = get_executor("ray", workers, address=ray_cluster)
    res = run_tasks(tasks, ex, state_dir=tmp_path / "state", progress=False)
    assert [r.name for r in res] == [f"t{i}" for i in range(7)]
    assert [r.stats["count"] for r in res] == [i * i for i in range(7)]
    assert sorted(p.read_text() for p in out.glob("*.txt")) == sorted(str(i * i) for i in range(7))
    res2 = run_tasks(tasks, ex, state_dir=tmp_path / "state", progress=False)  # would raise "ran twice"
    assert all(r.skipped for r in res2) and [r.stats for r in res2] == [r.stats for r in res]

    # a task's own error reaches the caller as itself (one line for the CLI), not wrapped by Ray
    bad = [Task(f"b{i}", fail_on, (str(tmp_path / "out"), 100 + i, 102)) for i in range(4)]
    with pytest.raises(DataCompError, match=r"^task 102: boom$"):
        run_tasks(bad, ex, state_dir=tmp_path / "state2", progress=False)
    done = set(completed_tasks(tmp_path / "state2"))
    assert "b2" not in done and done <= {"b0", "b1", "b3"}


@pytest.mark.ray
def test_gpu_tasks_run_on_a_cluster_without_gpus(ray_cluster, tmp_path):
    """A task declaring num_gpus gets a GPU where the cluster has one; here (none) it still runs."""
    import ray

    assert ray.cluster_resources().get("GPU", 0) == 0
    tasks = [Task(f"g{i}", square_to_file, (str(tmp_path), i), resources={"num_gpus": 1}) for i in range(3)]
    done: list = []
    th = threading.Thread(target=lambda: done.extend(run_tasks(tasks, get_executor("ray", 2, address=ray_cluster),
                                                               progress=False)), daemon=True)
    th.start()
    th.join(120)  # a GPU request on a GPU-less cluster would wait forever
    assert [r.stats["count"] for r in done] == [0, 1, 4]


@pytest.mark.ray
@pytest.mark.ci
def test_a_killed_ray_worker_is_retried_and_the_job_completes(ray_cluster, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    tasks = [Task(f"t{i}", slow_square, (str(out), i, 1.5 if i == 0 else 0.2)) for i in range(6)]
    killed: list[int] = []

    def kill_task0() -> None:
        starts = out / "0.starts"
        for _ in range(600):
            if starts.exists() and starts.read_text().strip():
                pid = int(starts.read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    th = threading.Thread(target=kill_task0)
    th.start()
    res = run_tasks(tasks, get_executor("ray", 2, address=ray_cluster), state_dir=tmp_path / "state",
                    progress=False)
    th.join()
    assert killed, "task 0 never started"
    starts = (out / "0.starts").read_text().split()
    assert len(starts) == 2 and int(starts[0]) == killed[0] and int(starts[1]) != killed[0]
    assert [r.stats["count"] for r in res] == [i * i for i in range(6)]
    assert [(out / f"{i}.txt").read_text() for i in range(6)] == [str(i * i) for i in range(6)]
    assert not list(out.glob("*.tmp"))
    assert len(completed_tasks(tmp_path / "state")) == 6


def test_markers_under_a_url(tmp_path):
    """Markers work on any fsspec URL (memory:// here; s3:// in tests/test_engine_s3)."""
    out = tmp_path / "out"
    out.mkdir()
    state = f"memory://engine-test-{os.getpid()}/state"
    tasks = [Task(f"dir/t{i}", square_to_file, (str(out), i)) for i in range(3)]
    res = run_tasks(tasks, get_executor("threads", 2), state_dir=state, progress=False)
    assert completed_tasks(state) == {f"dir/t{i}": {"count": i * i} for i in range(3)}
    res2 = run_tasks(tasks, get_executor("threads", 2), state_dir=state, progress=False)
    assert all(r.skipped for r in res2) and [r.stats for r in res2] == [r.stats for r in res]


@pytest.mark.s3
def test_markers_on_s3_resume_a_step(s3_bucket, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    state = f"{s3_bucket}/run/state"
    bad = [Task(f"t{i}", fail_on, (str(out), i, 3)) for i in range(5)]
    with pytest.raises(DataCompError, match="task 3: boom"):
        run_tasks(bad, get_executor("local", 1), state_dir=state, progress=False)
    assert set(completed_tasks(state)) == {"t0", "t1", "t2"}
    good = [Task(f"t{i}", square_to_file, (str(out), i)) for i in range(5)]
    res = run_tasks(good, get_executor("local", 1), state_dir=state, progress=False)  # "ran twice" if re-run
    assert [r.skipped for r in res] == [True, True, True, False, False]
    assert [r.stats["count"] for r in res] == [0, 1, 4, 9, 16]


def test_without_ray_the_choice_fails_with_the_install_line(monkeypatch, capsys):
    from datacomp.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra sees
    with pytest.raises(DataCompError, match=r"pip install 'datacomp\[ray\]'"):
        get_executor("ray", 1)
    assert main(["reshard", "-i", "x", "-o", "y", "-s", "z.npy", "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'datacomp[ray]'" in err and "Traceback" not in err


def test_executor_resolution(monkeypatch):
    from datacomp.engine import LocalExecutor, ParentAndPoolExecutor, ThreadExecutor

    monkeypatch.delenv("DATACOMP_EXECUTOR", raising=False)
    assert isinstance(resolve_executor(None, 2), LocalExecutor)
    assert isinstance(resolve_executor("local", 2, ParentAndPoolExecutor), ParentAndPoolExecutor)
    assert isinstance(resolve_executor("threads", 2, ParentAndPoolExecutor), ThreadExecutor)
    monkeypatch.setenv("DATACOMP_EXECUTOR", "threads")
    assert isinstance(resolve_executor(None, 3), ThreadExecutor) and resolve_executor(None, 3).workers == 3
    monkeypatch.setenv("DATACOMP_EXECUTOR", "spark")
    with pytest.raises(DataCompError, match="unknown executor 'spark'"):
        resolve_executor(None, 1)


def test_marker_files_are_json(tmp_path):
    tasks = [Task("a", square_to_file, (str(tmp_path), 2))]
    run_tasks(tasks, get_executor("threads", 1), state_dir=tmp_path / "s", progress=False)
    rec = json.loads((tmp_path / "s" / "a.done.json").read_text())
    assert rec["name"] == "a" and rec["stats"] == {"count": 4}
