"""Steady-state throughput against the number of stocks: transitions/s of single mode while it learns.

For each S in ``--stocks`` (default 5 and 500) one single-mode run, one after the other, on a generated
market of S stocks x ``--days`` days of 1-minute bars, default settings but ``dist.record_block = 16`` (so
the decision blocks that time the clock arrive often); transitions/s = S x the clock steps from step
``learning_starts + 20`` (learning is on) to the last training step, over their seconds, read from
the times rank 0 receives worker 0's decision blocks. A run is cut after ``--limit`` seconds (its rate is
then over what it did). The ratio to the first S is the issue's "500 stocks >= 0.5x the transitions/s
at 5" (same settings).

Usage:  python bench/steady_state.py [--stocks 5 500] [--days 4] [--limit 300] [--out bench/out/steady]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

CHILD = "--child"


def child(argv: list[str]) -> None:
    """Inside the run's process: time worker 0's decision blocks, print the rate at the end or the limit."""
    import parallel_dqn.telemetry.progress as progress
    from parallel_dqn.cli import main
    from parallel_dqn.config import Config

    stocks, limit, start = int(argv[0]), float(argv[1]), Config().dqn.learning_starts + 20
    marks: list[tuple[float, int]] = []
    original = progress.Progress.on_decisions

    def on_decisions(self, block, counters, loss):  # type: ignore[no-untyped-def]
        if block.worker == 0 and block.phase == "train":  # the evaluation (no learning) steps faster
            marks.append((time.monotonic(), int(block.t.max())))
        return original(self, block, counters, loss)

    def report() -> None:
        points = [m for m in marks if m[1] >= start]
        if len(points) < 2:
            print("RATE none", flush=True)
        else:
            (t0, s0), (t1, s1) = points[0], points[-1]
            print(f"RATE {(s1 - s0) * stocks / (t1 - t0):.1f} {s1 - s0} {t1 - t0:.1f}", flush=True)

    def stop_at_limit() -> None:
        time.sleep(limit)
        report()
        os._exit(0)

    progress.Progress.on_decisions = on_decisions  # type: ignore[method-assign]
    threading.Thread(target=stop_at_limit, daemon=True).start()
    sys.argv = ["parallel-dqn", *argv[2:]]
    try:
        main()
    except SystemExit:
        pass
    report()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, nargs="+", default=[5, 500])
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--limit", type=float, default=300.0, help="seconds per run at most")
    ap.add_argument("--out", type=Path, default=Path("bench/out/steady"))
    args = ap.parse_args()
    from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market

    rates = {}
    for n in args.stocks:
        market = args.out / f"market{n}x{args.days}"
        if not (market / "stocks_intraday").exists():
            names = [f"S{i:03d}" for i in range(n)]
            write_market(generate_market(names, dt.date(2024, 1, 2), args.days, seed=7, spec=SyntheticSpec()), market)
        proc = subprocess.run(
            [sys.executable, __file__, CHILD, str(n), str(args.limit), "train", "--data", str(market), "--episodes", "1",
             "--output", str(args.out / f"run{n}"), "--overwrite", "--no_progress", "--set", "dist.record_block=16"],
            capture_output=True, text=True, timeout=args.limit + 600,
        )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RATE")), "RATE none")
        rates[n] = float(line.split()[1]) if line.split()[1] != "none" else float("nan")
        print(f"{n} stocks: {line}", flush=True)
    base = rates[args.stocks[0]]
    print("\n| stocks | transitions/s while learning | / first |\n|---|---|---|")
    for n, r in rates.items():
        print(f"| {n} | {r:,.0f} | {r / base:.2f}x |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        child(sys.argv[2:])
    else:
        main()
