"""The contract every executor must pass: all tasks run once, results in plan order, resume skips done."""

import json

import pytest

from datacomp.engine import LocalExecutor, ParentAndPoolExecutor, Task, ThreadExecutor, run_tasks

EXECUTORS = {"local": LocalExecutor, "threads": ThreadExecutor, "parent+pool": ParentAndPoolExecutor}


def square_to_file(out_dir: str, i: int) -> dict:
    from pathlib import Path

    p = Path(out_dir) / f"{i}.txt"
    if p.exists():
        raise AssertionError(f"task {i} ran twice")
    p.write_text(str(i * i))
    return {"count": i * i}


def fail_on(out_dir: str, i: int, bad: int) -> dict:
    if i == bad:
        raise RuntimeError("boom")
    return square_to_file(out_dir, i)


@pytest.mark.parametrize("kind", list(EXECUTORS))
@pytest.mark.parametrize("workers", [1, 2])
def test_executor_contract(tmp_path, workers, kind):
    out = tmp_path / "out"
    out.mkdir()
    tasks = [Task(f"t{i}", square_to_file, (str(out), i)) for i in range(7)]
    res = run_tasks(tasks, EXECUTORS[kind](workers), state_dir=tmp_path / "state", progress=False)
    assert [r.name for r in res] == [f"t{i}" for i in range(7)]
    assert [r.stats["count"] for r in res] == [i * i for i in range(7)]
    # second run: everything is skipped (a re-run would raise "ran twice")
    res2 = run_tasks(tasks, EXECUTORS[kind](workers), state_dir=tmp_path / "state", progress=False)
    assert all(r.skipped for r in res2) and [r.stats for r in res2] == [r.stats for r in res]


@pytest.mark.parametrize("kind", list(EXECUTORS))
def test_a_failing_task_raises_in_the_caller(tmp_path, kind):
    out = tmp_path / "out"
    out.mkdir()
    bad = [Task(f"t{i}", fail_on, (str(out), i, 3)) for i in range(6)]
    with pytest.raises(RuntimeError, match="boom"):
        run_tasks(bad, EXECUTORS[kind](2), state_dir=tmp_path / "state", progress=False)


def test_resume_after_failure_runs_only_missing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    state = tmp_path / "state"
    bad = [Task(f"t{i}", fail_on, (str(out), i, 3)) for i in range(5)]
    with pytest.raises(RuntimeError):
        run_tasks(bad, LocalExecutor(1), state_dir=state, progress=False)
    done = {json.loads(p.read_text())["name"] for p in state.glob("*.done.json")}
    assert done == {"t0", "t1", "t2"}
    good = [Task(f"t{i}", square_to_file, (str(out), i)) for i in range(5)]
    res = run_tasks(good, LocalExecutor(1), state_dir=state, progress=False)
    assert [r.skipped for r in res] == [True, True, True, False, False]
