"""Each data step on Ray vs on this machine's local executors, plus a per-sample cost model.

    python benchmarks/engines.py [--world DIR] [--workers 2] [--steps filter_cold,filter_cached,...] [--json OUT]

On the embedded test world (4,000 samples; generated into a temp dir unless ``--world`` names one),
every step runs once with the local executor the step picks by default and once with
``--executor ray`` on a local Ray cluster of ``--workers`` CPUs (started once; its start-up is
reported apart). Outputs of the two runs are compared byte for byte.

The cost model comes from the local runs: CPU-seconds (this process + its reaped worker processes,
``getrusage``), bytes read (the sizes of the input files the step opens; for download, the image
bytes stored) and bytes written (the size of the step's outputs), each per pool sample, then
multiplied out to the DataComp scales. The embedded world's images are small JPEGs (a few KB);
CommonPool's are ~20-60 KB at 512 px, so for the image-bound steps (download, embed, reshard) the
projected bytes are scaled by ``--image-kb`` (default 40) over the world's mean stored sample size.
Modules every step imports are imported before timing, so neither executor pays them in its time;
the local executors' process start-ups are part of their time, as the Ray cluster's start is not.
Download shards hold rows in the order fetches finish, so its outputs are compared by content.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCALES = {"small": 12_800_000, "medium": 128_000_000, "large": 1_280_000_000, "xlarge": 12_800_000_000}
STEPS = ("download", "filter_cold", "filter_cached", "filter_fraction", "build_centroids", "embed", "dedup", "reshard")


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _size(*paths: Path, suffixes: tuple[str, ...] = ()) -> int:
    n = 0
    for p in paths:
        files = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()]
        n += sum(q.stat().st_size for q in files if not suffixes or q.name.endswith(suffixes))
    return n


def _data(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
        rel = p.relative_to(root) if root.is_dir() else Path(p.name)
        if p.is_file() and p.suffix in (".npy", ".tar", ".parquet", ".npz") and not any(
                s.startswith(".") for s in rel.parts):
            out[str(rel)] = p.read_bytes()
    return out


def _download_content(shards: Path) -> dict[str, tuple[Any, ...]]:
    """uid -> (shard, image bytes, caption): download output without its completion-order keys."""
    from datacomp.pool.shards import iter_tar_samples

    out = {}
    for tar in sorted(shards.glob("*.tar")):
        for _key, m in iter_tar_samples(tar):
            out[json.loads(m["json"])["uid"]] = (tar.stem, m.get("jpg"), m.get("txt"))
    return out


def plan(world: Any, work: Path, image_kb: float) -> dict[str, tuple[Callable[[Any, Path], Path], Callable[[Path], int],
                                                                  int, bool]]:
    """step -> (run(executor, out) -> output path, bytes read, samples, image-bytes dominated)."""
    from datacomp.filters import build_centroids, run_filter
    from datacomp.filters.dedup import dedup
    from datacomp.filters.embed import embed_pool
    from datacomp.reshard import reshard
    from datacomp.uids import uids_from_parquet, write_subset

    meta = Path(world.metadata)
    parquets = sorted(meta.glob("*.parquet"))
    one = work / "one-file"
    one.mkdir(parents=True, exist_ok=True)
    shutil.copy(parquets[0], one / parquets[0].name)
    n_all = sum(len(uids_from_parquet([str(p)])) for p in parquets)
    n_one = len(uids_from_parquet([str(parquets[0])]))
    subset = work / "subset.npy"
    write_subset(subset, uids_from_parquet([str(p) for p in parquets])[::3])
    signals = {"local": work / "signals-local", "ray": work / "signals-ray"}

    def filt(name: str, **kw: Any) -> Callable[[Any, Path], Path]:
        """filter_cold runs first on an empty signals cache (one per executor); later runs read it."""
        def run(ex: Any, out: Path) -> Path:
            sd = signals["local" if isinstance(ex, str) else "ray"]
            run_filter(name, meta, out / "subset.npy", signals_dir=sd, executor=ex, progress=False, **kw)
            return out / "subset.npy"
        return run

    def centroids(ex: Any, out: Path) -> Path:
        key = "ray" if not isinstance(ex, str) else "local"
        build_centroids(meta, out / "c.npy", num_clusters=16, signals_dir=signals[key], executor=ex)
        return out / "c.npy"

    def embed(ex: Any, out: Path) -> Path:
        embed_pool(one, world.shards, out / "emb", executor=ex, progress=False)
        return out / "emb"

    def dd(ex: Any, out: Path) -> Path:
        dedup(meta, world.eval_suite, out / "d.npy", executor=ex, progress=False)
        return out / "d.npy"

    def rs(ex: Any, out: Path) -> Path:
        reshard([world.shards], out / "shards", subset, shard_size=250, executor=ex, progress=False)
        return out / "shards"

    def download(ex: Any, out: Path) -> Path:
        from datacomp.pool.download import DownloadOptions
        from datacomp.pool.download import download as dl
        from datacomp.pool.http import FetchConfig
        from datacomp.synth.serve import PoolServer, rebase_urls

        with PoolServer(world.pool) as server:
            m = out / "meta"
            rebase_urls(meta, m, server.base_url)
            for p in m.iterdir():
                if p.stem != parquets[0].stem:
                    p.unlink()
            opts = DownloadOptions(fetch=FetchConfig(allowed_networks=("127.0.0.0/8",)), thread_count=8,
                                   samples_per_shard=250, progress=False)
            dl(m, out / "shards", opts, processes=2, executor=ex, progress=False)
        return out / "shards"

    npz = (".npz",)
    return {
        "download": (download, lambda o: _size(o, suffixes=(".tar",)), n_one, True),
        "filter_cold": (filt("basic_filter"), lambda _o: _size(meta, suffixes=(".parquet",)), n_all, False),
        "filter_cached": (filt("basic_filter"), lambda _o: _size(meta, suffixes=(".parquet",)), n_all, False),
        "filter_fraction": (filt("clip_score", arch="l14", fraction=0.3),
                            lambda _o: _size(meta, suffixes=(".parquet",)), n_all, False),
        "build_centroids": (centroids, lambda _o: _size(meta, suffixes=npz), n_all, False),
        "embed": (embed, lambda _o: _size(Path(world.shards), suffixes=(".tar",)) + _size(one), n_all, True),
        "dedup": (dd, lambda _o: _size(meta, suffixes=npz) + _size(Path(world.eval_suite)), n_all, False),
        "reshard": (rs, lambda _o: _size(Path(world.shards), suffixes=(".tar",)), len(subset_rows(subset)), True),
    }


def subset_rows(path: Path) -> Any:
    from datacomp.uids import read_subset

    return read_subset(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, default=None, help="an existing world root (default: the test world)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", default=",".join(STEPS))
    ap.add_argument("--image-kb", type=float, default=40.0, help="CommonPool image size for the byte projection")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["TQDM_DISABLE"] = "1"
    from datacomp.engine.ray import RayExecutor
    from datacomp.synth.world import World, make_test_world

    tmp = Path(tempfile.mkdtemp(prefix="dc-engines-"))
    try:
        world = World.at(args.world) if args.world else make_test_world(tmp / "world")
        steps = plan(world, tmp / "work", args.image_kb)
        world_sample = _size(Path(world.shards), suffixes=(".tar",)) / max(1, len(_download_content(world.shards)))
        image_scale = args.image_kb * 1024 / world_sample
        for mod in ("datacomp.filters.run", "datacomp.filters.clusters", "datacomp.filters.embed", "faiss",
                    "open_clip", "datacomp.reshard", "datacomp.pool.download", "datacomp.filters.dedup"):
            __import__(mod)
        wanted = args.steps.split(",")
        if any(s in wanted for s in ("filter_cached", "filter_fraction", "build_centroids")) and \
                "filter_cold" not in wanted:
            raise SystemExit("filter_cached/filter_fraction/build_centroids read the cache filter_cold fills: add it")
        t0 = time.perf_counter()
        ray_ex = RayExecutor(args.workers)
        ray_ex._connect()
        ray_start = time.perf_counter() - t0
        rows = []
        for step in wanted:
            run, read, samples, image_bound = steps[step]
            res: dict[str, Any] = {"step": step, "samples": samples}
            outs = {}
            for kind in ("local", "ray"):
                out = tmp / "runs" / step / kind
                out.mkdir(parents=True)
                c0, w0 = _cpu(), time.perf_counter()
                path = run("local" if kind == "local" else ray_ex, out)
                res[f"{kind}_s"] = round(time.perf_counter() - w0, 3)
                if kind == "local":
                    res["cpu_s"] = round(_cpu() - c0, 3)
                    res["written_bytes"] = _size(path)
                outs[kind] = _download_content(path) if step == "download" else _data(path)
                if kind == "local":
                    outs_path = path
            res["identical"] = outs["local"] == outs["ray"] and bool(outs["local"])
            res["ray_over_local"] = round(res["ray_s"] / max(res["local_s"], 1e-9), 2)
            res["read_bytes"] = read(outs_path)
            res["cpu_us_per_sample"] = round(1e6 * res["cpu_s"] / samples, 1)
            res["read_b_per_sample"] = round(res["read_bytes"] / samples, 1)
            res["written_b_per_sample"] = round(res["written_bytes"] / samples, 1)
            res["image_bytes_dominated"] = image_bound
            k = image_scale if image_bound else 1.0
            res["projection"] = {
                s: {"cpu_hours": round(res["cpu_s"] / samples * n / 3600, 1),
                    "read_tb": round(k * res["read_bytes"] / samples * n / 1e12, 3),
                    "written_tb": round(k * res["written_bytes"] / samples * n / 1e12, 3)} for s, n in SCALES.items()}
            rows.append(res)
            print(json.dumps({k: v for k, v in res.items() if k != "projection"}), flush=True)
        ray_ex.close()
        report = {"ray_start_s": round(ray_start, 2), "workers": args.workers, "cpus": os.cpu_count(),
                  "world_sample_bytes": round(world_sample), "image_scale": round(image_scale, 2), "steps": rows}
        print(f"world: {world_sample:,.0f} B per stored sample; image-bound bytes projected x{image_scale:.1f} "
              f"({args.image_kb:g} KB images)")
        print(f"ray start-up: {ray_start:.1f} s (not in the per-step ray times)")
        print(f"{'step':16s} {'local s':>8s} {'ray s':>8s} {'ray/local':>9s} {'same':>5s} {'CPU us/sample':>13s} "
              f"{'read B/sample':>13s} {'written B/sample':>16s}")
        for r in rows:
            print(f"{r['step']:16s} {r['local_s']:8.2f} {r['ray_s']:8.2f} {r['ray_over_local']:9.2f} "
                  f"{'yes' if r['identical'] else 'NO':>5s} {r['cpu_us_per_sample']:13.1f} "
                  f"{r['read_b_per_sample']:13.0f} {r['written_b_per_sample']:16.0f}")
        print("\nprojected CPU-hours (read TB / written TB) per scale:")
        print(f"{'step':16s} " + " ".join(f"{s:>26s}" for s in SCALES))
        for r in rows:
            cells = [f"{p['cpu_hours']:>9,.1f} h ({p['read_tb']:.2f}/{p['written_tb']:.2f})"
                     for p in r["projection"].values()]
            print(f"{r['step']:16s} " + " ".join(f"{c:>26s}" for c in cells))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
