"""Memory benchmark: peak RSS of a single-mode run against the number of stocks.

Each run is its own process (``parallel-dqn train``, one episode over 2 days of 1-minute bars, defaults:
one worker for all the stocks; and, with ``--per_stock``, also ``--workers S``, one simulated worker per
stock); its peak resident set size comes from the kernel (``getrusage`` of the finished child).

Usage:  python bench/memory.py [--stocks 5 50 150] [--per_stock] [--out bench/out/memory]
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import subprocess
import sys
from pathlib import Path

from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market


def peak_rss_mb(args: list[str]) -> float:
    """Run ``python -m parallel_dqn ARGS`` in a child and return its peak RSS in MB (the child alone)."""
    code = (
        "import resource, sys, runpy; sys.argv = ['parallel-dqn', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('parallel_dqn', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    kb = next(int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_KB"))
    return kb / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, nargs="+", default=[5, 50, 150])
    ap.add_argument("--per_stock", action="store_true", help="also one simulated worker per stock")
    ap.add_argument("--out", type=Path, default=Path("bench/out/memory"))
    args = ap.parse_args()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    print("| stocks | workers | peak RSS (MB) | MB per stock beyond 5 |")
    print("|---|---|---|---|")
    base: dict[bool, tuple[int, float]] = {}
    for n in args.stocks:
        market = args.out / f"market{n}"
        if not (market / "stocks_intraday").exists():
            names = [f"S{i:03d}" for i in range(n)]
            write_market(generate_market(names, dt.date(2024, 1, 2), 3, seed=7, spec=SyntheticSpec()), market)
        for per_stock in (False, True) if args.per_stock else (False,):
            mb = peak_rss_mb(["train", "--data", str(market), "--start_date", "2024-01-02", "--end_date", "2024-01-03",
                              "--eval_start", "2024-01-04", "--eval_end", "2024-01-04", "--episodes", "1",
                              "--output", str(args.out / f"run{n}"), "--overwrite", "--no_progress",
                              *(["--workers", str(n)] if per_stock else [])])
            first = base.setdefault(per_stock, (n, mb))
            per = (mb - first[1]) / (n - first[0]) if n != first[0] else float("nan")
            print(f"| {n} | {n if per_stock else 1} | {mb:,.0f} | {per:.1f} |", flush=True)


if __name__ == "__main__":
    main()
