"""Training throughput at the ``tiny`` scale: ``datacomp.train`` vs a bare open_clip loop, same data, same run.

    .venv/bin/python benchmarks/train.py [--data DIR] [--steps 60] [--threads 2] [--repeats 3]

Both sides build the tiny model with ``open_clip.create_model_and_transforms``, AdamW with open_clip's
parameter groups, ``ClipLoss`` and the cosine schedule, and read the same shards (jpg decode +
``preprocess_train`` + tokenizer, in-process). The bare loop reads the shards in order; ``train``
adds what the recipe needs (resampling with replacement, the shuffle buffer, per-sample seeding, the
epoch-end checkpoint), and its figure includes all of that. Each measurement runs in a fresh
subprocess (so neither inherits the other's heap, threads or allocator state); each repeat runs both
back to back in alternating order; medians are reported. Without ``--data`` the embedded test world's pool is built
in a temporary directory. ``--full`` also times one whole tiny-scale run (51,200 samples).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def bare_loop(data: Path, steps: int, batch: int, threads: int) -> float:
    """Samples/s of the plainest open_clip training loop on the same shards."""
    import open_clip
    import torch
    from open_clip_train.scheduler import cosine_lr
    from PIL import Image

    from datacomp.models import register_model_configs
    from datacomp.pool.shards import iter_tar_samples, list_shards
    from datacomp.scales import get_scale

    scale = get_scale("tiny")
    torch.set_num_threads(threads)
    register_model_configs()
    torch.manual_seed(0)
    model, preprocess, _ = open_clip.create_model_and_transforms(scale.model, output_dict=True)
    tok = open_clip.get_tokenizer(scale.model)
    named = list(model.named_parameters())
    excl = [p for n, p in named if p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n]
    rest = [p for n, p in named if not (p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n)]
    opt = torch.optim.AdamW([{"params": excl, "weight_decay": 0.0}, {"params": rest, "weight_decay": 0.2}],
                            lr=scale.learning_rate, betas=(0.9, 0.98), eps=1e-6)
    sched = cosine_lr(opt, scale.learning_rate, min(scale.warmup, steps // 2), steps)
    loss_fn = open_clip.loss.ClipLoss()
    samples = itertools.chain.from_iterable(iter_tar_samples(s) for s in itertools.cycle(list_shards(data)))
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        sched(step)
        imgs, texts = [], []
        while len(imgs) < batch:
            _, m = next(samples)
            if "jpg" not in m or "txt" not in m:
                continue
            with Image.open(io.BytesIO(m["jpg"])) as im:
                imgs.append(preprocess(im.convert("RGB")))
            texts.append(m["txt"].decode())
        out = model(torch.stack(imgs), tok(texts))
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
    return steps * batch / (time.perf_counter() - t0)


def ours(data: Path, out: Path, steps: int, threads: int, tag: str) -> float:
    from datacomp.train import TrainConfig, train

    cfg = TrainConfig.from_scale("tiny")
    cfg = replace(cfg, train_num_samples=steps * cfg.batch_size, num_checkpoints=1, warmup=min(cfg.warmup, steps // 2))
    return train(str(data), out, tag, cfg, progress=False, threads=threads).samples_per_second


def _child(kind: str, data: Path, out: Path, steps: int, threads: int) -> float:
    """One measurement in a fresh interpreter; returns its samples/s."""
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(data), "--out", str(out), "--steps", str(steps),
           "--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"{kind} run failed:\n{res.stderr[-3000:]}")
    return float(json.loads(res.stdout.strip().splitlines()[-1])["samples_per_second"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="shard dir (default: build the test world's pool)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full", action="store_true", help="also time one whole tiny-scale run (400 steps)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", choices=["ours", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        rate = (ours(args.data, args.out, args.steps, args.threads, "run") if args.child == "ours"
                else bare_loop(args.data, args.steps, 128, args.threads))
        print(json.dumps({"samples_per_second": rate}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = args.data
        if data is None:
            from datacomp.synth import make_test_world

            t = time.perf_counter()
            data = make_test_world(tmp_path / "world").shards
            print(f"built the test world in {time.perf_counter() - t:.1f}s")
        batch = 128
        res: dict[str, list[float]] = {"datacomp.train": [], "bare open_clip loop": []}
        for r in range(args.repeats):
            order = list(res) if r % 2 == 0 else list(res)[::-1]
            for name in order:
                kind = "ours" if name == "datacomp.train" else "bare"
                res[name].append(_child(kind, data, tmp_path / "runs" / f"r{r}", args.steps, args.threads))
                print(f"repeat {r}: {name:<20} {res[name][-1]:8.1f} samples/s", flush=True)
        med = {k: statistics.median(v) for k, v in res.items()}
        ratio = med["datacomp.train"] / med["bare open_clip loop"]
        print(f"median samples/s ({args.steps} steps x batch {batch}, {args.threads} thread(s)):")
        for k, v in med.items():
            print(f"  {k:<20} {v:8.1f}")
        print(f"  ratio ours/bare      {ratio:8.3f}")
        figures = {"steps": args.steps, "threads": args.threads, "repeats": res, "median": med, "ratio": ratio}
        if args.full:
            from datacomp.train import TrainConfig, train

            t = time.perf_counter()
            full = train(str(data), tmp_path / "runs", "full", TrainConfig.from_scale("tiny"), progress=False,
                         threads=args.threads)
            wall = time.perf_counter() - t
            print(f"whole tiny run: {full.steps} steps, {full.samples_seen:,} samples, {wall:.1f}s wall "
                  f"({full.samples_per_second:.1f} samples/s in the loop)")
            figures["full_run"] = {"wall_s": wall, "samples_per_second": full.samples_per_second}
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
