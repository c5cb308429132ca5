"""`datacomp report`: one self-contained HTML report for a set of experiments."""

from __future__ import annotations

import argparse

from datacomp.cli import add_json, add_output, add_parser, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub, "report", "write one self-contained HTML report (leaderboard, plots, funnels, galleries)",
        description="An experiment is a directory holding a filter summary (<subset>.summary.json), the "
        "subset .npy and one eval_results.jsonl per trained seed (a bare eval_results.jsonl also works).",
    )
    p.add_argument("experiments", nargs="+", metavar="EXP_DIR", help="experiment directories or eval_results.jsonl")
    add_output(p, "--out", default="report.html", help="HTML file to write")
    p.add_argument("--pool", default=None,
                   help="pool folder (holding metadata/ and shards/): adds CLIP-score histograms and galleries")
    p.add_argument("--gallery", type=int, default=12, help="kept and dropped samples shown per experiment")
    p.add_argument("--seed", type=int, default=0, help="seed of the gallery's random draw")
    p.add_argument("--title", default="DataComp experiments", help="the report's title")
    add_json(p, "the written file's path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from datacomp.report import build_report, load_experiments

    exps = load_experiments(args.experiments)
    out = build_report(exps, args.output, pool=args.pool, gallery_size=args.gallery, seed=args.seed,
                       title=args.title)
    if args.json:
        print_json({"output": str(out), "experiments": len(exps)})
        return 0
    print(f"wrote {out}")
    return 0
