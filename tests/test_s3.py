"""Every step against a real S3 API server on 127.0.0.1 (moto's server mode): results byte-identical to
the same step on local paths, and one-line errors for a missing bucket or missing credentials."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datacomp.cli import main
from datacomp.storage import as_location

pytestmark = pytest.mark.s3


def _fs(s3_server):
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_server["endpoint_url"], use_listings_cache=False)
    fs.invalidate_cache()
    return fs


@pytest.fixture(scope="module")
def s3_pool(world, s3_server):
    """The embedded world's pool (metadata parquet + npz, shards) uploaded once to a bucket."""
    fs = _fs(s3_server)
    fs.mkdir("pool-s3")
    fs.put(f"{world.metadata}/", "pool-s3/pool/metadata/", recursive=True)
    fs.put(f"{world.shards}/", "pool-s3/pool/shards/", recursive=True)
    return "s3://pool-s3/pool"


def _cli(*argv: str) -> int:
    return main(["-q", *argv])


def _b(url: str | Path) -> bytes:
    return as_location(str(url)).read_bytes()


# --- filter: baselines, the signals cache (cold, then cached), subsets ---------------------------------


@pytest.mark.ci
def test_filter_and_subsets_on_s3_match_local(world, s3_pool, s3_bucket, tmp_path, capsys):
    """Metadata read from S3, subsets, summaries and the signals cache written there: same bytes as local."""
    runs = [("basic_filter", ["--name", "basic_filter"]),
            ("clip", ["--name", "clip_score", "--arch", "l14", "--fraction", "0.3"]),
            ("where", ["--where", "text_words >= 3 AND clip_b32_similarity_score > 0.2"])]
    for name, args in runs:
        assert _cli("filter", "--metadata-dir", str(world.metadata), "--output", str(tmp_path / f"{name}.npy"),
                    "--workers", "2", *args) == 0
        assert _cli("filter", "--metadata-dir", f"{s3_pool}/metadata", "--output", f"{s3_bucket}/{name}.npy",
                    "--workers", "2", *args) == 0
        assert _b(f"{s3_bucket}/{name}.npy") == (tmp_path / f"{name}.npy").read_bytes(), name
        summary = json.loads(_b(f"{s3_bucket}/{name}.summary.json"))
        assert summary["kept"] == json.loads((tmp_path / f"{name}.summary.json").read_text())["kept"] > 0
    # the signals cache lives beside the output in the bucket; a second run reads it (same result)
    caption = [p.name for p in as_location(f"{s3_bucket}/signals/caption").ls()]
    assert len(caption) == len(list(world.metadata.glob("*.parquet")))
    before = {p.name: p.info()["etag"] for p in as_location(f"{s3_bucket}/signals/caption").ls()}
    assert _cli("filter", "--metadata-dir", f"{s3_pool}/metadata", "--output", f"{s3_bucket}/where2.npy",
                "--where", "text_words >= 3 AND clip_b32_similarity_score > 0.2") == 0
    assert {p.name: p.info()["etag"] for p in as_location(f"{s3_bucket}/signals/caption").ls()} == before
    assert _b(f"{s3_bucket}/where2.npy") == (tmp_path / "where.npy").read_bytes()
    # no work dir or temporary left behind
    assert not [p for p in as_location(s3_bucket).ls(dirs=True) if p.name.startswith(".")]

    # subset algebra between the bucket and local files; results identical to the all-local ones
    assert _cli("subset", "intersect", f"{s3_bucket}/basic_filter.npy", str(tmp_path / "clip.npy"),
                "-o", f"{s3_bucket}/both.npy") == 0
    assert _cli("subset", "intersect", str(tmp_path / "basic_filter.npy"), str(tmp_path / "clip.npy"),
                "-o", str(tmp_path / "both.npy")) == 0
    assert _b(f"{s3_bucket}/both.npy") == (tmp_path / "both.npy").read_bytes()
    assert _cli("subset", "to-text", f"{s3_bucket}/both.npy", "-o", f"{s3_bucket}/both.txt") == 0
    assert _cli("subset", "from-text", f"{s3_bucket}/both.txt", "-o", f"{s3_bucket}/both-raw.bin", "--raw") == 0
    from datacomp.uids import read_subset

    assert np.array_equal(read_subset(f"{s3_bucket}/both-raw.bin"), read_subset(tmp_path / "both.npy"))
    capsys.readouterr()
    assert _cli("subset", "info", f"{s3_bucket}/both.npy") == 0
    assert "sorted:     yes" in capsys.readouterr().out


