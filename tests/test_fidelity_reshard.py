"""Reshard fidelity edges (issue #15 part B): pool duplicates written once, no wrong tar under a final
name, one run per output directory."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from datacomp import uids as U
from datacomp.errors import DataCompError
from datacomp.pool.shards import iter_tar_samples, list_shards
from datacomp.reshard import reshard

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _tar(path: Path, samples: list[tuple[str, str]], parquet: bool = False) -> None:
    """A plain ustar shard of ``(key, uid)`` samples (json + jpg members), in the order given; with
    ``parquet`` also its img2dataset index (uid, key, status)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t:
        for i, (key, uid) in enumerate(samples):
            for ext, data in (("json", json.dumps({"uid": uid, "i": i}).encode()), ("jpg", f"img-{i}".encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime = len(data), 1_700_000_000
                t.addfile(info, io.BytesIO(data))
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys, uids = zip(*samples, strict=True)
        pq.write_table(pa.table({"uid": list(uids), "key": list(keys), "status": ["success"] * len(keys)}),
                       path.with_suffix(".parquet"))


def _uid(i: int) -> str:
    return f"{i:032x}"


def _subset(path: Path, hexes: list[str]) -> Path:
    return U.write_subset(path, U.hex_to_uids(np.asarray(hexes, dtype="U32")))


def _written(out: Path) -> list[tuple[str, str]]:
    """(output key, uid in its json) of every output sample."""
    return [(k, json.loads(m["json"])["uid"]) for tar in list_shards(out) for k, m in iter_tar_samples(tar)]


@pytest.mark.parametrize("fast, parquet", [(True, False), (False, False), (True, True)])
def test_uid_in_two_shards_and_twice_in_one_is_written_once(tmp_path, monkeypatch, fast, parquet):
    if not fast:
        import datacomp.reshard.copy as C

        monkeypatch.setattr(C, "fast_plan", lambda pieces: None)
    shards = tmp_path / "shards"
    x, y = _uid(7), _uid(9)
    _tar(shards / "00000000.tar", [("a0", _uid(1)), ("a1", x), ("a2", _uid(2))], parquet)
    _tar(shards / "00000001.tar", [("b0", x), ("b1", y), ("b2", y), ("b3", _uid(3))], parquet)
    sub = _subset(tmp_path / "s.npy", [x, y, _uid(3)])
    s = reshard(shards, tmp_path / "out", sub, shard_size=2, workers=1, progress=False)
    got = Counter(uid for _, uid in _written(tmp_path / "out"))
    assert got == {x: 1, y: 1, _uid(3): 1}
    assert s["output_count"] == 3 and s["pool_duplicate_uids"] == 2
    assert s["input_shards_indexed_from_tar"] == (0 if parquet else 2)


def test_duplicate_tar_keys_leave_no_tar_under_a_final_name(tmp_path):
    """A key repeated apart in one tar is ambiguous: one-line error, and no output shard looks done."""
    shards = tmp_path / "shards"
    _tar(shards / "00000000.tar", [("k0", _uid(1)), ("k1", _uid(2)), ("k0", _uid(3)), ("k2", _uid(4))])
    sub = _subset(tmp_path / "s.npy", [_uid(1), _uid(2), _uid(4)])
    out = tmp_path / "out"
    with pytest.raises(DataCompError, match="k0") as e:
        reshard(shards, out, sub, shard_size=10, workers=1, progress=False)
    assert "\n" not in str(e.value) and "00000000.tar" in str(e.value)
    assert not list(out.glob("*.tar")) and not list(out.glob("*_stats.json"))


def test_output_count_mismatch_leaves_no_final_tar(tmp_path):
    """The planned-vs-written check runs before the rename (a wrong tar never gets the final name)."""
    from datacomp.reshard.copy import write_output_shard
    from datacomp.reshard.plan import Piece

    shards = tmp_path / "shards"
    _tar(shards / "00000000.tar", [("k0", _uid(1)), ("k1", _uid(2)), ("k0", _uid(3))])
    piece = Piece(str(shards / "00000000.tar"), np.array([b"k0"]), np.array([_uid(1).encode()], "S32"),
                  np.array([0]), np.array([1]))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataCompError):
        write_output_shard(str(out), 0, [piece], fast=False)
    assert not list(out.iterdir())


HOLD = textwrap.dedent("""
    import sys, time
    from datacomp.io import lock_path, output_lock
    with output_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
""")


def test_second_reshard_on_one_output_gets_one_line(tmp_path):
    shards = tmp_path / "shards"
    _tar(shards / "00000000.tar", [(f"k{i}", _uid(i)) for i in range(5)])
    sub = _subset(tmp_path / "s.npy", [_uid(1), _uid(3)])
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": SRC}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    cmd = [sys.executable, "-m", "datacomp", "reshard", "-i", str(shards), "-o", str(out), "-s", str(sub),
           "--no-progress"]
    try:
        assert holder.stdout.readline().strip() == "held"
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "another run holds this output" in lines[0] and str(out) in lines[0], r.stderr
    assert not out.exists() or not list(out.glob("*.tar"))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)  # stale lock taken over
    assert r.returncode == 0, r.stderr
    assert sorted(uid for _, uid in _written(out)) == [_uid(1), _uid(3)]
    assert not any(p.name.endswith(".lock") for p in out.iterdir())
