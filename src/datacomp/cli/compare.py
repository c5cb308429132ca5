"""`datacomp compare`: methods side by side over seeds, with each one's difference to a baseline and its interval."""

from __future__ import annotations

import argparse

from datacomp.cli import add_parser


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub, "compare", "compare methods over training seeds: mean ± std and the difference to a baseline with a "
        "95%% interval",
        description="Groups the evaluated runs under RUN_DIRS by method (experiment folder name) and seed (from "
        "each run's train_record.json), and prints per aggregate of the suite the mean ± sample std over seeds and "
        "the difference to the baseline with a 95% interval: a paired t-interval on per-seed differences when both "
        "methods have the same seeds, else Welch's. Differences whose interval excludes 0 are marked * (they exceed "
        "the seed noise). See docs/compare.md.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="a demo output (--out of `datacomp demo`), experiment directories, run directories or "
                   "eval_results.jsonl files")
    p.add_argument("--baseline", metavar="NAME", default=None,
                   help="method to measure the others against (default: clip_score_l14_30 when present, else the "
                   "first method)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON instead of a table")
    p.add_argument("--markdown", action="store_true",
                   help="print the comparison as a Markdown table (for docs and notes) instead of a table")
    p.add_argument("-o", "--output", metavar="HTML", default=None,
                   help="also write a self-contained HTML report with the comparison table and plot")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from datacomp.console import console
    from datacomp.report.compare import (
        compare_experiments,
        comparison_json,
        comparison_markdown,
        comparison_table,
        load_for_compare,
    )

    exps = load_for_compare(args.run_dirs)
    cmp = compare_experiments(exps, args.baseline, args.level)
    if args.output:
        from datacomp.report import build_report

        build_report(exps, args.output, title=f"datacomp compare: {len(exps)} methods vs {cmp.baseline}",
                     baseline=cmp.baseline, level=args.level)
    if args.json:
        print(json.dumps(comparison_json(cmp), indent=2))
    elif args.markdown:
        print(comparison_markdown(cmp), end="")
    else:
        con = console()
        con.print(comparison_table(cmp, f"methods vs {cmp.baseline} over seeds"))
        if args.output:
            con.print(f"report: {args.output}")
    return 0
