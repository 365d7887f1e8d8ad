"""Learning benchmark: does the agent beat its baselines out of sample on a market with a planted signal?

For each market seed: generate a synthetic market (5 stocks: leader, lagged follower,
momentum, mean reversion, random walk; 1-minute bars), train the full model
(cross-stock attention on) and the ablation (attention off) with the same seed and
settings, and compare on the held-out days at --cost_bps 1:

* the agent's portfolio Sharpe against every baseline's and the planted-signal oracle's;
* the follower's own Sharpe with and without attention (only cross-stock information
  predicts it, so without attention it should be near zero or negative).

Usage:  python bench/learning.py [--seeds 1 2 3] [--episodes 4] [--jobs 2] [--set KEY=VALUE ...] [--out bench/out/learning]
(``--set`` is passed to every training run: e.g. ``--set dqn.train_freq=16 --set dqn.batch_size=64``.)
Prints markdown tables (pasted into the README) and writes them to OUT/learning.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

STOCKS = ["LEAD", "FOLW", "MOMO", "MREV", "RWLK"]
BASELINES = ["buy_and_hold", "equal_weight", "momentum", "mean_reversion", "random"]


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "parallel_dqn", *args], check=True, stdout=subprocess.DEVNULL)


def run_one(data: Path, out: Path, seed: int, episodes: int, attention: bool, settings: list[str]) -> dict:
    started = time.perf_counter()
    cli(
        "train", "--mode", "single", "--data", str(data),
        "--start_date", "2024-01-02", "--end_date", "2024-01-12", "--eval_start", "2024-01-15", "--eval_end", "2024-01-17",
        "--episodes", str(episodes), "--output", str(out), "--seed", str(seed), "--cost_bps", "1",
        "--set", f"model.cross_attention={str(attention).lower()}", "--overwrite", "--no-progress",
        *(arg for setting in settings for arg in ("--set", setting)),
    )
    result = json.loads((out / "metrics.json").read_text())
    result["bench_seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for every training run (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("bench/out/learning"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for seed in args.seeds:
        data = args.out / f"market{seed}"
        if not (data / "stocks_intraday").exists():
            cli("data", "generate", "--output", str(data), "--stocks", *STOCKS, "--start", "2024-01-02",
                "--days", "12", "--seed", str(seed))
        for attention in (True, False):
            jobs.append((seed, attention, data, args.out / f"seed{seed}_{'attn' if attention else 'noattn'}"))
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda j: run_one(j[2], j[3], 0, args.episodes, j[1], args.settings), jobs))
    by = {(seed, attention): r for (seed, attention, _, _), r in zip(jobs, results)}

    lines = ["### Evaluation Sharpe (annualised), held-out days, cost 1 bp", ""]
    head = ["market seed", "agent", "agent, no attention", *BASELINES, "oracle", "agent / oracle"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    beats, fractions = [], []
    for seed in args.seeds:
        full, ablated = by[(seed, True)], by[(seed, False)]
        base = [full["baselines"][b]["sharpe"] for b in BASELINES]
        frac = full["eval"]["sharpe"] / full["oracle"]["sharpe"]
        beats.append(full["eval"]["sharpe"] > max(base))
        fractions.append(frac)
        row = [seed, full["eval"]["sharpe"], ablated["eval"]["sharpe"], *base, full["oracle"]["sharpe"], frac]
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |")
    lines += ["", f"Agent beats every baseline: {sum(beats)}/{len(beats)} markets; "
              f"mean agent/oracle Sharpe: {np.mean(fractions):.2f} (min {np.min(fractions):.2f}).", ""]
    lines += ["### Ablation: the lagged follower (FOLW) needs cross-stock attention", ""]
    head = ["market seed", "FOLW Sharpe, attention", "FOLW Sharpe, no attention", "FOLW->LEAD attention weight",
            "train minutes (attention)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for seed in args.seeds:
        full, ablated = by[(seed, True)], by[(seed, False)]
        syms = full["symbols"]
        att = full["attention"][syms.index("FOLW")][syms.index("LEAD")]
        lines.append(
            f"| {seed} | {full['per_stock']['FOLW']['sharpe']:.2f} | {ablated['per_stock']['FOLW']['sharpe']:.2f} "
            f"| {att:.2f} | {full['bench_seconds'] / 60:.1f} |"
        )
    text = "\n".join(lines)
    print(text)
    (args.out / "learning.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
