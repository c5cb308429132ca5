"""`datacomp download` end to end: the Hub code path against a local stand-in, kill-and-resume, serve."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from datacomp.cli.synth import register_serve
from datacomp.pool.download import DownloadOptions, download
from datacomp.pool.http import FetchConfig
from datacomp.pool.hub import fetch_metadata
from datacomp.pool.resize import ImageConfig
from datacomp.pool.shards import completed_shards, list_shards
from datacomp.synth.serve import PoolServer, make_image_pool, rebase_urls
from test_download import LOCAL, read_output, served

DATACOMP = [sys.executable, "-m", "datacomp"]


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="0", PYTHONUNBUFFERED="1")
    env.pop("HF_ENDPOINT", None)
    return env


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("clipool")
    return root / "pool", make_image_pool(root, n=48, seed=1)


def test_scale_download_through_hub_api(pool, tmp_path):
    """`--scale small` runs huggingface_hub.snapshot_download against a local server speaking the Hub API."""
    pool_dir, images = pool
    repo = tmp_path / "repo"
    with PoolServer(pool_dir, hub_repos={"mlfoundations/datacomp_small": repo}) as server:
        rebase_urls(pool_dir / "metadata", repo, server.base_url)
        np.savez(repo / "0000.npz", b32_img=np.zeros((len(images), 4), np.float16))
        (repo / "README.md").write_text("not metadata")
        data = tmp_path / "data"
        base = [*DATACOMP, "download", "--scale", "small", "--data-dir", str(data), "--hf-endpoint", server.url]
        r = subprocess.run([*base, "--skip-shards"], capture_output=True, text=True, env=_env(), timeout=120)
        assert r.returncode == 0, r.stderr
        assert (data / "metadata" / "0000.parquet").read_bytes() == (repo / "0000.parquet").read_bytes()
        assert not (data / "metadata" / "0000.npz").exists() and not (data / "metadata" / "README.md").exists()
        assert "metadata: 1 file(s)" in r.stdout
        # npz later, without re-fetching the parquet (the original deletes everything to add npz)
        r = subprocess.run([*base, "--skip-shards", "--download-npz"], capture_output=True, text=True, env=_env(),
                           timeout=120)
        assert r.returncode == 0, r.stderr
        assert (data / "metadata" / "0000.npz").read_bytes() == (repo / "0000.npz").read_bytes()
        # then the images
        r = subprocess.run([*base, "--allow-network", "127.0.0.0/8", "--thread-count", "4", "--processes-count",
                            "2", "--number-sample-per-shard", "20", "--no-progress"],
                           capture_output=True, text=True, env=_env(), timeout=180)
        assert r.returncode == 0, r.stderr
    assert "estimated shard size" in r.stdout and "success rate" in r.stdout and "images/s" in r.stdout
    table, samples = read_output(data / "shards")
    assert set(samples) == set(images) and len(completed_shards(data / "shards")) == 3
    rec = json.loads((data / "shards" / "download_record.json").read_text())
    assert rec["counts"]["successes"] == len(images) and rec["step"] == "download"


def test_hub_repo_missing_is_one_line_error(tmp_path):
    with PoolServer(None) as server:  # speaks the Hub API but holds no repo
        r = subprocess.run([*DATACOMP, "download", "--scale", "medium", "--data-dir", str(tmp_path),
                            "--hf-endpoint", server.url, "--skip-shards"],
                           capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot fetch mlfoundations/datacomp_medium from {server.url}")
    assert "--metadata-dir" in last and "Traceback" not in r.stderr


def test_xlarge_layout_is_flattened(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    repo = tmp_path / "repo"
    for part in ("part_00000", "part_00001"):
        (repo / part).mkdir(parents=True)
        (repo / part / f"{part[-1]}.parquet").write_bytes(b"PAR1" + part.encode())
    with PoolServer(None, hub_repos={"mlfoundations/datacomp_xlarge": repo}) as server:
        files = fetch_metadata("xlarge", tmp_path / "meta", endpoint=server.url)
    assert [f.name for f in files] == ["0.parquet", "1.parquet"]
    assert not [p for p in (tmp_path / "meta").iterdir() if p.name.startswith("part")]


def test_kill_and_resume_gives_same_samples(pool, tmp_path):
    """SIGKILL a real `datacomp download` mid-way, re-run it: same samples as an uninterrupted run."""
    pool_dir, images = pool
    with served(pool_dir, tmp_path, delay_seconds=0.08) as (server, meta):
        out = tmp_path / "killed"
        cmd = [*DATACOMP, "download", "--metadata-dir", str(meta), "--data-dir", str(tmp_path),
               "--shards-dir", str(out), "--allow-network", "127.0.0.0/8", "--thread-count", "2",
               "--processes-count", "1", "--number-sample-per-shard", "4", "--no-progress"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        deadline = time.time() + 60
        while time.time() < deadline and len(list(out.glob("*_stats.json"))) < 3:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        done_at_kill = completed_shards(out)
        assert proc.returncode == -signal.SIGKILL
        assert 3 <= len(done_at_kill) < 12, "the kill must land mid-way"
        # every shard with a stats file is complete; nothing else counts as done
        for tar in done_at_kill:
            stats = json.loads(tar.with_name(tar.name[:-4] + "_stats.json").read_text())
            assert stats["successes"] == 4
        before = server.requests.copy()
        r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
        assert r.returncode == 0, r.stderr
        refetched = sum((server.requests - before).values())
        full = tmp_path / "full"
        download(meta, full, DownloadOptions(fetch=FetchConfig(allowed_networks=LOCAL), thread_count=4,
                                             samples_per_shard=4), progress=False)
    assert refetched <= len(images) - 4 * len(done_at_kill)  # completed shards were not fetched again
    assert len(completed_shards(out)) == 12 == len(list_shards(out))
    assert not list(out.glob(".*.tmp"))
    t1, s1 = read_output(out)
    t2, s2 = read_output(full)
    assert set(s1) == set(s2) == set(images)
    assert sorted(zip(t1["key"].to_pylist(), t1["uid"].to_pylist())) == sorted(
        zip(t2["key"].to_pylist(), t2["uid"].to_pylist()))
    assert all(s1[u]["jpg"] == s2[u]["jpg"] for u in images)  # deterministic re-encode


def test_reshard_reads_download_output(pool, tmp_path):
    from datacomp import uids as U
    from datacomp.reshard import reshard

    pool_dir, images = pool
    uids = list(images)
    with served(pool_dir, tmp_path, faults={uids[0]: "404", uids[5]: "corrupt"}) as (server, meta):
        download(meta, tmp_path / "shards", DownloadOptions(fetch=FetchConfig(allowed_networks=LOCAL),
                                                            thread_count=4, samples_per_shard=16), progress=False)
    U.write_subset(tmp_path / "subset.npy", U.hex_to_uids(uids[:10]))
    summary = reshard(tmp_path / "shards", tmp_path / "resharded", tmp_path / "subset.npy", workers=1,
                      progress=False)
    _, got = read_output_tars(tmp_path / "resharded")
    assert set(got) == set(uids[1:5] + uids[6:10])  # the two failures are reported missing, not invented
    assert summary["missing_uids"] == 2 and summary["output_count"] == 8
    assert (tmp_path / "resharded" / "missing_uids.txt").read_text().split() == sorted([uids[0], uids[5]])


def read_output_tars(d: Path) -> tuple[None, dict[str, bytes]]:
    from datacomp.pool.shards import iter_tar_samples

    out = {}
    for tar in list_shards(d):
        for _k, m in iter_tar_samples(tar):
            out[json.loads(m["json"])["uid"]] = m["jpg"]
    return None, out


def test_serve_command(pool, tmp_path):
    """`datacomp synth serve`: serves the pool's images with the faults given, then stops."""
    import urllib.request

    pool_dir, images = pool
    parser = argparse.ArgumentParser()
    register_serve(parser.add_subparsers())
    faults = tmp_path / "faults.json"
    uid = next(iter(images))
    faults.write_text(json.dumps({uid: "404"}))
    port = 18765 + os.getpid() % 1000
    proc = subprocess.Popen([*DATACOMP, "synth", "serve", str(pool_dir), "--port", str(port), "--faults", str(faults),
                             "--duration", "20"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"serving {len(images)} images at http://127.0.0.1:{port}/images/<uid>.jpg (1 with faults)" in line
        other = list(images)[1]
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/images/{other}.jpg").read() == images[other]
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/images/{uid}.jpg")
        assert e.value.code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    args = parser.parse_args(["serve", str(pool_dir)])
    assert args.port == 8765 and args.host == "127.0.0.1"


@pytest.mark.slow
def test_world_pool_round_trip(world, tmp_path):
    """The embedded world's whole pool through the local server: every image back, hashes as recorded."""
    import pyarrow.parquet as pq

    with served(world.pool, tmp_path) as (_server, meta):
        opts = DownloadOptions(fetch=FetchConfig(allowed_networks=LOCAL), verify_hash=True, thread_count=16,
                               image=ImageConfig(reencode="auto"))
        summary = download(meta, tmp_path / "shards", opts, processes=2, progress=False)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in world.metadata.glob("*.parquet"))
    assert summary["count"] == summary["successes"] == rows and summary["sha256_mismatches"] == 0
    table, got = read_output(tmp_path / "shards")
    boxes = dict(zip(table["uid"].to_pylist(), table["face_bboxes"].to_pylist()))
    _, original = read_output(world.shards)
    assert set(got) == set(original)
    same = [u for u in got if not boxes[u]]
    assert same and all(got[u]["jpg"] == original[u]["jpg"] for u in same)
