"""The shared tar reader (`pool.tario` via `iter_tar_samples`) against Python's `tarfile`."""

import io
import tarfile

import pytest

from datacomp.errors import DataCompError
from datacomp.pool.shards import TarSampleWriter, iter_tar_samples


def _tarfile_samples(path):
    """The obvious reading: tarfile members grouped by key (webdataset's rule: the path up to the
    first dot of its base name, directories included)."""
    out, key = [], None
    with tarfile.open(path) as tf:
        for ti in tf:
            if not ti.isfile():
                continue
            d, _, base = ti.name.rpartition("/")
            k, _, ext = base.partition(".")
            k = f"{d}/{k}" if d else k
            if k != key:
                out.append((k, {}))
                key = k
            out[-1][1][ext] = tf.extractfile(ti).read()
    return out


def _members(i):
    return {"jpg": bytes(range(256)) * (i % 5 + 1), "txt": f"caption {i} ü", "json": {"uid": f"{i:032x}"}}


def test_plain_ustar_shard_matches_tarfile(tmp_path):
    path = tmp_path / "00000000.tar"
    with TarSampleWriter(path, mtime=1_700_000_000) as w:
        for i in range(40):
            w.write(f"{i:012d}", _members(i))
    got = list(iter_tar_samples(path))
    assert got == _tarfile_samples(path) and len(got) == 40
    assert got[3][0] == "000000000003" and got[3][1]["txt"] == "caption 3 ü".encode()


def test_pax_and_long_name_shards_match_tarfile(tmp_path):
    import webdataset as wds

    pax = tmp_path / "pax.tar"  # webdataset's TarWriter: a pax header per member (float mtime)
    with wds.TarWriter(str(pax)) as w:
        for i in range(12):
            w.write({"__key__": f"{i:012d}", "jpg": b"\xff" * (i * 100 + 1), "txt": f"t{i}"})
    longname = tmp_path / "long.tar"  # names over 100 bytes and a directory: the general parser
    with tarfile.open(longname, "w", format=tarfile.GNU_FORMAT) as tf:
        d = tarfile.TarInfo("sub")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for i in range(5):
            for ext, data in (("jpg", b"x" * i), ("txt", b"y")):
                ti = tarfile.TarInfo(f"sub/{'k' * 120}{i}.{ext}")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    for path, n in ((pax, 12), (longname, 5)):
        got = list(iter_tar_samples(path))
        assert got == _tarfile_samples(path) and len(got) == n


def test_damaged_shards_give_one_line_errors(tmp_path):
    good = tmp_path / "good.tar"
    with TarSampleWriter(good, mtime=0) as w:
        for i in range(4):
            w.write(f"{i:012d}", _members(i))
    data = good.read_bytes()
    cases = {"truncated.tar": data[:2048 + 700], "garbage.tar": b"not a tar" * 100, "tiny.tar": b"abc"}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(DataCompError, match=name.replace(".", r"\.")) as e:
            list(iter_tar_samples(tmp_path / name))
        assert "\n" not in str(e.value) and "re-create" in str(e.value)
    (tmp_path / "empty.tar").write_bytes(b"")
    assert list(iter_tar_samples(tmp_path / "empty.tar")) == []
