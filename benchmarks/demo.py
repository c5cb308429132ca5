"""Wall time of `datacomp demo` per stage (world, filter, reshard, train, evaluate, report).

    python benchmarks/demo.py [--out runs/bench-demo] [--seeds 1] [--workers 2] [--json times.json]

Run it on a fresh --out to time everything (a re-run on the same --out times the resume path, which
skips every finished stage). Prints each stage's seconds and share of the total and names the stage
that dominates.
"""

from __future__ import annotations

import argparse
import json
import time

from datacomp.demo import DEFAULT_FILTERS, run_demo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-demo")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--filters", nargs="+", default=DEFAULT_FILTERS)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    res = run_demo(args.out, seeds=args.seeds, filters=args.filters, workers=args.workers, progress=False)
    total = time.perf_counter() - t0
    print(f"demo: {len(args.filters)} baselines x {args.seeds} seed(s), {args.workers} workers: {total:.1f}s total")
    for stage, sec in res.stage_seconds.items():
        print(f"  {stage:<9} {sec:8.1f}s  {sec / total:6.1%}")
    top = max(res.stage_seconds, key=res.stage_seconds.get)
    print(f"dominant stage: {top}")
    for r in res.rows:
        print(f"  {r['name']:<34} size {r['size']!s:>7}  average {r['Average'][0]:.3f} ± {r['Average'][1]:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"total_s": round(total, 2), "stage_s": {k: round(v, 2) for k, v in res.stage_seconds.items()},
                       "dominant": top, "seeds": args.seeds, "workers": args.workers}, f, indent=2)


if __name__ == "__main__":
    main()
