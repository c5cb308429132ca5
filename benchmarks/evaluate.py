"""Images/s of `datacomp evaluate` on the embedded suite (tiny model, 2 CPU threads), against the original's flow.

    python benchmarks/evaluate.py [--scale test|full] [--threads 2]

Ours: the model is loaded once, each task's tars are read in one pass (labels and group metadata
with the images), text classifiers are cached, batches of 256. Baseline, measured in the same run on
the same data: the original's flow — batches of 64, the model re-created for every task, the
classifier rebuilt every task, and a second pass over the tars for tasks with group metadata.
Runs alternate and the best of ``--repeat`` is kept (the machine may be shared).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from datacomp.evaluate import list_tasks, locate
from datacomp.evaluate.data import iter_samples
from datacomp.evaluate.runner import _CLASSIFIER_CACHE, evaluate, evaluate_task
from datacomp.models import load_model
from datacomp.pool.shards import iter_tar_samples
from datacomp.synth.evalsuite import make_eval_suite

MODEL = "datacomp-tiny-rn"


def count_images(suite: Path, tasks_file: Path) -> int:
    n = 0
    for t in list_tasks("embedded", tasks_file):
        for shard in locate(t, suite).shards:
            n += sum(1 for _ in iter_tar_samples(shard))
    return n


def original_flow(suite: Path, tasks_file: Path, batch_size: int) -> None:
    """Per task: create the model, rebuild the classifier, run; metadata tasks read their tars twice."""
    for t in list_tasks("embedded", tasks_file):
        data = locate(t, suite)
        _CLASSIFIER_CACHE.clear()
        torch.manual_seed(0)
        loaded = load_model(MODEL)
        evaluate_task(loaded, data, "baseline", batch_size, progress=False)
        if t.metadata_fields:
            sum(1 for _ in iter_samples(data, lambda im: im))  # the original's second (cls, npy) pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", choices=["test", "full"], default="test", help="embedded suite size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256, help="ours")
    ap.add_argument("--baseline-batch-size", type=int, default=64, help="the original's default")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "eval"
        make_eval_suite(suite, scale=args.scale, progress=False)
        tasks_file = suite / "eval_tasks.json"
        n = count_images(suite, tasks_file)
        load_model(MODEL)  # warm imports and open_clip's config registry for both runs
        t_ours = t_base = float("inf")
        for i in range(args.repeat):
            _CLASSIFIER_CACHE.clear()
            t0 = time.perf_counter()
            evaluate(Path(tmp) / f"ours{i}", model=MODEL, suite="embedded", data_dir=suite,
                     batch_size=args.batch_size, device="cpu", progress=False)
            t_ours = min(t_ours, time.perf_counter() - t0)
            t0 = time.perf_counter()
            original_flow(suite, tasks_file, args.baseline_batch_size)
            t_base = min(t_base, time.perf_counter() - t0)
        ntasks = len(list_tasks("embedded", tasks_file))
    print(f"embedded suite ({args.scale}): {ntasks} tasks, {n} images, {args.threads} threads, best of {args.repeat}")
    print(f"  datacomp evaluate (batch {args.batch_size:4d}): {t_ours:7.1f} s  {n / t_ours:7.1f} images/s")
    print(f"  original flow     (batch {args.baseline_batch_size:4d}): {t_base:7.1f} s  {n / t_base:7.1f} images/s")
    print(f"  speed-up                       : {t_base / t_ours:7.2f}x")


if __name__ == "__main__":
    main()