@pytest.mark.slow
def test_signals_cache_cold_then_cached_on_s3(world, s3_pool, s3_bucket, tmp_path):
    """A filter whose rules need cached signals (language ID): computed into the bucket, then only read."""
    from datacomp.filters import run_filter

    sdir = f"{s3_bucket}/cache"
    syn = world.assets / "concepts.txt"  # (found beside a local world's metadata, not beside a URL)
    cold = run_filter("text_based", f"{s3_pool}/metadata", f"{s3_bucket}/t.npy", signals_dir=sdir, workers=2,
                      synsets=syn, progress=False)
    local = run_filter("text_based", world.metadata, tmp_path / "t.npy", workers=2, synsets=syn, progress=False)
    assert _b(f"{s3_bucket}/t.npy") == (tmp_path / "t.npy").read_bytes()
    assert cold["kept"] == local["kept"]
    groups = {p.name for p in as_location(sdir).ls(dirs=True)}
    assert "lang" in groups and any(g.startswith("concepts-") for g in groups), groups
    tags = {p.name: p.info()["etag"] for g in groups for p in as_location(f"{sdir}/{g}").ls()}
    warm = run_filter("text_based", f"{s3_pool}/metadata", f"{s3_bucket}/t2.npy", signals_dir=sdir, workers=2,
                      synsets=syn, progress=False)
    assert warm["kept"] == cold["kept"]
    assert {p.name: p.info()["etag"] for g in groups for p in as_location(f"{sdir}/{g}").ls()} == tags


# --- reshard: every direction byte-identical to local -> local ---------------------------------------


def _tars(url: str) -> dict[str, bytes]:
    loc = as_location(url)
    return {p.name: p.read_bytes() for p in loc.ls() if p.name.endswith((".tar", "_stats.json"))}


def _subset(world, tmp_path) -> Path:
    from datacomp.filters import run_filter

    run_filter("basic_filter", world.metadata, tmp_path / "s.npy", workers=1, progress=False)
    return tmp_path / "s.npy"


@pytest.mark.ci
def test_reshard_s3_to_s3_matches_local(world, s3_pool, s3_bucket, tmp_path):
    subset = _subset(world, tmp_path)
    as_location(f"{s3_bucket}/s.npy").upload(subset)
    args = ["--shard-size", "300", "--shuffle-bufsize", "50", "-j", "2"]
    assert _cli("reshard", "-i", str(world.shards), "-o", str(tmp_path / "local"), "-s", str(subset), *args) == 0
    assert _cli("reshard", "-i", f"{s3_pool}/shards", "-o", f"{s3_bucket}/out", "-s", f"{s3_bucket}/s.npy",
                *args) == 0
    want = _tars(str(tmp_path / "local"))
    assert len(want) >= 6 and _tars(f"{s3_bucket}/out") == want
    meta = json.loads(_b(f"{s3_bucket}/out/meta.json"))
    assert meta["counts"]["output_shards_general_path"] == meta["output_shard_count"]  # remote inputs stream
    # a re-run resumes (every shard complete), a different subset is refused
    assert _cli("reshard", "-i", f"{s3_pool}/shards", "-o", f"{s3_bucket}/out", "-s", f"{s3_bucket}/s.npy",
                *args) == 0
    assert json.loads(_b(f"{s3_bucket}/out/meta.json"))["counts"]["output_shards_resumed"] == len(want) // 2


@pytest.mark.slow
def test_reshard_between_s3_and_local_matches_local(world, s3_pool, s3_bucket, tmp_path):
    subset = _subset(world, tmp_path)
    args = ["--shard-size", "500", "-j", "2"]
    assert _cli("reshard", "-i", str(world.shards), "-o", str(tmp_path / "local"), "-s", str(subset), *args) == 0
    want = _tars(str(tmp_path / "local"))
    assert _cli("reshard", "-i", f"{s3_pool}/shards", "-o", str(tmp_path / "from_s3"), "-s", str(subset),
                *args) == 0
    assert _tars(str(tmp_path / "from_s3")) == want
    assert _cli("reshard", "-i", str(world.shards), "-o", f"{s3_bucket}/to_s3", "-s", str(subset), *args) == 0
    assert _tars(f"{s3_bucket}/to_s3") == want
    # no-copy: a uid filter over the bucket's shards, read back by training's source discovery
    assert _cli("reshard", "-i", f"{s3_pool}/shards", "-o", f"{s3_bucket}/nocopy", "-s", str(subset),
                "--no-copy") == 0
    from datacomp.train.data import resolve_sources

    src = resolve_sources(f"{s3_bucket}/nocopy")[0]
    assert src.keep is not None and all(str(s).startswith("s3://") for s in src.shards)


