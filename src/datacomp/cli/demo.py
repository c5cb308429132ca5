"""`datacomp demo`: the whole DataComp experiment on the embedded world, ending in a leaderboard."""

from __future__ import annotations

import argparse

from datacomp.cli import add_json, add_no_progress, add_output, add_parser, print_json
from datacomp.cli._common import add_executor_args, executor_from


def register(sub: argparse._SubParsersAction) -> None:
    from datacomp.artifacts import BASELINE_RUNS as BASELINES  # light: registering imports no numpy/torch

    p = add_parser(
        sub, "demo", "run the whole benchmark on the embedded world: filter, reshard, train, evaluate, report",
        description="Generates (or reuses) the embedded tiny pool and evaluation suite, runs the filtering "
        "baselines, reshards, trains each at the fixed `tiny` scale, evaluates on the embedded suite, prints "
        "the leaderboard and writes report.html. Every stage's output stays under -o/--output; re-running resumes.",
    )
    add_output(p, "--out", default="runs/demo", help="working directory (reused on re-runs)")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per baseline (mean ± spread when > 1)")
    p.add_argument("--filters", nargs="+", default=None, choices=list(BASELINES), metavar="NAME",
                   help=f"baselines to run (from: {', '.join(BASELINES)}; default: all but the variants)")
    add_executor_args(p, workers_help="worker processes (default: up to 2)")
    add_no_progress(p)
    add_json(p, "the leaderboard rows and stage times")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from datacomp.console import console
    from datacomp.demo import run_demo
    from datacomp.report import leaderboard_table

    res = run_demo(args.output, seeds=args.seeds, filters=args.filters, workers=args.workers,
                   executor=executor_from(args), progress=not args.no_progress)
    if args.json:
        print_json({"rows": res.rows, "stage_seconds": res.stage_seconds, "report": res.report})
        return 0
    con = console()
    con.print(leaderboard_table(res.rows, f"datacomp demo leaderboard (tiny scale, {args.seeds} seed(s))",
                                embedded=True))
    times = ", ".join(f"{k} {v:.0f}s" for k, v in res.stage_seconds.items())
    con.print(f"stage times: {times}")
    con.print(f"report: {res.report}")
    return 0
