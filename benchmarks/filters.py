"""Each baseline over a synthetic 1M-row CommonPool-style metadata set on 2 cores.

For every baseline it reports rows/s and peak memory of, in the same run:
  - ``datacomp``: ``run_filter`` cold (fresh signals cache) and cached (signals already computed);
  - ``per-row``: the original's style, a plain Python loop per row (what ``df.apply`` does), with
    ``int(uid, 16)`` per row and fastText/CLD3/WordNet called once per caption / token, run over the
    files with 2 processes like the original's ``multiprocessing.Pool``;
  - ``scan``: a bare pyarrow read of the same columns (the floor for any filter).

    python benchmarks/filters.py [--rows 1000000] [--files 8] [--out /tmp/dc-bench-filters]

Each measurement runs in its own subprocess so its peak RSS (largest process) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORKERS = 2
EN = ["photo", "of", "a", "red", "dog", "two", "blue", "stars", "on", "the", "beach", "striped", "cat", "house",
      "with", "garden", "old", "car", "in", "city", "street", "night", "green", "tree", "mountain", "lake"]
DE = ["ein", "Foto", "von", "einem", "roten", "Hund", "zwei", "blaue", "Sterne", "am", "Strand", "Haus", "mit"]
FR = ["une", "photo", "d'un", "chien", "rouge", "deux", "étoiles", "bleues", "sur", "la", "plage", "maison"]
BASELINES = {
    "no_filter": {},
    "clip_score": {"arch": "l14", "fraction": 0.3},
    "basic_filter": {},
    "text_based": {},
    "laion2b": {},
}
COLUMNS = {
    "no_filter": ["uid"],
    "clip_score": ["uid", "clip_l14_similarity_score"],
    "basic_filter": ["uid", "text", "original_width", "original_height"],
    "text_based": ["uid", "text"],
    "laion2b": ["uid", "text", "clip_b32_similarity_score"],
}


def make_data(out: Path, rows: int, files: int, seed: int = 0) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = out / "metadata"
    if meta.is_dir() and len(list(meta.glob("*.parquet"))) == files:
        return meta
    meta.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = rows // files
    vocab = [np.array(v, dtype=object) for v in (EN, DE, FR)]
    for i in range(files):
        n = per if i < files - 1 else rows - per * (files - 1)
        lang = rng.choice(3, n, p=[0.6, 0.25, 0.15])
        nwords = rng.integers(1, 11, n)
        text = [" ".join(rng.choice(vocab[g], k)) for g, k in zip(lang, nwords)]
        raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
        from datacomp.uids import UID_DTYPE, uids_to_hex

        uids = uids_to_hex(np.ascontiguousarray(raw).view(UID_DTYPE).reshape(-1))
        pq.write_table(pa.table({
            "uid": pa.array(uids), "url": pa.array(np.char.add("http://x/", uids)), "text": text,
            "original_width": rng.integers(50, 2000, n), "original_height": rng.integers(50, 2000, n),
            "clip_b32_similarity_score": rng.uniform(0.05, 0.5, n).astype(np.float32),
            "clip_l14_similarity_score": rng.uniform(0.1, 0.55, n).astype(np.float32),
        }), meta / f"{i:08d}.parquet")
    return meta


# --- the per-row reference (the original's style) ------------------------------------------------


def _uids_per_row(uids: list[str]) -> np.ndarray:
    return np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in uids], np.dtype("u8,u8"))


def per_row_file(name: str, path: str, threshold: float | None) -> np.ndarray:
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=COLUMNS[name])
    cols = {c: t.column(c).to_pylist() for c in t.column_names}
    uids = cols["uid"]
    if name == "no_filter":
        keep = uids
    elif name == "clip_score":
        keep = [u for u, s in zip(uids, cols["clip_l14_similarity_score"]) if s >= threshold]
    elif name == "basic_filter":
        from datacomp.filters.text import _fasttext_model

        m = _fasttext_model()
        keep = []
        for u, x, w, h in zip(uids, cols["text"], cols["original_width"], cols["original_height"]):
            lang = m.predict(x.replace("\n", " "))[0][0]
            if (lang == "__label__en" and len(x.split()) > 2 and len(x) > 5 and min(w, h) >= 200
                    and max(w, h) / min(w, h) <= 3.0):
                keep.append(u)
    elif name == "text_based":
        from datacomp.filters.text import _fasttext_model
        from datacomp.filters.wordnet import imagenet21k_synsets_file, load_wordnet

        m = _fasttext_model()
        wn = load_wordnet()
        ids = [int(x[1:]) for x in imagenet21k_synsets_file().read_text().split()]  # a list, as the original
        ids_set = set(ids)  # (the original scans the list; a set keeps this baseline from being absurd)
        keep = []
        for u, x in zip(uids, cols["text"]):
            if m.predict(x.replace("\n", " "))[0][0] != "__label__en":
                continue
            for tok in x.split():
                first = wn.first_synset(tok)
                if first is not None and first[1] in ids_set:
                    keep.append(u)
                    break
    elif name == "laion2b":
        from datacomp.filters.text import _cld3_model

        det = _cld3_model()
        keep = [u for u, x, s in zip(uids, cols["text"], cols["clip_b32_similarity_score"])
                if det.FindLanguage(text=x).language == "en" and s >= 0.28]
    else:
        raise ValueError(name)
    return _uids_per_row(keep)


def per_row(name: str, meta: Path) -> int:
    import multiprocessing as mp

    import pyarrow.parquet as pq

    files = sorted(str(p) for p in meta.glob("*.parquet"))
    threshold = None
    if name == "clip_score":  # the original: whole score column in one frame, full sort
        s = np.concatenate([pq.read_table(f, columns=["clip_l14_similarity_score"]).column(0).to_numpy()
                            for f in files])
        threshold = float(-np.sort(-s)[int(len(s) * 0.3)])
    with mp.get_context("spawn").Pool(WORKERS) as pool:
        parts = pool.starmap(per_row_file, [(name, f, threshold) for f in files])
    out = np.concatenate(parts)
    out.sort()
    return len(out)


def scan(name: str, meta: Path) -> int:
    import pyarrow.parquet as pq

    n = 0
    for f in sorted(meta.glob("*.parquet")):
        n += pq.read_table(f, columns=COLUMNS[name]).num_rows
    return n


def ours(name: str, meta: Path, out: Path, tag: str) -> int:
    from datacomp.filters import run_filter

    # "cold" and "cached" share one signals folder per baseline, which main() empties first.
    s = run_filter(name, meta, out / f"{name}-{tag}.npy", signals_dir=out / f"signals-{name}", workers=WORKERS,
                   progress=False, synsets=None if name != "text_based" else _in21k(), **BASELINES[name])
    return int(s["kept"])


def _in21k() -> str:
    from datacomp.filters.wordnet import imagenet21k_synsets_file

    return str(imagenet21k_synsets_file())


def measure(args: argparse.Namespace) -> None:
    """Child process: run one variant, print JSON with seconds and peak RSS (largest process)."""
    meta = Path(args.out) / "metadata"
    t0 = time.perf_counter()
    if args.variant == "scan":
        n = scan(args.name, meta)
    elif args.variant == "per-row":
        n = per_row(args.name, meta)
    else:
        n = ours(args.name, meta, Path(args.out), args.variant)
    sec = time.perf_counter() - t0
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"seconds": sec, "rows_out": n, "peak_mb": rss / 1024}))


def run_child(name: str, variant: str, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", "--name", name, "--variant", variant, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode:
        raise RuntimeError(f"{name}/{variant} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--out", default="/tmp/dc-bench-filters")
    ap.add_argument("--names", default=",".join(BASELINES))
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--name")
    ap.add_argument("--variant")
    args = ap.parse_args()
    if args.child:
        measure(args)
        return
    out = Path(args.out)
    make_data(out, args.rows, args.files)
    import shutil

    for name in args.names.split(","):
        shutil.rmtree(out / f"signals-{name}", ignore_errors=True)
    rows = args.rows
    print(f"{rows:,} rows in {args.files} parquet files, {WORKERS} workers\n")
    print(f"{'baseline':14s} {'variant':9s} {'seconds':>8s} {'rows/s':>11s} {'peak MB':>8s} {'kept':>9s}  ratios")
    for name in args.names.split(","):
        r = {v: run_child(name, v, out) for v in ("scan", "cold", "cached", "per-row")}
        for v, m in r.items():
            extra = ""
            if v in ("cold", "cached"):
                extra = (f"{r['per-row']['seconds'] / m['seconds']:.1f}x per-row, "
                         f"{m['seconds'] / r['scan']['seconds']:.1f}x scan time")
            print(f"{name:14s} {v:9s} {m['seconds']:8.2f} {rows / m['seconds']:11,.0f} {m['peak_mb']:8.0f} "
                  f"{m['rows_out']:9,}  {extra}")
        assert r["cold"]["rows_out"] == r["cached"]["rows_out"]
        if name in ("no_filter", "laion2b", "basic_filter"):
            assert r["cold"]["rows_out"] == r["per-row"]["rows_out"], (name, r)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
