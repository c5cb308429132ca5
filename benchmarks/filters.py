"""Each baseline over a synthetic 1M-row CommonPool-style metadata set on 2 cores.

For every baseline it reports seconds, rows/s and peak memory of, in the same run:
  - ``cold``: ``run_filter`` from an empty signals cache (it computes only the signal groups the
    rule needs, and language ID only for the rows the rule's other conditions keep);
  - ``cached``: ``run_filter`` again over the cache the cold run left;
  - ``per-row``: the issue's comparator, the same rule as a per-row pandas
    ``DataFrame.apply(fn, axis=1)`` (fastText/CLD3/WordNet called per row, ``int(uid, 16)`` per
    kept row), over the files with a 2-process spawn ``multiprocessing.Pool`` like the original;
  - ``original``: the original ``baselines.py`` code (``Series.apply`` per column, which is
    faster than ``axis=1``), same pool: the stricter comparator;
  - ``scan``: a bare ``ParquetFile.read`` of the same columns, file after file (the floor);
  - ``read_table``: the same through ``pq.read_table`` in an environment with pandas installed,
    where pyarrow imports pandas (~0.35 s) on the first Arrow call of the process.

    python benchmarks/filters.py [--rows 1000000] [--files 8] [--out /tmp/dc-bench-filters] [--names a,b]
    python benchmarks/filters.py --methods negclip,normsim,semdedup,density [--rows N] [--dim 768] [--clusters K]

``--methods``: the post-DataComp methods (``docs/methods/``), ``cold`` and ``cached`` only, over the
same metadata plus generated row-aligned npz embeddings (``l14_img``/``l14_txt``, ``--dim`` wide,
float16, unit length, drawn around 1,000 concept centres with 2% planted near-duplicates) and 1,000
random target embeddings for ``normsim``. ``dfn`` and ``text_in_image`` read and re-embed images, so
they run over an embedded world's pool instead (``--world W``, e.g. the demo's ``runs/demo/world``;
``--rows`` does not apply to them):

    python benchmarks/filters.py --methods dfn,text_in_image --world runs/demo/world

The project does not depend on pandas, so ``cold``/``cached``/``scan`` run from the project's venv
and the pandas variants from a side venv that sees the project's packages plus pandas
(``--pandas-venv``, created on first use with pip: ``pandas==2.3.3``, the ``bench`` extra). Each
measurement runs in its own subprocess (imports included) so its peak RSS (largest process) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.artifacts import BASELINE_RUNS

WORKERS = 2
EN = ["photo", "of", "a", "red", "dog", "two", "blue", "stars", "on", "the", "beach", "striped", "cat", "house",
      "with", "garden", "old", "car", "in", "city", "street", "night", "green", "tree", "mountain", "lake"]
DE = ["ein", "Foto", "von", "einem", "roten", "Hund", "zwei", "blaue", "Sterne", "am", "Strand", "Haus", "mit"]
FR = ["une", "photo", "d'un", "chien", "rouge", "deux", "étoiles", "bleues", "sur", "la", "plage", "maison"]
# The filters this benchmark times, with the parameters of their baseline run (from the one list).
BASELINES = {n: BASELINE_RUNS["clip_score_l14_30" if n == "clip_score" else n][1]
             for n in ("no_filter", "clip_score", "basic_filter", "text_based", "laion2b")}
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
    have = sorted(meta.glob("*.parquet")) if meta.is_dir() else []
    if len(have) == files and sum(pq.ParquetFile(f).metadata.num_rows for f in have) == rows:
        return meta
    for f in have:
        f.unlink()
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


# --- the per-row references --------------------------------------------------------------------
#
# ``per-row``: the comparator, a per-row pandas ``DataFrame.apply(fn, axis=1)`` of the same
# rule; ``fn`` tests one row and returns its uid as two ints (or None).  ``original``: the code of the
# original ``baselines.py`` (``Series.apply`` per column for language/length/synsets, per-row
# ``int(uid, 16)``), the stricter comparator.  Both run over the files with a 2-process spawn Pool
# (``imap_unordered``, as the original's ``apply_filter``).  For text_based both use our WordNet reader
# and a Python ``set`` of ids, far kinder than the original's NLTK calls and list scan.


CLUSTERS = int(os.environ.get("DC_BENCH_CLUSTERS", "0"))  # set from --clusters for the child processes
IMAGE_METHODS = {"dfn": {"fraction": 0.3}, "text_in_image": {"fraction": 0.3}}  # over --world's pool
METHODS = {  # run_filter arguments of each method's benchmark run
    "negclip": {"fraction": 0.3},
    "normsim": {"fraction": 0.3},
    "semdedup": {},
    "density": {"fraction": 0.3},
}


def make_embeddings(meta: Path, dim: int, seed: int = 0) -> Path:
    """Row-aligned ``<stem>.npz`` (l14_img, l14_txt) beside each parquet, and ``targets.npy``; kept when present."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng([seed, dim])
    centres = rng.normal(size=(1000, dim)).astype(np.float32)
    for f in sorted(meta.glob("*.parquet")):
        npz = f.with_suffix(".npz")
        n = pq.ParquetFile(f).metadata.num_rows
        if npz.is_file():
            with np.load(npz) as z:
                if z["l14_img"].shape == (n, dim):
                    continue
        img = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.normal(size=(n, dim)).astype(np.float32)
        dup = rng.random(n) < 0.02
        img[dup] = img[rng.integers(0, n, int(dup.sum()))] + 0.01 * rng.normal(size=(int(dup.sum()), dim))
        txt = img + 1.2 * rng.normal(size=(n, dim)).astype(np.float32)
        unit = [(a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float16) for a in (img, txt)]
        np.savez(npz, l14_img=unit[0], l14_txt=unit[1])
    targets = meta.parent / "targets.npy"
    if not targets.is_file() or np.load(targets).shape[1] != dim:
        np.save(targets, centres[rng.integers(0, len(centres), 1000)] + 0.5 * rng.normal(size=(1000, dim)))
    return targets


