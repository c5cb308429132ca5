"""Reshard throughput on a tiny-world-sized pool, next to a raw `cp` and plain tarfile copies.

    python benchmarks/reshard.py [--pool SHARDS_DIR] [--samples 60000] [--image-px 32] [--fraction 0.3 1.0]

Without ``--pool`` it generates a pool shaped like the embedded tiny world (60k samples of 32-px
JPEGs, ~1 KB each, img2dataset layout, 5,000 per shard) into a temp dir; ``--image-px 384`` makes
samples of CommonPool's order of size instead (tens of KB), where per-member costs matter less.
Every method copies the same selected samples from a warm page cache; MB/s is bytes written per second.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from datacomp import uids as U
from datacomp.engine import LocalExecutor
from datacomp.pool.shards import ShardWriter, TarSampleWriter, iter_tar_samples, list_shards, sample_key
from datacomp.reshard import reshard
from datacomp.reshard.index import index_shard


def generate_pool(shards: Path, n: int, per_shard: int = 5000, seed: int = 0, px: int = 32) -> None:
    """img2dataset-layout shards; JPEG bytes are drawn from a bank of 256 real ``px``-px encodes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    bank = []
    for _ in range(256):
        side = max(8, px // 16)  # random blocks, upsampled: photo-like JPEG sizes
        im = Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).resize((px, px))
        b = io.BytesIO()
        im.save(b, format="JPEG", quality=int(rng.integers(60, 96)))
        bank.append(b.getvalue())
    uids = U.uids_to_hex(rng.integers(0, 2**63, (n, 2), dtype=np.uint64).view(U.UID_DTYPE).reshape(-1))
    for s, start in enumerate(range(0, n, per_shard)):
        w = ShardWriter(shards, s, mtime=1_700_000_000)
        for i in range(start, min(n, start + per_shard)):
            row = {"uid": str(uids[i]), "face_bboxes": [], "caption": f"three red circles on a plain background {i}",
                   "url": f"http://127.0.0.1:8765/images/{uids[i]}.jpg", "key": sample_key(s, i - start, per_shard),
                   "width": px, "height": px, "original_width": 400, "original_height": 300, "exif": None,
                   "sha256": "ab" * 32}
            w.add_success(row, bank[i % 256])
        w.close()


def selected_keys(shards: Path, subset: np.ndarray) -> dict[Path, dict[str, str]]:
    """Per input tar: member key -> uid of the selected samples (the index every method uses)."""
    out = {}
    for tar in list_shards(shards):
        idx = index_shard(tar)
        hit = U.isin(idx.uids, subset)
        if hit.any():
            keys = np.char.decode(idx.keys[hit]).tolist()
            out[tar] = dict(zip(keys, U.uids_to_hex(idx.uids[hit]).tolist(), strict=True))
    return out


def tarfile_copy(want: dict[Path, dict[str, str]], out: Path, shard_size: int) -> int:
    """The plain way: tarfile reads each input in order, addfile() copies selected members renamed."""
    out.mkdir(parents=True)
    n, shard, dst = 0, 0, None
    for tar, keys in want.items():
        with tarfile.open(tar, "r:") as src:
            for ti in src:
                key, _, ext = ti.name.partition(".")
                uid = keys.get(key)
                if uid is None:
                    continue
                if ext == "jpg":  # first member of a sample: maybe roll over to a new shard
                    if dst is None or n == shard_size:
                        if dst is not None:
                            dst.close()
                            shard += 1
                        dst, n = tarfile.open(out / f"{shard:08d}.tar", "w", format=tarfile.USTAR_FORMAT), 0  # noqa: SIM115
                    n += 1
                new = tarfile.TarInfo(f"{uid}-0.{ext}")
                new.size, new.mtime = ti.size, ti.mtime
                dst.addfile(new, src.extractfile(ti))
    if dst is not None:
        dst.close()
    return _bytes(out)


def sample_writer_copy(want: dict[Path, dict[str, str]], out: Path, shard_size: int) -> int:
    """The project's generic readers: iter_tar_samples + TarSampleWriter (whole samples as bytes)."""
    out.mkdir(parents=True)
    n, shard, w = 0, 0, None
    for tar, keys in want.items():
        for key, members in iter_tar_samples(tar):
            uid = keys.get(key)
            if uid is None:
                continue
            if w is None or n == shard_size:
                if w is not None:
                    w.close()
                    shard += 1
                w, n = TarSampleWriter(out / f"{shard:08d}.tar", mtime=1_700_000_000), 0
            w.write(f"{uid}-0", members)
            n += 1
    if w is not None:
        w.close()
    return _bytes(out)


