"""`datacomp synth ...`: generate the embedded world (pool, evaluation suite, assets) and its reference models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from datacomp.cli import add_json, add_no_progress, add_output, add_parser
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
    add_output(ev, "--out", type=Path, required=True, help="output directory")
    ev.add_argument("--seed", type=int, default=0, help="seed of the generated suite")
    ev.add_argument("--scale", choices=("full", "test"), default="full", help="task sizes (test: a quarter)")
    add_executor_args(ev, workers_default=1)
    add_no_progress(ev)
    add_json(ev, "the summary (synth always prints JSON)")
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
    tr.add_argument("--which", nargs="+", choices=("b32", "l14", "dfn"), default=["b32", "l14", "dfn"],
                    help="reference models to train")
    tr.add_argument("--seed", type=int, default=0, help="training seed")
    tr.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    add_json(tr, "the summary (synth always prints JSON)")
    tr.set_defaults(func=run_train_reference)

    register_serve(ss)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


# = datacomp.synth.pool.DEFAULT_BASE_URL, spelled here so that registering imports no numpy (a test checks)
DEFAULT_BASE_URL = "http://127.0.0.1:8765/images"


def _pool_args(p: argparse.ArgumentParser) -> None:
    add_output(p, "--out", type=Path, required=True, help="output directory")
    p.add_argument("--size", default="tiny", help="tiny (60,000), test (4,000) or a number of samples")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated pool")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, help="url column = BASE_URL/<uid>.jpg")
    add_executor_args(p)
    add_no_progress(p)
    add_json(p, "the summary (synth always prints JSON)")


def _print(summary: dict) -> None:
    print(json.dumps(summary, indent=2, default=str))


def run_pool(args: argparse.Namespace) -> int:
    from datacomp.synth.pool import make_pool

    s = make_pool(args.output, size=args.size, seed=args.seed, base_url=args.base_url, workers=args.workers,
                  executor=executor_from(args), progress=not args.no_progress)
    _print({k: v for k, v in s.items() if k != "config"})
    return 0


def run_eval_suite(args: argparse.Namespace) -> int:
    from datacomp.synth.evalsuite import make_eval_suite

    _print(make_eval_suite(args.output, seed=args.seed, scale=args.scale, workers=args.workers,
                            executor=executor_from(args), progress=not args.no_progress))
    return 0


def run_world(args: argparse.Namespace) -> int:
    from datacomp.synth.world import make_world

    w = make_world(args.output, size=args.size, seed=args.seed, base_url=args.base_url, workers=args.workers,
                   eval_scale=args.eval_scale, executor=executor_from(args),
                   progress=not args.no_progress)
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


# ---------------------------------------------------------------- CLI: datacomp synth serve


def register_serve(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``datacomp synth`` sub-commands."""
    p = add_parser(sub, "serve", "serve a pool's images over HTTP on 127.0.0.1 (the embedded world's web)",
                   description="Serve /images/<uid>.jpg from a pool's shards, optionally with injected faults "
                               "and the pool's metadata as a Hugging Face Hub dataset repo.")
    p.add_argument("pool_dir", type=Path, help="pool dir (with shards/) or a shard dir")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (keep it local)")
    p.add_argument("--port", type=int, default=8765, help="port to bind")
    p.add_argument("--faults", type=Path, help="JSON file mapping uid -> fault kind")
    p.add_argument("--fault-share", type=float, default=0.0, help="inject random faults into this share of uids")
    p.add_argument("--seed", type=int, default=0, help="seed of --fault-share")
    p.add_argument("--hang-seconds", type=float, default=5.0, help="how long a 'timeout' fault stays silent")
    p.add_argument("--hub-repo", action="append", default=[], metavar="REPO[=DIR]",
                   help="also serve DIR (default POOL_DIR/metadata) as Hub dataset repo REPO, e.g. "
                        "mlfoundations/datacomp_small; then run downloads with HF_ENDPOINT=http://HOST:PORT")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import time

    from datacomp.errors import DataCompError
    from datacomp.synth.serve import PoolServer, random_faults

    faults: dict[str, str] = {}
    if args.faults:
        try:
            faults = json.loads(args.faults.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataCompError(f"{args.faults}: not a JSON object of uid -> fault kind ({e})") from None
    hub = {}
    for spec in args.hub_repo:
        repo, _, d = spec.partition("=")
        hub[repo] = Path(d) if d else args.pool_dir / "metadata"
    server = PoolServer(args.pool_dir, host=args.host, port=args.port, faults=faults, hub_repos=hub,
                        hang_seconds=args.hang_seconds)
    if args.fault_share > 0:
        server.faults.update(random_faults(sorted(server.index), args.fault_share, args.seed))
    print(f"serving {len(server.index):,} images at {server.base_url}/<uid>.jpg "
          f"({len(server.faults):,} with faults)" + (f"; hub at {server.url}" if hub else ""), flush=True)
    server.start()
    try:
        if args.duration is not None:
            time.sleep(args.duration)
        else:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
