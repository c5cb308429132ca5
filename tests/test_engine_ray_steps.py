"""Every data step gives byte-identical outputs with ``--executor ray`` and ``--executor local`` on the
embedded pool, and a driver killed mid-step resumes running only the unfinished tasks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datacomp.cli import main

pytestmark = pytest.mark.ray
EXECUTORS = ("local", "ray")


def cli(ray_address: str, executor: str, *args: object) -> None:
    extra = ["--executor", "ray", "--ray-address", ray_address, "-j", "2"] if executor == "ray" else \
        ["--executor", "local", "-j", "2"]
    assert main([str(a) for a in args] + extra) == 0


def contents(root: Path, suffixes: tuple[str, ...]) -> dict[str, bytes]:
    """relative path -> bytes of the data files under ``root`` (not the hidden state, not run records)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and p.name.endswith(suffixes) and not any(part.startswith(".") for part in rel.parts):
            out[str(rel)] = p.read_bytes()
    return out


@pytest.mark.ci
def test_filter_fraction_and_where_ray_equals_local(ray_cluster, world, tmp_path):
    """The distributed top-fraction threshold (both modes) and the k-way merged subset, on Ray."""
    got: dict[str, dict[str, bytes]] = {}
    for ex in EXECUTORS:
        out = tmp_path / ex
        for mode in ([], ["--compat"]):
            cli(ray_cluster, ex, "filter", "--name", "clip_score", "--arch", "l14", "--fraction", "0.3", *mode,
                "--metadata-dir", world.metadata, "--output", out / f"clip{'_compat' if mode else ''}.npy")
        cli(ray_cluster, ex, "filter", "--where", "clip_b32_similarity_score > 0.2 AND text_words > 2",
            "--metadata-dir", world.metadata, "--output", out / "where.npy")
        got[ex] = contents(out, (".npy",))
        summary = json.loads((out / "where.summary.json").read_text())
        assert (summary["executor"] == "RayExecutor") == (ex == "ray")  # (local: the parent beside a pool, cold)
    assert len(got["local"]) == 3 and got["ray"] == got["local"]


@pytest.mark.slow
def test_filter_every_baseline_cold_and_cached_ray_equals_local(ray_cluster, world, tmp_path):
    runs = [("no_filter", []), ("basic_filter", []), ("text_based", []), ("image_based", []),
            ("clip_score", ["--arch", "l14", "--fraction", "0.3"]),
            ("clip_score", ["--arch", "b32", "--threshold", "0.25"]),
            ("image_based_intersect_clip_score", ["--arch", "l14", "--fraction", "0.3"]), ("laion2b", [])]
    got: dict[str, dict[str, bytes]] = {}
    for ex in EXECUTORS:
        out = tmp_path / ex
        for phase in ("cold", "cached"):  # cold: signals computed inside the filter tasks; cached: read
            for i, (name, args) in enumerate(runs):
                cli(ray_cluster, ex, "filter", "--name", name, *args, "--metadata-dir", world.metadata,
                    "--signals-dir", out / "signals", "--output", out / phase / f"{i}-{name}.npy")
            if phase == "cold":
                assert any((out / "signals").rglob("*.parquet"))
        cli(ray_cluster, ex, "filter", "build-centroids", "--metadata-dir", world.metadata, "--num-clusters", "16",
            "--output", out / "centroids.npy", "--signals-dir", out / "signals")
        got[ex] = contents(out, (".npy",))
    assert got["ray"] == got["local"]
    assert len([k for k in got["local"] if not k.startswith("signals/")]) == 2 * 8 + 1  # (+ the auto centroids)
    assert got["local"]["cold/0-no_filter.npy"] != got["local"]["cold/1-basic_filter.npy"]


