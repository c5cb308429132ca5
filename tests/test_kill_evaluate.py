"""`datacomp evaluate` killed with SIGKILL mid-run, then re-run: the results equal an uninterrupted run's,
one line per task, no duplicates, and the tasks finished before the kill are not evaluated again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_errors_cli import SRC

MODEL = "datacomp-tiny-rn"
TASKS = ["embedded/count", "embedded/colours", "embedded/position", "embedded/size"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A fixed, non-trivial model: open_clip's init under a fixed seed, saved as a checkpoint."""
    import torch

    from datacomp.models import load_model

    torch.manual_seed(7)
    model = load_model(MODEL).model
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def _cmd(world, ckpt: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "datacomp", "-q", "evaluate", "--model", MODEL, "--checkpoint", str(ckpt),
            "--suite", "embedded", "--data-dir", str(world.eval_suite), "--tasks", *TASKS, "--output-dir", str(out),
            "--no-progress", "--workers", "0"]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")


def _lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.slow
def test_evaluate_killed_mid_run_resumes_to_the_same_results(world, checkpoint, tmp_path):
    out = tmp_path / "killed"
    results = out / "eval_results.jsonl"
    proc = subprocess.Popen(_cmd(world, checkpoint, out), start_new_session=True, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                if len(results.read_text().splitlines()) >= 1:
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the kill must land before the run ends"
    done_at_kill = {r["key"]: r["metrics"] for r in _lines(results)}
    # the kill must land mid-run: some tasks' lines written, not all
    assert done_at_kill and len(done_at_kill) < len(TASKS), done_at_kill
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    r = subprocess.run(_cmd(world, checkpoint, out), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref"
    r = subprocess.run(_cmd(world, checkpoint, ref), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr

    got, want = _lines(results), _lines(ref / "eval_results.jsonl")
    assert sorted(x["key"] for x in got) == sorted(TASKS)  # one line per task: no duplicates, none missing
    assert {x["key"]: x["metrics"] for x in got} == {x["key"]: x["metrics"] for x in want}
    assert all({x["key"]: x["metrics"] for x in got}[k] == m for k, m in done_at_kill.items())
    assert any(v not in (None, 0) for x in want for v in x["metrics"].values() if isinstance(v, float))
