"""Filter fidelity edges (issue #15 part B): duplicate uids, NaN in ``--where``, float32 thresholds,
the official five-part targets, no torch import for CPU work, bad embeddings, one run per output."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datacomp.errors import DataCompError
from datacomp.filters import run_filter
from datacomp.filters.clusters import load_matrix
from datacomp.uids import hex_to_uids, read_subset, sort_uids, unique
from test_filter_world import make_pool

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def base_pool(tmp_path_factory) -> Path:
    return make_pool(tmp_path_factory.mktemp("fid_pool"), files=3, rows=300)


def _copy_pool(base: Path, tmp: Path) -> Path:
    root = tmp / "p"
    shutil.copytree(base.parent.parent, root)
    return root / "pool" / "metadata"


def _set_column(parquet: Path, col: str, values) -> None:
    t = pq.read_table(parquet)
    i = t.schema.get_field_index(col)
    t = t.set_column(i, col, pa.array(values, t.schema.field(col).type))
    pq.write_table(t, parquet)


def _run(name, meta: Path, out: Path, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    s = run_filter(name, meta, out, signals_dir=out.parent / "signals", **kw)
    return read_subset(out), s


def _all_rows(meta: Path, cols: list[str]):
    return pa.concat_tables([pq.read_table(f, columns=cols) for f in sorted(meta.glob("*.parquet"))])


# --- 1. duplicate uids across metadata files ------------------------------------------------------


def test_duplicate_uids_across_files_are_reported_and_deduplicated(base_pool, tmp_path, caplog):
    meta = _copy_pool(base_pool, tmp_path)
    f0, f1 = sorted(meta.glob("*.parquet"))[:2]
    dup = pq.read_table(f0, columns=["uid"])["uid"][5].as_py()
    uids1 = pq.read_table(f1, columns=["uid"])["uid"].to_pylist()
    uids1[7] = dup
    _set_column(f1, "uid", uids1)
    every = _all_rows(meta, ["uid"])["uid"].to_pylist()
    with caplog.at_level(logging.WARNING, logger="datacomp"):
        got, s = _run("no_filter", meta, tmp_path / "out" / "all.npy")
    want = unique(hex_to_uids(np.asarray(every, "U32")))
    assert len(set(every)) == len(every) - 1
    assert np.array_equal(got, want) and got.size == len(every) - 1  # sorted, unique
    d = s["duplicate_uids"]
    assert d["count"] == 1 and d["example"] == dup and d["files"] == [f0.name, f1.name]
    assert s["kept"] == got.size
    assert any(dup in r.getMessage() and f1.name in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


# --- 2. --where treats NaN as failing every comparison ---------------------------------------------


def test_where_drops_nan_scores_like_the_named_rule(base_pool, tmp_path):
    meta = _copy_pool(base_pool, tmp_path)
    rng = np.random.default_rng(3)
    for f in sorted(meta.glob("*.parquet")):
        s = pq.read_table(f, columns=["clip_l14_similarity_score"])[0].to_numpy().copy()
        s[rng.random(s.size) < 0.2] = np.nan
        _set_column(f, "clip_l14_similarity_score", s)
    out = tmp_path / "out"
    named, _ = _run("clip_score", meta, out / "named.npy", threshold=0.3, arch="l14")
    got, _ = _run(None, meta, out / "where.npy", where="clip_l14_similarity_score >= 0.3")
    neg, _ = _run(None, meta, out / "neg.npy", where="NOT (clip_l14_similarity_score < 0.3)")
    t = _all_rows(meta, ["uid", "clip_l14_similarity_score"])
    col = t["clip_l14_similarity_score"].to_numpy()
    assert np.isnan(col).sum() > 50
    with np.errstate(invalid="ignore"):
        ref = sort_uids(hex_to_uids(t["uid"].to_numpy(zero_copy_only=False)[col >= np.float32(0.3)]))
    assert np.array_equal(named, ref)
    assert np.array_equal(got, ref)
    assert np.array_equal(neg, ref)


# --- 3. thresholds compared in float32 against a float32 column ----------------------------------

LOW_F32 = (0.16, 0.19, 0.21, 0.22, 0.24, 0.26, 0.29, 0.32, 0.35, 0.38, 0.39)


def test_threshold_compares_in_float32_like_the_original(base_pool, tmp_path):
    assert all(np.float64(np.float32(t)) < t for t in LOW_F32)
    meta = _copy_pool(base_pool, tmp_path)
    rng = np.random.default_rng(5)
    planted = np.asarray([np.float32(t) for t in LOW_F32], np.float32)
    for f in sorted(meta.glob("*.parquet")):
        s = pq.read_table(f, columns=["clip_l14_similarity_score"])[0].to_numpy().copy()
        at = rng.random(s.size) < 0.5
        s[at] = planted[rng.integers(planted.size, size=int(at.sum()))]
        _set_column(f, "clip_l14_similarity_score", s)
    t = _all_rows(meta, ["uid", "clip_l14_similarity_score"])
    col = t["clip_l14_similarity_score"].to_numpy()
    assert col.dtype == np.float32
    uids = t["uid"].to_numpy(zero_copy_only=False)
    for th in (0.16, 0.22, 0.29, 0.32, 0.39):
        got, s = _run("clip_score", meta, tmp_path / "out" / f"t{th}.npy", threshold=th, arch="l14")
        ref = col >= np.float32(th)
        assert (col == np.float32(th)).sum() > 10
        assert np.array_equal(got, sort_uids(hex_to_uids(uids[ref]))), th


# --- 4. targets: the official five parts, safe loading ----------------------------------------------


def _save_parts(d: Path, parts: list[np.ndarray]) -> None:
    import torch

    d.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(parts):
        torch.save({"image_features": torch.from_numpy(p).half(), "labels": torch.arange(p.shape[0])},
                   d / f"in1k_clip_vit_l14_{i}.pt")


def test_targets_directory_of_five_parts_is_concatenated_in_order(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(3 + i, 8)).astype(np.float16).astype(np.float32) for i in range(5)]
    d = tmp_path / "in1k"
    _save_parts(d, parts)
    got = load_matrix(d, "target (ImageNet) embeddings")
    assert np.array_equal(got, np.concatenate(parts))


def test_partial_targets_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "in1k"
    _save_parts(d, [rng.normal(size=(3, 8)).astype(np.float32) for _ in range(5)])
    with pytest.raises(DataCompError, match="five") as e:
        load_matrix(d / "in1k_clip_vit_l14_0.pt", "target (ImageNet) embeddings")
    assert "\n" not in str(e.value)
    (d / "in1k_clip_vit_l14_3.pt").unlink()
    with pytest.raises(DataCompError, match="in1k_clip_vit_l14_3.pt") as e:
        load_matrix(d, "target (ImageNet) embeddings")
    assert "\n" not in str(e.value)


def test_official_centroid_pt_layout_loads(tmp_path):
    import torch

    c = np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32)
    torch.save(c, tmp_path / "small_centroids_l14.pt")  # the official files: a pickled numpy array
    assert np.array_equal(load_matrix(tmp_path / "small_centroids_l14.pt", "centroids"), c)
    # as numpy 1 wrote them (the official files' era): numpy.core.multiarray._reconstruct
    import zipfile

    with zipfile.ZipFile(tmp_path / "small_centroids_l14.pt") as z:
        members = {i: z.read(i) for i in z.infolist()}
    with zipfile.ZipFile(tmp_path / "old.pt", "w", zipfile.ZIP_STORED) as z:
        for info, data in members.items():
            z.writestr(info, data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
                       if info.filename.endswith("data.pkl") else data)
    assert np.array_equal(load_matrix(tmp_path / "old.pt", "centroids"), c)


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pt_payload_does_not_run(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    bad = tmp_path / "centroids.pt"
    torch.save({"image_features": _Payload(str(marker))}, bad)
    assert not marker.exists()
    with pytest.raises(DataCompError, match="centroids.pt"):
        load_matrix(bad, "centroids")
    assert not marker.exists()


# --- 5. image_based decides GPU use without importing torch ----------------------------------------


def test_image_based_does_not_import_torch(base_pool, tmp_path):
    meta = _copy_pool(base_pool, tmp_path)
    code = textwrap.dedent(f"""
        import sys
        from datacomp.filters import run_filter
        s = run_filter("image_based", {str(meta)!r}, {str(tmp_path / 'o' / 'ib.npy')!r}, workers=1,
                       progress=False, num_clusters=8)
        assert s["kept"] > 0, s
        print("TORCH", "torch" in sys.modules)
    """)
    env = {**os.environ, "PYTHONPATH": SRC}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "TORCH False" in r.stdout


# --- 6. non-finite embeddings and wrong dimensions -------------------------------------------------


def _rewrite_npz(npz: Path, key: str, fn) -> None:
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[key] = fn(arrays[key])
    np.savez(npz, **arrays)


def _nan_row(a):
    a = a.copy()
    a[4, 2] = np.nan
    return a


def _inf_row(a):
    a = a.copy()
    a[9, 0] = np.inf
    return a


@pytest.mark.parametrize("fn, match", [(_nan_row, "non-finite"), (_inf_row, "non-finite"),
                                       (lambda a: a[:, :-3], "dimension")])
def test_bad_embeddings_give_one_line(base_pool, tmp_path, fn, match):
    meta = _copy_pool(base_pool, tmp_path)
    npz = sorted(meta.glob("*.npz"))[1]
    _rewrite_npz(npz, "l14_img", fn)
    cents = np.random.default_rng(0).normal(size=(6, 32)).astype(np.float32)
    np.save(tmp_path / "c.npy", cents)
    with pytest.raises(DataCompError, match=match) as e:
        _run("image_based", meta, tmp_path / "out" / "ib.npy", centroids=tmp_path / "c.npy")
    msg = str(e.value)
    assert "\n" not in msg and npz.name in msg and "l14_img" in msg


def test_bad_embeddings_refused_when_building_centroids(base_pool, tmp_path):
    from datacomp.filters.clusters import build_centroids

    meta = _copy_pool(base_pool, tmp_path)
    npz = sorted(meta.glob("*.npz"))[2]
    _rewrite_npz(npz, "l14_img", _nan_row)
    with pytest.raises(DataCompError, match="non-finite") as e:
        build_centroids(meta, tmp_path / "c.npy", num_clusters=4, caption_filter=False)
    assert npz.name in str(e.value)
    _rewrite_npz(npz, "l14_img", lambda a: np.nan_to_num(a)[:, :16])
    with pytest.raises(DataCompError, match="dimension") as e:
        build_centroids(meta, tmp_path / "c.npy", num_clusters=4, caption_filter=False)
    assert npz.name in str(e.value)


def test_targets_of_another_dimension_are_named(base_pool, tmp_path):
    meta = _copy_pool(base_pool, tmp_path)
    np.save(tmp_path / "t.npy", np.ones((5, 16), np.float32))
    np.save(tmp_path / "c.npy", np.ones((4, 32), np.float32))
    with pytest.raises(DataCompError, match="t.npy") as e:
        _run("image_based", meta, tmp_path / "out" / "ib.npy", centroids=tmp_path / "c.npy",
             targets=tmp_path / "t.npy")
    assert "\n" not in str(e.value)


# --- 7. one run per output -------------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from datacomp.io import output_lock
    with output_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _holder(target: Path, seconds: float = 60.0) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(target), str(seconds)], stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": SRC})
    assert p.stdout.readline().strip() == "held"
    return p


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datacomp", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": SRC}, timeout=300)


def test_second_filter_on_one_output_gets_one_line(base_pool, tmp_path):
    out = tmp_path / "out" / "s.npy"
    out.parent.mkdir()
    holder = _holder(out)
    try:
        r = _cli("filter", "--name", "no_filter", "--metadata-dir", str(base_pool), "--output", str(out))
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "another run holds this output" in lines[0] and str(out) in lines[0]
    assert "Traceback" not in r.stderr and not out.exists()
    # the holder died: its lock is stale and the next run takes it over
    r = _cli("filter", "--name", "no_filter", "--metadata-dir", str(base_pool), "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert read_subset(out).size == sum(pq.ParquetFile(f).metadata.num_rows for f in base_pool.glob("*.parquet"))


def test_two_concurrent_filters_on_one_output(base_pool, tmp_path):
    out = tmp_path / "s.npy"
    args = ["filter", "--name", "clip_score", "--arch", "l14", "--threshold", "0.3", "--metadata-dir",
            str(base_pool), "--output", str(out)]
    env = {**os.environ, "PYTHONPATH": SRC}
    procs = [subprocess.Popen([sys.executable, "-m", "datacomp", *args], stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    res = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for rc, err in res:
        assert "Traceback" not in err and "FileNotFoundError" not in err, err
        assert rc == 0 or (rc == 2 and "another run holds this output" in err), err
    assert any(rc == 0 for rc, _ in res)
    t = _all_rows(base_pool, ["uid", "clip_l14_similarity_score"])
    ref = t["clip_l14_similarity_score"].to_numpy() >= np.float32(0.3)
    assert np.array_equal(read_subset(out), sort_uids(hex_to_uids(t["uid"].to_numpy(zero_copy_only=False)[ref])))


def test_output_lock_message_names_lock_and_takes_over_stale(tmp_path):
    from datacomp.io import output_lock

    target = tmp_path / "x.npy"
    holder = _holder(target)
    try:
        with pytest.raises(DataCompError, match="another run holds this output") as e, output_lock(target):
            pass
        assert str(target) in str(e.value) and ".lock" in str(e.value) and str(holder.pid) in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    t0 = time.time()
    with output_lock(target):  # the dead holder's lock is taken over at once
        pass
    assert time.time() - t0 < 5


def test_dedup_against_references_of_another_dimension_is_named(base_pool, tmp_path):
    from datacomp.filters.dedup import dedup_task

    f = sorted(base_pool.glob("*.parquet"))[0]
    np.savez(tmp_path / "ref.npz", emb=np.ones((3, 16), np.float32), task=np.zeros(3, np.int64))
    with pytest.raises(DataCompError, match="dimension") as e:
        dedup_task(str(f), str(tmp_path / "w"), str(tmp_path / "ref.npz"), 0.9, "l14_img")
    assert "\n" not in str(e.value) and f.with_suffix(".npz").name in str(e.value)
