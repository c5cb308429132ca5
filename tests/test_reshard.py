"""Reshard: exact output (repeats included), byte-identical members, missing uids, gaps, resume, blur."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from datacomp import uids as U
from datacomp.cli import main
from datacomp.engine import LocalExecutor
from datacomp.errors import DataCompError
from datacomp.pool.shards import ShardWriter, iter_tar_samples, list_shards, sample_key
from datacomp.reshard import load_uid_filter, plan_outputs, reshard
from datacomp.reshard.plan import Selection

SHARD_IDS = (0, 1, 2, 4, 7)  # gaps in the numbering are normal (img2dataset#174)
PER_SHARD = 40


def _jpeg(rng: np.random.Generator, size: int = 64) -> bytes:
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1) % 256
    img = (base + rng.integers(0, 120, (size, size, 3))).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(img).save(out, format="JPEG", quality=95)
    return out.getvalue()


def make_pool(root: Path, seed: int = 0) -> tuple[Path, list[str]]:
    """img2dataset-layout shards (with failures, face boxes on every 4th sample); returns successful uids."""
    rng = np.random.default_rng(seed)
    shards = root / "shards"
    uids: list[str] = []
    for s in SHARD_IDS:
        w = ShardWriter(shards, s, mtime=1_700_000_000)
        for i in range(PER_SHARD):
            uid = rng.bytes(16).hex()
            row = {"uid": uid, "face_bboxes": [[0.1, 0.1, 0.35, 0.35]] if i % 4 == 0 else [],
                   "caption": f"a photo {i}", "url": f"http://127.0.0.1/{uid}.jpg", "key": sample_key(s, i, 100)}
            if i % 9 == 4:
                w.add_failure(row, "failed_to_download", "HTTP 404")
                continue
            w.add_success({**row, "width": 64, "height": 64, "original_width": 64, "original_height": 64,
                           "exif": None, "sha256": "0" * 64}, _jpeg(rng))
            uids.append(uid)
        w.close()
    return shards, uids


@pytest.fixture(scope="module")
def pool(world, tmp_path_factory):
    """The test world's shards with shard 1 removed (a numbering gap); returns (dir, successful uids)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    shards = tmp_path_factory.mktemp("reshard_pool") / "shards"
    shutil.copytree(world.shards, shards, ignore=shutil.ignore_patterns(".*", "00000001*"))
    uids = []
    for p in sorted(shards.glob("*.parquet")):
        t = pq.read_table(p, columns=["uid", "status"])
        uids += t.filter(pc.equal(t["status"], "success"))["uid"].to_pylist()
    assert len(list_shards(shards)) >= 3 and not (shards / "00000001.tar").exists()
    return shards, uids


@pytest.fixture(scope="module")
def faces_pool(tmp_path_factory):
    """A small pool with known face boxes on 64-px images, for pixel-exact blur checks."""
    return make_pool(tmp_path_factory.mktemp("reshard_faces"))


def _subset(path: Path, hexes: list[str]) -> Path:
    arr = U.hex_to_uids(np.asarray(hexes, dtype="U32"))
    return U.write_subset(path, arr)


def _input_samples(shards: Path) -> dict[str, dict[str, bytes]]:
    out = {}
    for tar in list_shards(shards):
        for _, members in iter_tar_samples(tar):
            out[json.loads(members["json"])["uid"]] = members
    return out


def _output_samples(out: Path) -> list[tuple[str, dict[str, bytes]]]:
    return [s for tar in list_shards(out) for s in iter_tar_samples(tar)]


def _selection(uids: list[str]) -> list[str]:
    """Every 3rd uid once, every 10th also twice more (k=3), plus one uid not in the pool."""
    return uids[::3] + uids[::10] * 2 + ["0123456789abcdef" * 2]


