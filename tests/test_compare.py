"""Methods side by side over seeds: the statistics against scipy, `datacomp compare` on hand-made run
directories (table, JSON, HTML, one-line errors) and the demo's filter specs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from datacomp.cli import main
from datacomp.errors import DataCompError
from datacomp.evaluate.registry import get_suite
from datacomp.io import write_json_atomic
from datacomp.report.compare import (
    MethodRuns,
    Stat,
    compare,
    difference,
    mean_interval,
    paired_diff,
    summarize,
    welch_diff,
)

# Per-seed averages of three methods: B tracks the baseline seed by seed (+0.010 ± 0.001), so the
# paired interval excludes 0 while the unpaired (Welch) one does not; C is the baseline plus noise.
BASE = {0: 0.280, 1: 0.300, 2: 0.290}
B = {0: 0.291, 1: 0.309, 2: 0.301}
C = {0: 0.300, 1: 0.270, 2: 0.292}


def test_paired_interval_matches_scipy_ttest_rel():
    d = paired_diff(B, BASE)
    ref = stats.ttest_rel([B[s] for s in range(3)], [BASE[s] for s in range(3)]).confidence_interval(0.95)
    assert d.kind == "paired" and d.df == 2
    assert d.diff == pytest.approx(np.mean([B[s] - BASE[s] for s in range(3)]))
    assert (d.lo, d.hi) == (pytest.approx(ref.low), pytest.approx(ref.high))
    assert d.exceeds_noise
    d90 = paired_diff(B, BASE, level=0.9)
    ref90 = stats.ttest_rel(list(B.values()), list(BASE.values())).confidence_interval(0.9)
    assert (d90.lo, d90.hi) == (pytest.approx(ref90.low), pytest.approx(ref90.high))


def test_welch_interval_matches_scipy_ttest_ind():
    a, b = [0.31, 0.29, 0.35, 0.30], [0.28, 0.27, 0.26]
    d = welch_diff(a, b)
    res = stats.ttest_ind(a, b, equal_var=False)
    ref = res.confidence_interval(0.95)
    assert d.kind == "welch"
    assert (d.lo, d.hi) == (pytest.approx(ref.low), pytest.approx(ref.high))
    assert d.df == pytest.approx(res.df)
    assert d.diff == pytest.approx(np.mean(a) - np.mean(b))


def test_difference_pairs_by_seed_only_when_seeds_match():
    paired = difference(B, BASE)
    assert paired.kind == "paired" and paired.exceeds_noise
    welch = welch_diff(list(B.values()), list(BASE.values()))
    assert not welch.exceeds_noise  # the same numbers unpaired: the seed spread hides the gain
    assert (paired.lo, paired.hi) != (pytest.approx(welch.lo), pytest.approx(welch.hi))
    shifted = {s + 10: v for s, v in B.items()}  # other seeds: nothing to pair
    d = difference(shifted, BASE)
    assert d.kind == "welch" and (d.lo, d.hi) == (pytest.approx(welch.lo), pytest.approx(welch.hi))
    noisy = difference(C, BASE)
    assert noisy.kind == "paired" and noisy.lo < 0 < noisy.hi and not noisy.exceeds_noise


def test_too_few_seeds_gives_no_interval_and_no_mark():
    d = difference({0: 0.5}, {0: 0.1})
    assert d.diff == pytest.approx(0.4) and math.isnan(d.lo) and not d.exceeds_noise
    assert summarize([0.5]) == Stat(0.5, 0.0, 1)
    assert math.isnan(mean_interval(summarize([0.5]))[0])


def test_summary_and_mean_interval_match_scipy():
    v = [0.21, 0.25, 0.22, 0.30]
    s = summarize([*v, math.nan, None])
    assert (s.mean, s.std, s.n) == (pytest.approx(np.mean(v)), pytest.approx(np.std(v, ddof=1)), 4)
    lo, hi = mean_interval(s)
    ref = stats.t.interval(0.95, 3, loc=np.mean(v), scale=stats.sem(v))
    assert (lo, hi) == (pytest.approx(ref[0]), pytest.approx(ref[1]))


def test_compare_rows_default_baseline_and_errors():
    aggs = ["Average"]
    ms = [MethodRuns(n, {s: {"Average": v} for s, v in d.items()}) for n, d in
          (("b", B), ("clip_score_l14_30", BASE), ("c", C))]
    cmp = compare(ms, aggs)
    assert cmp.baseline == "clip_score_l14_30"
    rows = {r.name: r for r in cmp.rows}
    assert rows["clip_score_l14_30"].diffs == {}
    assert rows["b"].diffs["Average"].exceeds_noise and not rows["c"].diffs["Average"].exceeds_noise
    assert compare(ms, aggs, baseline="c").baseline == "c"
    with pytest.raises(DataCompError, match="baseline 'nope' is not among"):
        compare(ms, aggs, baseline="nope")
    assert compare(ms[:1] + ms[2:], aggs).baseline == "b"  # no clip_score_l14_30: the first method


# --- hand-made run directories ------------------------------------------------------------------


def write_run(run: Path, seed: int, level: float, suite: str = "embedded") -> None:
    """Every scored task of the suite at ``level``: every aggregate of this run is ``level``."""
    run.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"key": t.key, "dataset": t.name, "metrics": {"main_metric": level}})
             for t in get_suite(suite).scored]
    (run / "eval_results.jsonl").write_text("\n".join(lines) + "\n")
    write_json_atomic(run / "train_record.json", {"step": "train", "config": {"seed": seed}})


def make_methods(root: Path, methods: dict[str, dict[int, float]]) -> list[Path]:
    dirs = []
    for name, per_seed in methods.items():
        for seed, level in per_seed.items():
            write_run(root / name / f"seed{seed}", seed, level)
        dirs.append(root / name)
    return dirs


@pytest.fixture
def runs(tmp_path):
    return make_methods(tmp_path / "runs", {"no_filter": C, "clip_score_l14_30": BASE, "semdedup": B})


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_compare_cli_json_against_scipy(runs, capsys):
    rc, out, _ = run_cli(capsys, "compare", *map(str, runs), "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["baseline"] == "clip_score_l14_30"
    assert doc["aggregates"] == ["ImageNet", "ImageNet dist. shifts", "VTAB", "Retrieval", "Average"]
    rows = {r["name"]: r for r in doc["rows"]}
    assert rows["clip_score_l14_30"]["diff"] is None and rows["semdedup"]["seeds"] == [0, 1, 2]
    ref = stats.ttest_rel(list(B.values()), list(BASE.values())).confidence_interval(0.95)
    for agg in doc["aggregates"]:  # every aggregate of these runs is the run's level
        d = rows["semdedup"]["diff"][agg]
        assert d["kind"] == "paired" and d["exceeds_noise"] is True
        assert (d["lo"], d["hi"]) == (pytest.approx(ref.low, abs=1e-6), pytest.approx(ref.high, abs=1e-6))
        assert rows["no_filter"]["diff"][agg]["exceeds_noise"] is False
        st = rows["no_filter"]["stats"][agg]
        assert (st["mean"], st["std"]) == (pytest.approx(np.mean(list(C.values())), abs=1e-6),
                                           pytest.approx(np.std(list(C.values()), ddof=1), abs=1e-6))


def test_compare_cli_markdown_marks_what_exceeds_the_noise(runs, capsys):
    rc, out, _ = run_cli(capsys, "compare", *map(str, runs), "--markdown")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("| Method | Size | seeds | ImageNet |") and lines[1].startswith("|---|")
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in lines[2:] if ln.startswith("| ")}
    assert set(rows) == {"no_filter", "clip_score_l14_30", "semdedup"}
    assert rows["semdedup"].count("\\*") == 5 and "\\*" not in rows["no_filter"]  # 5 aggregates, all marked
    assert "(baseline)" in rows["clip_score_l14_30"] and out.rstrip().endswith("fewer than 2 seeds")


def test_compare_cli_table_marks_and_html(runs, capsys, tmp_path):
    report = tmp_path / "cmp.html"
    rc, out, _ = run_cli(capsys, "compare", *map(str, runs), "--baseline", "no_filter", "-o", str(report))
    assert rc == 0
    assert "vs no_filter" in out and "(baseline)" in out
    page = report.read_text()
    assert '<table id="comparison">' in page and "Comparison with confidence" in page
    table = page[page.index('<table id="comparison">'):]
    table = table[: table.index("</table>")]
    for name in ("no_filter", "clip_score_l14_30", "semdedup"):
        assert f"<td>{name}</td>" in table
    assert f"{np.mean(list(B.values())):.3f} ± {np.std(list(B.values()), ddof=1):.3f}" in table
    assert 'alt="Average per method with interval"' in page and "data:image/png;base64," in page
    assert "src=\"http" not in page  # self-contained


def test_compare_merges_seeds_from_several_dirs(tmp_path, capsys):
    a = make_methods(tmp_path / "a", {"clip_score_l14_30": {0: 0.28, 1: 0.30}, "x": {0: 0.31, 1: 0.33}})
    b = make_methods(tmp_path / "b", {"x": {2: 0.32}})
    rc, out, _ = run_cli(capsys, "compare", *map(str, a + b), "--json")
    assert rc == 0
    row = next(r for r in json.loads(out)["rows"] if r["name"] == "x")
    assert row["seeds"] == [0, 1, 2]
    d = row["diff"]["Average"]
    ref = stats.ttest_ind([0.31, 0.33, 0.32], [0.28, 0.30], equal_var=False).confidence_interval(0.95)
    assert d["kind"] == "welch" and d["lo"] == pytest.approx(ref.low, abs=1e-6)


def test_compare_reads_a_run_dir_and_a_results_file(runs, capsys):
    rc, out, _ = run_cli(capsys, "compare", str(runs[0] / "seed0"), str(runs[1] / "seed0" / "eval_results.jsonl"),
                         "--json")
    assert rc == 0
    assert [r["name"] for r in json.loads(out)["rows"]] == ["no_filter", "clip_score_l14_30"]


@pytest.mark.parametrize("case", ["no_results", "mixed_suites", "no_baseline", "seed_twice"])
def test_compare_errors_are_one_line(runs, tmp_path, capsys, case):
    args = [str(p) for p in runs]
    if case == "no_results":
        (tmp_path / "empty").mkdir()
        args.append(str(tmp_path / "empty"))
        want = "no eval_results.jsonl under this directory"
    elif case == "mixed_suites":
        write_run(tmp_path / "other" / "dc" / "seed0", 0, 0.5, suite="datacomp")
        args.append(str(tmp_path / "other" / "dc"))
        want = "different suites"
    elif case == "no_baseline":
        args += ["--baseline", "dfn"]
        want = "baseline 'dfn' is not among the compared methods"
    else:
        write_run(tmp_path / "again" / "semdedup" / "run_b", 1, 0.4)
        args.append(str(tmp_path / "again" / "semdedup"))
        want = "semdedup seed 1 appears twice"
    rc, out, err = run_cli(capsys, "compare", *args)
    assert rc != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], err


# --- demo filter specs --------------------------------------------------------------------------


def test_demo_filter_specs():
    from datacomp.demo import parse_filter_spec

    assert parse_filter_spec("clip_score_l14_30") == [("clip_score", {"arch": "l14", "fraction": 0.3})]
    assert parse_filter_spec("clip_score:arch=b32,fraction=0.25") == [("clip_score", {"arch": "b32",
                                                                                       "fraction": 0.25})]
    from datacomp.filters.methods import RUNS

    assert parse_filter_spec("semdedup_clip_score_l14_30") == [RUNS["semdedup_clip_score_l14_30"]]
    assert parse_filter_spec("density:fraction=0.5,density.k=7") == [
        ("density", {"fraction": 0.5, "method_params": {"density.k": "7"}})]
    assert parse_filter_spec("clip_score_l14_30+basic_filter") == [
        ("clip_score", {"arch": "l14", "fraction": 0.3}), ("basic_filter", {})]
    for bad, why in (("nope", "unknown demo baseline or filter 'nope'"), ("a+b+c", "intersection of two"),
                     ("clip_score:fraction", "not key=value"), ("clip_score:fraction=x", "not a valid value"),
                     ("no_filter+", "intersection of two")):
        with pytest.raises(DataCompError, match=why):
            parse_filter_spec(bad)


def test_demo_intersection_spec_filters_the_world(world, tmp_path):
    from datacomp.demo import _filter
    from datacomp.filters import run_filter
    from datacomp.report import load_experiment
    from datacomp.uids import intersect, read_subset

    spec = "clip_score_l14_30+basic_filter"
    exp = tmp_path / spec
    _filter(tmp_path, exp, spec, world, workers=1)
    got = read_subset(exp / f"{spec}.npy")
    ref = []
    for name, params in (("clip_score", {"arch": "l14", "fraction": 0.3}), ("basic_filter", {})):
        run_filter(name, world.metadata, tmp_path / "ref" / f"{name}.npy", signals_dir=tmp_path / "sig", workers=1,
                   progress=False, **params)
        ref.append(read_subset(tmp_path / "ref" / f"{name}.npy"))
    want = intersect(*ref)
    assert 0 < got.shape[0] < min(r.shape[0] for r in ref)
    assert np.array_equal(got, want)
    assert load_experiment(exp, require_runs=False).size == got.shape[0]
