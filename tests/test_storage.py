"""The storage layer on local paths and memory://: joins, sorted listings, atomic writes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

from datacomp import io as dio
from datacomp.errors import DataCompError
from datacomp.storage import as_location, copy, is_url, split_protocol


@pytest.fixture
def mem():
    root = as_location(f"memory://t-{uuid.uuid4().hex}")
    yield root
    root.rm(recursive=True)


def test_protocols_and_local_paths(tmp_path):
    assert split_protocol("s3://b/k") == ("s3", "b/k")
    assert split_protocol("file:///x/y") == (None, "/x/y")
    assert split_protocol("/x/y") == (None, "/x/y") and split_protocol("rel/p") == (None, "rel/p")
    assert is_url("gs://b/x") and not is_url("file:///tmp") and not is_url(tmp_path)
    f = as_location(f"file://{tmp_path}/a.npy")
    assert f.is_local and f.local_path == tmp_path / "a.npy" and os.fspath(f) == str(tmp_path / "a.npy")
    assert str(as_location("rel/dir/")) == "rel/dir"  # a local path stays as given (normalised like Path)
    m = as_location("memory://bucket/dir/")
    assert not m.is_local and m.local_path is None and m.url == "memory:///bucket/dir"
    assert (m / "x.parquet").url == "memory:///bucket/dir/x.parquet"
    assert (m / "x.parquet").stem == "x" and (m / "x.parquet").with_suffix(".npz").name == "x.npz"
    assert (m / "a" / "b").parent == m / "a" and (m / "a").is_relative_to(m) and not m.is_relative_to(m / "a")
    with pytest.raises(TypeError, match="remote location"):
        os.fspath(m)


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_listing_is_sorted_and_atomic_writes_publish_whole(kind, tmp_path, mem):
    root = as_location(str(tmp_path / "d")) if kind == "local" else mem / "d"
    for name in ["b.parquet", "a.parquet", "c.npz", ".hidden.parquet"]:
        (root / name).write_bytes(name.encode())
    (root / "sub" / "x.tar").write_bytes(b"x")
    assert [p.name for p in root.ls("*.parquet")] == [".hidden.parquet", "a.parquet", "b.parquet"]
    assert [p.name for p in root.ls(dirs=True)] == ["sub"]
    assert root.isdir() and (root / "a.parquet").isfile() and not (root / "zz").exists()
    assert (root / "b.parquet").read_bytes() == b"b.parquet" and (root / "c.npz").size() == 5
    dio.write_json_atomic(root / "r.json", {"a": [1, 2]})
    assert (root / "r.json").read_json() == {"a": [1, 2]}
    # a failure while writing leaves neither the target nor a temporary behind, and keeps an old file
    before = sorted(p.name for p in root.ls())
    for target in ("new.bin", "a.parquet"):
        with pytest.raises(RuntimeError), (root / target).atomic_open("wb") as f:
            f.write(b"partial")
            raise RuntimeError("killed")
        with pytest.raises(RuntimeError), dio.atomic_path(root / target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed")
    assert sorted(p.name for p in root.ls()) == before and (root / "a.parquet").read_bytes() == b"a.parquet"
    with (root / "t.txt").atomic_open("w") as f:
        f.write("text ✓")
    assert (root / "t.txt").read_text() == "text ✓"
    copy(root / "t.txt", tmp_path / "copied.txt")
    assert (tmp_path / "copied.txt").read_text() == "text ✓"
    (root / "sub").rm(recursive=True)
    assert not (root / "sub" / "x.tar").exists()


def test_subset_and_metadata_through_memory(mem, world):
    from datacomp.filters import metadata as md
    from datacomp.uids import read_subset, write_subset

    uids = np.array([(3, 1), (1, 2), (2, 0)], dtype="u8,u8")
    write_subset(mem / "s.npy", uids)
    write_subset(mem / "s.bin", uids, raw=True)
    assert read_subset(mem / "s.npy").tolist() == read_subset(mem / "s.bin").tolist() == sorted(uids.tolist())
    f = sorted(world.metadata.glob("*.parquet"))[0]
    copy(f, mem / "m" / f.name)
    copy(f.with_suffix(".npz"), mem / "m" / f.with_suffix(".npz").name)
    (files,) = [md.list_parquets(mem / "m")]
    assert [x.name for x in files] == [f.name]
    assert md.read_columns(files[0], ["uid"]).equals(md.read_columns(f, ["uid"]))
    assert np.array_equal(md.read_embeddings(files[0], "l14_img"), md.read_embeddings(f, "l14_img"))


def test_errors_are_one_line(tmp_path, mem):
    with pytest.raises(DataCompError, match=r"^foo://x: unknown storage protocol foo://"):
        as_location("foo://x")
    with pytest.raises(DataCompError, match=r"az:// locations need the adlfs package; install it: pip install"):
        as_location("az://container/x")
    from datacomp.filters import metadata as md

    with pytest.raises(DataCompError, match=r"memory:///.*/nope: metadata directory not found"):
        md.list_parquets(mem / "nope")
    with pytest.raises(DataCompError, match=r": not found$"):
        (mem / "missing.json").read_bytes()
    # a missing filesystem package names the extra to install (s3fs hidden from a fresh interpreter)
    code = ("import sys; sys.modules['s3fs'] = None; from datacomp.cli import main; "
            "sys.exit(main(['filter', '--metadata-dir', 's3://b/m', '--output', 'o.npy', '--name', 'basic_filter']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == ("error: s3://b/m: s3:// locations need the s3fs package; install it: "
                                "pip install 'datacomp[remote]'")
