import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datacomp import uids as U
from datacomp.errors import DataCompError


def _random_hex(rng, n):
    vals = [int(x) for x in rng.integers(0, 2**63, size=n)]
    out = [f"{(a << 64) | (b * 2 + 1):032x}" for a, b in zip(vals, reversed(vals))]
    # edge values: zero, leading zeros, max
    out += ["0" * 32, "0" * 31 + "1", "0" * 16 + "f" * 16, "f" * 32, "00000000000000010000000000000000"]
    return out


def test_roundtrip_matches_int_parsing(rng):
    hexes = _random_hex(rng, 2000)
    arr = U.hex_to_uids(hexes)
    assert arr.dtype == np.dtype("u8,u8")
    for h, row in zip(hexes, arr):
        assert int(row["f0"]) == int(h[:16], 16)
        assert int(row["f1"]) == int(h[16:], 16)
    back = U.uids_to_hex(arr)
    assert list(back) == hexes


def test_pyarrow_input_including_sliced_and_uppercase(rng):
    hexes = _random_hex(rng, 100)
    col = pa.chunked_array([pa.array(hexes[:50]), pa.array([h.upper() for h in hexes[50:]])])
    arr = U.hex_to_uids(col)
    assert list(U.uids_to_hex(arr)) == hexes
    sliced = pa.array(hexes).slice(7, 20)
    assert list(U.uids_to_hex(U.hex_to_uids(sliced))) == hexes[7:27]
    fixed = pa.array([h.encode() for h in hexes], type=pa.binary(32))
    assert list(U.uids_to_hex(U.hex_to_uids(fixed))) == hexes


@pytest.mark.parametrize(
    "bad, msg",
    [(["abc"], "row 0 has 3 characters"), (["0" * 31 + "g"], "row 0 is not hexadecimal"),
     (["0" * 32, "1" * 33], "row 1 has 33 characters")],
)
def test_bad_uid_strings(bad, msg):
    with pytest.raises(DataCompError, match=msg):
        U.hex_to_uids(bad)


def test_sort_order_equals_lexicographic_hex(rng):
    hexes = _random_hex(rng, 3000)
    arr = U.sort_uids(U.hex_to_uids(hexes))
    assert list(U.uids_to_hex(arr)) == sorted(hexes)
    assert U.is_sorted(arr)


def test_write_read_npy_and_raw(tmp_path, rng):
    arr = U.hex_to_uids(_random_hex(rng, 500))
    npy = U.write_subset(tmp_path / "s.npy", arr)
    raw = U.write_subset(tmp_path / "s.bin", arr, raw=True)
    a, b = U.read_subset(npy), U.read_subset(raw)
    assert np.array_equal(a, b)
    assert np.array_equal(a, U.sort_uids(arr))
    # byte-compatible with what the original writes: np.save of a sorted u8,u8 array
    ref = tmp_path / "ref.npy"
    np.save(ref, np.sort(arr.astype("u8,u8")))
    assert ref.read_bytes() == npy.read_bytes()
    # raw is usable with np.memmap as the original does
    assert np.array_equal(np.memmap(raw, dtype="u8,u8", mode="r"), a)


def test_malformed_subset_files(tmp_path, rng):
    good = U.sort_uids(U.hex_to_uids(_random_hex(rng, 10)))
    cases = {}
    p = tmp_path / "wrong_dtype.npy"
    np.save(p, np.arange(10))
    cases[p] = "expected 'u8,u8'"
    p = tmp_path / "wrong_fields.npy"
    np.save(p, np.zeros(3, dtype="u4,u4"))
    cases[p] = "two uint64 fields"
    p = tmp_path / "unsorted.npy"
    np.save(p, good[::-1])
    cases[p] = "not sorted"
    p = tmp_path / "truncated.npy"
    np.save(p, good)
    p.write_bytes(p.read_bytes()[:-5])
    cases[p] = "truncated"
    p = tmp_path / "not_numpy.txt"
    p.write_text("hello, this is not a subset\n")
    cases[p] = "not a whole number of 16-byte uids"
    p = tmp_path / "missing.npy"
    cases[p] = "not found"
    for path, msg in cases.items():
        with pytest.raises(DataCompError, match=msg) as ei:
            U.read_subset(path)
        assert "\n" not in str(ei.value) and str(path) in str(ei.value)
    dup = np.concatenate([good, good[:3]])
    p = tmp_path / "dups.npy"
    np.save(p, U.sort_uids(dup))
    assert U.read_subset(p).size == good.size + 3
    with pytest.raises(DataCompError, match="3 duplicate"):
        U.read_subset(p, allow_duplicates=False)


def test_set_algebra_against_python_sets(rng):
    pool = _random_hex(rng, 3000)
    a = [pool[i] for i in rng.choice(len(pool), 1500)]  # with repeats
    b = [pool[i] for i in rng.choice(len(pool), 1200)]
    c = [pool[i] for i in rng.choice(len(pool), 900)]
    A, B, C = (U.hex_to_uids(x) for x in (a, b, c))
    as_list = lambda arr: list(U.uids_to_hex(arr))  # noqa: E731
    assert as_list(U.union(A, B, C)) == sorted(set(a) | set(b) | set(c))
    assert as_list(U.intersect(A, B, C)) == sorted(set(a) & set(b) & set(c))
    assert as_list(U.difference(A, B, C)) == sorted(set(a) - set(b) - set(c))
    mask = U.isin(A, B)
    assert [x in set(b) for x in a] == mask.tolist()


def test_uids_from_parquet_and_text(tmp_path, rng):
    hexes = _random_hex(rng, 50)
    pq.write_table(pa.table({"uid": hexes, "x": range(len(hexes))}), tmp_path / "m.parquet")
    assert list(U.uids_to_hex(U.uids_from_parquet(str(tmp_path / "m.parquet")))) == hexes
    with pytest.raises(DataCompError, match="no column 'key'"):
        U.uids_from_parquet(str(tmp_path / "m.parquet"), column="key")
    (tmp_path / "u.txt").write_text("\n".join(hexes) + "\n\n")
    assert list(U.uids_to_hex(U.uids_from_text(tmp_path / "u.txt"))) == hexes


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "datacomp", *args], capture_output=True, text=True)


def test_subset_cli(tmp_path, rng):
    hexes = _random_hex(rng, 40)
    (tmp_path / "a.txt").write_text("\n".join(hexes[:30]))
    (tmp_path / "b.txt").write_text("\n".join(hexes[20:]))
    for n in "ab":
        r = _cli("subset", "from-text", str(tmp_path / f"{n}.txt"), "-o", str(tmp_path / f"{n}.npy"))
        assert r.returncode == 0, r.stderr
    a, b, i = (str(tmp_path / n) for n in ("a.npy", "b.npy", "i.npy"))
    r = _cli("subset", "intersect", a, b, "-o", i)
    assert r.returncode == 0, r.stderr
    assert sorted(U.uids_to_hex(U.read_subset(tmp_path / "i.npy"))) == sorted(set(hexes[20:30]))
    r = _cli("subset", "info", str(tmp_path / "i.npy"))
    assert "uids:       10" in r.stdout and "sorted:     yes" in r.stdout
    np.save(tmp_path / "bad.npy", np.arange(4))
    r = _cli("subset", "info", str(tmp_path / "bad.npy"))
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1
