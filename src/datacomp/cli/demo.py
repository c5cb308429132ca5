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
    p.add_argument("--filters", nargs="+", default=None, metavar="SPEC",
                   help=f"filters to run (default: the six baselines): a baseline ({', '.join(BASELINES)}), any "
                   "registered filter with optional parameters (NAME:key=value,...), or the intersection of two "
                   "(A+B); see docs/demo.md")
    p.add_argument("--baseline", metavar="SPEC", default=None,
                   help="filter the comparison table measures the others against (default: clip_score_l14_30 "
                   "when run, else the first filter)")
    add_executor_args(p, workers_help="worker processes (default: up to 2)")
    add_no_progress(p)
    add_json(p, "the leaderboard rows, the comparison over seeds and stage times")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from datacomp.console import console
    from datacomp.demo import run_demo
    from datacomp.report import leaderboard_table

    res = run_demo(args.output, seeds=args.seeds, filters=args.filters, workers=args.workers,
                   executor=executor_from(args), baseline=args.baseline, progress=not args.no_progress)
    if args.json:
        from datacomp.report.compare import comparison_json

        print_json({"rows": res.rows, "stage_seconds": res.stage_seconds, "report": res.report,
                    "comparison": comparison_json(res.comparison) if res.comparison is not None else None})
        return 0
    con = console()
    con.print(leaderboard_table(res.rows, f"datacomp demo leaderboard (tiny scale, {args.seeds} seed(s))",
                                embedded=True))
    if res.comparison is not None:
        from datacomp.report.compare import comparison_table

        con.print(comparison_table(res.comparison, f"filters vs {res.comparison.baseline} over {args.seeds} seed(s)"))
    times = ", ".join(f"{k} {v:.0f}s" for k, v in res.stage_seconds.items())
    con.print(f"stage times: {times}")
    con.print(f"report: {res.report}")
    return 0
