"""Evaluation refuses short or damaged sets in one line, never runs twice on one folder, repairs its results file."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from datacomp.cli import main
from datacomp.errors import DataCompError
from datacomp.evaluate import evaluate, read_results
from datacomp.evaluate.results import DAMAGED_SUFFIX, ResultsFile, parse_line
from datacomp.pool.shards import TarSampleWriter, iter_tar_samples

MODEL = "datacomp-tiny-rn"
SRC = str(Path(__file__).resolve().parents[1] / "src")
COLOURS = ["red", "green", "blue"]
RGB = np.array([[220, 30, 30], [30, 200, 40], [40, 60, 220]], dtype=np.uint8)


def _png(c: int, rng: np.random.Generator) -> bytes:
    from PIL import Image

    img = np.clip(rng.normal(128, 30, size=(24, 24, 3)), 0, 255).astype(np.uint8)
    img[6:18, 6:18] = RGB[c]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _write_shard(path: Path, samples: list[tuple[str, dict]]) -> None:
    with TarSampleWriter(path, mtime=0) as w:
        for key, members in samples:
            w.write(key, members)


def make_suite(root: Path, n: int = 40, sizes: tuple[int, int] = (40, 24)) -> Path:
    """Two classification tasks (two shards for the first) and a suite file naming their sizes."""
    rng = np.random.default_rng(0)
    for name, count, shards in (("t-colours", n, 2), ("t-small", 24, 1)):
        d = root / name
        (d / "test").mkdir(parents=True)
        samples = [(f"s{i:05d}", {"png": _png(i % 3, rng), "cls": str(i % 3)}) for i in range(count)]
        per = -(-count // shards)
        for s in range(shards):
            _write_shard(d / "test" / f"{s}.tar", samples[s * per:(s + 1) * per])
        (d / "test" / "nshards.txt").write_text(f"{shards}\n")
        (d / "classnames.txt").write_text("\n".join(COLOURS) + "\n")
        (d / "zeroshot_classification_templates.txt").write_text("a {c} square.\n{c}\n")
    suite = {"suite": "t", "aggregates": {"imagenet": "ImageNet", "vtab": "VTAB"}, "tasks": [
        {"key": "t/colours", "name": "Colours", "family": "zeroshot_classification", "main_metric": "acc1",
         "size": sizes[0], "aggregate": "imagenet"},
        {"key": "t/small", "name": "Small", "family": "zeroshot_classification", "main_metric": "acc1",
         "size": sizes[1], "aggregate": "vtab"}]}
    f = root / "suite.json"
    f.write_text(json.dumps(suite))
    return f


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    return root, make_suite(root)


def _eval(out, data, **kw):
    root, suite = data
    return evaluate(out, model=MODEL, suite=suite, data_dir=root, progress=False, device="cpu", **kw)


def _cli(out, data, *extra):
    root, suite = data
    return main(["evaluate", "--model", MODEL, "--suite", str(suite), "--data-dir", str(root), "--output-dir",
                 str(out), "--no-progress", "--device", "cpu", *extra])


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------------------------
# sample counts


def _cut(tar: Path, keep: int) -> None:
    """Rewrite a shard with only its first ``keep`` samples (a tar cut at a sample boundary)."""
    samples = [(k, dict(m)) for k, m in iter_tar_samples(tar)][:keep]
    samples = [(k, {e: bytes(v) for e, v in m.items()}) for k, m in samples]
    tar.unlink()
    _write_shard(tar, samples)


def test_a_set_cut_at_a_sample_boundary_is_refused(data, tmp_path, capsys):
    root, suite = data
    _cut(root / "t-colours" / "test" / "1.tar", 10)  # 20 + 10 of 40
    with pytest.raises(DataCompError, match=r"task t/colours: .* holds 30 samples, expected 40 \(the suite size\)"):
        _eval(tmp_path / "o", data)
    assert not (tmp_path / "o" / "eval_results.jsonl").exists()  # refused before anything ran
    rc = _cli(tmp_path / "o", data)
    assert rc == 2 and "holds 30 samples, expected 40" in _one_error_line(capsys.readouterr().err)
    # the task's own manifest is checked first (an embedded world at test scale carries one)
    (root / "t-colours" / "manifest.json").write_text('{"samples": 30}')
    res = _eval(tmp_path / "o", data)
    assert {r["key"]: r["metrics"]["n_samples"] for r in res} == {"t/colours": 30, "t/small": 24}
    (root / "t-colours" / "manifest.json").write_text('{"samples": 31}')
    with pytest.raises(DataCompError, match=r"holds 30 samples, expected 31 \(its manifest.json\)"):
        _eval(tmp_path / "o", data, force=True)


def test_the_count_scored_is_checked_too(data, tmp_path):
    """A sample the loader cannot use (no image) is an error naming tar and key, not a silently shorter set."""
    root, _ = data
    tar = root / "t-small" / "test" / "0.tar"
    samples = [(k, {e: bytes(v) for e, v in m.items()}) for k, m in iter_tar_samples(tar)]
    samples[5] = (samples[5][0], {"cls": b"1", "txt": b"no image here"})
    tar.unlink()
    _write_shard(tar, samples)
    with pytest.raises(DataCompError, match=r"0\.tar: sample s00005 has no image"):
        _eval(tmp_path / "o", data, tasks=["t/small"])


@pytest.mark.parametrize(("member", "value", "message"), [
    ("png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, r"0\.tar: sample s00003: image does not decode"),
    ("png", b"not an image at all", r"0\.tar: sample s00003: image does not decode"),
    ("cls", b"three", r"0\.tar: sample s00003: cls is b'three', not an integer class index"),
    ("cls", b"1.5", r"0\.tar: sample s00003: cls is b'1.5', not an integer"),
])
def test_a_damaged_sample_is_one_line_naming_tar_and_key(data, tmp_path, capsys, member, value, message):
    root, _ = data
    tar = root / "t-small" / "test" / "0.tar"
    samples = [(k, {e: bytes(v) for e, v in m.items()}) for k, m in iter_tar_samples(tar)]
    samples[3][1][member] = value
    tar.unlink()
    _write_shard(tar, samples)
    with pytest.raises(DataCompError, match=message):
        _eval(tmp_path / "o", data, tasks=["t/small"])
    assert _cli(tmp_path / "o2", data, "--tasks", "t/small") == 2
    _one_error_line(capsys.readouterr().err)


def test_damaged_task_files_are_one_line(data, tmp_path, capsys):
    root, _ = data
    (root / "t-small" / "test" / "nshards.txt").write_text("one\n")
    with pytest.raises(DataCompError, match=r"nshards.txt: the shard count is b'one', not a non-negative integer"):
        _eval(tmp_path / "o", data, tasks=["t/small"])
    (root / "t-small" / "test" / "nshards.txt").write_text("1\n")
    (root / "t-small" / "manifest.json").write_text("[1, 2]")
    assert _cli(tmp_path / "o", data, "--tasks", "t/small") == 2
    assert "manifest.json: expected {\"samples\": <count>}" in _one_error_line(capsys.readouterr().err)
    (root / "t-small" / "manifest.json").unlink()
    (root / "t-small" / "classnames.txt").write_bytes(b"\xff\xfe red\n")
    with pytest.raises(DataCompError, match="classnames.txt: not UTF-8"):
        _eval(tmp_path / "o", data, tasks=["t/small"])


def test_metadata_of_the_wrong_shape_is_one_line(tmp_path):
    root = tmp_path / "data"
    suite = make_suite(root)
    doc = json.loads(suite.read_text())
    doc["tasks"][1].update(family="fairness", main_metric="acc_wg", metadata_fields=["region", "y"],
                           group_field="region")
    suite.write_text(json.dumps(doc))
    tar = root / "t-small" / "test" / "0.tar"
    samples = [(k, {e: bytes(v) for e, v in m.items()}) for k, m in iter_tar_samples(tar)]
    for i, (_, m) in enumerate(samples):
        buf = io.BytesIO()
        np.save(buf, np.array([i % 2, 0, 7] if i == 4 else [i % 2, 0], dtype=np.int64))
        m["npy"] = buf.getvalue()
    tar.unlink()
    _write_shard(tar, samples)
    with pytest.raises(DataCompError, match=r"sample s00004: npy metadata has 3 values, the suite names 2"):
        _eval(tmp_path / "o", (root, suite), tasks=["t/small"])


# ----------------------------------------------------------------------------------------------
# one run per output folder


_HOLD = """
import sys, time
from pathlib import Path
from datacomp.evaluate.results import ResultsFile
with ResultsFile(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_a_second_run_on_the_same_folder_stops_with_one_line(data, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": SRC}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out / "eval_results.jsonl")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _cli(out, data) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert "another run holds this output (" in line and "eval_results.jsonl" in line
        assert not (out / "eval_results.jsonl").exists()
    finally:
        holder.communicate("\n", timeout=60)
    assert _cli(out, data) == 0  # the lock went with its holder
    assert [r["key"] for r in read_results(out / "eval_results.jsonl")] == ["t/colours", "t/small"]


def test_two_concurrent_runs_never_duplicate_lines(data, tmp_path):
    root, suite = data
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "datacomp", "-q", "evaluate", "--model", MODEL, "--suite", str(suite), "--data-dir",
           str(root), "--output-dir", str(out), "--no-progress", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": SRC}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    done = [p.communicate(timeout=300) for p in procs]
    rcs = sorted(p.returncode for p in procs)
    assert rcs in ([0, 0], [0, 2]), done
    for p, (_, err) in zip(procs, done, strict=True):
        if p.returncode == 2:
            assert "another run holds this output" in _one_error_line(err)
    raw = (out / "eval_results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["key"] for x in raw) == ["t/colours", "t/small"]  # one line per task


# ----------------------------------------------------------------------------------------------
# a damaged results file


def test_a_damaged_results_file_is_repaired_and_its_tasks_rerun(data, tmp_path, caplog):
    clean = _eval(tmp_path / "clean", data)
    out = tmp_path / "o"
    shutil.copytree(tmp_path / "clean", out)
    lines = (out / "eval_results.jsonl").read_text().splitlines()
    small = json.loads(lines[1])
    damaged = "\n".join([
        "garbage {{{",
        lines[0],
        json.dumps({"key": 5, "dataset": "Small", "metrics": {}}),  # ill-typed
        json.dumps({**small, "metrics": {**small["metrics"], "main_metric": "high"}}),  # ill-typed metric
        "[1, 2, 3]",
        '{"key": "t/small", "metr',  # torn, no newline
    ])
    (out / "eval_results.jsonl").write_text(damaged)
    with pytest.raises(DataCompError, match=r"eval_results.jsonl:1: not a JSON line .*re-run `datacomp evaluate`"):
        read_results(out / "eval_results.jsonl")
    with caplog.at_level(logging.WARNING, logger="datacomp.evaluate.results"):
        res = _eval(out, data)
    assert res == clean  # t/small evaluated again, same numbers; t/colours kept
    assert read_results(out / "eval_results.jsonl") == clean
    assert (out / ("eval_results.jsonl" + DAMAGED_SUFFIX)).read_text() == damaged
    dropped = [r.getMessage() for r in caplog.records if "dropped a damaged line" in r.getMessage()]
    assert len(dropped) == 5 and "jsonl:1:" in dropped[0] and "jsonl:6:" in dropped[-1]


def test_nan_reads_as_null_for_every_reader(tmp_path):
    """The original wrote NaN tokens; evaluate, aggregate and report read them through one rule."""
    from datacomp.report.experiments import load_experiment, main_metrics

    p = tmp_path / "run" / "eval_results.jsonl"
    p.parent.mkdir()
    p.write_text('{"key": "cifar10", "dataset": "CIFAR-10", "metrics": {"acc1": 0.5, "acc5": NaN, '
                 '"main_metric": 0.5}}\n{"key": "mnist", "dataset": "MNIST", "metrics": {"main_metric": NaN}}\n')
    rows = read_results(p)
    assert rows[0]["metrics"]["acc5"] is None and rows[1]["metrics"]["main_metric"] is None
    run = load_experiment(p).runs[0]
    assert run.results == rows and main_metrics(rows) == {"CIFAR-10": 0.5}
    with ResultsFile(p) as rf:  # a valid file is left byte for byte as it is
        assert set(rf.lines) == {"cifar10", "mnist"}
    assert "NaN" in p.read_text() and not (p.parent / ("eval_results.jsonl" + DAMAGED_SUFFIX)).exists()


# ----------------------------------------------------------------------------------------------
# fuzz: every results file reads to rows or one DataCompError; every one is repaired to a valid file


def _valid(i: int) -> dict:
    return {"key": f"task/{i}", "dataset": f"Task {i}", "metrics": {"acc1": i / 10, "main_metric": i / 10}}


@pytest.mark.fuzz
def test_results_reader_fuzz(tmp_path):
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                               lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                               max_leaves=8)
    ill_typed = st.fixed_dictionaries({"key": json_values, "dataset": json_values, "metrics": json_values})
    line = st.one_of(
        st.integers(0, 5).map(lambda i: json.dumps(_valid(i)).encode()),
        ill_typed.map(lambda d: json.dumps(d).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),
    )
    files = st.tuples(st.lists(line, max_size=8), st.booleans())
    seen = {"n": 0}

    @hypothesis.settings(max_examples=200, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(files)
    def check(f):
        seen["n"] += 1
        lines, torn = f
        d = tmp_path / f"f{seen['n']}"
        d.mkdir()
        p = d / "eval_results.jsonl"
        data = b"\n".join(lines) + (b"" if torn else b"\n")
        p.write_bytes(data)
        valid_keys = []
        for raw in lines[:-1] if torn else lines:
            row = parse_line(raw) if raw.strip() else None
            if isinstance(row, dict):
                valid_keys.append(str(row.get("key") or row.get("dataset")))
        t0 = time.monotonic()
        try:
            rows = read_results(p)
            assert [str(r.get("key") or r.get("dataset")) for r in rows] == valid_keys
        except DataCompError as e:
            assert "\n" not in str(e)
        with ResultsFile(p) as rf:
            assert list(rf.lines) == list(dict.fromkeys(reversed(valid_keys)))[::-1] or \
                set(rf.lines) == set(valid_keys)
        repaired = read_results(p)  # valid now, strictly
        assert {str(r.get("key") or r.get("dataset")) for r in repaired} == set(valid_keys)
        assert time.monotonic() - t0 < 5

    check()
    assert seen["n"] >= 200
