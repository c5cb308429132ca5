"""`datacomp demo` end to end on the small test world (tiny budget), and its resume path."""

from __future__ import annotations

import json
import math
import time

import pytest

from datacomp.demo import BASELINES, DEFAULT_FILTERS, run_demo
from datacomp.errors import DataCompError

# A test-only budget: the CLI always trains at the fixed `tiny` scale.
SMALL_BUDGET = {"train_num_samples": 512, "batch_size": 64, "warmup": 2, "num_checkpoints": 1}


def test_default_baselines_cover_the_issue():
    assert {"no_filter", "basic_filter", "clip_score_l14_30", "image_based_intersect_clip_score", "text_based",
            "laion2b"} <= set(DEFAULT_FILTERS)
    assert BASELINES["clip_score_l14_30"] == ("clip_score", {"arch": "l14", "fraction": 0.3})


def test_demo_refuses_bad_arguments(tmp_path):
    with pytest.raises(DataCompError, match="unknown demo baseline"):
        run_demo(tmp_path, filters=["no_such_filter"], progress=False)
    with pytest.raises(DataCompError, match="--seeds"):
        run_demo(tmp_path, seeds=0, progress=False)


@pytest.mark.slow
@pytest.mark.ci
def test_demo_end_to_end_on_test_world(world, tmp_path):
    out = tmp_path / "demo"
    names = ["no_filter", "clip_score_l14_30"]
    res = run_demo(out, seeds=1, filters=names, world=world, workers=2, train_overrides=SMALL_BUDGET,
                   progress=False, report_gallery=4)
    assert [r["name"] for r in res.rows] == names
    sizes = {r["name"]: r["size"] for r in res.rows}
    assert 0.25 < sizes["clip_score_l14_30"] / sizes["no_filter"] < 0.35  # top 30% of the pool by L/14 score
    for r in res.rows:
        for k in ("ImageNet", "VTAB", "Retrieval", "Average"):
            assert 0.0 <= r[k][0] <= 1.0 and not math.isnan(r[k][0])
    for n in names:
        exp = out / n
        assert (exp / f"{n}.npy").is_file() and list(exp.glob("*.summary.json"))
        assert (exp / "shards" / "meta.json").is_file()
        assert (exp / "seed0" / "checkpoints" / "epoch_latest.pt").is_file()
        assert (exp / "seed0" / "train_record.json").is_file()
        lines = (exp / "seed0" / "eval_results.jsonl").read_text().splitlines()
        assert lines and all("main_metric" in json.loads(x)["metrics"] for x in lines)
    page = res.report.read_text()
    assert 'id="leaderboard"' in page and page.count("data:image/png;base64,") >= 4
    rec = json.loads((out / "demo_record.json").read_text())
    assert rec["config"]["filters"] == names and rec["stage_seconds"]["train"] > 0

    # a re-run reuses every stage's output: nothing is retrained or re-evaluated
    ckpt = out / "no_filter" / "seed0" / "checkpoints" / "epoch_latest.pt"
    mtime = ckpt.stat().st_mtime_ns
    t0 = time.perf_counter()
    again = run_demo(out, seeds=1, filters=names, world=world, workers=2, train_overrides=SMALL_BUDGET,
                     progress=False, report_gallery=4)
    assert ckpt.stat().st_mtime_ns == mtime
    assert again.stage_seconds["train"] < 1.0 and again.stage_seconds["evaluate"] < 1.0
    assert [r["Average"] for r in again.rows] == [r["Average"] for r in res.rows]
    assert time.perf_counter() - t0 < 30
