"""The HTML report, rendered in headless Chromium, and the leaderboard against the paper's Table 3."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from datacomp.errors import DataCompError
from datacomp.report import build_report, leaderboard_rows, load_experiment, load_experiments, paper_rows
from datacomp.report.leaderboard import compare_to_paper
from test_report_fixtures import make_experiment, make_pool

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def exps(tmp_path_factory):
    root = tmp_path_factory.mktemp("exps")
    pool, uids, scores = make_pool(root)
    dirs = [make_experiment(root / "runs", "no_filter", uids, scores, 1.0, 0.20),
            make_experiment(root / "runs", "clip_score_30", uids, scores, 0.3, 0.30)]
    return pool, dirs


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; CI must install it (.ci/run: apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return exe


def run_chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    profile.mkdir()
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def test_experiment_stats_mean_and_spread(exps):
    _, dirs = exps
    e = load_experiment(dirs[1])
    assert e.size == 90 and e.subset.name == "clip_score_30.npy"
    assert len(e.runs) == 2 and [r.seed for r in e.runs] == [0, 1]
    st = e.stats()
    avgs = [r.aggregates["Average"] for r in e.runs]
    assert st["Average"][0] == pytest.approx(np.mean(avgs))
    assert st["Average"][1] == pytest.approx(np.std(avgs, ddof=1))
    assert st["Average"][2] == 2
    assert st["ImageNet"][0] == pytest.approx(np.mean([r.tasks["ImageNet 1k"] for r in e.runs]))


def test_report_renders_in_chromium(exps, tmp_path):
    pool, dirs = exps
    out = build_report(load_experiments(dirs), tmp_path / "report.html", pool=pool, gallery_size=5)
    page = out.read_text()
    assert "<link" not in page and "<script" not in page  # self-contained
    dom = run_chromium(tmp_path, "--dump-dom", out.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    table = re.search(r'<table id="leaderboard">(.*?)</table>', html, re.S)
    assert table, "leaderboard table missing from the rendered DOM"
    assert table.group(1).count("<tr") == 3  # header + 2 experiments
    assert "clip_score_30" in table.group(1) and "±" in table.group(1)
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', html)) >= 5  # bar, scatter, heat map, funnels, hists
    kept = re.search(r'gallery-kept">(.*?)</div></div>', html, re.S)
    assert kept and kept.group(1).count('src="data:image/jpeg;base64,') >= 1
    assert html.count('class="card dropped"') == 5  # only clip_score_30 drops anything
    assert "caption " in html
    shot = tmp_path / "report.png"
    res = run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars",
                       out.as_uri())
    assert res.returncode == 0 and shot.is_file()
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (1600, 1200) and img.std() > 10  # rendered content, not a blank page


def test_report_refuses_empty_and_missing(tmp_path):
    with pytest.raises(DataCompError, match="no experiments"):
        build_report([], tmp_path / "r.html")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataCompError, match="eval_results.jsonl"):
        load_experiment(tmp_path / "empty")


def test_leaderboard_matches_paper_table3():
    small = {r["baseline"]: r for r in paper_rows("small")}
    assert small["no_filter"]["Average"] == 0.132 and small["no_filter"]["size"] == 12_800_000
    assert small["clip_score_l14_30"]["ImageNet"] == 0.051 and small["clip_score_l14_30"]["VTAB"] == 0.190
    medium = {r["baseline"]: r for r in paper_rows("medium")}
    assert medium["image_based_intersect_clip_score"]["ImageNet"] == 0.297
    xl = {r["baseline"]: r for r in paper_rows("xlarge")}
    assert xl["image_based_intersect_clip_score"]["Average"] == 0.663
    assert len(paper_rows("large")) == 9 and len(paper_rows("xlarge")) == 5
    with pytest.raises(DataCompError, match="no baselines for scale 'tiny'"):
        paper_rows("tiny")


def test_leaderboard_places_results_against_paper(exps):
    _, dirs = exps
    rows = leaderboard_rows(load_experiments(dirs))
    cmp = {c["name"]: c for c in compare_to_paper(rows, "small")}
    # clip_score_30 averages about 0.30: above every small-scale paper row (best 0.173)
    assert len(cmp["clip_score_30"]["beats"]) == len(paper_rows("small"))
    assert cmp["clip_score_30"]["delta_vs_best"] == pytest.approx(rows[1]["Average"][0] - 0.173)
    assert not math.isnan(rows[0]["Average"][0])


def test_leaderboard_cli(exps, capsys):
    from datacomp.cli import main

    _, dirs = exps
    assert main(["leaderboard", "--scale", "small", *map(str, dirs)]) == 0
    out = capsys.readouterr().out
    assert "paper: CLIP score (L/14, 30%)" in out and "0.173" in out and "clip_score_30" in out
    assert "beats 9 of 9 paper baselines" in out


def test_report_shows_an_untrained_empty_subset(exps, tmp_path):
    from datacomp.io import write_json_atomic
    from datacomp.uids import UID_DTYPE, write_subset

    pool, dirs = exps
    empty = tmp_path / "laion2b"
    empty.mkdir()
    write_subset(empty / "laion2b.npy", np.zeros(0, UID_DTYPE))
    write_json_atomic(empty / "laion2b.summary.json", {"pool_size": 300, "kept": 0, "removed": {"b32>=0.28": 300}})
    with pytest.raises(DataCompError, match="no eval_results.jsonl"):
        load_experiment(empty)
    exps_ = load_experiments([*dirs, empty], require_runs=False)
    rows = leaderboard_rows(exps_)
    assert rows[2]["size"] == 0 and math.isnan(rows[2]["Average"][0]) and rows[2]["seeds"] == 0
    page = build_report(exps_, tmp_path / "r.html", pool=pool, gallery_size=2).read_text()
    assert "<td>laion2b</td><td class=\"num\">0</td><td class=\"num\">-</td>" in page
