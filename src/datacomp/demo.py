"""The main job: a whole DataComp experiment on the embedded world, driving each step's library function.

world -> filter (one subset per baseline) -> reshard -> train (per seed, fixed tiny recipe) ->
evaluate (embedded suite) -> leaderboard + HTML report. Every stage writes its outputs under
``out`` and a completion marker after them, so a re-run skips what is done. This module only
sequences the steps; the work is done by ``datacomp.synth``, ``filters``, ``reshard``, ``train``
and ``evaluate``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datacomp.artifacts import BASELINE_RUNS
from datacomp.errors import DataCompError
from datacomp.io import write_record

log = logging.getLogger(__name__)

# Demo baseline name -> (filter name, parameters) for ``datacomp.filters.run_filter``.
BASELINES: dict[str, tuple[str, dict[str, Any]]] = BASELINE_RUNS
DEFAULT_FILTERS = ["no_filter", "basic_filter", "text_based", "clip_score_l14_30",
                   "image_based_intersect_clip_score", "laion2b"]
STAGES = ("world", "filter", "reshard", "train", "evaluate", "report")
# The tiny models are too small to gain from intra-op threads: on 2 cores one torch thread per
# process (the trainer beside its loader worker) ran ~10x faster than two threads that wait on
# each other (measured: 3,840 samples seen in 44 s vs 481 s).
TORCH_THREADS = 1


@dataclass
class DemoResult:
    out: Path
    experiments: list[Path]  # one directory per baseline
    report: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)  # leaderboard rows (see report.leaderboard)
    comparison: Any = None  # report.compare.Comparison: each filter against the baseline over seeds


# Stage markers are the engine's completion markers (out/.demo/<stage>-<name>.done.json): the demo
# runs each stage's step in this process (the steps fan out their own tasks), so it marks them itself.
def _done(out: Path, stage: str, name: str) -> bool:
    from datacomp.engine import is_done

    return is_done(out / ".demo", f"{stage}-{name}")


def _mark(out: Path, stage: str, name: str, info: dict[str, Any] | None = None) -> None:
    from datacomp.engine import mark_done

    mark_done(out / ".demo", f"{stage}-{name}", info)


class _Progress:
    """One rich progress bar over every unit of work in the run, with the current step as its label."""

    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled
        self._p = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            from datacomp.console import console

            # elapsed, then the ETA from the pace of the whole run (a unit takes seconds to minutes, so
            # rich's default 30 s window would often leave no estimate)
            self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console(),
                               transient=False, speed_estimate_period=24 * 3600)
            self._task = self._p.add_task("demo", total=total)

    def __enter__(self) -> _Progress:
        if self._p is not None:
            self._p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.stop()

    def step(self, label: str) -> None:
        log.info("%s", label)  # the bar redraws in a terminal; a log file still shows each step
        if self._p is not None:
            self._p.update(self._task, description=label)

    def advance(self) -> None:
        if self._p is not None:
            self._p.advance(self._task)


@contextlib.contextmanager
def _quiet_inner_bars() -> Iterator[None]:
    """The demo shows one progress view: the steps' own tqdm bars are turned off while it runs.

    Also runs the in-process steps (evaluation) on ``TORCH_THREADS`` torch threads.
    """
    import torch

    old = os.environ.get("TQDM_DISABLE")
    old_threads = torch.get_num_threads()
    os.environ["TQDM_DISABLE"] = "1"
    torch.set_num_threads(TORCH_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


# Keyword arguments of ``run_filter`` a filter spec may set (typed); other keys go to ``method_params``.
_TYPED_PARAMS = {"threshold": float, "fraction": float, "arch": str, "num_clusters": int, "seed": int,
                 "compat": lambda v: v.lower() in ("1", "true", "yes")}


def method_runs() -> dict[str, tuple[str, dict[str, Any]]]:
    """The filtering methods' suggested world runs (``datacomp.filters.methods.RUNS``), when installed."""
    try:
        from datacomp.filters.methods import RUNS
    except ImportError:
        return {}
    return dict(RUNS)


