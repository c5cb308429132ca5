"""`datacomp tasks`: the evaluation task registry as a table."""

from __future__ import annotations

import argparse

from datacomp.cli import add_parser


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(sub, "tasks", "list the evaluation tasks of a suite (key, metric, size, aggregate group)")
    p.add_argument("--suite", choices=["embedded", "datacomp"], default="datacomp")
    p.add_argument("--tasks-file", help="embedded suite task list to use instead of the packaged one")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from datacomp.console import console
    from datacomp.evaluate import list_tasks

    tasks = list_tasks(args.suite, args.tasks_file)
    scored = sum(t.main_metric is not None for t in tasks)
    t = Table(title=f"{args.suite} suite: {len(tasks)} tasks, {scored} scored")
    for col in ("key", "name", "family", "main metric", "size", "classes", "aggregate", "tags", "source"):
        t.add_column(col, justify="right" if col in ("size", "classes") else "left")
    for task in tasks:
        t.add_row(task.key, task.name, task.family, task.main_metric or "-", f"{task.size:,}",
                  str(task.num_classes or "-"), task.aggregate or "-", ",".join(task.tags) or "-", task.source or "-")
    console().print(t)
    return 0
