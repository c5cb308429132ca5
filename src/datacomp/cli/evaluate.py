"""`datacomp evaluate`: one model on a suite of tasks -> eval_results.jsonl + the suite's aggregate scores."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from datacomp.cli import add_json, add_no_progress, add_output, add_parser, flag, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub, "evaluate", "evaluate a trained model; write eval_results.jsonl and print the aggregate scores",
        description=(
            "Evaluate a trained model on a suite: DataComp's, the embedded world's, or your own suite file.\n"
            "Results go to <output-dir>/eval_results.jsonl (one line per task, as the original writes it);\n"
            "finished tasks are skipped on re-run unless --force; a damaged results file is repaired (bad lines\n"
            "reported and their tasks evaluated again); one run at a time may write an output folder.\n"
            "Prints the suite's aggregates (DataComp: ImageNet, ImageNet dist. shifts, VTAB, Retrieval, Average)."
        ),
    )
    src = p.add_argument_group("model (a training folder, or --model with --checkpoint)")
    flag(src, "--train-output-dir", hidden=("--train_output_dir",),
         help="folder with train_record.json (ours) or info.pkl (original)")
    src.add_argument("--model", help="open_clip architecture (ViT-B-32, datacomp-tiny-rn) or a spec with its weights: "
                     "ViT-B-32:openai, ViT-B-32:/path.pt, hf-hub:ORG/NAME")
    src.add_argument("--checkpoint", help="open_clip checkpoint (.pt or .safetensors); omitted = random init")
    add_output(p, "--output-dir", "--output_dir", help="where eval_results.jsonl goes (default: --train-output-dir)")
    p.add_argument("--suite", default="auto", metavar="NAME|FILE",
                   help="a packaged suite (see `datacomp tasks --list-suites`), a suite file (.json/.yaml), or auto "
                        "= embedded for the tiny scale / packaged models, datacomp otherwise")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="a Python file registering evaluation families (repeatable)")
    p.add_argument("--tasks", nargs="+", metavar="KEY", help="task keys to run (comma or space separated)")
    flag(p, "--data-dir", hidden=("--data_dir",),
         help="evaluation sets in the CLIP_benchmark layout (embedded: the world's eval/ "
                                      "folder; datacomp: from `datacomp download-evalsets`)")
    p.add_argument("--download", action="store_true", help="fetch missing sets from the Hugging Face Hub")
    p.add_argument("--force", action="store_true", help="re-run tasks that already have a result line")
    flag(p, "--batch-size", hidden=("--batch_size",), type=int,
         help="images per batch (default 256; the original used 64)")
    p.add_argument("--device", help="cuda / cpu (default: cuda when available)")
    p.add_argument("-j", "--workers", type=int, help="data loader processes (default: 8 on GPU, 0 on CPU)")
    p.add_argument("--cache-dir", help="keep zero-shot text classifiers here across runs")
    p.add_argument("--tasks-file", help="a suite file to use for the named --suite (e.g. an embedded world's "
                                        "eval_tasks.json); same as --suite FILE")
    add_no_progress(p)
    add_json(p, "the per-task results and the aggregates")
    p.set_defaults(func=run)


def split_keys(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [k for v in values for k in v.split(",") if k.strip()]


def run(args: argparse.Namespace) -> int:
    import contextlib

    from datacomp.errors import DataCompError
    from datacomp.storage import staged_dir

    if not (args.output or args.train_output_dir):
        raise DataCompError("pass -o/--output (or --train-output-dir, whose folder then receives the results)")
    # A run folder in object storage (s3://...) is evaluated in a staged local copy, and the results
    # are uploaded back when the run ends (see docs/storage.md).
    with contextlib.ExitStack() as stack:
        tod = str(stack.enter_context(staged_dir(args.train_output_dir))) if args.train_output_dir else None
        if args.output and args.output != args.train_output_dir:
            out = str(stack.enter_context(staged_dir(args.output)))
        else:
            out = tod
        results, suite = _evaluate(args, out, tod)
    if args.json:
        from datacomp.evaluate import aggregate_partial

        agg = aggregate_partial(results, suite)
        print_json({"suite": suite.name, "output": args.output or args.train_output_dir, "results": results,
                    "aggregates": agg.values, "missing": agg.missing})
        return 0
    print_results(results, suite)
    return 0


def _evaluate(args: argparse.Namespace, out: str | None, train_output_dir: str | None) -> tuple[list, Any]:
    from datacomp.evaluate import evaluate, get_suite, load_plugins
    from datacomp.evaluate.model import resolve_model
    from datacomp.evaluate.runner import resolve_suite

    load_plugins(args.plugin)
    spec = resolve_model(args.model, args.checkpoint, train_output_dir)
    suite = get_suite(resolve_suite(args.suite, spec), args.data_dir, args.tasks_file)
    logging.getLogger(__name__).info("evaluating %s (%s) on the %s suite", spec.name,
                                     spec.checkpoint or "random init", suite.name)
    results = evaluate(
        out, model=spec.name, checkpoint=spec.checkpoint, train_output_dir=train_output_dir, suite=suite,
        tasks=split_keys(args.tasks), data_dir=args.data_dir, force=args.force, download=args.download,
        batch_size=args.batch_size, device=args.device, workers=args.workers, cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    return results, suite


def print_results(results: list[dict], suite: Any, tasks_file: Any = None) -> None:
    """Per-task main metrics, the fairness tables, then the suite's aggregates (incomplete groups as '-')."""
    from rich.table import Table

    from datacomp.console import console
    from datacomp.evaluate import aggregate_partial, get_suite
    from datacomp.evaluate.fairness import RACES, fairness_tables

    s = get_suite(suite, tasks_file=tasks_file)
    names = {t.key: t for t in s.tasks}
    t = Table(title=f"{s.name} suite: main metric per task")
    for col in ("task", "dataset", "main metric", "value"):
        t.add_column(col, justify="right" if col == "value" else "left")
    for r in results:
        task = names.get(r["key"])
        v = r["metrics"].get("main_metric")
        t.add_row(r["key"], r["dataset"], task.main_metric if task and task.main_metric else "-",
                  f"{v:.4f}" if isinstance(v, float) else "-")
    con = console()
    con.print(t)
    for r in results:
        if r["key"] in RACES:
            for table in fairness_tables(r):
                ft = Table(title=table.title)
                for col in table.columns:
                    ft.add_column(col, justify="left" if col in ("objective", "race") else "right")
                for row in table.rows:
                    ft.add_row(row[0], *(f"{v:.3f}" if isinstance(v, float) else "-" for v in row[1:]))
                con.print(ft)
    agg = aggregate_partial(results, s)
    a = Table(title="aggregate (mean of main metrics, as aggregate_scores.py)")
    for k in agg.values:
        a.add_column(k, justify="right")
    a.add_row(*(f"{v:.3f}" if v is not None else "-" for v in agg.values.values()))
    con.print(a)
    if agg.missing:
        con.print(f"(incomplete: missing {len(agg.missing)} of {len(s.scored)} scored tasks "
                  f"({', '.join(agg.missing)}); '-' marks groups that need them)")
