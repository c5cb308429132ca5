"""Global operations as tasks: the top-fraction threshold on Ray equals a brute-force sort with ties at the
cut, and the streaming k-way merge writes the same bytes as sorting the concatenation."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from datacomp.engine import ThreadExecutor, get_executor
from datacomp.filters import threshold as th
from datacomp.uids import UID_DTYPE, hex_to_uids, isin, merge_sorted, merge_subset_files, sort_uids, write_subset
from test_filter_world import make_pool


def _uids(rng: np.random.Generator, n: int, hi: int = 4) -> np.ndarray:
    u = np.empty(n, UID_DTYPE)
    u["f0"], u["f1"] = rng.integers(0, hi, n).astype(np.uint64), rng.integers(0, 40, n).astype(np.uint64)
    return u


def test_merge_writes_the_bytes_of_the_sorted_unique_concatenation(tmp_path, rng):
    parts = [sort_uids(_uids(rng, n)) for n in (0, 1, 700, 2500, 3000)]  # many duplicates across parts
    paths = []
    for i, p in enumerate(parts):
        paths.append(tmp_path / f"{i}.npy")
        np.save(paths[-1], p)
    concat = np.concatenate(parts)
    uniq = np.unique(concat)  # the subset format is sorted and unique
    write_subset(tmp_path / "ref.npy", uniq)
    got = merge_subset_files(paths, tmp_path / "out.npy", chunk=1)  # chunk=1: duplicates across chunk edges
    assert (got.written, got.excluded, got.duplicates) == (uniq.size, 0, concat.size - uniq.size)
    assert got.example is not None and len(got.files) == 2
    assert (tmp_path / "out.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()
    excl = sort_uids(_uids(rng, 50))
    drop = isin(uniq, excl)
    write_subset(tmp_path / "ref2.npy", uniq[~drop])
    got = merge_subset_files(paths, tmp_path / "out2.npy", exclude=excl)
    assert (got.written, got.excluded) == (int((~drop).sum()), int(drop.sum()))
    assert (tmp_path / "out2.npy").read_bytes() == (tmp_path / "ref2.npy").read_bytes()
    np.save(paths[3], parts[3][::-1])  # a part left unsorted is sorted, not merged wrongly
    merge_subset_files(paths, tmp_path / "out3.npy")
    assert (tmp_path / "out3.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()
    assert np.array_equal(merge_sorted(parts, stop=1234), sort_uids(concat)[:1234])


@pytest.mark.ray
@pytest.mark.slow
def test_threshold_passes_on_ray_equal_a_brute_force_sort_with_ties(ray_cluster, tmp_path):
    meta = make_pool(tmp_path / "p", files=3, rows=300)  # scores rounded to 2 decimals: ties at any cut
    files = sorted(meta.glob("*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    col = "clip_l14_similarity_score"
    ray = get_executor("ray", 2, address=ray_cluster)
    for fraction in (0.1, 0.3, 0.77):
        n = math.floor(len(rows) * fraction + 0.5)
        order = sorted(rows, key=lambda r: (-r[col], r["uid"]))
        t = order[n - 1][col]
        assert sum(r[col] == t for r in rows) > 1  # the cut falls inside a tie
        cuts = [th.exact_cut(files, col, len(rows), fraction, ex) for ex in (ray, ThreadExecutor(2))]
        assert cuts[0] == cuts[1]
        last = hex_to_uids(np.array([order[n - 1]["uid"]]))[0]
        assert (np.float32(cuts[0].threshold), cuts[0].tie_uid) == (np.float32(t), (int(last["f0"]), int(last["f1"])))
        assert cuts[0].ties_kept == sum(r[col] == t for r in order[:n])
        compat = [th.compat_cut(files, col, len(rows), fraction, ex) for ex in (ray, ThreadExecutor(1))]
        assert compat[0] == compat[1] and np.float32(compat[0].threshold) == np.float32(
            order[int(len(rows) * fraction)][col])