# --- train reads shards from the bucket ---------------------------------------------------------------


@pytest.mark.slow
def test_train_reads_shards_from_s3(world, s3_pool, tmp_path):
    import torch

    from datacomp.train import TrainConfig, train

    cfg = TrainConfig(model="datacomp-tiny-rn", batch_size=16, lr=2e-3, train_num_samples=48, warmup=1,
                      num_checkpoints=1, precision="fp32", workers=0, grad_checkpointing=False,
                      shuffle_buffer=50, shuffle_initial=10)
    a = train(str(world.shards), tmp_path, "local", cfg, progress=False, threads=1)
    b = train(f"{s3_pool}/shards", tmp_path, "s3", cfg, progress=False, threads=1)
    assert a.steps == b.steps == 3 and a.losses == b.losses
    wa = torch.load(a.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    wb = torch.load(b.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert all(bool((wa[k] == wb[k]).all()) for k in wa)


@pytest.mark.slow
def test_train_and_evaluate_with_the_run_folder_in_s3(world, s3_bucket, tmp_path, monkeypatch):
    """A run folder in a bucket: training works in a staged copy and uploads it; a re-run with the staged
    copy gone resumes from the bucket (nothing left to train); evaluate reads the run from the bucket and
    writes its results there. Weights and metrics equal a run on local paths."""
    import json
    import shutil

    import torch

    from datacomp.train import TrainConfig, train

    monkeypatch.setenv("DATACOMP_STAGING", str(tmp_path / "staging"))
    cfg = TrainConfig(model="datacomp-tiny-rn", batch_size=16, lr=2e-3, train_num_samples=48, warmup=1,
                      num_checkpoints=1, precision="fp32", workers=0, grad_checkpointing=False,
                      shuffle_buffer=50, shuffle_initial=10)
    a = train(str(world.shards), tmp_path / "runs", "exp", cfg, progress=False, threads=1)
    b = train(str(world.shards), f"{s3_bucket}/runs", "exp", cfg, progress=False, threads=1)
    assert a.steps == b.steps == 3 and a.losses == b.losses and len(b.losses) == 3
    remote = as_location(f"{s3_bucket}/runs/exp")
    assert (remote / "train_record.json").isfile()
    wa = torch.load(a.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    wb = torch.load(io.BytesIO((remote / "checkpoints" / "epoch_latest.pt").read_bytes()), map_location="cpu",
                    weights_only=True)["state_dict"]
    assert all(bool((wa[k] == wb[k]).all()) for k in wa)
    shutil.rmtree(tmp_path / "staging")
    again = train(str(world.shards), f"{s3_bucket}/runs", "exp", cfg, progress=False, threads=1)
    assert again.steps == 3 and again.losses == []  # resumed from the bucket's checkpoint: nothing to do

    tasks = "embedded/shapes,embedded/retrieval"
    common = ["--data-dir", str(world.eval_suite), "--tasks", tasks, "--no-progress"]
    assert _cli("evaluate", "--train-output-dir", str(tmp_path / "runs" / "exp"), *common) == 0
    assert _cli("evaluate", "--train-output-dir", str(remote), *common) == 0

    def metrics(text: str) -> dict:
        return {r["key"]: r["metrics"] for r in map(json.loads, text.splitlines())}

    got = metrics((remote / "eval_results.jsonl").read_text())
    assert set(got) == set(tasks.split(","))
    assert got == metrics((tmp_path / "runs" / "exp" / "eval_results.jsonl").read_text())


@pytest.mark.slow
def test_dedup_and_centroids_on_s3_match_local(world, s3_pool, s3_bucket, tmp_path):
    """Evaluation-set dedup and k-means centroids with the pool and the outputs in a bucket: same bytes."""
    from datacomp.filters.clusters import build_centroids
    from datacomp.filters.dedup import DEFAULT_MODEL, dedup

    a = dedup(world.metadata, world.eval_suite, tmp_path / "dups.npy", model=DEFAULT_MODEL, progress=False)
    b = dedup(f"{s3_pool}/metadata", world.eval_suite, f"{s3_bucket}/dups.npy", model=DEFAULT_MODEL, progress=False)
    assert a["flagged"] == b["flagged"] > 0
    assert _b(f"{s3_bucket}/dups.npy") == (tmp_path / "dups.npy").read_bytes()
    assert not [p for p in as_location(s3_bucket).ls() if "dedup-work" in p.name]
    build_centroids(world.metadata, tmp_path / "c.npy", num_clusters=8, seed=0, signals_dir=tmp_path / "sig")
    build_centroids(f"{s3_pool}/metadata", f"{s3_bucket}/c.npy", num_clusters=8, seed=0,
                    signals_dir=f"{s3_bucket}/sig")
    assert _b(f"{s3_bucket}/c.npy") == (tmp_path / "c.npy").read_bytes()


# --- download into the bucket -------------------------------------------------------------------------


@pytest.mark.slow
def test_download_into_s3_matches_local(s3_bucket, tmp_path):
    from datacomp.pool.download import DownloadOptions, download
    from datacomp.pool.http import FetchConfig
    from datacomp.pool.shards import iter_tar_samples
    from datacomp.synth.serve import PoolServer, make_image_pool, rebase_urls

    images = make_image_pool(tmp_path / "src")
    opts = DownloadOptions(fetch=FetchConfig(allowed_networks=("127.0.0.0/8",)), thread_count=2,
                           samples_per_shard=16, progress=False)
    with PoolServer(tmp_path / "src" / "pool") as server:
        rebase_urls(tmp_path / "src" / "pool" / "metadata", tmp_path / "meta", server.base_url)
        fs_meta = f"{s3_bucket}/meta"
        for p in sorted((tmp_path / "meta").glob("*.parquet")):
            as_location(f"{fs_meta}/{p.name}").upload(p)
        local = download(tmp_path / "meta", tmp_path / "shards", opts, progress=False)
        remote = download(fs_meta, f"{s3_bucket}/shards", opts, progress=False)
    assert remote["successes"] == local["successes"] == len(images)
    names = sorted(p.name for p in as_location(f"{s3_bucket}/shards").ls() if p.name.endswith(".tar"))
    assert names == sorted(p.name for p in (tmp_path / "shards").glob("*.tar"))
    for n in names:
        got = [(k, m) for k, m in iter_tar_samples(f"{s3_bucket}/shards/{n}")]
        want = [(k, {e: bytes(v) for e, v in m.items() if e != "json"}) for k, m in iter_tar_samples(
            tmp_path / "shards" / n)]
        # (member order follows download completion, as img2dataset's; compare by key)
        assert {k: {e: v for e, v in m.items() if e != "json"} for k, m in got} == dict(want)
    # resume: every shard has its _stats.json in the bucket, nothing is fetched again
    with PoolServer(tmp_path / "src" / "pool") as server:
        again = download(fs_meta, f"{s3_bucket}/shards", opts, progress=False)
        assert sum(server.requests.values()) == 0
    assert again["this_run"]["count"] == 0


# --- one-line errors ------------------------------------------------------------------------------------


@pytest.mark.ci
def test_missing_bucket_and_missing_credentials_are_one_line(world, s3_server, capsys, tmp_path):
    rc = _cli("filter", "--metadata-dir", "s3://no-such-bucket-dc/m", "--output", str(tmp_path / "x.npy"),
              "--name", "basic_filter")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: s3://no-such-bucket-dc/m: bucket 'no-such-bucket-dc' does not exist"), err
    rc = _cli("reshard", "-i", str(world.shards), "-o", "s3://no-such-bucket-dc/out", "-s", str(tmp_path / "x.npy"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "bucket 'no-such-bucket-dc' does not exist" in err and len(err.splitlines()) == 1

    # no credentials at all: a fresh process (credentials are resolved once per process)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=s3_server["endpoint_url"], AWS_EC2_METADATA_DISABLED="true",
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_DEFAULT_REGION="us-east-1", PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run([sys.executable, "-m", "datacomp", "filter", "--metadata-dir", "s3://pool-s3/pool/metadata",
                        "--output", str(tmp_path / "y.npy"), "--name", "basic_filter"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: s3://pool-s3/pool/metadata: no credentials"), p.stderr
    assert "AWS_ACCESS_KEY_ID" in p.stderr and "Traceback" not in p.stderr
