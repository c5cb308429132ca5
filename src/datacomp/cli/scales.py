"""`datacomp scales`: print the fixed scale table."""

from __future__ import annotations

import argparse

from datacomp.cli import add_json, add_parser, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(sub, "scales", "print the fixed per-scale training configuration")
    add_json(p, "the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from datacomp.console import console
    from datacomp.scales import available_scales, get_scale

    if args.json:
        import dataclasses

        print_json([dataclasses.asdict(get_scale(n)) for n in available_scales()])
        return 0

    t = Table(title="DataComp scales (fixed: the participant changes the data, not these)")
    for col in ("scale", "model", "global batch", "lr", "warmup", "beta2", "samples seen", "steps", "pool"):
        t.add_column(col, justify="right" if col not in ("scale", "model") else "left")
    for name in available_scales():
        s = get_scale(name)
        t.add_row(
            s.name + (" (embedded)" if s.embedded else ""), s.model, f"{s.batch_size:,}",
            f"{s.learning_rate:g}", f"{s.warmup:,}", "default" if s.beta2 is None else f"{s.beta2:g}",
            f"{s.train_num_samples:,}", f"{s.steps:,}", f"{s.pool_size:,}" if s.pool_size else "-",
        )
    console().print(t)
    return 0