def _uid_pair(u: str) -> tuple[int, int]:
    return int(u[:16], 16), int(u[16:32], 16)


def _uids(values: Iterable[str]) -> np.ndarray:
    return np.array([_uid_pair(u) for u in values], np.dtype("u8,u8"))


def _models(name: str) -> dict[str, Any]:
    m: dict[str, Any] = {}
    if name in ("basic_filter", "text_based"):
        from datacomp.filters.text import _fasttext_model

        m["ft"] = _fasttext_model()
    if name == "text_based":
        from datacomp.filters.wordnet import imagenet21k_synsets_file, load_wordnet

        m["wn"] = load_wordnet()
        m["ids"] = {int(x[1:]) for x in imagenet21k_synsets_file().read_text().split()}
    if name == "laion2b":
        from datacomp.filters.text import _cld3_model

        m["cld3"] = _cld3_model()
    return m


def _lang(ft: Any, x: str) -> str:
    return ft.predict(x.replace("\n", " "))[0][0].split("__label__")[1]


def _has_entity(wn: Any, ids: set[int], x: str) -> bool:
    for tok in x.split():
        first = wn.first_synset(tok)
        if first is not None and first[1] in ids:
            return True
    return False


def _row_fn(name: str, threshold: float | None, m: dict[str, Any]) -> Callable[[Any], tuple[int, int] | None]:
    """The rule for one pandas row (a Series): the uid pair if the row is kept, else None."""
    if name == "no_filter":
        return lambda r: _uid_pair(r["uid"])
    if name == "clip_score":
        return lambda r: _uid_pair(r["uid"]) if r["clip_l14_similarity_score"] >= threshold else None
    if name == "basic_filter":
        def basic(r: Any) -> tuple[int, int] | None:
            x, w, h = r["text"], r["original_width"], r["original_height"]
            ok = (_lang(m["ft"], x) == "en" and len(x.split()) > 2 and len(x) > 5 and min(w, h) >= 200
                  and max(w, h) / min(w, h) <= 3.0)
            return _uid_pair(r["uid"]) if ok else None
        return basic
    if name == "text_based":
        return lambda r: (_uid_pair(r["uid"]) if _lang(m["ft"], r["text"]) == "en"
                          and _has_entity(m["wn"], m["ids"], r["text"]) else None)
    if name == "laion2b":
        return lambda r: (_uid_pair(r["uid"]) if m["cld3"].FindLanguage(text=r["text"]).language == "en"
                          and r["clip_b32_similarity_score"] >= 0.28 else None)
    raise ValueError(name)


