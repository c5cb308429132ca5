"""The demo killed with SIGKILL mid-run (while training), then re-run: it completes, and its leaderboard
equals an uninterrupted run's."""

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

# A test-only budget (as tests/test_demo.py): the CLI always trains at the fixed `tiny` scale.
SMALL_BUDGET = {"train_num_samples": 512, "batch_size": 64, "warmup": 2, "num_checkpoints": 1}
FILTERS = ["no_filter", "clip_score_l14_30"]
SCRIPT = """
import json, sys
from datacomp.demo import run_demo
from datacomp.synth import World
res = run_demo(sys.argv[1], seeds=1, filters={filters!r}, world=World.at(sys.argv[2]), workers=2,
               train_overrides={budget!r}, progress=False, report_gallery=2)
print(json.dumps(res.rows))
"""


def _demo(out: Path, world) -> list[str]:
    code = SCRIPT.format(filters=FILTERS, budget=SMALL_BUDGET)
    return [sys.executable, "-c", code, str(out), str(world.root)]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _rows(stdout: str) -> list[dict]:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_demo_killed_mid_run_resumes_to_the_same_leaderboard(world, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_demo(out, world), start_new_session=True, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None and not list(out.glob("*/seed0")):
            time.sleep(0.05)
        time.sleep(3)  # into the training
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the kill must land before the demo ends"
    assert not (out / "demo_record.json").exists() and not (out / "report.html").exists()

    again = subprocess.run(_demo(out, world), env=_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    ref = subprocess.run(_demo(tmp_path / "ref", world), env=_env(), capture_output=True, text=True, timeout=900)
    assert ref.returncode == 0, ref.stderr

    got, want = _rows(again.stdout), _rows(ref.stdout)
    assert [r["name"] for r in got] == FILTERS
    assert got == want  # the same leaderboard, to the last digit
    for n in FILTERS:
        lines = (out / n / "seed0" / "eval_results.jsonl").read_text().splitlines()
        keys = [json.loads(x)["key"] for x in lines]
        assert len(keys) == len(set(keys))  # no task evaluated twice into the file
    assert (out / "report.html").is_file() and (out / "demo_record.json").is_file()
