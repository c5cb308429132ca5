"""A full disk and a read-only output for the five steps: one `error:` line, exit 1, nothing half-written
under a final name; after freeing space the re-run gives what a run on a roomy disk gives.

Each output lives on a small tmpfs mounted by the test (root is needed; the tests skip with the reason
otherwise). "Full" is a ballast file that leaves half of what the step writes free; deleting the
ballast frees the space, so the re-run continues from what the failed run left, as a user's would.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from datacomp.errors import EXIT_ENVIRONMENT
from test_errors_cli import assert_one_line, fill, remount_ro, run_cli, tmpfs

MODEL = "datacomp-tiny-rn"
TASKS = ["embedded/count", "embedded/shapes"]
# A test-only training budget (the CLI always trains at a fixed scale): 4 steps of 32, two checkpoints.
SMALL_TINY = ("import dataclasses, datacomp.scales as S\n"
              "S._SCALES['tiny'] = dataclasses.replace(S._SCALES['tiny'], batch_size=32, train_num_samples=128, "
              "warmup=2, num_checkpoints=2)\n")


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def no_partial_files(root: Path) -> None:
    """Nothing half-written under a final name: no temporaries left; every tar, parquet, .npy and JSON
    file there is whole (a shard without its ``_stats.json`` is not done, and is redone, but must be whole)."""
    import tarfile

    import pyarrow.parquet as pq

    left = [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]
    assert not left, left
    for p in root.rglob("*"):
        if p.name == "ballast" or not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix == ".tar":
            with tarfile.open(p) as tf:
                members = tf.getmembers()
            assert members and p.stat().st_size % 512 == 0, p
        elif p.suffix == ".parquet":
            pq.read_table(p)
        elif p.suffix == ".npy":
            np.load(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            [json.loads(x) for x in p.read_text().splitlines()]
        elif p.suffix == ".pt":
            import torch

            torch.load(p, map_location="cpu", weights_only=True)


@contextlib.contextmanager
def full_disk(need: int) -> Iterator[tuple[Path, Path]]:
    """A tmpfs with room for about half of ``need`` bytes; yields (mount, ballast)."""
    size = max(2 * need + (2 << 20), 4 << 20)
    with tmpfs(f"{size // 1024}k") as d:
        ballast = fill(d, keep=max(need // 2, 8192))
        yield d, ballast


def check_full_then_rerun(argv: list[str], out: Path, reference: Path, mount: Path, ballast: Path,
                          prelude: str = "") -> tuple[str, object]:
    """Run ``argv`` on the full disk (one line, exit 1), free the space, re-run (exit 0)."""
    r = run_cli("-q", *argv, prelude=prelude, timeout=600)
    line = assert_one_line(r, EXIT_ENVIRONMENT, "no space left", "free space")
    assert str(mount) in line, line  # names the file (or the output) that could not be written
    no_partial_files(mount)
    ballast.unlink()
    r2 = run_cli("-q", *argv, prelude=prelude, timeout=600)
    assert r2.returncode == 0, r2.stderr
    no_partial_files(mount)
    return line, r2


# --------------------------------------------------------------------------------------------------
# filter


def _filter_argv(world, out: Path) -> list[str]:
    return ["filter", "--name", "clip_score", "--arch", "l14", "--threshold", "0.25",
            "--metadata-dir", str(world.metadata), "--output", str(out), "--workers", "1"]


@pytest.mark.slow
@pytest.mark.ci
def test_filter_disk_full_then_rerun(world, tmp_path):
    ref = tmp_path / "ref.npy"
    assert run_cli("-q", *_filter_argv(world, ref)).returncode == 0
    with full_disk(ref.stat().st_size + 4096) as (d, ballast):
        fill(d, keep=4096)  # less than the subset file
        out = d / "sub" / "o.npy"
        check_full_then_rerun(_filter_argv(world, out), out, ref, d, ballast)
        assert out.read_bytes() == ref.read_bytes()


# --------------------------------------------------------------------------------------------------
# reshard


@pytest.fixture(scope="module")
def subset(world, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("sub") / "s.npy"
    assert run_cli("-q", *_filter_argv(world, p)).returncode == 0
    return p


def _reshard_argv(world, subset: Path, out: Path) -> list[str]:
    return ["reshard", "-i", str(world.shards), "-o", str(out), "-s", str(subset), "--shard-size", "200",
            "--no-progress", "-j", "1"]


@pytest.mark.slow
def test_reshard_disk_full_then_rerun(world, subset, tmp_path):
    ref = tmp_path / "ref"
    assert run_cli("-q", *_reshard_argv(world, subset, ref)).returncode == 0
    with full_disk(du(ref)) as (d, ballast):
        out = d / "shards"
        check_full_then_rerun(_reshard_argv(world, subset, out), out, ref, d, ballast)
        tars = sorted(p.name for p in ref.glob("*.tar"))
        assert tars and sorted(p.name for p in out.glob("*.tar")) == tars
        _, mismatch, errors = filecmp.cmpfiles(ref, out, tars + ["sample_ids.npy"], shallow=False)
        assert not mismatch and not errors


# --------------------------------------------------------------------------------------------------
# train and evaluate


def _train_argv(world, out: Path) -> list[str]:
    return ["train", "--scale", "tiny", "--data-dir", str(world.shards), "--output-dir", str(out), "--exp-name", "x",
            "--threads", "1", "--no-progress", "--checkpoint-every-steps", "1"]


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train")
    r = run_cli("-q", *_train_argv(world, out), prelude=SMALL_TINY, timeout=600)
    assert r.returncode == 0, r.stderr
    return out


def _weights(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_train_disk_full_then_rerun(world, trained, tmp_path):
    """torch's `RuntimeError: [enforce fail at inline_container.cc]` on a full disk is the ENOSPC line."""
    ckpt = trained / "x" / "checkpoints" / "epoch_latest.pt"
    with full_disk(du(trained)) as (d, ballast):
        fill(d, keep=ckpt.stat().st_size // 2)  # the first checkpoint cannot be written
        out = d / "train"
        line, _ = check_full_then_rerun(_train_argv(world, out), out, trained, d, ballast, prelude=SMALL_TINY)
        assert ".pt" in line
        got = out / "x" / "checkpoints" / "epoch_latest.pt"
        a, b = _weights(ckpt), _weights(got)
        assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def _eval_argv(world, ckpt: Path, out: Path) -> list[str]:
    return ["evaluate", "--model", MODEL, "--checkpoint", str(ckpt), "--suite", "embedded", "--data-dir",
            str(world.eval_suite), "--tasks", *TASKS, "--output-dir", str(out), "--no-progress", "--workers", "0"]


def _metrics(path: Path) -> dict[str, dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return {r["key"]: r["metrics"] for r in rows}


@pytest.fixture(scope="module")
def evaluated(world, trained, tmp_path_factory) -> tuple[Path, Path]:
    ckpt = trained / "x" / "checkpoints" / "epoch_latest.pt"
    out = tmp_path_factory.mktemp("eval")
    r = run_cli("-q", *_eval_argv(world, ckpt, out), timeout=600)
    assert r.returncode == 0, r.stderr
    return ckpt, out


@pytest.mark.slow
def test_evaluate_disk_full_then_rerun(world, evaluated):
    ckpt, ref = evaluated
    with full_disk(64 << 10) as (d, ballast):
        fill(d, keep=0)
        out = d / "eval"
        check_full_then_rerun(_eval_argv(world, ckpt, out), out, ref, d, ballast)
        assert _metrics(out / "eval_results.jsonl") == _metrics(ref / "eval_results.jsonl")
        assert len((out / "eval_results.jsonl").read_text().splitlines()) == len(TASKS)


# --------------------------------------------------------------------------------------------------
# download


@pytest.fixture(scope="module")
def image_pool(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    from datacomp.synth.serve import make_image_pool

    root = tmp_path_factory.mktemp("dfpool")
    return root / "pool", make_image_pool(root, n=48, seed=3)


def _download_argv(meta: Path, out: Path) -> list[str]:
    return ["download", "--metadata-dir", str(meta), "--data-dir", str(out.parent), "--shards-dir", str(out),
            "--allow-network", "127.0.0.0/8", "--thread-count", "2", "--processes-count", "1",
            "--number-sample-per-shard", "8", "--no-progress"]


def _samples(shards: Path) -> dict[str, bytes]:
    from test_download import read_output

    return {u: m["jpg"] for u, m in read_output(shards)[1].items()}


@pytest.mark.slow
def test_download_disk_full_then_rerun(image_pool, tmp_path):
    from test_download import served

    pool_dir, images = image_pool
    with served(pool_dir, tmp_path) as (_server, meta):
        ref = tmp_path / "ref" / "shards"
        r = run_cli("-q", *_download_argv(meta, ref))
        assert r.returncode == 0, r.stderr
        with full_disk(du(ref)) as (d, ballast):
            out = d / "dl" / "shards"
            r = run_cli("-q", *_download_argv(meta, out))  # the estimate refuses to start: one line too
            assert_one_line(r, 2, "free", "--yes")
            check_full_then_rerun([*_download_argv(meta, out), "--yes"], out, ref, d, ballast)
            assert _samples(out) == _samples(ref) and set(_samples(ref)) == set(images)


# --------------------------------------------------------------------------------------------------
# read-only output: one line for each of the five steps


@pytest.mark.slow
def test_read_only_output_five_steps(world, subset, evaluated, image_pool, tmp_path):
    from test_download import served

    ckpt, _ = evaluated
    pool_dir, _images = image_pool
    with served(pool_dir, tmp_path) as (_server, meta), tmpfs("1m") as d:
        remount_ro(d)
        steps = {
            "download": (_download_argv(meta, d / "dl" / "shards"), ""),
            "filter": (_filter_argv(world, d / "o.npy"), ""),
            "reshard": (_reshard_argv(world, subset, d / "shards"), ""),
            "train": (_train_argv(world, d / "train"), SMALL_TINY),
            "evaluate": (_eval_argv(world, ckpt, d / "eval"), ""),
        }
        for name, (argv, prelude) in steps.items():
            r = run_cli("-q", *argv, prelude=prelude, timeout=600)
            line = assert_one_line(r, EXIT_ENVIRONMENT, "read-only", "writable")
            assert str(d) in line, (name, line)
        assert not any(d.iterdir())


def test_tmpfs_helpers_fill_and_free():
    """The ballast really leaves only what was asked, and deleting it frees the space."""
    with tmpfs("2m") as d:
        ballast = fill(d, keep=64 << 10)
        free = shutil.disk_usage(d).free
        assert free <= (64 << 10) + 8192
        with pytest.raises(OSError) as e:
            (d / "big").write_bytes(b"x" * (256 << 10))
        assert e.value.errno == 28
        ballast.unlink()
        (d / "big").write_bytes(b"x" * (256 << 10))
        assert os.path.getsize(d / "big") == 256 << 10
