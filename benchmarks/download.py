"""Download throughput against the local image server: ours vs img2dataset vs a bare fetch loop.

All three fetch the same N urls from one `PoolServer` running in its own process on 127.0.0.1, with
the same processes x threads, DataComp's image settings (512 px keep_ratio_largest only if bigger,
jpg q95, face blurring on) and 10 s timeouts. img2dataset runs from a throw-away venv (it pins
webdataset<0.3 and pulls opencv/albumentations/wandb, so it is not a project dependency):

    python3 -m venv /tmp/i2d && /tmp/i2d/bin/pip install img2dataset==1.47.0
    .venv/bin/python benchmarks/download.py --n 4000 --processes 2 --threads 32 --repeats 3

Without ``--i2d-python`` (or if it does not exist) only ours and the bare loop are measured.
Each repeat runs the contenders back to back, in alternating order; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SERVER = """
import sys, time
from datacomp.synth.serve import PoolServer
s = PoolServer(sys.argv[1], port=0).start()
print(s.port, flush=True)
time.sleep(float(sys.argv[2]))
"""

I2D = """
import json, sys, time
from img2dataset import download
if __name__ == "__main__":
    meta, out, procs, threads, sps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    t0 = time.perf_counter()
    download(url_list=meta, input_format="parquet", url_col="url", caption_col="text", bbox_col="face_bboxes",
             save_additional_columns=["uid"], output_format="webdataset", output_folder=out,
             processes_count=procs, thread_count=threads, image_size=512, resize_mode="keep_ratio_largest",
             resize_only_if_bigger=True, encode_format="jpg", encode_quality=95, number_sample_per_shard=sps,
             oom_shard_count=8, retries=2, timeout=10, enable_wandb=False, distributor="multiprocessing")
    dt = time.perf_counter() - t0
    ok = sum(json.load(open(p))["successes"] for p in __import__("glob").glob(out + "/*_stats.json"))
    print(json.dumps({"seconds": dt, "successes": ok}))
"""


def bare_fetch(urls: list[str], threads: int) -> dict[str, float]:
    """The floor: GET every url with a urllib3 pool, no checks, no decoding, nothing written."""
    import urllib3

    http = urllib3.PoolManager(maxsize=threads)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        ok = sum(1 for r in ex.map(lambda u: http.request("GET", u).status == 200, urls) if r)
    return {"seconds": time.perf_counter() - t0, "successes": ok}


def ours(meta: Path, out: Path, procs: int, threads: int, sps: int) -> dict[str, float]:
    from datacomp.pool.download import DownloadOptions, download
    from datacomp.pool.http import FetchConfig

    opts = DownloadOptions(fetch=FetchConfig(allowed_networks=("127.0.0.0/8",)), thread_count=threads,
                           samples_per_shard=sps)
    t0 = time.perf_counter()
    s = download(meta, out, opts, processes=procs, progress=False)
    return {"seconds": time.perf_counter() - t0, "successes": s["successes"]}


def img2dataset(python: str, meta: Path, out: Path, procs: int, threads: int, sps: int) -> dict[str, float]:
    script = out.parent / "i2d_run.py"
    script.write_text(I2D)
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled")
    r = subprocess.run([python, str(script), str(meta), str(out), str(procs), str(threads), str(sps)],
                       capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"img2dataset failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000, help="images in the pool")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--i2d-python", default="/tmp/i2d/bin/python")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args()

    from datacomp.synth.serve import make_image_pool, rebase_urls

    tmp = Path(tempfile.mkdtemp(prefix="dlbench-"))
    make_image_pool(tmp, n=a.n, seed=0, files=2)
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp / "pool"), "3600"], stdout=subprocess.PIPE,
                              text=True)
    try:
        port = int(server.stdout.readline())
        base = f"http://127.0.0.1:{port}/images"
        meta = tmp / "meta"
        rebase_urls(tmp / "pool" / "metadata", meta, base)
        import pyarrow.parquet as pq

        urls = [u for p in sorted(meta.glob("*.parquet")) for u in pq.read_table(p, columns=["url"])["url"].to_pylist()]
        sps = -(-a.n // (2 * a.processes))  # 2 shards per process for both downloaders (1 per input file)
        have_i2d = Path(a.i2d_python).exists()
        runs: dict[str, list[dict[str, float]]] = {"bare_fetch": [], "datacomp": [], "img2dataset": []}
        for rep in range(a.repeats):
            order = ["datacomp", "img2dataset", "bare_fetch"]
            if rep % 2:
                order.reverse()
            for name in order:
                out = tmp / f"{name}-{rep}"
                if name == "datacomp":
                    runs[name].append(ours(meta, out, a.processes, a.threads, sps))
                elif name == "img2dataset" and have_i2d:
                    runs[name].append(img2dataset(a.i2d_python, meta, out, a.processes, a.threads, sps))
                elif name == "bare_fetch":
                    runs[name].append(bare_fetch(urls, a.processes * a.threads))
    finally:
        server.terminate()
        server.wait()

    res: dict[str, dict[str, float]] = {}
    for name, rs in runs.items():
        if rs:
            sec = statistics.median(r["seconds"] for r in rs)
            res[name] = {"seconds": round(sec, 2), "successes": int(rs[0]["successes"]),
                         "images_per_s": round(rs[0]["successes"] / sec, 1)}
    print(f"{a.n} images, {a.processes} processes x {a.threads} threads, median of {a.repeats}, "
          f"{os.cpu_count()} cpus")
    for name, r in res.items():
        print(f"  {name:12s} {r['images_per_s']:8.1f} images/s  ({r['seconds']:.2f} s, {r['successes']} ok)")
    if "img2dataset" in res:
        ratio = res["datacomp"]["images_per_s"] / res["img2dataset"]["images_per_s"]
        res["ratio_datacomp_to_img2dataset"] = round(ratio, 2)
        print(f"  datacomp / img2dataset = {ratio:.2f}x")
    res["ratio_datacomp_to_bare_fetch"] = round(res["datacomp"]["images_per_s"] / res["bare_fetch"]["images_per_s"], 3)
    if a.json:
        a.json.write_text(json.dumps({"config": vars(a) | {"json": str(a.json)}, "results": res}, indent=2))


if __name__ == "__main__":
    main()
