"""Read experiments back from disk: filter summary, subset, and one train + eval run per seed.

An experiment is a directory holding a filter summary (``<subset>.summary.json``), the subset
``.npy`` and, anywhere below it, one ``eval_results.jsonl`` per trained seed (with the
``train_record.json`` the train step wrote beside it). A bare ``eval_results.jsonl`` path is an
experiment of one run. Everything the report, leaderboard and submit commands show comes from here.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.artifacts import SUMMARY_SUFFIX
from datacomp.errors import DataCompError
from datacomp.evaluate.registry import list_suites
from datacomp.evaluate.results import RESULTS_NAME, read_results

log = logging.getLogger(__name__)

# DataComp's summary columns, in the order of the paper's Table 3.
AGGREGATES = ["ImageNet", "ImageNet dist. shifts", "VTAB", "Retrieval", "Average"]
EVAL_RECORD = "eval_record.json"
TRAIN_RECORD = "train_record.json"


def read_eval_results(path: str | Path) -> list[dict[str, Any]]:
    """The rows of an ``eval_results.jsonl`` (spec §3.9), in file order, through evaluate's one reader
    (NaN read as None; a damaged line is one error naming it)."""
    return read_results(path, require=True)


def suite_of(results: list[dict[str, Any]], run_dir: Path | None = None) -> str:
    """Which suite aggregates a run: the one its ``eval_record.json`` names (its file, when it still
    exists), else the embedded suite when every key starts with ``embedded/``, else DataComp's."""
    rec = run_dir / EVAL_RECORD if run_dir is not None else None
    if rec is not None and rec.is_file():
        try:
            cfg = json.loads(rec.read_text(encoding="utf-8")).get("config") or {}
        except (ValueError, OSError, AttributeError):
            cfg = {}
        if isinstance(cfg, dict):
            f = cfg.get("suite_file")
            if isinstance(f, str) and Path(f).is_file():
                return f
            if isinstance(cfg.get("suite"), str) and cfg["suite"] in list_suites():
                return cfg["suite"]
    keys = [r["key"] for r in results]
    return "embedded" if keys and all(str(k).startswith("embedded/") for k in keys) else "datacomp"


def aggregate_results(results: list[dict[str, Any]], suite: str | None = None) -> dict[str, float]:
    """DataComp's summary numbers for one run, from the evaluate step's own aggregation; NaN for a group
    whose tasks are not all there (extra tasks of a user's suite are ignored)."""
    from datacomp.evaluate import aggregate_partial

    agg = aggregate_partial(results, suite or suite_of(results)).values
    return {k: float(agg[k]) if agg.get(k) is not None else math.nan for k in AGGREGATES}


def main_metrics(results: list[dict[str, Any]]) -> dict[str, float]:
    """``{dataset display name: main_metric}`` for the tasks that have one."""
    out = {}
    for r in results:
        v = r["metrics"].get("main_metric")
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out[str(r.get("dataset") or r["key"])] = float(v)
    return out


@dataclass
class Run:
    """One trained and evaluated model (one seed) of an experiment."""

    dir: Path
    results: list[dict[str, Any]]
    train_record: dict[str, Any] | None = None

    @property
    def seed(self) -> int | None:
        cfg = (self.train_record or {}).get("config") or {}
        return cfg.get("seed")

    @property
    def suite(self) -> str:
        return suite_of(self.results, self.dir)

    @property
    def aggregates(self) -> dict[str, float]:
        return aggregate_results(self.results, self.suite)

    @property
    def tasks(self) -> dict[str, float]:
        return main_metrics(self.results)


