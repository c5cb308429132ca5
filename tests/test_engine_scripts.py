"""The cluster launch recipes: scripts/slurm_evaluate.sh runs its command line for real (no srun) on a tiny
checkpoint, its dry run prints the srun line, and both SLURM scripts parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "scripts" / "slurm_evaluate.sh"


@pytest.mark.parametrize("script", ["slurm_train.sh", "slurm_evaluate.sh"])
def test_slurm_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)]).returncode == 0


def _env(**kw: str) -> dict[str, str]:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return dict(os.environ, PATH=path, PYTHONPATH=os.pathsep.join(sys.path), **kw)


def test_slurm_evaluate_dry_run_picks_the_array_line(tmp_path):
    exps = tmp_path / "exps.txt"
    exps.write_text("# experiments\n/runs/a\n\n/runs/b\n")
    r = subprocess.run(["bash", str(EVAL), str(exps), "/evalsets", "--tasks", "imagenet1k"], capture_output=True,
                       text=True, env=_env(DRY_RUN="1", SLURM_ARRAY_TASK_ID="1", SLURM_CPUS_PER_TASK="6"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["srun", "python", "-m", "datacomp", "evaluate", "--train-output-dir", "/runs/b",
                                "--data-dir", "/evalsets", "--workers", "6", "--no-progress", "--tasks", "imagenet1k"]
    r = subprocess.run(["bash", str(EVAL), str(exps), "/evalsets"], capture_output=True, text=True,
                       env=_env(DRY_RUN="1", SLURM_ARRAY_TASK_ID="2"))
    assert r.returncode == 2 and "no line 3" in r.stderr


@pytest.mark.slow
def test_slurm_evaluate_runs_a_tiny_checkpoint(tmp_path, world):
    import torch

    from datacomp.models import load_model

    model = "datacomp-tiny-rn"
    exp = tmp_path / "exp"
    (exp / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    m = load_model(model)
    ckpt = exp / "checkpoints" / "epoch_latest.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in m.model.state_dict().items()}}, ckpt)
    (exp / "train_record.json").write_text(json.dumps({"config": {"model": model}, "checkpoint": str(ckpt)}))
    (tmp_path / "exps.txt").write_text(f"{exp}\n")
    r = subprocess.run(["bash", str(EVAL), str(tmp_path / "exps.txt"), str(world.eval_suite), "--suite", "embedded",
                        "--tasks", "embedded/shapes", "--device", "cpu"],
                       capture_output=True, text=True, env=_env(SRUN="", SLURM_CPUS_PER_TASK="0"), timeout=600)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (exp / "eval_results.jsonl").read_text().splitlines()]
    assert [x["key"] for x in lines] == ["embedded/shapes"] and 0 <= lines[0]["metrics"]["acc1"] <= 1
