"""Wall time of `datacomp --help` in a fresh interpreter, against `python -c pass` measured in the same run.

    python benchmarks/cli_help.py [--runs 10]

Prints the median (and min/max) of each, their difference (what datacomp adds) and their ratio, and
the modules the help imports that registering commands must not (numpy, pyarrow, torch, rich, ...).
Target: median under 0.3 s on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("numpy", "pyarrow", "torch", "rich", "PIL", "duckdb", "faiss", "open_clip", "pandas", "fsspec")


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def timed(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=_env())
        out.append(time.perf_counter() - t)
    return out


def heavy_imports() -> list[str]:
    code = ("import sys\nfrom datacomp.cli import build_parser\nbuild_parser().format_help()\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=_env())
    return r.stdout.split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--runs", type=int, default=10, help="runs of each command")
    args = ap.parse_args()
    base = timed([sys.executable, "-c", "pass"], args.runs)
    helps = timed([sys.executable, "-m", "datacomp", "--help"], args.runs)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for name, xs in (("python -c pass", base), ("datacomp --help", helps)):
        print(f"{name:18s} median {statistics.median(xs):.3f} s  (min {min(xs):.3f}, max {max(xs):.3f}, "
              f"{args.runs} runs)")
    mb, mh = statistics.median(base), statistics.median(helps)
    print(f"datacomp adds {mh - mb:.3f} s; ratio {mh / mb:.1f}x; load average {load:.2f} on {os.cpu_count()} cores")
    print(f"heavy modules imported by --help: {' '.join(heavy_imports()) or 'none'}")


if __name__ == "__main__":
    main()
