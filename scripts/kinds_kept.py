"""Which generated noise kinds a subset of an embedded world keeps (markdown table; world truth).

    python scripts/kinds_kept.py --world runs/demo/world SUBSET.npy [SUBSET.npy ...]
    python scripts/kinds_kept.py --world runs/demo/world --demo runs/demo   # every filter of a demo output

Per subset: its size, the share of clean samples in it, and for each noise kind the share of that
kind's pool samples it keeps. Reads ``<world>/pool/truth/*.parquet``, which filters never read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def truth(world: Path) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datacomp.uids import hex_to_uids

    files = sorted((world / "pool" / "truth").glob("*.parquet"))
    t = pa.concat_tables([pq.read_table(f, columns=["uid", "kind"]) for f in files])
    return hex_to_uids(t["uid"].combine_chunks()), np.asarray(t["kind"].to_pylist(), dtype=object)


def rows(world: Path, subsets: list[tuple[str, Path]]) -> tuple[list[str], list[list[str]]]:
    from datacomp.synth.noise import KINDS
    from datacomp.uids import isin, read_subset

    uids, kind = truth(world)
    kinds = [k for k in KINDS if (kind == k).any()]
    out = []
    for name, path in subsets:
        keep = isin(uids, read_subset(path))
        n = int(keep.sum())
        clean = f"{np.mean(kind[keep] == 'clean'):.0%}" if n else "-"
        out.append([name, f"{n:,}", clean] + [f"{np.mean(keep[kind == k]):.0%}" for k in kinds])
    return ["subset", "kept", "clean share of subset"] + [f"{k} kept" for k in kinds], out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("subsets", nargs="*", type=Path, help="subset .npy files")
    p.add_argument("--world", type=Path, required=True, help="the world's root (holds pool/truth)")
    p.add_argument("--demo", type=Path, help="a demo output: every filter it ran, in its order")
    a = p.parse_args(argv)
    subsets = [(s.stem, s) for s in a.subsets]
    if a.demo:
        rec = json.loads((a.demo / "demo_record.json").read_text())
        names = rec.get("config", rec).get("filters") or []
        subsets += [(n, next((a.demo / n).glob("*.npy"))) for n in names]
    head, body = rows(a.world, subsets)
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in body:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
