"""Side-by-side comparison of filtering methods over training seeds, with confidence intervals.

For every method (an experiment: one filtered subset, trained once per seed) and every aggregate of
the evaluation suite (its groups and its average), :func:`compare` gives the mean ± sample std over
seeds and the difference to a baseline method with a two-sided interval (95% by default):

- **paired** when both methods were trained with the same seeds (>= 2): a t-interval on the per-seed
  differences, ``mean(d) ± t(1-α/2, n-1) · sd(d)/√n`` — a seed fixes the model initialisation and the
  data order, so the per-seed difference removes the part of the noise both runs share;
- **Welch** otherwise (different or partly shared seeds): ``Δmean ± t(1-α/2, ν) · √(s²a/na + s²b/nb)``
  with the Welch–Satterthwaite degrees of freedom ν.

A difference whose interval excludes 0 *exceeds the seed noise*. With one seed on either side there
is no interval (shown as ``-``) and nothing is marked. These functions are pure: they take numbers
(per method, per seed, per aggregate) and return numbers; :func:`methods_from_experiments` reads them
from experiments loaded by :mod:`datacomp.report.experiments`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datacomp.errors import DataCompError

DEFAULT_BASELINE = "clip_score_l14_30"
LEVEL = 0.95


@dataclass(frozen=True)
class Stat:
    """Mean, sample std (ddof=1; 0 with one value) and count of one method's scores over seeds."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Diff:
    """``method - baseline`` with its interval; ``kind`` is ``paired``, ``welch`` or ``none`` (too few seeds)."""

    diff: float
    lo: float
    hi: float
    df: float
    kind: str

    @property
    def exceeds_noise(self) -> bool:
        """The interval excludes 0."""
        return not (math.isnan(self.lo) or math.isnan(self.hi)) and (self.lo > 0 or self.hi < 0)


def summarize(values: Sequence[float]) -> Stat:
    """Mean ± sample std of the finite values (NaN stat with none)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return Stat(math.nan, math.nan, 0)
    return Stat(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size))


def _tq(level: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def mean_interval(s: Stat, level: float = LEVEL) -> tuple[float, float]:
    """The t-interval of one method's mean over its seeds (NaN with fewer than 2)."""
    if s.n < 2:
        return math.nan, math.nan
    half = _tq(level, s.n - 1) * s.std / math.sqrt(s.n)
    return s.mean - half, s.mean + half


