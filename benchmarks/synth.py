"""The embedded world's generator: renderer images/s on one core, and pool generation wall time.

    python benchmarks/synth.py [--images 20000] [--pool-size tiny] [--workers 2]

Renderer figures are best-of-3 on one thread (mask caches warm); the ratio against a plain
``PIL.ImageDraw`` render of the same kind of scene (a polygon on a filled background, drawn at 32 px)
is printed so a busy machine does not hide regressions. Pool generation includes rendering, JPEG
encoding, the two reference models' embeddings and every file of the CommonPool layout.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def pil_baseline(n: int) -> float:
    """Images/s of the naive route: one PIL image and one polygon draw per scene, to numpy."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(n):
        im = Image.new("RGB", (32, 32), tuple(int(v) for v in rng.integers(60, 200, 3)))
        d = ImageDraw.Draw(im)
        cx, cy, r = rng.uniform(8, 24, 2).tolist() + [float(rng.uniform(4, 10))]
        d.polygon([(cx - r, cy + r), (cx + r, cy + r), (cx, cy - r)], fill=(220, 40, 40))
        np.asarray(im)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--pool-size", default="tiny", help="tiny, test or a number; 0 skips the pool run")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from datacomp.synth.render import encode_jpeg, render, sample_scenes, warm_caches

    t0 = time.perf_counter()
    masks = warm_caches()
    print(f"mask cache: {masks:,} masks in {time.perf_counter() - t0:.2f} s (once per process)")
    best_r = best_j = 0.0
    for rep in range(3):
        s = sample_scenes(np.random.default_rng(rep), args.images)
        t0 = time.perf_counter()
        imgs = render(s)
        t1 = time.perf_counter()
        for im in imgs:
            encode_jpeg(im)
        t2 = time.perf_counter()
        best_r = max(best_r, args.images / (t1 - t0))
        best_j = max(best_j, args.images / (t2 - t0))
    base = pil_baseline(min(args.images, 5000))
    print(f"renderer (1 core): {best_r:,.0f} images/s render, {best_j:,.0f} images/s render+JPEG; "
          f"naive PIL baseline {base:,.0f} images/s (ratio {best_r / base:.1f}x)")

    if args.pool_size != "0":
        from datacomp.synth.pool import make_pool, pool_size

        out = Path(tempfile.mkdtemp(prefix="synth-bench-"))
        try:
            n = pool_size(args.pool_size)
            t0 = time.perf_counter()
            make_pool(out / "pool", size=n, workers=args.workers, progress=False)
            dt = time.perf_counter() - t0
            print(f"pool generation: {n:,} samples in {dt:.1f} s with {args.workers} worker(s) "
                  f"({n / dt:,.0f} samples/s, incl. both reference models' embeddings)")
        finally:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
