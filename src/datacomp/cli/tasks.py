"""`datacomp tasks`: a suite's tasks, the packaged suites, or the registered evaluation families, as tables."""

from __future__ import annotations

import argparse

from datacomp.cli import add_json, add_parser, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(sub, "tasks", "list the evaluation tasks of a suite (key, metric, size, aggregate group)")
    p.add_argument("--suite", default="datacomp", metavar="NAME|FILE", help="a packaged suite or a suite file")
    p.add_argument("--tasks-file", help="a suite file to use for the named --suite; same as --suite FILE")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="a Python file registering evaluation families (repeatable)")
    p.add_argument("--list-suites", action="store_true", help="list the packaged suites instead")
    p.add_argument("--families", action="store_true", help="list the registered evaluation families instead")
    add_json(p, "the list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from datacomp.console import console
    from datacomp.evaluate import get_suite, list_families, list_suites, load_plugins

    load_plugins(args.plugin)
    if args.families:
        if args.json:
            print_json([{"family": f.name, "aggregate": f.aggregate, "needs_classnames": f.needs_classnames,
                         "description": f.description} for f in list_families()])
            return 0
        t = Table(title="evaluation families")
        for col in ("family", "default aggregate", "class names", "description"):
            t.add_column(col)
        for f in list_families():
            t.add_row(f.name, f.aggregate or "-", "yes" if f.needs_classnames else "no", f.description)
        console().print(t)
        return 0
    if args.list_suites:
        if args.json:
            print_json([{"suite": n, "tasks": len(get_suite(n).tasks), "scored": len(get_suite(n).scored),
                         "aggregates": get_suite(n).aggregates, "description": get_suite(n).description}
                        for n in list_suites()])
            return 0
        t = Table(title="packaged suites")
        for col in ("suite", "tasks", "scored", "aggregates", "description"):
            t.add_column(col)
        for name in list_suites():
            s = get_suite(name)
            t.add_row(name, str(len(s.tasks)), str(len(s.scored)), ", ".join(s.aggregates.values()), s.description)
        console().print(t)
        return 0
    s = get_suite(args.suite, tasks_file=args.tasks_file)
    if args.json:
        import dataclasses

        print_json({"suite": s.name, "tasks": [dataclasses.asdict(t) if dataclasses.is_dataclass(t) else vars(t)
                                               for t in s.tasks]})
        return 0
    t = Table(title=f"{s.name} suite: {len(s.tasks)} tasks, {len(s.scored)} scored")
    for col in ("key", "name", "family", "main metric", "size", "classes", "aggregate", "tags", "source"):
        t.add_column(col, justify="right" if col in ("size", "classes") else "left")
    for task in s.tasks:
        t.add_row(task.key, task.name, task.family, task.main_metric or "-", f"{task.size:,}",
                  str(task.num_classes or "-"), task.aggregate or "-", ",".join(task.tags) or "-", task.source or "-")
    console().print(t)
    return 0
