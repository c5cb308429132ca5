"""`datacomp synth ...`: generate the embedded world (pool, evaluation suite, assets) and its reference models."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from datacomp.cli import add_parser
from datacomp.cli._common import add_executor_args, executor_from


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(sub, "synth", "generate the embedded miniature DataComp world",
                   description="Generate the embedded world: a CommonPool-format pool, a CLIP_benchmark-format "
                               "evaluation suite, the baselines' assets, and the reference models that score "
                               "the pool. See docs/synth.md.")
    ss = p.add_subparsers(dest="synth_command", metavar="SUBCOMMAND", title="sub-commands")

    pool = add_parser(ss, "pool", "write a pool: metadata parquet+npz, img2dataset-layout shards, ground truth")
    _pool_args(pool)
    pool.set_defaults(func=run_pool)

    ev = add_parser(ss, "eval-suite", "write the embedded evaluation suite (CLIP_benchmark webdataset layout)")
    ev.add_argument("--out", type=Path, required=True, help="output directory")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--scale", choices=("full", "test"), default="full", help="task sizes (test: a quarter)")
    add_executor_args(ev, workers_default=1)
    ev.set_defaults(func=run_eval_suite)

    w = add_parser(ss, "world", "write pool + evaluation suite + assets under one directory (reuses what exists)")
    _pool_args(w)
    w.add_argument("--eval-scale", choices=("full", "test"), default="full", help="evaluation task sizes")
    w.set_defaults(func=run_world)

    tr = add_parser(ss, "train-reference",
                    "retrain the reference models (b32/l14 stand-ins) with datacomp.train; writes fp16 safetensors")
    tr.add_argument("--work-dir", type=Path, required=True, help="where the clean set and training runs go")
    tr.add_argument("--weights-dir", type=Path, default=None,
                    help="where to write <which>.safetensors (default: the package's weights dir)")
    tr.add_argument("--which", nargs="+", choices=("b32", "l14"), default=["b32", "l14"])
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    tr.set_defaults(func=run_train_reference)

    if importlib.util.find_spec("datacomp.synth.serve") is not None:
        from datacomp.synth.serve import register_serve

        register_serve(ss)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _pool_args(p: argparse.ArgumentParser) -> None:
    from datacomp.synth.pool import DEFAULT_BASE_URL

    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--size", default="tiny", help="tiny (60,000), test (4,000) or a number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, help="url column = BASE_URL/<uid>.jpg")
    add_executor_args(p)


def _print(summary: dict) -> None:
    print(json.dumps(summary, indent=2, default=str))


def run_pool(args: argparse.Namespace) -> int:
    from datacomp.synth.pool import make_pool

    s = make_pool(args.out, size=args.size, seed=args.seed, base_url=args.base_url, workers=args.workers,
                  executor=executor_from(args))
    _print({k: v for k, v in s.items() if k != "config"})
    return 0


def run_eval_suite(args: argparse.Namespace) -> int:
    from datacomp.synth.evalsuite import make_eval_suite

    _print(make_eval_suite(args.out, seed=args.seed, scale=args.scale, workers=args.workers,
                            executor=executor_from(args)))
    return 0


def run_world(args: argparse.Namespace) -> int:
    from datacomp.synth.world import make_world

    w = make_world(args.out, size=args.size, seed=args.seed, base_url=args.base_url, workers=args.workers,
                   eval_scale=args.eval_scale, executor=executor_from(args))
    _print({"root": w.root, "metadata": w.metadata, "shards": w.shards, "eval_suite": w.eval_suite,
            "assets": w.assets})
    return 0


def run_train_reference(args: argparse.Namespace) -> int:
    from datacomp.synth.embed import WEIGHTS_DIR
    from datacomp.synth.reference import train_reference

    r = train_reference(args.work_dir, which=tuple(args.which), seed=args.seed,
                        weights_dir=args.weights_dir or WEIGHTS_DIR, threads=args.threads)
    _print({w: {k: v for k, v in m.items() if k != "config"} for w, m in r["models"].items()})
    return 0
