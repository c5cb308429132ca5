"""`datacomp evaluate`: one model on the embedded suite or DataComp's 38 tasks -> eval_results.jsonl + aggregates."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from datacomp.cli import add_parser


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub, "evaluate", "evaluate a trained model; write eval_results.jsonl and print the aggregate scores",
        description=(
            "Evaluate a trained model on the embedded suite or DataComp's 38-task suite.\n"
            "Results go to <output-dir>/eval_results.jsonl (one line per task, as the original writes it);\n"
            "finished tasks are skipped on re-run unless --force. Prints ImageNet, ImageNet dist. shifts,\n"
            "VTAB, Retrieval and Average when the whole suite is done."
        ),
    )
    src = p.add_argument_group("model (a training folder, or --model with --checkpoint)")
    src.add_argument("--train-output-dir", help="folder with train_record.json (ours) or info.pkl (original)")
    src.add_argument("--model", help="open_clip architecture (ViT-B-32, datacomp-tiny-rn) or a spec with its weights: "
                     "ViT-B-32:openai, ViT-B-32:/path.pt, hf-hub:ORG/NAME")
    src.add_argument("--checkpoint", help="open_clip checkpoint (.pt or .safetensors); omitted = random init")
    p.add_argument("--output-dir", help="where eval_results.jsonl goes (default: --train-output-dir)")
    p.add_argument("--suite", choices=["auto", "embedded", "datacomp"], default="auto",
                   help="auto = embedded for the tiny scale / packaged models, datacomp otherwise")
    p.add_argument("--tasks", nargs="+", metavar="KEY", help="task keys to run (comma or space separated)")
    p.add_argument("--data-dir", help="evaluation sets in the CLIP_benchmark layout (embedded: the world's eval/ "
                                      "folder; datacomp: from `datacomp download-evalsets`)")
    p.add_argument("--download", action="store_true", help="fetch missing DataComp sets from the Hugging Face Hub")
    p.add_argument("--force", action="store_true", help="re-run tasks that already have a result line")
    p.add_argument("--batch-size", type=int, help="images per batch (default 256; the original used 64)")
    p.add_argument("--device", help="cuda / cpu (default: cuda when available)")
    p.add_argument("--workers", type=int, help="data loader processes (default: 8 on GPU, 0 on CPU)")
    p.add_argument("--cache-dir", help="keep zero-shot text classifiers here across runs")
    p.add_argument("--tasks-file", help="embedded suite task list to use instead of the packaged eval_tasks.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def split_keys(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [k for v in values for k in v.split(",") if k.strip()]


def run(args: argparse.Namespace) -> int:
    from datacomp.errors import DataCompError
    from datacomp.evaluate import evaluate
    from datacomp.evaluate.model import resolve_model
    from datacomp.evaluate.registry import suite_tasks_file
    from datacomp.evaluate.runner import resolve_suite

    out = args.output_dir or args.train_output_dir
    if not out:
        raise DataCompError("pass --output-dir (or --train-output-dir, whose folder then receives the results)")
    spec = resolve_model(args.model, args.checkpoint, args.train_output_dir)
    suite = resolve_suite(args.suite, spec)
    logging.getLogger(__name__).info("evaluating %s (%s) on the %s suite", spec.name,
                                     spec.checkpoint or "random init", suite)
    results = evaluate(
        out, model=spec.name, checkpoint=spec.checkpoint, train_output_dir=args.train_output_dir, suite=suite,
        tasks=split_keys(args.tasks), data_dir=args.data_dir, force=args.force, download=args.download,
        batch_size=args.batch_size, device=args.device, workers=args.workers, cache_dir=args.cache_dir,
        tasks_file=args.tasks_file, progress=not args.no_progress,
    )
    print_results(results, suite, suite_tasks_file(suite, args.data_dir, args.tasks_file))
    return 0


def print_results(results: list[dict], suite: str, tasks_file: Any = None) -> None:
    """Per-task main metrics, then the five aggregates (or which tasks are still missing)."""
    from rich.table import Table

    from datacomp.console import console
    from datacomp.errors import DataCompError
    from datacomp.evaluate import aggregate, list_tasks

    names = {t.key: t for t in list_tasks(suite, tasks_file)}
    t = Table(title=f"{suite} suite: main metric per task")
    for col in ("task", "dataset", "main metric", "value"):
        t.add_column(col, justify="right" if col == "value" else "left")
    for r in results:
        task = names.get(r["key"])
        v = r["metrics"].get("main_metric")
        t.add_row(r["key"], r["dataset"], task.main_metric if task and task.main_metric else "-",
                  f"{v:.4f}" if isinstance(v, float) else "-")
    con = console()
    con.print(t)
    from datacomp.evaluate.fairness import RACES, fairness_tables

    for r in results:
        if r["key"] in RACES:
            for table in fairness_tables(r):
                ft = Table(title=table.title)
                for col in table.columns:
                    ft.add_column(col, justify="left" if col in ("objective", "race") else "right")
                for row in table.rows:
                    ft.add_row(row[0], *(f"{v:.3f}" if isinstance(v, float) else "-" for v in row[1:]))
                con.print(ft)
    try:
        agg = aggregate(results, suite, tasks_file)
    except DataCompError as e:
        con.print(f"(no aggregate yet: {e})")
        return
    a = Table(title="aggregate (mean of main metrics, as aggregate_scores.py)")
    for k in agg:
        a.add_column(k, justify="right")
    a.add_row(*(f"{v:.3f}" if v is not None else "-" for v in agg.values()))
    con.print(a)