def per_row_file(name: str, path: str, threshold: float | None) -> np.ndarray:
    """``df.apply(rule, axis=1)`` over one file."""
    import pandas as pd

    df = pd.read_parquet(path, columns=COLUMNS[name])
    out = df.apply(_row_fn(name, threshold, _models(name)), axis=1)
    return np.array([p for p in out if p is not None], np.dtype("u8,u8"))


def original_file(name: str, path: str, threshold: float | None) -> np.ndarray:
    """The original ``baselines.py`` code for one file (``Series.apply`` per column)."""
    import pandas as pd

    df = pd.read_parquet(path, columns=COLUMNS[name])
    m = _models(name)
    if name == "no_filter":
        return _uids(df["uid"].values)
    if name == "clip_score":
        return _uids(df[df["clip_l14_similarity_score"] >= threshold]["uid"].values)
    if name == "basic_filter":
        lang = df.text.apply(lambda x: _lang(m["ft"], x))
        words = df.text.apply(lambda x: len(x.split()))
        chars = df.text.apply(lambda x: len(x))
        uid_int = df.uid.apply(int, base=16)
        hi, lo = (uid_int // 2**64).astype("uint64"), (uid_int % 2**64).astype("uint64")
        uids = np.array(list(zip(hi, lo)), "u8,u8")
        w, h = df.original_width, df.original_height
        mask = ((lang == "en") & (words > 2) & (chars > 5) & (np.minimum(w, h) >= 200)
                & (np.maximum(w, h) / np.minimum(w, h) <= 3.0))
        return uids[mask.to_numpy()]
    if name == "text_based":
        lang = df.text.apply(lambda x: _lang(m["ft"], x))
        entity = df.text.apply(lambda x: _has_entity(m["wn"], m["ids"], x))
        return _uids(df.uid[(lang == "en") & entity].values)
    if name == "laion2b":
        cld3 = df.text.apply(lambda x: m["cld3"].FindLanguage(text=x).language)
        return _uids(df.uid[(cld3 == "en") & (df.clip_b32_similarity_score >= 0.28)].values)
    raise ValueError(name)


def pandas_run(name: str, meta: Path, fn: Callable[[str, str, float | None], np.ndarray]) -> int:
    import multiprocessing as mp

    import pandas as pd

    files = sorted(str(p) for p in meta.glob("*.parquet"))
    threshold = None
    if name == "clip_score":  # the original's get_threshold: the whole score column, full sort
        s = pd.concat([pd.read_parquet(f, columns=["clip_l14_similarity_score"]) for f in files])
        scores = s["clip_l14_similarity_score"].to_numpy()
        threshold = float(-np.sort(-scores)[int(len(scores) * 0.3)])
    with mp.get_context("spawn").Pool(WORKERS) as pool:
        parts = list(pool.imap_unordered(_star, [(fn, name, f, threshold) for f in files]))
    out = np.concatenate(parts)
    out.sort()
    return len(out)


def _star(args: tuple[Any, ...]) -> np.ndarray:
    return args[0](*args[1:])


def scan(name: str, meta: Path, table: bool = False) -> int:
    """A bare pyarrow read of the same columns, file after file (the floor for any filter).

    ``table``: through ``pq.read_table`` (the usual call, which goes through ``pyarrow.dataset``
    and so imports pandas when it is installed) instead of ``ParquetFile.read`` (which does not).
    """
    import pyarrow.parquet as pq

    n = 0
    for f in sorted(meta.glob("*.parquet")):
        t = pq.read_table(f, columns=COLUMNS[name]) if table else pq.ParquetFile(f).read(columns=COLUMNS[name])
        n += t.num_rows
    return n


def ours(name: str, meta: Path, out: Path, tag: str) -> int:
    from datacomp.filters import run_filter

    if name in IMAGE_METHODS:
        pool = Path(os.environ["DC_BENCH_WORLD"]) / "pool"
        s = run_filter(name, pool / "metadata", out / f"{name}-{tag}.npy", signals_dir=out / f"signals-{name}",
                       workers=WORKERS, progress=False, shards_dir=pool / "shards", **IMAGE_METHODS[name])
        return int(s["kept"])
    if name in METHODS:
        kw = dict(METHODS[name])
        if CLUSTERS and name in ("semdedup", "density"):  # --clusters: k for the clustered methods
            kw["method_params"] = {**kw.get("method_params", {}), f"{name}.clusters": str(CLUSTERS)}
        s = run_filter(name, meta, out / f"{name}-{tag}.npy", signals_dir=out / f"signals-{name}", workers=WORKERS,
                       progress=False, targets=meta.parent / "targets.npy", **kw)
        return int(s["kept"])
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
    if args.variant in ("scan", "read_table"):
        n = scan(args.name, meta, table=args.variant == "read_table")
    elif args.variant == "per-row":
        n = pandas_run(args.name, meta, per_row_file)
    elif args.variant == "original":
        n = pandas_run(args.name, meta, original_file)
    else:
        n = ours(args.name, meta, Path(args.out), args.variant)
    sec = time.perf_counter() - t0
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"seconds": sec, "rows_out": n, "peak_mb": rss / 1024}))