def paired_diff(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Diff:
    """t-interval on the per-seed differences ``a[s] - b[s]`` over the seeds both have (n-1 dof)."""
    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    if d.size == 0:
        return Diff(math.nan, math.nan, math.nan, math.nan, "none")
    mean = float(d.mean())
    if d.size < 2:
        return Diff(mean, math.nan, math.nan, math.nan, "none")
    half = _tq(level, d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return Diff(mean, mean - half, mean + half, float(d.size - 1), "paired")


def welch_diff(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Diff:
    """Welch's interval for ``mean(a) - mean(b)`` (unequal variances, Welch–Satterthwaite dof)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        return Diff(math.nan, math.nan, math.nan, math.nan, "none")
    mean = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return Diff(mean, math.nan, math.nan, math.nan, "none")
    va, vb = float(x.var(ddof=1)) / x.size, float(y.var(ddof=1)) / y.size
    se2 = va + vb
    if se2 == 0:  # both without spread: the difference is exact
        return Diff(mean, mean, mean, math.inf, "welch")
    df = se2 ** 2 / (va ** 2 / (x.size - 1) + vb ** 2 / (y.size - 1))
    half = _tq(level, df) * math.sqrt(se2)
    return Diff(mean, mean - half, mean + half, float(df), "welch")


def difference(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Diff:
    """Paired when both sides have the same (>= 2) seeds, Welch otherwise."""
    if set(a) == set(b) and len(a) >= 2:
        return paired_diff(a, b, level)
    return welch_diff(list(a.values()), list(b.values()), level)


@dataclass
class MethodRuns:
    """One method's scores: ``{seed: {aggregate label: value}}`` (NaN/None: that aggregate is missing)."""

    name: str
    scores: dict[int, dict[str, float]]
    size: int | None = None

    def by_seed(self, aggregate: str) -> dict[int, float]:
        out = {}
        for s, agg in self.scores.items():
            v = agg.get(aggregate)
            if v is not None and math.isfinite(v):
                out[s] = float(v)
        return out


@dataclass
class CompareRow:
    name: str
    size: int | None
    seeds: list[int]
    stats: dict[str, Stat]
    diffs: dict[str, Diff] = field(default_factory=dict)  # empty for the baseline row


@dataclass
class Comparison:
    baseline: str
    aggregates: list[str]
    level: float
    rows: list[CompareRow]

    @property
    def average(self) -> str:
        return self.aggregates[-1]


def pick_baseline(names: Sequence[str], baseline: str | None = None) -> str:
    """``baseline`` when given (it must be one of ``names``), else ``clip_score_l14_30`` when present, else the
    first method."""
    if not names:
        raise DataCompError("nothing to compare: no methods with evaluated runs")
    if baseline is None:
        return DEFAULT_BASELINE if DEFAULT_BASELINE in names else names[0]
    if baseline not in names:
        raise DataCompError(f"baseline {baseline!r} is not among the compared methods ({', '.join(names)}); "
                            "pass --baseline with one of them")
    return baseline


def compare(methods: Sequence[MethodRuns], aggregates: Sequence[str], baseline: str | None = None,
            level: float = LEVEL) -> Comparison:
    """Mean ± std per method and aggregate, and each method's difference to ``baseline`` with an interval."""
    if not 0 < level < 1:
        raise DataCompError(f"confidence level must be in (0, 1), got {level}")
    names = [m.name for m in methods]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataCompError(f"method(s) {', '.join(dupes)} given twice; each method is one row")
    base_name = pick_baseline(names, baseline)
    base = methods[names.index(base_name)]
    rows = []
    for m in methods:
        stats = {a: summarize(list(m.by_seed(a).values())) for a in aggregates}
        diffs = {} if m is base else {a: difference(m.by_seed(a), base.by_seed(a), level) for a in aggregates}
        rows.append(CompareRow(m.name, m.size, sorted(m.scores), stats, diffs))
    return Comparison(base_name, list(aggregates), level, rows)


# --- reading experiments ------------------------------------------------------------------------


def _seed_of(run: Any, index: int) -> int:
    s = run.seed
    if isinstance(s, int):
        return s
    m = re.fullmatch(r"seed(\d+)", run.dir.name)
    return int(m.group(1)) if m else index


def suite_labels(suite: str) -> list[str]:
    """The suite's aggregate labels in display order, its average last."""
    from datacomp.evaluate.registry import get_suite

    s = get_suite(suite)
    return list(s.aggregates.values()) + ([s.average] if s.average else [])


def methods_from_experiments(experiments: Sequence[Any]) -> tuple[list[MethodRuns], str]:
    """``(methods, suite)`` from loaded experiments: runs grouped by experiment name and seed (from each
    run's ``train_record.json``, else its ``seed<k>`` folder name). Refuses runs of different suites and a
    seed given twice for one method."""
    from datacomp.evaluate import aggregate_partial

    suites: dict[str, str] = {}
    for e in experiments:
        for r in e.runs:
            suites.setdefault(r.suite, f"{e.name}/{r.dir.name}")
    if len(suites) > 1:
        where = "; ".join(f"{s} ({w})" for s, w in suites.items())
        raise DataCompError(f"the runs were evaluated on different suites ({where}): compare runs of one suite")
    if not suites:
        raise DataCompError("nothing to compare: no evaluated runs in the given directories")
    suite = next(iter(suites))
    methods: dict[str, MethodRuns] = {}
    origin: dict[tuple[str, int], str] = {}
    for e in experiments:
        m = methods.setdefault(e.name, MethodRuns(e.name, {}, e.size))
        for i, r in enumerate(sorted(e.runs, key=lambda r: str(r.dir))):
            seed = _seed_of(r, i)
            if (e.name, seed) in origin:
                raise DataCompError(f"{e.name} seed {seed} appears twice ({origin[e.name, seed]} and {r.dir}); "
                                    "pass each run once")
            origin[e.name, seed] = str(r.dir)
            vals = aggregate_partial(r.results, suite).values
            m.scores[seed] = {k: (math.nan if v is None else float(v)) for k, v in vals.items()}
    return list(methods.values()), suite


def compare_experiments(experiments: Sequence[Any], baseline: str | None = None, level: float = LEVEL
                        ) -> Comparison:
    """:func:`compare` over loaded experiments (see :func:`methods_from_experiments`)."""
    methods, suite = methods_from_experiments([e for e in experiments if e.runs])
    return compare(methods, suite_labels(suite), baseline, level)


# --- presentation -----------------------------------------------------------------------------


def _f(v: float, sign: bool = False) -> str:
    if v is None or math.isnan(v):
        return "-"
    return f"{v:+.3f}" if sign else f"{v:.3f}"


def fmt_stat(s: Stat) -> str:
    if s.n == 0:
        return "-"
    return f"{s.mean:.3f} ± {s.std:.3f}" if s.n > 1 else f"{s.mean:.3f}"


def fmt_diff(d: Diff | None) -> str:
    """``+0.012 [+0.004, +0.020] *`` (``*``: the interval excludes 0)."""
    if d is None:
        return "(baseline)"
    if math.isnan(d.diff):
        return "-"
    if math.isnan(d.lo):
        return f"{_f(d.diff, True)} [-]"
    return f"{_f(d.diff, True)} [{_f(d.lo, True)}, {_f(d.hi, True)}]" + (" *" if d.exceeds_noise else "")


def _columns(cmp: Comparison) -> list[tuple[str, str]]:
    """(heading, kind) pairs: each aggregate's mean ± std, then the difference on each aggregate."""
    return ([(a, "stat") for a in cmp.aggregates] + [(f"Δ {a}", "diff") for a in cmp.aggregates])


def table_cells(cmp: Comparison, row: CompareRow) -> list[str]:
    cells = [fmt_stat(row.stats[a]) for a in cmp.aggregates]
    cells += [fmt_diff(row.diffs.get(a)) if row.diffs else "(baseline)" for a in cmp.aggregates]
    return cells


def legend(cmp: Comparison) -> str:
    return (f"Δ: method − {cmp.baseline} with a {cmp.level:.0%} interval over seeds (paired t on per-seed "
            "differences when both have the same seeds, else Welch); * the interval excludes 0 "
            "(exceeds seed noise); [-] fewer than 2 seeds")


def comparison_table(cmp: Comparison, title: str = "comparison"):
    """A rich table: method, size, seeds, mean ± std per aggregate, Δ to the baseline (marked rows bold)."""
    from rich.table import Table

    from datacomp.report.leaderboard import fmt_size

    t = Table(title=title, caption=legend(cmp))
    t.add_column("Method")
    t.add_column("Size", justify="right")
    t.add_column("seeds", justify="right")
    for head, _ in _columns(cmp):
        t.add_column(head, justify="right")
    for r in cmp.rows:
        cells = table_cells(cmp, r)
        cells = [f"[bold]{c}[/bold]" if c.endswith(" *") else c for c in cells]
        t.add_row(r.name, fmt_size(r.size), str(len(r.seeds)), *cells)
    return t


def comparison_markdown(cmp: Comparison) -> str:
    from datacomp.report.leaderboard import fmt_size

    heads = ["Method", "Size", "seeds", *[h for h, _ in _columns(cmp)]]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in cmp.rows:
        cells = [f"**{c[:-2]}** \\*" if c.endswith(" *") else c for c in table_cells(cmp, r)]
        lines.append("| " + " | ".join([r.name, fmt_size(r.size), str(len(r.seeds)), *cells]) + " |")
    return "\n".join(lines) + "\n\n" + legend(cmp) + "\n"


def comparison_json(cmp: Comparison) -> dict[str, Any]:
    """Strict JSON (NaN and infinities become null)."""

    def c(v: float) -> float | None:
        return None if v is None or not math.isfinite(v) else round(float(v), 6)

    rows = []
    for r in cmp.rows:
        rows.append({
            "name": r.name, "size": r.size, "seeds": r.seeds,
            "stats": {a: {"mean": c(s.mean), "std": c(s.std), "n": s.n} for a, s in r.stats.items()},
            "diff": None if not r.diffs else {
                a: {"diff": c(d.diff), "lo": c(d.lo), "hi": c(d.hi), "df": c(d.df), "kind": d.kind,
                    "exceeds_noise": d.exceeds_noise} for a, d in r.diffs.items()},
        })
    return {"baseline": cmp.baseline, "level": cmp.level, "aggregates": cmp.aggregates, "rows": rows}


# --- loading run directories --------------------------------------------------------------------


def load_for_compare(paths: Sequence[str | Any]) -> list[Any]:
    """Experiments to compare from directories: a demo output (its ``demo_record.json`` lists the methods
    and seeds), an experiment directory (runs anywhere below it), a run directory or an
    ``eval_results.jsonl`` (one seed of the experiment named by its parent folder). Runs of one method
    given in several paths are merged (a seed given twice is refused later)."""
    import json
    from pathlib import Path

    from datacomp.evaluate.results import RESULTS_NAME
    from datacomp.report.experiments import load_experiment

    if not paths:
        raise DataCompError("nothing to compare: pass one or more run or experiment directories")
    exps: list[Any] = []
    for raw in paths:
        p = Path(raw)
        rec = p / "demo_record.json"
        if p.is_dir() and rec.is_file():
            try:
                cfg = json.loads(rec.read_text())["config"]
                names, seeds = list(cfg["filters"]), int(cfg["seeds"])
            except (ValueError, KeyError, TypeError, OSError) as e:
                raise DataCompError(f"{rec}: not a readable demo record ({type(e).__name__}: {e})") from None
            found = []
            for n in names:
                if not (p / n).is_dir():
                    continue
                e = load_experiment(p / n, require_runs=False)
                e.runs = [r for r in e.runs if r.dir.name in {f"seed{k}" for k in range(seeds)}]
                if e.runs:
                    found.append(e)
            if not found:
                raise DataCompError(f"{p}: a demo output without evaluated runs; let `datacomp demo --out {p}` finish")
            exps += found
        elif (p.is_dir() and (p / RESULTS_NAME).is_file()) or (p.is_file() and p.name == RESULTS_NAME):
            run_dir = p if p.is_dir() else p.parent
            e = load_experiment(run_dir / RESULTS_NAME)
            e.name, e.dir = run_dir.resolve().parent.name, run_dir.resolve().parent
            exps.append(e)
        else:
            exps.append(load_experiment(p))  # one line when there is no eval_results.jsonl below it
    merged: dict[str, Any] = {}
    for e in exps:
        if e.name in merged:
            merged[e.name].runs += e.runs
        else:
            merged[e.name] = e
    return list(merged.values())
