"""Run a suite: load the model once, evaluate each task with its family, write ``eval_results.jsonl`` as we go.

Per task the image tower runs once over the task's tars (:mod:`datacomp.evaluate.families` says how);
the text side is cached (:mod:`datacomp.evaluate.encoders`). Before the model is loaded every selected
task's data is located and its sample count checked; after each task the count actually scored is
checked again, and the task's line replaces the results file atomically, under the folder's lock.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from datacomp.errors import DataCompError
from datacomp.evaluate.data import DEFAULT_DATA_DIR, TaskData, fetch, hub_source, locate
from datacomp.evaluate.encoders import _CLASSIFIER_CACHE  # noqa: F401 - re-exported for benchmarks
from datacomp.evaluate.families import TaskRun, get_family, load_plugins
from datacomp.evaluate.model import ModelSpec, resolve_model
from datacomp.evaluate.registry import EvalTask, Suite, get_suite
from datacomp.evaluate.results import RESULTS_NAME, ResultsFile, sanitize
from datacomp.io import atomic_path, write_record

log = logging.getLogger(__name__)

RECORD_NAME = "eval_record.json"


def default_batch_size(device: str) -> int:
    """The original's 64 under-fills a GPU and, on a CPU, pays per-call thread overhead 4x more often."""
    return 256


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate_task(loaded: Any, data: TaskData, fingerprint: str, batch_size: int, workers: int = 0,
                  cache_dir: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """All metrics of one task (before ``main_metric`` is added), by its family; checks the count scored."""
    run = TaskRun(loaded, data, fingerprint, batch_size, workers, cache_dir, progress)
    family = get_family(data.task.family)
    try:
        metrics = family.run(run)
    except DataCompError:
        raise
    except Exception as e:
        if str(getattr(family.run, "__module__", "")).startswith("datacomp."):
            raise  # our own family: a bug, whose traceback is the report
        raise DataCompError(f"task {data.task.key}: the {family.name!r} family (a plug-in, "
                            f"{getattr(family.run, '__module__', '?')}) failed: {type(e).__name__}: {e}") from e
    if not isinstance(metrics, dict):
        raise DataCompError(f"task {data.task.key}: the {family.name!r} family returned {type(metrics).__name__}, "
                            "not a dict of metrics")
    if data.expected and run.count != data.expected:
        raise DataCompError(f"task {data.task.key}: scored {run.count:,} samples of the {data.expected:,} expected "
                            f"({data.root}); the tars hold samples the {data.task.family} loader skipped")
    return metrics


def result_line(task: EvalTask, metrics: dict[str, Any]) -> dict[str, Any]:
    """One ``eval_results.jsonl`` object as the original writes it (``main_metric`` inside ``metrics``)."""
    m = sanitize(metrics)
    m["main_metric"] = m.get(task.main_metric) if task.main_metric else None
    return {"key": task.key, "dataset": task.name, "metrics": m}


# ----------------------------------------------------------------------------------------------
# the run


def evaluate(
    output_dir: str | os.PathLike[str],
    model: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    train_output_dir: str | os.PathLike[str] | None = None,
    suite: str | os.PathLike[str] | Suite = "embedded",
    tasks: list[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    download: bool = False,
    batch_size: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    tasks_file: str | os.PathLike[str] | None = None,
    progress: bool = True,
    plugins: list[str] | tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Evaluate one model on a suite; returns the result lines of the selected tasks (old and new).

    ``suite`` is a packaged suite's name, a suite file (JSON/YAML) or a :class:`Suite`; ``plugins`` are
    files registering more families. Finished tasks found in ``<output_dir>/eval_results.jsonl`` are
    skipped unless ``force``; every task's data is checked (present, complete, the right sample count)
    before the model is loaded, so a missing or short set fails fast with the fix. One run at a time
    may write an output folder: a second one stops with one line.
    """
    started = time.time()
    load_plugins(list(plugins))
    spec = resolve_model(model, checkpoint, train_output_dir)
    the_suite = get_suite(suite, data_dir, tasks_file)
    selected = the_suite.select(tasks)
    if data_dir is None:
        local = [t.key for t in selected if not hub_source(t)]
        if local:
            raise DataCompError(f"the {the_suite.name} suite's tasks {', '.join(local[:3])} have no download source: "
                                "pass --data-dir (for the embedded suite, the eval/ folder of an embedded world)")
        data_dir = DEFAULT_DATA_DIR
    data_dir = Path(data_dir)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with ResultsFile(out / RESULTS_NAME) as results:
        return _run(results, out, spec, the_suite, selected, data_dir, force, download, batch_size, device, workers,
                    Path(cache_dir) if cache_dir else None, progress, started)


def _run(results: ResultsFile, out: Path, spec: ModelSpec, suite: Suite, selected: list[EvalTask], data_dir: Path,
         force: bool, download: bool, batch_size: int | None, device: str | None, workers: int | None,
         cache_dir: Path | None, progress: bool, started: float) -> list[dict[str, Any]]:
    import torch

    from datacomp.models import load_model

    stale = _other_model_lines(out, spec, results, force)
    todo = [t for t in selected if force or t.key not in results.lines or t.key in stale]
    datas = []
    for t in todo:
        try:
            datas.append(locate(t, data_dir))
        except DataCompError:
            if not download or not hub_source(t):
                raise
            log.info("downloading %s from %s", t.key, t.source)
            fetch(t, data_dir)
            datas.append(locate(t, data_dir))
    if stale or (force and todo):
        results.drop(stale + [t.key for t in todo])
    _write_record(out, spec, suite, data_dir, selected, 0, len(selected) - len(todo), started)
    if spec.info_pkl is not None and (stale or not (out / "info.pkl").exists()) \
            and spec.info_pkl.resolve() != (out / "info.pkl").resolve():
        with atomic_path(out / "info.pkl") as tmp:
            shutil.copyfile(spec.info_pkl, tmp)
    skipped = len(selected) - len(todo)
    if skipped:
        log.info("%d of %d tasks already in %s (pass --force to re-run them)", skipped, len(selected), results.path)
    if todo:
        device = device or default_device()
        bs = batch_size or default_batch_size(device)
        nw = workers if workers is not None else (min(8, os.cpu_count() or 1) if device.startswith("cuda") else 0)
        torch.manual_seed(0)
        loaded = load_model(spec.name, spec.checkpoint, device=device)
        for i, data in enumerate(datas, 1):
            t0 = time.time()
            m = evaluate_task(loaded, data, spec.fingerprint, bs, nw, cache_dir, progress)
            line = result_line(data.task, m)
            results.put(line)
            log.info("[%d/%d] %s: %s = %s (%.1fs)", i, len(datas), data.task.name, data.task.main_metric,
                     _fmt(line["metrics"]["main_metric"]), time.time() - t0)
    _write_record(out, spec, suite, data_dir, selected, len(todo), skipped, started)
    return [results.lines[t.key] for t in selected if t.key in results.lines]


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _other_model_lines(out: Path, spec: ModelSpec, results: ResultsFile, force: bool) -> list[str]:
    """Keys of lines written for a different model: refused, or (``force``) all to be replaced."""
    rec = out / RECORD_NAME
    if not results.lines or not rec.is_file():
        return []
    try:
        doc = json.loads(rec.read_text(encoding="utf-8"))
    except (ValueError, OSError):  # a damaged record: nothing to compare against
        return []
    cfg = doc.get("config") if isinstance(doc, dict) else None
    prev = cfg.get("fingerprint") if isinstance(cfg, dict) else None
    if not prev or prev == spec.fingerprint:
        return []
    if not force:
        raise DataCompError(
            f"{results.path}: holds results of another model ({prev.split('|')[0]}, different checkpoint); "
            "use a new --output-dir or pass --force to replace them"
        )
    log.warning("%s: replacing %d result lines of another model", results.path, len(results.lines))
    return list(results.lines)


def _write_record(out: Path, spec: ModelSpec, suite: Suite, data_dir: Path, selected: list[EvalTask], ran: int,
                  skipped: int, started: float) -> None:
    write_record(
        out / RECORD_NAME, "evaluate",
        config={"model": spec.name, "checkpoint": str(spec.checkpoint) if spec.checkpoint else None,
                "fingerprint": spec.fingerprint, "scale": spec.scale, "suite": suite.name,
                "suite_file": str(suite.path) if suite.path else None, "data_dir": str(data_dir),
                "tasks": [t.key for t in selected]},
        counts={"tasks": len(selected), "ran": ran, "skipped": skipped},
        started=started,
    )


def resolve_suite(suite: str, spec: ModelSpec) -> str:
    """``auto``: the embedded suite for the tiny scale / our packaged model configs, DataComp's otherwise."""
    if suite != "auto":
        return suite
    from datacomp.models import MODEL_CONFIG_DIR

    ours = {p.stem for p in MODEL_CONFIG_DIR.glob("*.json")}
    return "embedded" if spec.scale == "tiny" or spec.name in ours else "datacomp"