PANDAS_VARIANTS = ("read_table", "per-row", "original")
PANDAS_PINS = ("pandas==2.3.3", "pytz==2026.6")  # numpy, python-dateutil, tzdata come from the project's venv


def pandas_python(venv: Path) -> str:
    """An interpreter that sees the project's packages plus pandas (created once, ~30 s).

    The project does not depend on pandas, and with pandas installed pyarrow imports it (~0.35 s) on
    the first Arrow call of every process; so the comparators that need it run from this side venv
    and ``datacomp`` runs from the project's own, as a user without pandas would run it.
    """
    py = venv / "bin" / "python"
    if not py.exists():
        import sysconfig

        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        main_site = sysconfig.get_paths()["purelib"]
        Path(site, "_datacomp_main.pth").write_text(f"import site; site.addsitedir({main_site!r})\n")
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", *PANDAS_PINS], check=True)
    return str(py)


def run_child(name: str, variant: str, out: Path, python: str) -> dict:
    cmd = [python, __file__, "--child", "--name", name, "--variant", variant, "--out", str(out)]
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
    ap.add_argument("--pandas-venv", type=Path, default=Path("/tmp/dc-bench-pandas-venv"),
                    help="side venv for the pandas comparators (created on first use)")
    ap.add_argument("--methods", default=None, help="time these methods (cold, cached) instead of the baselines")
    ap.add_argument("--dim", type=int, default=768, help="embedding width for --methods")
    ap.add_argument("--clusters", type=int, default=0,
                    help="k for semdedup and density (default: theirs; semdedup's rows/128 is 7,812 at 1M rows)")
    ap.add_argument("--world", type=Path, default=None, help="an embedded world's root, for dfn and text_in_image")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--name")
    ap.add_argument("--variant")
    args = ap.parse_args()
    if args.clusters:
        os.environ["DC_BENCH_CLUSTERS"] = str(args.clusters)  # the measuring children read it
    if args.world:
        os.environ["DC_BENCH_WORLD"] = str(args.world.resolve())
    if args.child:
        measure(args)
        return
    out = Path(args.out)
    if args.methods:
        bench_methods(out, args)
        return
    make_data(out, args.rows, args.files)
    import shutil

    for name in args.names.split(","):
        shutil.rmtree(out / f"signals-{name}", ignore_errors=True)
    rows = args.rows
    pandas_py = pandas_python(args.pandas_venv)
    variants = ("scan", "read_table", "cold", "cached", "per-row", "original")
    print(f"{rows:,} rows in {args.files} parquet files, {WORKERS} workers\n")
    print(f"{'baseline':14s} {'variant':9s} {'seconds':>8s} {'rows/s':>11s} {'peak MB':>8s} {'kept':>9s}  ratios")
    for name in args.names.split(","):
        r = {v: run_child(name, v, out, pandas_py if v in PANDAS_VARIANTS else sys.executable) for v in variants}
        for v, m in r.items():
            extra = ""
            if v in ("cold", "cached"):
                extra = (f"{r['per-row']['seconds'] / m['seconds']:.1f}x per-row, "
                         f"{r['original']['seconds'] / m['seconds']:.1f}x original; "
                         f"time {m['seconds'] / r['scan']['seconds']:.1f}x scan, "
                         f"{m['seconds'] / r['read_table']['seconds']:.1f}x read_table")
            print(f"{name:14s} {v:9s} {m['seconds']:8.2f} {rows / m['seconds']:11,.0f} {m['peak_mb']:8.0f} "
                  f"{m['rows_out']:9,}  {extra}")
        assert r["cold"]["rows_out"] == r["cached"]["rows_out"]
        assert r["per-row"]["rows_out"] == r["original"]["rows_out"], (name, r)
        if name in ("no_filter", "laion2b", "basic_filter"):
            assert r["cold"]["rows_out"] == r["per-row"]["rows_out"], (name, r)
        sys.stdout.flush()

