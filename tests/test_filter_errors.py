"""Malformed metadata gives one-line errors naming the file; a killed filter run resumes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datacomp.errors import DataCompError
from datacomp.filters import run_filter
from datacomp.uids import read_subset
from test_filter_world import make_pool


@pytest.fixture
def meta(tmp_path):
    return make_pool(tmp_path / "w", files=3, rows=120)


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_column(meta, tmp_path):
    f = sorted(meta.glob("*.parquet"))[1]
    pq.write_table(pq.read_table(f).drop(["clip_l14_similarity_score"]), f)
    with pytest.raises(DataCompError) as e:
        run_filter("clip_score", meta, tmp_path / "o.npy", arch="l14", threshold=0.3, workers=1, progress=False)
    msg = _one_line(e)
    assert f.name in msg and "missing column 'clip_l14_similarity_score'" in msg


def test_wrong_type(meta, tmp_path):
    f = sorted(meta.glob("*.parquet"))[0]
    t = pq.read_table(f)
    t = t.set_column(t.schema.get_field_index("original_width"), "original_width",
                     pa.array([str(v) for v in t["original_width"].to_pylist()]))
    pq.write_table(t, f)
    with pytest.raises(DataCompError) as e:
        run_filter("basic_filter", meta, tmp_path / "o.npy", workers=1, progress=False)
    msg = _one_line(e)
    assert f.name in msg and "'original_width' has type string, expected integer" in msg


def test_npz_rows_differ(meta, tmp_path):
    f = sorted(meta.glob("*.npz"))[2]
    z = dict(np.load(f))
    np.savez(f, **{k: v[:-3] for k, v in z.items()})
    with pytest.raises(DataCompError) as e:
        run_filter("image_based", meta, tmp_path / "o.npy", workers=1, progress=False)
    msg = _one_line(e)
    assert f.name in msg and "rows" in msg and "row-aligned" in msg


def test_unreadable_parquet_and_bad_uid(meta, tmp_path):
    f = sorted(meta.glob("*.parquet"))[0]
    f.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataCompError) as e:
        run_filter("no_filter", meta, tmp_path / "o.npy", workers=1, progress=False)
    assert f.name in _one_line(e) and "not a readable parquet" in str(e.value)
    f2 = sorted(meta.glob("*.parquet"))[1]
    t = pq.read_table(f2)
    t = t.set_column(0, "uid", pa.array(["xyz"] + t["uid"].to_pylist()[1:]))
    pq.write_table(t, f2)
    f.unlink()
    with pytest.raises(DataCompError) as e:
        run_filter("no_filter", meta, tmp_path / "o.npy", workers=1, progress=False)
    assert f2.name in _one_line(e) and "uid at row 0" in str(e.value)


def test_bad_arguments(meta, tmp_path):
    for kw, text in ((dict(name="clip_score", arch="l14"), "exactly one of"),
                     (dict(name="basic_filter", fraction=0.3), "only apply to clip_score"),
                     (dict(name="nope"), "unknown filter"),
                     (dict(name=None, where="no_such_column > 1"), "--where")):
        name = kw.pop("name")
        with pytest.raises(DataCompError, match=text):
            run_filter(name, meta, tmp_path / "o.npy", workers=1, progress=False, **kw)


def test_killed_run_resumes(meta, tmp_path):
    """A filter that dies on the third file; the re-run skips the two finished files."""
    sentinel = tmp_path / "crash"
    sentinel.touch()
    plugin = tmp_path / "crashy.py"
    plugin.write_text(
        "import os\n"
        "from datacomp.filters import register_filter\n"
        f"CRASH = {str(sentinel)!r}\n"
        "CALLS = []\n"
        "@register_filter('crashy', needs=('original_width',))\n"
        "def crashy(t):\n"
        "    CALLS.append(t.num_rows)\n"
        "    if len(CALLS) == 3 and os.path.exists(CRASH):\n"
        "        raise RuntimeError('killed')\n"
        "    return t['original_width'].to_numpy() >= 200\n"
    )
    out = tmp_path / "o.npy"
    with pytest.raises(RuntimeError, match="killed"):
        run_filter("crashy", meta, out, plugins=[str(plugin)], workers=1, progress=False)
    assert not out.exists()
    work = [p for p in tmp_path.iterdir() if p.name.startswith(".o.npy.work")]
    assert len(work) == 1 and len(list((work[0] / "state").glob("*.done.json"))) == 2
    sentinel.unlink()
    import sys

    mod = next(m for k, m in sys.modules.items() if k.startswith("datacomp_user_filter_") and hasattr(m, "CALLS"))
    mod.CALLS.clear()
    s = run_filter("crashy", meta, out, plugins=[str(plugin)], workers=1, progress=False)
    assert [pq.ParquetFile(sorted(meta.glob("*.parquet"))[2]).metadata.num_rows] == mod.CALLS  # only file 3 ran
    total = sum(pq.read_table(f)["original_width"].to_numpy().__ge__(200).sum() for f in meta.glob("*.parquet"))
    assert s["kept"] == total == len(read_subset(out))
    assert not work[0].exists()  # the work folder is removed once the subset is written


def test_sigkilled_cli_run_resumes(meta, tmp_path):
    """`datacomp filter` killed with SIGKILL while on the third file; the re-run does only that file."""
    import os
    import signal
    import subprocess
    import sys
    import time

    log = tmp_path / "calls.log"
    plugin = tmp_path / "slow.py"
    plugin.write_text(
        "import os, time\n"
        "from datacomp.filters import register_filter\n"
        "@register_filter('slow', needs=('original_width',))\n"
        "def slow(t):\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(f'{t.num_rows}\\n')\n"
        f"    if sum(1 for _ in open({str(log)!r})) == 3 and not os.environ.get('DC_NO_HANG'):\n"
        "        time.sleep(600)\n"
        "    return t['original_width'].to_numpy() >= 200\n"
    )
    out = tmp_path / "o.npy"
    cmd = [sys.executable, "-m", "datacomp", "filter", "--plugin", str(plugin), "--name", "slow",
           "--metadata-dir", str(meta), "--output", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().split()) < 3):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and len(log.read_text().split()) == 3
    log.unlink()
    res = subprocess.run(cmd, env={**os.environ, "DC_NO_HANG": "1"}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert len(log.read_text().split()) == 1  # the two finished files were not redone
    total = sum(int((pq.read_table(f)["original_width"].to_numpy() >= 200).sum()) for f in meta.glob("*.parquet"))
    assert len(read_subset(out)) == total
