"""`datacomp download-evalsets`: pre-fetch DataComp's evaluation sets from the Hugging Face Hub."""

from __future__ import annotations

import argparse

from datacomp.cli import add_json, add_output, add_parser, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub, "download-evalsets", "download DataComp's evaluation sets into -o/--output (CLIP_benchmark layout)",
        description=(
            "Download DataComp's evaluation sets (djghosh/wds_*_test and the nlphuji retrieval/WinoGAViL sets)\n"
            "into -o/--output, in the layout `datacomp evaluate --data-dir` reads. Re-running verifies and\n"
            "resumes; every failure is reported by task (none is skipped silently)."
        ),
    )
    add_output(p, "--data-dir", "--data_dir", required=True, help="destination folder")
    p.add_argument("--suite", default="datacomp", metavar="NAME|FILE", help="a packaged suite or a suite file")
    p.add_argument("--tasks", nargs="+", metavar="KEY", help="task keys (default: every task of the suite)")
    add_json(p, "each set's path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from datacomp.cli.evaluate import split_keys
    from datacomp.errors import DataCompError
    from datacomp.evaluate import fetch, get_suite

    tasks = get_suite(args.suite).select(split_keys(args.tasks))
    failed: list[str] = []
    done: dict[str, str] = {}
    for i, task in enumerate(tasks, 1):
        print(f"[{i}/{len(tasks)}] {task.key} <- {task.source}", file=sys.stderr)
        try:
            path = fetch(task, args.output)
        except DataCompError as e:
            print(f"  failed: {e}", file=sys.stderr)
            failed.append(task.key)
            continue
        print(f"  ok: {path}", file=sys.stderr)
        done[task.key] = str(path)
    if failed:
        raise DataCompError(f"{len(failed)} of {len(tasks)} sets failed ({', '.join(failed)}); re-run to resume")
    if args.json:
        print_json(done)
    return 0