def bench_methods(out: Path, args: argparse.Namespace) -> None:
    import shutil

    names = args.methods.split(",")
    image = [n for n in names if n in IMAGE_METHODS]
    if image and not args.world:
        raise SystemExit(f"{', '.join(image)} read images: give --world W (an embedded world's root)")
    if len(image) < len(names):
        make_data(out, args.rows, args.files)
        t0 = time.perf_counter()
        make_embeddings(out / "metadata", args.dim)
        print(f"{args.rows:,} rows in {args.files} parquet files + {args.dim}-d npz embeddings "
              f"(made in {time.perf_counter() - t0:.0f} s), {WORKERS} workers\n")
    world_rows = 0
    if image:
        import pyarrow.parquet as pq

        files = (args.world / "pool" / "metadata").glob("*.parquet")
        world_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        print(f"dfn/text_in_image: the world's {world_rows:,} rows and their images, {WORKERS} workers\n")
    print(f"{'method':14s} {'variant':8s} {'seconds':>8s} {'rows/s':>10s} {'peak MB':>8s} {'kept':>9s}")
    for name in names:
        rows = world_rows if name in IMAGE_METHODS else args.rows
        shutil.rmtree(out / f"signals-{name}", ignore_errors=True)
        r = {v: run_child(name, v, out, sys.executable) for v in ("cold", "cached")}
        for v, m in r.items():
            print(f"{name:14s} {v:8s} {m['seconds']:8.2f} {rows / m['seconds']:10,.0f} {m['peak_mb']:8.0f} "
                  f"{m['rows_out']:9,}")
        assert r["cold"]["rows_out"] == r["cached"]["rows_out"]
        sys.stdout.flush()


if __name__ == "__main__":
    main()