def test_output_is_exactly_the_subset_with_identical_bytes(pool, tmp_path):
    shards, uids = pool
    chosen = _selection(uids)
    sub = _subset(tmp_path / "sub.npy", chosen)
    s = reshard(shards, tmp_path / "out", sub, shard_size=100, workers=1, progress=False)
    out = tmp_path / "out"
    samples = _output_samples(out)
    want = Counter(c for c in chosen if c in set(uids))
    assert Counter(k.rsplit("-", 1)[0] for k, _ in samples) == want
    assert sorted(k for k, _ in samples) == sorted(f"{u}-{j}" for u, n in want.items() for j in range(n))
    src = _input_samples(shards)
    for key, members in samples:
        assert members == src[key.rsplit("-", 1)[0]]  # every member, byte for byte
    names = [p.name for p in list_shards(out)]
    assert names == [f"{i:08d}.tar" for i in range(len(names))]
    sizes = [json.loads((out / f"{i:08d}_stats.json").read_text())["successes"] for i in range(len(names))]
    assert sizes[:-1] == [100] * (len(sizes) - 1) and 0 < sizes[-1] <= 100 and sum(sizes) == len(samples)
    assert (out / "sample_ids.npy").read_bytes() == sub.read_bytes()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["output_shard_count"] == len(names) and meta["output_shard_format"] == "{:08d}.tar"
    assert s["output_count"] == len(samples) == sum(want.values())
    assert s["output_shards_general_path"] == 0  # plain ustar inputs: every shard took the block path
    assert s["subset_duplicates"] == sum(n - 1 for n in Counter(chosen).values()) and s["missing_uids"] == 1
    assert (out / "missing_uids.txt").read_text() == "0123456789abcdef" * 2 + "\n"
    assert load_uid_filter(out) is None  # a copied reshard is not a uid filter


def test_output_readable_by_webdataset_and_tarfile(pool, tmp_path):
    import webdataset as wds

    shards, uids = pool
    sub = _subset(tmp_path / "sub.npy", uids[::2] + uids[:3])  # spans several output shards
    s = reshard(shards, tmp_path / "out", sub, shard_size=400, progress=False, executor=LocalExecutor(2))
    assert s["workers"] == 2 and s["executor"] == "LocalExecutor" and s["output_shard_count"] > 2
    tars = [str(p) for p in list_shards(tmp_path / "out")]
    got = list(wds.WebDataset(tars, shardshuffle=False, empty_check=False).to_tuple("__key__", "jpg", "txt", "json"))
    assert sorted(k for k, *_ in got) == sorted(k for k, _ in _output_samples(tmp_path / "out"))
    assert len(got) == len(uids[::2]) + 3
    assert all(json.loads(j)["uid"] == k.rsplit("-", 1)[0] for k, _, _, j in got)
    for t in tars:
        with tarfile.open(t) as tf:
            names = tf.getnames()
        assert len(names) == 3 * json.loads(Path(t[:-4] + "_stats.json").read_text())["successes"]


def test_gaps_multiple_inputs_and_tar_index_give_same_output(pool, tmp_path):
    shards, uids = pool
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for p in shards.iterdir():  # split the pool across two dirs; b's shards lose their parquet
        sid = int(p.name[:8])
        if sid < 2:
            shutil.copy(p, a / p.name)
        elif not p.name.endswith(".parquet"):
            shutil.copy(p, b / p.name)
    sub = _subset(tmp_path / "sub.npy", _selection(uids))
    ref = reshard(shards, tmp_path / "ref", sub, shard_size=250, workers=1, progress=False)
    got = reshard([a, b], tmp_path / "got", sub, shard_size=250, workers=1, progress=False)
    n_b = len(list_shards(b))
    assert n_b >= 2 and got["input_shards_indexed_from_tar"] == n_b
    assert got["input_shards"] == len(list_shards(shards))
    assert got["output_count"] == ref["output_count"]
    for p in list_shards(tmp_path / "ref"):
        assert (tmp_path / "got" / p.name).read_bytes() == p.read_bytes()


def test_skips_shards_without_selected_samples(pool, tmp_path):
    shards, uids = pool
    first = list_shards(shards)[0]
    own = [json.loads(m["json"])["uid"] for _, m in iter_tar_samples(first)]
    s = reshard(shards, tmp_path / "out", _subset(tmp_path / "s.npy", own[:5]), workers=1, progress=False)
    assert s["input_shards_selected"] == 1 and s["output_count"] == 5 and s["output_shard_count"] == 1