@pytest.mark.slow
def test_embed_dedup_reshard_ray_equals_local(ray_cluster, world, tmp_path):
    from datacomp.uids import read_subset, write_subset

    meta = tmp_path / "meta"  # BYOD: one metadata file without its npz
    meta.mkdir()
    first = sorted(Path(world.metadata).glob("*.parquet"))[0]
    shutil.copy(first, meta / first.name)
    subset = tmp_path / "subset.npy"
    from datacomp.uids import uids_from_parquet

    write_subset(subset, uids_from_parquet([str(first)])[::3])
    got: dict[str, dict[str, bytes]] = {}
    for ex in EXECUTORS:
        out = tmp_path / ex
        cli(ray_cluster, ex, "embed", "--metadata-dir", meta, "--shards", world.shards, "--output-dir", out / "emb")
        cli(ray_cluster, ex, "dedup", "--metadata-dir", world.metadata, "--eval-suite", world.eval_suite,
            "--output", out / "dedup.npy")
        cli(ray_cluster, ex, "reshard", "-i", world.shards, "-o", out / "shards", "-s", subset,
            "--shard-size", "100", "--no-progress")
        got[ex] = contents(out, (".parquet", ".npz", ".npy", ".tar"))
    assert got["ray"] == got["local"]
    assert {k.split("/")[0] for k in got["local"]} == {"emb", "dedup.npy", "dedup.eval.npz", "shards"}
    assert sum(k.endswith(".tar") for k in got["local"]) == -(-len(read_subset(subset)) // 100)


@pytest.mark.slow
def test_download_ray_equals_local(ray_cluster, world, tmp_path):
    from test_download import served

    first = sorted(Path(world.metadata).glob("*.parquet"))[0]
    got: dict[str, dict[str, bytes]] = {}
    with served(Path(world.pool), tmp_path) as (_server, meta):
        for p in meta.iterdir():  # one metadata file: 1,000 images
            if p.stem != first.stem:
                p.unlink()
        for ex in EXECUTORS:
            out = tmp_path / ex
            cli(ray_cluster, ex, "download", "--data-dir", out, "--metadata-dir", meta, "--allow-network",
                "127.0.0.0/8", "--thread-count", "4", "--number-sample-per-shard", "250", "--no-progress")
            got[ex] = _download_content(out / "shards")
    assert len(got["local"]) == 1000 and got["ray"] == got["local"]


def _download_content(shards: Path) -> dict[str, tuple]:
    """uid -> (shard, parquet row without key, tar members without key): the rows inside a shard are
    stored in the order their fetches finish, so two runs (local or Ray alike) differ only in order and keys."""
    import pyarrow.parquet as pq

    from datacomp.pool.shards import iter_tar_samples

    out: dict[str, tuple] = {}
    for pqf in sorted(shards.glob("*.parquet")):
        rows = {r["uid"]: r for r in pq.read_table(pqf).to_pylist()}
        members = {}
        for _key, m in iter_tar_samples(pqf.with_suffix(".tar")):
            meta = json.loads(m["json"])
            members[meta.pop("uid")] = (m.get("jpg"), m.get("txt"), sorted((k, str(v)) for k, v in meta.items()
                                                                         if k != "key"))
        for uid, r in rows.items():
            r.pop("key")
            out[uid] = (pqf.stem, sorted((k, str(v)) for k, v in r.items()), members.get(uid))
    return out


def _markers(state: Path) -> set[str]:
    return {json.loads(p.read_text())["name"] for p in state.glob("*.done.json")} if state.is_dir() else set()


@pytest.mark.slow
def test_killed_driver_resumes_only_unfinished_tasks(ray_cluster, world, tmp_path):
    """SIGKILL the CLI (the Ray driver) once some reshard shards are marked done; the re-run copies only
    the rest, and the output equals an uninterrupted run's."""
    from datacomp.uids import uids_from_parquet, write_subset

    subset = tmp_path / "subset.npy"
    write_subset(subset, uids_from_parquet([str(p) for p in sorted(Path(world.metadata).glob("*.parquet"))]))
    base = [sys.executable, "-m", "datacomp", "reshard", "-i", str(world.shards), "-s", str(subset),
            "--shard-size", "40", "--blur", "--no-progress", "--executor", "ray", "--ray-address", ray_cluster,
            "-j", "2"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = tmp_path / "out"
    state = out / ".reshard"
    proc = subprocess.Popen([*base, "-o", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while len(_markers(state)) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = _markers(state)
    total = -(-4000 // 40)
    assert 3 <= len(first) < total
    stamps = {n: (out / f"{n}.tar").stat().st_mtime_ns for n in first}
    r = subprocess.run([*base, "-o", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"({len(first)} already complete)" in r.stdout  # only the unfinished ones were copied now
    assert len(_markers(state)) == total
    assert {n: (out / f"{n}.tar").stat().st_mtime_ns for n in first} == stamps  # finished shards not rewritten
    ref = tmp_path / "ref"
    r = subprocess.run([*base, "-o", str(ref)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert contents(out, (".tar", ".npy")) == contents(ref, (".tar", ".npy"))