def reshard_once(shards: Path, out: Path, subset: Path, shard_size: int, workers: int,
                 executor: LocalExecutor | None = None) -> dict:
    return reshard(shards, out, subset, shard_size=shard_size, workers=workers, progress=False, executor=executor)


def _bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.glob("*.tar"))


def _timed(fn, *args) -> tuple[float, object]:  # noqa: ANN001
    t0 = time.perf_counter()
    r = fn(*args)
    return time.perf_counter() - t0, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, default=None, help="existing shards dir (default: generate one)")
    ap.add_argument("--samples", type=int, default=60_000, help="size of the generated pool")
    ap.add_argument("--image-px", type=int, default=32,
                    help="side of the generated JPEGs: 32 (the tiny world, ~4 KB a sample), 384 (~27 KB), 512 (~45 KB)")
    ap.add_argument("--fraction", type=float, nargs="+", default=[0.3, 1.0], help="subset fractions to time")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=10_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="reshard_bench_"))
    try:
        shards = args.pool
        if shards is None:
            shards = tmp / "shards"
            t, _ = _timed(generate_pool, shards, args.samples, 5000, 0, args.image_px)
            print(f"generated a pool of {args.samples:,} samples in {t:.1f}s")
        tars = list_shards(shards)
        in_bytes = sum(t.stat().st_size for t in tars)
        for t in tars:  # warm the page cache so every method reads from memory
            t.read_bytes()
        pool = U.sort_uids(np.concatenate([index_shard(t).uids for t in tars]))
        print(f"pool: {pool.size:,} samples in {len(tars)} shards, {in_bytes / 1e6:.1f} MB ({shards})")
        t_cp = min(_timed(_cp, tars, tmp / f"cp{i}")[0] for i in range(3))
        cp_mbs = in_bytes / 1e6 / t_cp
        print(f"\nraw cp of all input tars (best of 3): {t_cp:.3f}s  {cp_mbs:,.0f} MB/s")
        rows = []
        for frac in args.fraction:
            rng = np.random.default_rng(1)
            sub = U.sort_uids(pool[rng.random(pool.size) < frac]) if frac < 1 else pool
            sub_path = tmp / f"subset_{frac}.npy"
            U.write_subset(sub_path, sub)
            tw, want = _timed(selected_keys, shards, sub)
            t_tf, b_tf = _timed(tarfile_copy, want, tmp / f"tf_{frac}", args.shard_size)
            t_sw, b_sw = _timed(sample_writer_copy, want, tmp / f"sw_{frac}", args.shard_size)
            t_rs, s = _timed(reshard_once, shards, tmp / f"rs_{frac}", sub_path, args.shard_size, args.workers)
            t_r2, s2 = _timed(reshard_once, shards, tmp / f"r2_{frac}", sub_path, args.shard_size, args.workers,
                              LocalExecutor(args.workers))
            n = sub.size
            rows.append((frac, n, "tarfile member copy, sequential (+ index)", t_tf + tw, b_tf))
            rows.append((frac, n, "iter_tar_samples + TarSampleWriter (+ index)", t_sw + tw, b_sw))
            used = "threads" if s["executor"] == "ThreadExecutor" else "processes"
            for label, t, st in ((f"-j {args.workers} ({s['workers']} {used})", t_rs, s),
                                 (f"forced {args.workers} processes", t_r2, s2)):
                rows.append((frac, n, f"datacomp reshard {label}", t, st["bytes_written"]))
                rows.append((frac, n, "  of which copying (incl. process start)", st["copy_seconds"],
                             st["bytes_written"]))
        print(f"\n{'subset':>7} {'samples':>8}  {'method':<47} {'seconds':>8} {'samples/s':>10} {'MB/s':>7} "
              f"{'vs cp':>6}")
        for frac, n, name, t, b in rows:
            mbs = b / 1e6 / t
            print(f"{frac:>7.0%} {n:>8,}  {name:<47} {t:>8.3f} {n / t:>10,.0f} {mbs:>7,.0f} {mbs / cp_mbs:>6.0%}")
        print(json.dumps({"cp_mb_s": round(cp_mbs, 1), "input_mb": round(in_bytes / 1e6, 1),
                          "cpus": os.cpu_count()}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cp(tars: list[Path], dest: Path) -> None:
    dest.mkdir()
    subprocess.run(["cp", *map(str, tars), str(dest)], check=True)


if __name__ == "__main__":
    main()