@dataclass
class Experiment:
    """A filtered subset and the models trained on it."""

    name: str
    dir: Path
    subset: Path | None = None
    summary: dict[str, Any] | None = None
    runs: list[Run] = field(default_factory=list)

    @property
    def size(self) -> int | None:
        """Subset size: from the filter summary, else from the subset file's header."""
        s = self.summary or {}
        for k in ("kept", "subset_size", "num_samples", "n_kept"):
            if isinstance(s.get(k), int):
                return int(s[k])
        if self.subset is not None and self.subset.is_file():
            return int(np.load(self.subset, mmap_mode="r").shape[0])
        return None

    def stats(self) -> dict[str, tuple[float, float, int]]:
        """``{aggregate: (mean, spread, n_seeds)}``; spread is the sample std (0 with one seed)."""
        per = [r.aggregates for r in self.runs]
        out = {}
        for k in AGGREGATES:
            vals = np.array([p[k] for p in per if not math.isnan(p[k])], dtype=float)
            out[k] = _mean_spread(vals)
        return out

    def task_means(self) -> dict[str, float]:
        """Mean main metric per task over the seeds."""
        acc: dict[str, list[float]] = {}
        for r in self.runs:
            for k, v in r.tasks.items():
                acc.setdefault(k, []).append(v)
        return {k: float(np.mean(v)) for k, v in acc.items()}


def _mean_spread(vals: np.ndarray) -> tuple[float, float, int]:
    if vals.size == 0:
        return math.nan, math.nan, 0
    spread = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
    return float(vals.mean()), spread, int(vals.size)


def _find_summary(d: Path) -> Path | None:
    found = sorted(d.glob(f"*{SUMMARY_SUFFIX}"))
    return found[0] if found else None


def _subset_for(d: Path, summary_path: Path | None, summary: dict[str, Any] | None) -> Path | None:
    """The subset file: named by the summary (``X.npy.summary.json`` / ``X.summary.json``), else a lone npy."""
    if summary and summary.get("output"):
        p = Path(summary["output"])
        if not p.is_absolute():
            p = d / p.name
        if p.is_file():
            return p
    if summary_path is not None:
        stem = summary_path.name[: -len(SUMMARY_SUFFIX)]
        for cand in (d / stem, d / f"{stem}.npy"):
            if cand.is_file() and cand.suffix == ".npy":
                return cand
    npys = [p for p in sorted(d.glob("*.npy")) if p.name != "sample_ids.npy"]
    return npys[0] if len(npys) == 1 else None


def load_experiment(path: str | Path, name: str | None = None, require_runs: bool = True) -> Experiment:
    """Load an experiment directory (or a single ``eval_results.jsonl``).

    ``require_runs=False`` accepts a directory with no evaluated model yet (e.g. an empty subset
    that could not be trained): it is shown with its size and no scores.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix != ".jsonl":
            raise DataCompError(f"{path}: expected an experiment directory or an {RESULTS_NAME} file")
        rec = path.parent / TRAIN_RECORD
        run = Run(path.parent, read_eval_results(path), _read_json(rec) if rec.is_file() else None)
        return Experiment(name or path.parent.name, path.parent, runs=[run])
    if not path.is_dir():
        raise DataCompError(f"{path}: no such experiment directory or results file")
    summary_path = _find_summary(path)
    summary = _read_json(summary_path) if summary_path else None
    runs = []
    for res in sorted(path.rglob(RESULTS_NAME)):
        rec = res.parent / TRAIN_RECORD
        runs.append(Run(res.parent, read_eval_results(res), _read_json(rec) if rec.is_file() else None))
    if not runs and require_runs:
        raise DataCompError(f"{path}: no {RESULTS_NAME} under this directory; run `datacomp evaluate` first")
    return Experiment(name or path.name, path, _subset_for(path, summary_path, summary), summary, runs)


def load_experiments(paths: list[str | Path], require_runs: bool = True) -> list[Experiment]:
    """Load several experiments; names must be unique (the directory names label the rows)."""
    exps = [load_experiment(p, require_runs=require_runs) for p in paths]
    seen: dict[str, int] = {}
    for e in exps:
        n = seen.get(e.name, 0)
        seen[e.name] = n + 1
        if n:
            e.name = f"{e.name} ({n + 1})"
    return exps


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataCompError(f"{path}: not a readable JSON record ({e})") from None
