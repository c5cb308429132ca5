"""Silently wrong becomes loud: bad download columns and rows, subset files, uid text files, nshards.txt."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datacomp import uids as U
from datacomp.errors import DataCompError
from datacomp.pool.download import DownloadOptions, ShardSpec, download, download_shard, list_metadata, plan_shards
from datacomp.pool.http import FetchConfig
from datacomp.synth.serve import make_image_pool
from test_download import LOCAL, served


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("safepool")
    images = make_image_pool(root, n=12, box_every=3)
    return root / "pool", images


def _options() -> DownloadOptions:
    return DownloadOptions(fetch=FetchConfig(allowed_networks=LOCAL, timeout=5, retries=0), thread_count=4,
                           samples_per_shard=100)


def test_bad_face_bboxes_row_fails_that_sample_only(pool, tmp_path):
    pool_dir, images = pool
    with served(pool_dir, tmp_path) as (_server, meta):
        f = meta / "0000.parquet"
        t = pq.read_table(f)
        boxes = t["face_bboxes"].to_pylist()
        bad = {1: [[0.1, 0.1, float("nan"), 0.5]], 2: [[0.1, float("inf"), 0.3, 0.4]], 4: [[0.1, 0.2, 0.3]],
               5: [[-40.0, -40.0, 900.0, 900.0]]}  # the last is valid once clipped: blurred, not failed
        for i, b in bad.items():
            boxes[i] = b
        t = t.set_column(t.schema.get_field_index("face_bboxes"), "face_bboxes",
                         pa.array(boxes, pa.list_(pa.list_(pa.float64()))))
        pq.write_table(t, f)
        summary = download(meta, tmp_path / "shards", _options(), progress=False)
    assert summary["count"] == 12 and summary["successes"] == 9
    assert summary["failure_kinds"] == {"bad_face_bboxes": 3}
    failed = {t["uid"][i].as_py() for i in (1, 2, 4)}
    out = pq.read_table(tmp_path / "shards" / "00000000.parquet").to_pylist()
    assert len(out) == 12
    for row in out:
        if row["uid"] in failed:
            assert row["status"] == "failed_to_resize" and "face_bboxes" in row["error_message"]
        else:
            assert row["status"] == "success", row


@pytest.mark.parametrize("column,array,what", [
    ("uid", pa.array(np.arange(12), pa.int64()), "uid"),
    ("face_bboxes", pa.array(["[[0.1, 0.1, 0.2, 0.2]]"] * 12), "face_bboxes"),
    ("url", pa.array(np.arange(12.0)), "url"),
])
def test_wrong_typed_column_is_caught_up_front(pool, tmp_path, column, array, what):
    pool_dir, _ = pool
    t = pq.read_table(pool_dir / "metadata" / "0000.parquet")
    t = t.set_column(t.schema.get_field_index(column), column, array)
    (tmp_path / "meta").mkdir()
    pq.write_table(t, tmp_path / "meta" / "x.parquet")
    with pytest.raises(DataCompError) as e:
        plan_shards(list_metadata(tmp_path / "meta"), _options())
    msg = _one_line(e)
    assert "x.parquet" in msg and f"column {what!r}" in msg
    # the shard task alone (no planning check) still leaves no .tar under its final name
    out = tmp_path / "shards"
    out.mkdir()
    with pytest.raises(DataCompError) as e:
        download_shard(ShardSpec(0, str(tmp_path / "meta" / "x.parquet"), 0, 12), str(out), _options())
    _one_line(e)
    assert sorted(p.name for p in out.iterdir()) == []


# --- subset files -----------------------------------------------------------------------------------


def _uids(n: int = 10) -> np.ndarray:
    rng = np.random.default_rng(0)
    if n == 0:
        return np.zeros(0, U.UID_DTYPE)
    return U.sort_uids(U.hex_to_uids([f"{x:032x}" for x in rng.integers(0, 1 << 62, n)]))


def test_zero_byte_subset_is_refused(tmp_path):
    for name in ("empty.npy", "empty.bin", "empty"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(DataCompError) as e:
            U.read_subset(tmp_path / name)
        assert name in _one_line(e) and "empty" in str(e.value)
    # an empty subset written by the tools (an .npy with a header) is still a valid empty subset
    assert U.read_subset(U.write_subset(tmp_path / "ok.npy", _uids(0))).size == 0


def test_npy_suffix_requires_the_npy_magic(tmp_path):
    good = _uids(4)
    p = tmp_path / "s.npy"
    good.tofile(p)  # raw records under a .npy name: 64 bytes, a multiple of 16
    with pytest.raises(DataCompError) as e:
        U.read_subset(p)
    assert "s.npy" in _one_line(e) and "NPY" in str(e.value)
    raw = tmp_path / "s.bin"
    good.tofile(raw)
    assert np.array_equal(U.read_subset(raw), good)
    noext = tmp_path / "s"
    good.tofile(noext)
    assert np.array_equal(U.read_subset(noext), good)


def test_corrupt_npy_header_is_one_line(tmp_path):
    p = U.write_subset(tmp_path / "h.npy", _uids(3))
    b = bytearray(p.read_bytes())
    b[10:13] = b"{(("
    p.write_bytes(bytes(b))
    with pytest.raises(DataCompError) as e:
        U.read_subset(p)
    assert "h.npy" in _one_line(e)


def test_subset_from_text_missing_or_binary_file(tmp_path, capsys):
    from datacomp.cli import main

    with pytest.raises(DataCompError) as e:
        U.uids_from_text(tmp_path / "nope.txt")
    assert "nope.txt" in _one_line(e) and "not found" in str(e.value)
    binary = tmp_path / "b.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataCompError) as e:
        U.uids_from_text(binary)
    assert "b.txt" in _one_line(e)
    for f in (tmp_path / "nope.txt", binary):
        assert main(["subset", "from-text", str(f), "-o", str(tmp_path / "o.npy")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err
    good = tmp_path / "g.txt"
    good.write_text("\n".join(U.uids_to_hex(_uids(3))) + "\n\n")
    assert main(["subset", "from-text", str(good), "-o", str(tmp_path / "o.npy")]) == 0


# --- eval sets: nshards.txt ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["abc", "1.5", "-1", "\x00\x01"])
def test_non_integer_nshards_is_one_line(tmp_path, text):
    from datacomp.evaluate.data import locate
    from datacomp.evaluate.registry import list_tasks
    from datacomp.pool.shards import TarSampleWriter

    task = list_tasks()[0]
    test = tmp_path / task.folder / "test"
    test.mkdir(parents=True)
    with TarSampleWriter(test / "0.tar", mtime=0) as w:
        w.write("0", {"jpg": b"x", "cls": "0"})
    (test / "nshards.txt").write_text(text)
    (test.parent / "classnames.txt").write_text("a\nb\n")
    (test.parent / "zeroshot_classification_templates.txt").write_text("a photo of {c}\n")
    with pytest.raises(DataCompError) as e:
        locate(task, tmp_path)
    assert "nshards.txt" in _one_line(e)


def test_record_json_is_still_read(tmp_path):
    """Guard for the evaluate record reader: a dict record with an absolute checkpoint loads as before."""
    from datacomp.evaluate.model import resolve_model

    d = tmp_path / "run"
    d.mkdir()
    ck = d / "c.pt"
    ck.write_bytes(b"x")
    (d / "train_record.json").write_text(json.dumps({"config": {"model": "RN50", "scale": "small"},
                                                     "checkpoint": str(ck)}))
    spec = resolve_model(train_output_dir=d)
    assert (spec.name, spec.checkpoint, spec.scale) == ("RN50", ck, "small")