def parse_filter_spec(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """A demo filter spec -> ``[(filter name, run_filter kwargs)]``, one entry per intersected part.

    ``spec`` is a baseline run name (``clip_score_l14_30``) or a method's suggested run
    (``negclip_l14_30``, ``semdedup_clip_score_l14_30``: ``datacomp.filters.methods.RUNS``), a registered
    filter name with optional parameters (``clip_score:arch=l14,fraction=0.3``, ``density:fraction=0.5``), or the
    intersection of two of those joined by ``+`` (``clip_score_l14_30+semdedup``). Parameters that are not
    ``run_filter`` options (threshold, fraction, arch, num_clusters, seed, compat) are the method's own
    (``method_params``).
    """
    import inspect

    from datacomp.filters import get_filter
    from datacomp.filters.run import run_filter

    parts = spec.split("+")
    if len(parts) > 2 or not all(parts) or "/" in spec:
        raise DataCompError(f"filter spec {spec!r}: give NAME[:k=v,...] or the intersection of two, A+B")
    accepted = set(inspect.signature(run_filter).parameters)
    named = {**method_runs(), **BASELINES}
    out = []
    for part in parts:
        if part in named:
            out.append((named[part][0], dict(named[part][1])))
            continue
        name, _, rest = part.partition(":")
        try:
            get_filter(name)
        except DataCompError:
            raise DataCompError(f"unknown demo baseline or filter {name!r} (in filter spec {spec!r}): choose a "
                                f"baseline ({', '.join(BASELINES)}) or a registered filter (`datacomp filter --help` "
                                "lists them)") from None
        params: dict[str, Any] = {}
        method: dict[str, str] = {}
        for kv in filter(None, rest.split(",")):
            k, eq, v = kv.partition("=")
            if not eq or not k:
                raise DataCompError(f"filter spec {spec!r}: parameter {kv!r} is not key=value")
            if k in _TYPED_PARAMS:
                try:
                    params[k] = _TYPED_PARAMS[k](v)
                except ValueError:
                    raise DataCompError(f"filter spec {spec!r}: {k}={v!r} is not a valid value") from None
            elif "method_params" in accepted:
                method[k] = v
            else:
                raise DataCompError(f"filter spec {spec!r}: unknown parameter {k!r} "
                                    f"(filter options: {', '.join(_TYPED_PARAMS)})")
        if method:
            params["method_params"] = method
        out.append((name, params))
    return out


def _resolve_filters(filters: list[str] | None) -> list[str]:
    names = list(filters or DEFAULT_FILTERS)
    for n in names:
        parse_filter_spec(n)  # one line for an unknown name or a malformed spec, before any work
    return names


def run_demo(
    out: str | Path = "runs/demo",
    seeds: int = 1,
    filters: list[str] | None = None,
    workers: int | None = None,
    executor: Any = None,
    world: Any = None,
    scale: str = "tiny",
    train_overrides: dict[str, Any] | None = None,
    progress: bool = True,
    report_gallery: int = 12,
    baseline: str | None = None,
) -> DemoResult:
    """Run (or resume) the demo under ``out``.

    ``executor``: where the steps' tasks and the train+evaluate units run (an engine executor or a
    name; default local). ``world``: an already generated ``datacomp.synth.World`` (tests pass the small test world);
    ``None`` generates or reuses the tiny world under ``out/world``. ``train_overrides`` replaces
    fields of the fixed recipe and exists for tests only: the CLI never passes it. ``baseline``: the filter
    the comparison measures the others against (default ``clip_score_l14_30`` when run, else the first).
    """
    from datacomp.report import build_report, leaderboard_rows, load_experiments
    from datacomp.report.leaderboard import rows_to_json

    if seeds < 1:
        raise DataCompError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = _resolve_filters(filters)
    from datacomp.report.compare import compare_experiments, comparison_json, pick_baseline

    baseline = pick_baseline(names, baseline)
    workers = workers or min(2, os.cpu_count() or 1)
    ex = executor
    started = time.time()
    stage_seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    units = 1 + 2 * len(names) + 2 * len(names) * seeds + 1

    def timed(stage: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            stage_seconds[stage] += time.perf_counter() - t0

    with _Progress(units, progress) as prog, _quiet_inner_bars():
        prog.step("world: generating the embedded pool and evaluation suite")
        w = world if world is not None else timed("world", lambda: _world(out, workers, ex))
        prog.advance()
        exp_dirs = []
        for name in names:
            exp = out / name
            exp_dirs.append(exp)
            prog.step(f"filter: {name}")
            timed("filter", lambda exp=exp, name=name: _filter(out, exp, name, w, workers, ex))
            prog.advance()
            prog.step(f"reshard: {name}")
            timed("reshard", lambda exp=exp, name=name: _reshard(out, exp, name, w, workers, ex))
            prog.advance()
        # Train + evaluate units are independent: run them ``workers`` at a time, one torch thread
        # each (seed-major order, so every baseline finishes seed 0 before seed 1 starts).
        units_todo = [(name, exp, seed) for seed in range(seeds) for name, exp in zip(names, exp_dirs)]
        prog.step(f"train + evaluate: {len(units_todo)} run(s), {min(workers, len(units_todo))} at a time")
        t0 = time.perf_counter()
        for _task, stats, _sec in _run_units(units_todo, out, scale, workers, train_overrides, w.eval_suite, ex):
            stage_seconds["train"] += stats["train"]
            stage_seconds["evaluate"] += stats["evaluate"]
            prog.step(f"trained and evaluated {stats['name']} seed {stats['seed']}")
            prog.advance()
            prog.advance()
        stage_seconds["train+evaluate wall"] = time.perf_counter() - t0
        prog.step("report: leaderboard and HTML report")
        exps = load_experiments(exp_dirs, require_runs=False)
        wanted = {f"seed{k}" for k in range(seeds)}  # an earlier run with more seeds leaves extra ones on disk
        for e in exps:
            e.runs = [r for r in e.runs if r.dir.name in wanted]
        rows = leaderboard_rows(exps)
        cmp = compare_experiments(exps, baseline) if baseline in {e.name for e in exps if e.runs} else None
        report = timed("report", lambda: build_report(
            exps, out / "report.html", pool=w.pool, gallery_size=report_gallery, baseline=baseline if cmp else None,
            title=f"datacomp demo: {len(names)} filters, {seeds} seed(s), {scale} scale"))
        prog.advance()

    write_record(out / "demo_record.json", "demo",
                 {"seeds": seeds, "filters": names, "workers": workers, "scale": scale,
                  "train_overrides": train_overrides or {}, "world": str(w.root)},
                 counts={"experiments": len(names), "runs": len(names) * seeds},
                 started=started, stage_seconds={k: round(v, 2) for k, v in stage_seconds.items()},
                 leaderboard=rows_to_json(rows), comparison=comparison_json(cmp) if cmp else None)
    return DemoResult(out, exp_dirs, report, stage_seconds, rows, cmp)


def _run_units(units: list[tuple[str, Path, int]], out: Path, scale: str, workers: int,
               overrides: dict[str, Any] | None, eval_suite: Path, executor: Any = None
               ) -> Iterator[tuple[Any, dict[str, Any], float]]:
    from datacomp.engine import Task, resolve_executor

    tasks = [Task(f"{name}-seed{seed}", _train_and_evaluate,
                  (str(out), str(exp), name, seed, scale, overrides, str(eval_suite)))
             for name, exp, seed in units]
    yield from resolve_executor(executor, min(workers, max(1, len(tasks)))).imap(tasks)


def _train_and_evaluate(out: str, exp: str, name: str, seed: int, scale: str,
                        overrides: dict[str, Any] | None, eval_suite: str) -> dict[str, Any]:
    """One demo unit (runs in a worker process): train a baseline's subset with one seed, then evaluate it."""
    import torch

    os.environ["TQDM_DISABLE"] = "1"
    torch.set_num_threads(TORCH_THREADS)
    t0 = time.perf_counter()
    _train(Path(out), Path(exp), name, seed, scale, overrides)
    t1 = time.perf_counter()
    _evaluate(Path(out), Path(exp), name, seed, Path(eval_suite))
    return {"name": name, "seed": seed, "train": t1 - t0, "evaluate": time.perf_counter() - t1}


def _world(out: Path, workers: int, executor: Any = None) -> Any:
    from datacomp.synth import make_world

    return make_world(out / "world", size="tiny", seed=0, workers=workers, progress=False, executor=executor)


def _filter(out: Path, exp: Path, name: str, world: Any, workers: int, executor: Any = None) -> None:
    if _done(out, "filter", name):
        return
    from datacomp.artifacts import summary_path
    from datacomp.filters import run_filter
    from datacomp.io import write_json_atomic
    from datacomp.uids import intersect, read_subset, write_subset

    parts = parse_filter_spec(name)
    exp.mkdir(parents=True, exist_ok=True)
    # One signals cache for every baseline: language ids, caption stats, clusters are computed once.
    common = {"signals_dir": out / "signals", "workers": workers, "executor": executor, "progress": False}
    if len(parts) == 1:
        fname, params = parts[0]
        summary = run_filter(fname, world.metadata, exp / f"{name}.npy", **common, **params)
        _mark(out, "filter", name, {"kept": summary.get("kept")})
        return
    # An intersection A+B: each part once under out/.parts (shared by every spec using it), then A ∩ B.
    subsets, kept = [], {}
    for part, (fname, params) in zip(name.split("+"), parts, strict=True):
        path = out / ".parts" / part / f"{part}.npy"
        if not _done(out, "filter-part", part):
            path.parent.mkdir(parents=True, exist_ok=True)
            run_filter(fname, world.metadata, path, **common, **params)
            _mark(out, "filter-part", part)
        subsets.append(read_subset(path))
        kept[part] = int(subsets[-1].shape[0])
    both = intersect(*subsets)
    write_subset(exp / f"{name}.npy", both)
    write_json_atomic(summary_path(exp / f"{name}.npy"),
                      {"filter": name, "intersection_of": kept, "kept": int(both.shape[0]), "output": f"{name}.npy"})
    _mark(out, "filter", name, {"kept": int(both.shape[0])})


def _reshard(out: Path, exp: Path, name: str, world: Any, workers: int, executor: Any = None) -> None:
    if _done(out, "reshard", name):
        return
    from datacomp.reshard import reshard

    summary = reshard([world.shards], exp / "shards", exp / f"{name}.npy", workers=workers,
                      executor=executor, progress=False)
    _mark(out, "reshard", name, {"samples": summary.get("output_count")})


def _train(out: Path, exp: Path, name: str, seed: int, scale: str,
           overrides: dict[str, Any] | None) -> Path | None:
    from datacomp.train import TrainConfig, train

    run_name = f"seed{seed}"
    ckpt = exp / run_name / "checkpoints" / "epoch_latest.pt"
    if _done(out, "train", f"{name}-{run_name}") and ckpt.is_file():
        return ckpt
    if _empty(exp, name):
        log.warning("%s: the subset is empty; nothing to train (the row shows no scores)", name)
        return None
    cfg = TrainConfig.from_scale(scale, seed=seed)
    cfg = dataclasses.replace(cfg, **(overrides or {}))
    res = train(str(exp / "shards"), exp, run_name, cfg, progress=False, threads=TORCH_THREADS)
    _mark(out, "train", f"{name}-{run_name}")
    return Path(res.checkpoint)


def _evaluate(out: Path, exp: Path, name: str, seed: int, eval_suite: Path) -> None:
    run_name = f"seed{seed}"
    if _empty(exp, name):
        return
    from datacomp.evaluate import RESULTS_NAME, evaluate

    if _done(out, "evaluate", f"{name}-{run_name}") and (exp / run_name / RESULTS_NAME).is_file():
        return

    results = evaluate(exp / run_name, train_output_dir=exp / run_name, suite="embedded",
                       data_dir=eval_suite, progress=False)
    _mark(out, "evaluate", f"{name}-{run_name}", {"tasks": len(results)})


def _empty(exp: Path, name: str) -> bool:
    """True when the filter kept nothing (a baseline can, e.g. laion2b on a pool with low B/32 scores)."""
    import numpy as np

    return int(np.load(exp / f"{name}.npy", mmap_mode="r").shape[0]) == 0


def read_record(out: str | Path) -> dict[str, Any]:
    """The demo's own record (config, per-stage seconds, leaderboard) from a finished run."""
    p = Path(out) / "demo_record.json"
    if not p.is_file():
        raise DataCompError(f"{p}: no finished demo here; run `datacomp demo --out {out}`")
    return json.loads(p.read_text())
