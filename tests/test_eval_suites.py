"""Suites are data files and families are registered modules: a new family is one plug-in file plus one suite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datacomp.cli import main
from datacomp.errors import DataCompError
from datacomp.evaluate import (
    aggregate,
    aggregate_partial,
    evaluate,
    get_family,
    get_suite,
    list_families,
    list_suites,
    read_results,
)
from datacomp.evaluate.registry import SUITES_DIR, load_suite_file

PLUGIN_DIR = Path(__file__).parent / "eval_plugin"
PLUGIN = PLUGIN_DIR / "zeroshot_count.py"
SUITE = PLUGIN_DIR / "counting_suite.yaml"
MODEL = "datacomp-ref-b32"


@pytest.fixture(scope="module")
def ckpt():
    from datacomp.synth.embed import weights_path

    p = weights_path("b32")
    if not p.is_file():
        pytest.skip(f"{p}: the reference weights are not installed")
    return p


def test_packaged_suites_are_data_and_every_family_is_registered():
    assert set(list_suites()) >= {"datacomp", "embedded"}
    for name in list_suites():
        s = get_suite(name)
        raw = json.loads((SUITES_DIR / f"{name}.json").read_text())
        assert [t.key for t in s.tasks] == [t["key"] for t in raw["tasks"]]  # counts come from the file
        for t in s.tasks:
            assert get_family(t.family).name == t.family
    dc = get_suite("datacomp")
    assert {t.key: t.family for t in dc.tasks if t.key.startswith("wilds/")} == {
        "wilds/iwildcam": "wilds_class_avg", "wilds/camelyon17": "wilds_worst_group",
        "wilds/fmow": "wilds_worst_region"}  # chosen by the suite, not by the key's suffix
    assert dc.aggregates["imagenet_dist_shift"] == "ImageNet dist. shifts" and dc.average == "Average"
    assert {f.name for f in list_families()} >= {"zeroshot_classification", "retrieval", "winogavil", "fairness",
                                                 "fairface", "wilds_class_avg"}


def test_suite_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("tasks:\n  - key: a\n    name: A\n    family: no_such_family\n")
    with pytest.raises(DataCompError, match=r"s.yaml: task 'a': family 'no_such_family' is not registered .*--plugin"):
        get_suite(bad)
    bad.write_text("tasks:\n  - key: a\n    name: A\n    family: retrieval\n    aggregate: nowhere\n")
    with pytest.raises(DataCompError, match=r"aggregate 'nowhere' is not one of the suite's groups"):
        get_suite(bad)
    bad.write_text("tasks: [\n")
    with pytest.raises(DataCompError, match="not valid YAML"):
        get_suite(bad)
    bad.write_text("tasks:\n  - key: a\n    name: A\n    family: retrieval\n    size: many\n")
    with pytest.raises(DataCompError, match="size must be a non-negative integer"):
        get_suite(bad)
    legacy = tmp_path / "eval_tasks.json"  # a bare list, as worlds wrote before suites had a header
    legacy.write_text(json.dumps([{"key": "a", "name": "A", "family": "retrieval", "main_metric": "mean_recall@1"}]))
    s = load_suite_file(legacy)
    assert s.name == "eval_tasks" and s.tasks[0].aggregate == "retrieval"  # the family's default group
    with pytest.raises(DataCompError, match="unknown suite 'nope'"):
        get_suite("nope")


def _lines(keys: list[str], seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"key": k, "dataset": k, "metrics": {"main_metric": float(rng.uniform())}} for k in keys]


def test_adding_a_task_keeps_existing_aggregates(tmp_path):
    emb = get_suite("embedded")
    lines = _lines([t.key for t in emb.scored])
    base = aggregate(lines, "embedded")
    mine = tmp_path / "mine.json"
    doc = json.loads((SUITES_DIR / "embedded.json").read_text())
    doc["suite"] = "mine"
    doc["tasks"].append({"key": "user/new", "name": "New", "family": "zeroshot_classification",
                         "main_metric": "acc1", "aggregate": None})
    mine.write_text(json.dumps(doc))
    new_line = _lines(["user/new"], seed=1)
    # the packaged suite ignores the user's extra task: same numbers
    assert aggregate(lines + new_line, "embedded") == base
    # the user's suite: every group the new task is not in is unchanged; the Average waits for it
    part = aggregate_partial(lines, mine)
    assert part.missing == ["user/new"] and part.values["Average"] is None
    assert {k: v for k, v in part.values.items() if k != "Average"} == {k: v for k, v in base.items() if k != "Average"}
    with pytest.raises(DataCompError, match=r"missing 1 \(user/new\)"):
        aggregate(lines, mine)
    full = aggregate(lines + new_line, mine)
    main = [r["metrics"]["main_metric"] for r in lines + new_line]
    assert full["Average"] == pytest.approx(np.mean(main)) and full["VTAB"] == base["VTAB"]
    # the report aggregates a run with the suite its eval_record.json names
    from datacomp.report.experiments import load_experiment

    run_dir = tmp_path / "exp" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "eval_results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines + new_line))
    (run_dir / "eval_record.json").write_text(json.dumps({"config": {"suite": "mine", "suite_file": str(mine)}}))
    assert load_experiment(tmp_path / "exp").runs[0].aggregates["Average"] == pytest.approx(np.mean(main))


def test_plugin_family_and_user_suite_end_to_end(world, ckpt, tmp_path, capsys):
    """A family added by one module outside the package and one YAML suite file: evaluated, aggregated, listed."""
    out = tmp_path / "o"
    res = evaluate(out, model=MODEL, checkpoint=ckpt, suite=SUITE, plugins=[str(PLUGIN)], data_dir=world.eval_suite,
                   device="cpu", progress=False)
    by = {r["key"]: r["metrics"] for r in res}
    assert list(by) == ["embedded/count", "embedded/shapes", "embedded/retrieval"]
    c = by["embedded/count"]
    assert c["main_metric"] == c["acc_within_1"] and c["n_samples"] == 100  # the world's manifest count
    assert c["acc1"] <= c["acc_within_1"] <= 1 and (1 - c["acc1"]) <= c["count_mae"] <= 3 * (1 - c["acc1"])
    # the plugin's accuracy is the built-in zero-shot family's on the same task and model
    builtin = evaluate(tmp_path / "b", model=MODEL, checkpoint=ckpt, suite="embedded", tasks=["embedded/count"],
                       data_dir=world.eval_suite, device="cpu", progress=False)[0]["metrics"]
    assert c["acc1"] == builtin["acc1"] and 0.5 < c["acc1"] < 1  # a trained model: non-trivial
    agg = aggregate(res, get_suite(SUITE))
    assert agg == pytest.approx({"ImageNet": by["embedded/shapes"]["acc1"], "Counting": c["acc_within_1"],
                                 "Retrieval": by["embedded/retrieval"]["mean_recall@1"],
                                 "Average": np.mean([r["metrics"]["main_metric"] for r in res])})
    rec = json.loads((out / "eval_record.json").read_text())["config"]
    assert rec["suite"] == "counting" and rec["suite_file"] == str(SUITE)
    # the CLI: listing needs the plugin too; without it, one line naming the family and the flag
    assert main(["tasks", "--suite", str(SUITE), "--plugin", str(PLUGIN)]) == 0
    assert "counting suite: 3 tasks, 3 scored" in capsys.readouterr().out
    assert main(["tasks", "--families", "--plugin", str(PLUGIN)]) == 0
    assert "zeroshot_count" in capsys.readouterr().out
    argv = ["evaluate", "--model", MODEL, "--checkpoint", str(ckpt), "--suite", str(SUITE), "--data-dir",
            str(world.eval_suite), "--output-dir", str(out), "--no-progress", "--device", "cpu"]
    fresh = subprocess.run([sys.executable, "-m", "datacomp", "-q", *argv], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    err = fresh.stderr.strip()  # a fresh process, where no plugin is registered yet
    assert fresh.returncode == 2 and err.count("\n") == 0, err
    assert "family 'zeroshot_count' is not registered" in err and "--plugin FILE" in err
    before = (out / "eval_results.jsonl").read_bytes()
    assert main([*argv, "--plugin", str(PLUGIN)]) == 0  # resumes: nothing re-runs
    printed = capsys.readouterr().out
    assert "Counting" in printed and "counting suite" in printed
    assert (out / "eval_results.jsonl").read_bytes() == before and len(read_results(out / "eval_results.jsonl")) == 3


def test_a_failing_plugin_family_is_one_line(world, tmp_path):
    plugin = tmp_path / "broken_family.py"
    plugin.write_text(
        "from datacomp.evaluate.families import Family, register_family, get_family\n"
        "def run(r):\n    raise ZeroDivisionError('oops')\n"
        "register_family(Family('broken_test_family', run, get_family('zeroshot_classification').load_sample))\n")
    suite = tmp_path / "s.json"
    suite.write_text(json.dumps({"tasks": [{"key": "embedded/count", "name": "C", "family": "broken_test_family",
                                            "main_metric": "acc1"}]}))
    with pytest.raises(DataCompError, match=r"task embedded/count: the 'broken_test_family' family \(a plug-in, .*\) "
                                            r"failed: ZeroDivisionError: oops"):
        evaluate(tmp_path / "o", model="datacomp-tiny-rn", suite=suite, plugins=[str(plugin)],
                 data_dir=world.eval_suite, device="cpu", progress=False)
    assert not (tmp_path / "o" / "eval_results.jsonl").exists()
