"""`datacomp leaderboard`: your results in DataComp's layout, next to the paper's baselines for the scale."""

from __future__ import annotations

import argparse

from datacomp.cli import add_json, add_parser, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(sub, "leaderboard", "show results next to the paper's Table 3 baselines for a scale")
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="experiment directories or eval_results.jsonl files")
    p.add_argument("--scale", required=True,
                   help="scale the results were trained at (small, medium, large, xlarge; tiny/debug: no paper rows)")
    add_json(p, "your rows and the comparison with the paper")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from datacomp.console import console
    from datacomp.report import leaderboard_rows, leaderboard_table, load_experiments
    from datacomp.report.leaderboard import compare_to_paper, paper_table
    from datacomp.scales import get_scale

    scale = get_scale(args.scale)
    rows = leaderboard_rows(load_experiments(args.results))
    has_paper = scale.name in paper_table()["scales"]
    paper = paper_table()["scales"][scale.name] if has_paper else None
    if args.json:
        from datacomp.report.leaderboard import rows_to_json

        print_json({"scale": scale.name, "rows": rows_to_json(rows),
                    "vs_paper": compare_to_paper(rows, scale.name) if has_paper else None})
        return 0
    con = console()
    con.print(leaderboard_table(rows, f"DataComp leaderboard, {scale.name} scale", embedded=scale.embedded,
                                paper=paper))
    if not has_paper:
        con.print(f"[dim]the paper reports no baselines at the {scale.name} scale[/dim]")
        return 0
    for c in compare_to_paper(rows, scale.name):
        if c["delta_vs_best"] is None:
            continue
        con.print(f"{c['name']}: beats {len(c['beats'])} of {len(paper)} paper baselines on the average; "
                  f"{c['delta_vs_best']:+.3f} vs the best ({c['best_baseline']})")
    con.print(f"[dim]paper values: {paper_table()['source']}[/dim]")
    return 0