@pytest.mark.parametrize("bad", ["unsorted", "float", "truncated"])
def test_malformed_subset_refused_with_one_line_error(pool, tmp_path, capsys, bad):
    shards, uids = pool
    path = tmp_path / "bad.npy"
    if bad == "unsorted":
        arr = U.hex_to_uids(np.asarray(sorted(uids[:10], reverse=True), dtype="U32"))
        np.save(path, arr)
    elif bad == "float":
        np.save(path, np.zeros(4, np.float32))
    else:
        path = tmp_path / "bad.bin"
        path.write_bytes(b"x" * 20)
    rc = main(["reshard", "-i", str(shards), "-o", str(tmp_path / "out"), "-s", str(path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert str(path) in err
    assert not (tmp_path / "out").exists()


def test_overwrite_really_removes_previous_output(pool, tmp_path):
    shards, uids = pool
    out = tmp_path / "out"
    out.mkdir()
    (out / "00000099.tar").write_bytes(b"stale")
    (out / "notes.txt").write_text("old")
    sub = _subset(tmp_path / "s.npy", uids[:30])
    with pytest.raises(DataCompError, match="not empty"):
        reshard(shards, out, sub, workers=1, progress=False)
    reshard(shards, out, sub, shard_size=10, workers=1, progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "00000000.tar", "00000000_stats.json", "00000001.tar", "00000001_stats.json", "00000002.tar",
        "00000002_stats.json", "meta.json", "sample_ids.npy"]
    # a different subset into the same dir is refused unless --overwrite
    with pytest.raises(DataCompError, match="different"):
        reshard(shards, out, _subset(tmp_path / "t.npy", uids[:3]), workers=1, progress=False)
    with pytest.raises(DataCompError, match="contains the input"):
        reshard(shards, shards.parent, sub, workers=1, progress=False, overwrite=True)


def _reshard_cmd(shards: Path, out: Path, sub: Path) -> list[str]:
    return [sys.executable, "-m", "datacomp", "reshard", "-i", str(shards), "-o", str(out), "-s", str(sub),
            "--shard-size", "5", "--blur", "--shuffle-bufsize", "7", "-j", "1", "--no-progress"]


def test_kill_and_resume_matches_uninterrupted_run(pool, tmp_path):
    shards, uids = pool
    sub = _subset(tmp_path / "s.npy", uids[::8] + uids[::40])
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(_reshard_cmd(shards, ref, sub), check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen(_reshard_cmd(shards, out, sub), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / ".reshard").glob("*.done.json"))) < 3:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "meta.json").exists(), "the run finished before it could be killed"
    for tar in list_shards(out):  # nothing half-written under a final name
        with tarfile.open(tar) as tf:
            assert len(tf.getnames()) % 3 == 0
    done_before = len(list((out / ".reshard").glob("*.done.json")))
    res = subprocess.run(_reshard_cmd(shards, out, sub), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"({done_before} already complete)" in res.stdout
    names = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != "meta.json")
    assert names == sorted(p.name for p in ref.iterdir() if p.is_file() and p.name != "meta.json")
    for name in names:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


def test_blur_changes_only_boxed_pixels(faces_pool, tmp_path):
    from PIL import Image

    shards, uids = faces_pool
    sub = _subset(tmp_path / "s.npy", uids)
    s = reshard(shards, tmp_path / "out", sub, blur=True, workers=1, progress=False)
    src = _input_samples(shards)
    blurred = 0
    for key, m in _output_samples(tmp_path / "out"):
        orig = src[key.rsplit("-", 1)[0]]
        boxes = json.loads(orig["json"])["face_bboxes"]
        assert m["json"] == orig["json"] and m["txt"] == orig["txt"]
        if not boxes:
            assert m["jpg"] == orig["jpg"]
            continue
        blurred += 1
        a = Image.open(io.BytesIO(orig["jpg"])).convert("RGB")
        plain = io.BytesIO()
        a.save(plain, format="JPEG", quality=95)  # re-encoded without blurring
        ref = np.asarray(Image.open(plain), dtype=np.float32)
        b = np.asarray(Image.open(io.BytesIO(m["jpg"])), dtype=np.float32)
        # box [0.1, 0.35] of 64 px = px 6..22, grown by 10%, blurred with radius 7: untouched from px 32
        # on; from px 34 (past JPEG's 16-px blocks and chroma upsampling) the output equals a plain re-encode
        assert np.abs(ref - b)[8:20, 8:20].mean() > 10
        assert np.array_equal(ref[34:], b[34:]) and np.array_equal(ref[:, 34:], b[:, 34:])
    assert blurred == s["blur_count"] > 0


def test_blur_from_metadata_parquet(faces_pool, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards, uids = faces_pool
    src = _input_samples(shards)
    target = next(u for u in uids if not json.loads(src[u]["json"])["face_bboxes"])
    meta = tmp_path / "meta"
    meta.mkdir()
    pq.write_table(pa.table({"uid": uids, "face_bboxes": [[[0.5, 0.5, 0.9, 0.9]] if u == target else []
                                                          for u in uids]}), meta / "abc.parquet")
    sub = _subset(tmp_path / "s.npy", uids[:20] + [target])
    s = reshard(shards, tmp_path / "out", sub, blur=True, blur_metadata=meta, workers=1, progress=False)
    assert s["blur_count"] == 1
    out = dict(_output_samples(tmp_path / "out"))
    assert out[f"{target}-0"]["jpg"] != src[target]["jpg"]
    assert all(m["jpg"] == src[k.rsplit("-", 1)[0]]["jpg"] for k, m in out.items() if not k.startswith(target))


def test_no_copy_uid_filter(pool, tmp_path):
    shards, uids = pool
    tars = list_shards(shards)
    in_two = [json.loads(m["json"])["uid"] for t in (tars[0], tars[2]) for _, m in iter_tar_samples(t)][::2]
    sub = _subset(tmp_path / "s.npy", in_two + in_two[:2])
    rc = main(["reshard", "--no-copy", "-i", str(shards), "-o", str(tmp_path / "nc"), "-s", str(sub),
               "--no-progress"])
    assert rc == 0 and not list_shards(tmp_path / "nc")
    shard_list, keep = load_uid_filter(tmp_path / "nc")
    assert shard_list == [str(tars[0]), str(tars[2])]
    chosen = set(in_two)
    assert all(keep(u) == (u in chosen) for u in uids)
    assert keep.contains(uids).tolist() == [u in chosen for u in uids]
    assert keep.count(in_two[0]) == 2 and keep.count(in_two[-1]) == 1 and keep.count("zz") == 0
    meta = json.loads((tmp_path / "nc" / "meta.json").read_text())
    assert meta["counts"]["output_count"] == len(in_two)
    assert load_uid_filter(tmp_path) is None  # no meta.json
    (tmp_path / "nc").rename(tmp_path / "moved")  # a moved output dir falls back to its own sample_ids.npy
    assert load_uid_filter(tmp_path / "moved")[1].contains(uids).tolist() == [u in chosen for u in uids]


def test_plan_splits_repeats_across_full_shards():
    keys = np.asarray([b"a", b"b", b"c"])
    hexes = ["1" * 32, "2" * 32, "3" * 32]
    sel = [Selection(Path("x.tar"), keys, U.hex_to_uids(np.asarray(hexes)), np.asarray([1, 3, 2])),
           Selection(Path("y.tar"), keys[:1], U.hex_to_uids(np.asarray(hexes[:1])), np.asarray([2]))]
    plans = plan_outputs(sel, shard_size=3)
    assert [p.count for p in plans] == [3, 3, 2]
    p0, p1, p2 = plans
    def rows(plan):
        return [(pc.tar, pc.keys.tolist(), pc.uids.astype(str).tolist(), pc.j0.tolist(), pc.n.tolist())
                for pc in plan.pieces]

    assert rows(p0) == [("x.tar", [b"a", b"b"], hexes[:2], [0, 0], [1, 2])]
    assert rows(p1) == [("x.tar", [b"b", b"c"], hexes[1:], [2, 0], [1, 2])]
    assert rows(p2) == [("y.tar", [b"a"], hexes[:1], [0], [2])]


@pytest.mark.parametrize("bufsize", [0, 7])
def test_kernel_memory_and_general_paths_write_identical_bytes(pool, tmp_path, monkeypatch, bufsize):
    from datacomp.reshard import fastcopy
    from datacomp.reshard.copy import write_output_shard
    from datacomp.reshard.plan import iter_indexes, select

    monkeypatch.setattr(fastcopy, "CHUNK_BLOCKS", 23)  # the in-memory path then spans many chunks
    shards, uids = pool
    sub = U.read_subset(_subset(tmp_path / "s.npy", uids[::50] + uids[::100] + uids[1:40]))
    sels, _ = select(iter_indexes(list_shards(shards), 1), sub)
    plans = plan_outputs(sels, shard_size=60, seed=3)
    assert len(plans[0].pieces) > 1
    got = {}
    for path, kw in (("kernel", {}), ("memory", {"kernel_copy": False}), ("general", {"fast": False})):
        st = write_output_shard(str(tmp_path / path), 0, plans[0].pieces, shuffle_bufsize=bufsize, seed=5, **kw)
        assert st["path"] == path and st["samples"] == 60
        got[path] = (tmp_path / path / "00000000.tar").read_bytes()
        assert st["bytes"] == len(got[path])

    def no_shared_maps(fd, size):
        raise OSError("no shared writable maps here")

    monkeypatch.setattr(fastcopy, "_writable_map", no_shared_maps)  # headers then go by pwrite
    st = write_output_shard(str(tmp_path / "pwrite"), 0, plans[0].pieces, shuffle_bufsize=bufsize, seed=5)
    assert st["path"] == "kernel"
    got["pwrite"] = (tmp_path / "pwrite" / "00000000.tar").read_bytes()
    assert got["kernel"] == got["memory"] == got["general"] == got["pwrite"]
    with tarfile.open(tmp_path / "kernel" / "00000000.tar") as tf:
        assert len(tf.getnames()) == 3 * 60


def test_webdataset_written_shards_take_the_fast_path(tmp_path):
    """img2dataset writes through webdataset's TarWriter: a pax header (float mtime) per member."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import webdataset as wds

    from datacomp.reshard.copy import write_output_shard
    from datacomp.reshard.plan import iter_indexes, select

    rng = np.random.default_rng(1)
    shards = tmp_path / "wds"
    shards.mkdir()
    uids = []
    for s in (0, 3):
        rows = []
        with wds.TarWriter(str(shards / f"{s:08d}.tar")) as w:
            for i in range(20):
                uid, key = rng.bytes(16).hex(), sample_key(s, i, 100)
                w.write({"__key__": key, "jpg": rng.bytes(int(rng.integers(100, 3000))), "txt": f"c {i}",
                         "json": {"uid": uid, "key": key}})
                rows.append({"uid": uid, "key": key, "status": "success"})
                uids.append(uid)
        pq.write_table(pa.Table.from_pylist(rows), shards / f"{s:08d}.parquet")
    sub = _subset(tmp_path / "s.npy", uids[::2] + uids[:4])
    sels, _ = select(iter_indexes(list_shards(shards), 1), U.read_subset(sub))
    pieces = plan_outputs(sels, shard_size=100)[0].pieces
    st = write_output_shard(str(tmp_path / "fast"), 0, pieces)
    assert st["path"] == "kernel"
    write_output_shard(str(tmp_path / "general"), 0, pieces, fast=False)
    tar = (tmp_path / "fast" / "00000000.tar").read_bytes()
    assert tar == (tmp_path / "general" / "00000000.tar").read_bytes()
    src = _input_samples(shards)
    got = _output_samples(tmp_path / "fast")
    assert sorted(k for k, _ in got) == sorted([f"{u}-0" for u in uids[::2]] + [f"{u}-1" for u in uids[:4:2]]
                                               + [f"{u}-0" for u in uids[1:4:2]])
    assert all(m == src[k.rsplit("-", 1)[0]] for k, m in got)


def test_damaged_input_shard_is_named(pool, tmp_path):
    shards, uids = pool
    bad = tmp_path / "shards"
    shutil.copytree(shards, bad)
    tar = list_shards(bad)[0]
    tar.write_bytes(tar.read_bytes()[:5000])
    with pytest.raises(DataCompError, match=tar.name):
        reshard(bad, tmp_path / "out", _subset(tmp_path / "s.npy", uids), workers=1, progress=False)
