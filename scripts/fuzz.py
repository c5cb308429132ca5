"""The long fuzz run: every reader of tests/test_fuzz_readers.py on N mutated inputs; a table of outcomes.

    python scripts/fuzz.py --examples 200 [--world DIR] [--only NAME] [--show 3]

Per reader: inputs run, valid results, one-line errors, tracebacks, hangs (a call past the time
bound), and the slowest call. Exit status 1 when any reader had a traceback or a hang. The first
``--show`` failures per reader are printed in full. ``--world`` reuses a generated test world
(default: one is made under the work dir, about a minute).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hypothesis import given  # noqa: E402

import test_fuzz_readers as F  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=200, help="inputs per reader")
    ap.add_argument("--world", type=Path, default=None, help="an existing test world (make_test_world) to reuse")
    ap.add_argument("--work-dir", type=Path, default=None, help="where seeds and cases are written (default: tmp)")
    ap.add_argument("--only", action="append", default=[], help="run readers whose name contains this")
    ap.add_argument("--show", type=int, default=2, help="failures printed in full per reader")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: derandomized, reproducible)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    readers = [r for r in F.READERS if not args.only or any(o in r.name for o in args.only)]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="datacomp_fuzz_"))
    work.mkdir(parents=True, exist_ok=True)
    world = None
    if any(r.needs_world for r in readers):
        from datacomp.synth import make_test_world

        world = make_test_world(args.world or work / "world")
    fz = F.Fuzzer(work / "run", world)

    rows = []
    failed = 0
    for r in readers:
        counts = {"valid": 0, "error": 0, "traceback": 0, "hang": 0}
        slowest = 0.0
        shown = 0
        t0 = time.perf_counter()
        fz.seed_dir(r)

        def prop(case: tuple[str, bytes]) -> None:
            nonlocal slowest, shown
            target, data = case
            out = fz.run(r, target, data)  # noqa: B023 - called before the loop moves on
            counts[out.kind] += 1  # noqa: B023
            slowest = max(slowest, out.seconds)
            if out.kind in ("traceback", "hang") and shown < args.show:  # noqa: B023
                shown += 1
                print(f"--- {r.name}: {target} ({len(data)} bytes) -> {out.kind}\n{out.detail}",  # noqa: B023
                      file=sys.stderr)

        settings = F.fuzz_settings(args.examples, derandomize=args.seed is None)
        test = settings(given(case=F.inputs(fz, r))(prop))
        if args.seed is not None:
            from hypothesis import seed as hseed

            test = hseed(args.seed)(test)
        test()
        n = sum(counts.values())
        failed += counts["traceback"] + counts["hang"]
        rows.append((r.name, n, counts["valid"], counts["error"], counts["traceback"], counts["hang"], slowest,
                     time.perf_counter() - t0))
        print(f"{r.name}: {n} inputs, {counts}", file=sys.stderr, flush=True)

    head = ("reader", "inputs", "valid", "one-line errors", "tracebacks", "hangs", "slowest call s", "total s")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]} | {row[5]} | {row[6]:.2f} | {row[7]:.0f} |")
    tot = [sum(r[i] for r in rows) for i in range(1, 6)]
    print(f"| **all {len(rows)} readers** | {tot[0]} | {tot[1]} | {tot[2]} | {tot[3]} | {tot[4]} | | |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
