"""Scaling benchmark of parallel mode: acting and learning rates for 1, 2, 4 workers under mpiexec.

For each worker count N: one asynchronous run of `mpiexec -n N+1 parallel-dqn train --mode parallel`
on the same market (4 stocks, 1-minute bars, 3 training days, 1 episode), reading from its outputs:

* transitions/s: decisions taken by all workers (clock steps x stocks) per second of training;
* gradient applies/s at rank 0, gradients sent, dropped as stale, mean staleness;
* the message sizes (gradient, parameters, one block of decision records).

Beside them: MPI one-way latency and bandwidth on this machine (bench/mpi_pingpong.py), the
rate at which rank 0 alone can apply gradients (AdamW step on the flat vector, no MPI), and the
rate at which one worker alone produces gradients, so the ceiling can be located.

Usage:  python bench/scaling.py [--workers 1 2 4] [--out bench/out/scaling]
Prints markdown (pasted into the README) and writes OUT/scaling.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from parallel_dqn.comm.messages import SetupInfo
from parallel_dqn.config import Config
from parallel_dqn.data.features import N_FEATURES
from parallel_dqn.model.flat import n_params
from parallel_dqn.training.observers import Observers
from parallel_dqn.training.server import ParameterServer

STOCKS = ["LEAD", "FOLW", "MOMO", "MREV"]
BIN = Path(sys.executable).parent


def run_parallel(data: Path, out: Path, workers: int, episodes: int) -> dict:
    cmd = [
        str(BIN / "mpiexec"), "-n", str(workers + 1), sys.executable, "-m", "parallel_dqn", "train", "--mode", "parallel",
        "--data", str(data), "--stocks", *STOCKS, "--start_date", "2024-01-02", "--end_date", "2024-01-04",
        "--eval_start", "2024-01-05", "--eval_end", "2024-01-05", "--episodes", str(episodes),
        "--output", str(out), "--overwrite", "--no-progress",
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = json.loads((out / "metrics.json").read_text())
    curve = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [c for c in curve if c["phase"] == "train"]
    steps = sum(c["n_steps"] for c in train)
    seconds = train[-1]["elapsed_s"]
    c = metrics["counters"]
    return {
        "workers": workers,
        "transitions_per_s": steps * len(STOCKS) / seconds,
        "applies_per_s": c["gradients_applied"] / seconds,
        "sent": c["gradients_sent"],
        "dropped": c["gradients_dropped_stale"],
        "staleness": c["mean_staleness"],
        "train_seconds": seconds,
        "eval_sharpe": metrics["eval"]["sharpe"],
    }


def server_apply_rate(n_stocks: int, repeats: int = 3000) -> tuple[float, int]:
    """Gradient applies/s of rank 0 alone (flat gradient -> AdamW step -> flat parameters)."""
    cfg = Config()
    torch.set_num_threads(1)
    server = ParameterServer(cfg, 1, Observers(cfg.market.cost_bps))
    T = 10
    info = SetupInfo(
        symbols=tuple(STOCKS[:n_stocks]), timestamps=np.arange(T).astype("datetime64[m]").astype("datetime64[ns]"),
        close=np.ones((T, n_stocks)), log_returns=np.zeros((T, n_stocks)), tradeable=np.ones((T, n_stocks), bool),
        train_rows=(0, T), eval_rows=(0, 0), bars_per_day=T, reward_scale=1.0, return_std=1.0,
        n_features=N_FEATURES, feature_stats={}, shards=[[0]], episodes=0,
    )
    server.setup(info)
    p = n_params(server.qnet)
    grad = np.random.default_rng(0).normal(size=p).astype(np.float32) * 1e-3
    start = time.perf_counter()
    for _ in range(repeats):
        server._apply(grad)
    return repeats / (time.perf_counter() - start), p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--episodes", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench/out/scaling"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "market"
    if not (data / "stocks_intraday").exists():
        from parallel_dqn.data.synthetic import generate_market, write_market

        write_market(generate_market(STOCKS, dt.date(2024, 1, 2), 4, seed=5), data)

    apply_rate, p = server_apply_rate(len(STOCKS))
    grad_bytes, param_bytes = 4 * (4 + p), 4 * (2 + 2 * p)
    block_bytes = 8 * (5 + 7 * Config().dist.record_block)  # one stock's block; k stocks: k times the body
    ping = subprocess.run(
        [str(BIN / "mpiexec"), "-n", "2", sys.executable, "bench/mpi_pingpong.py", str(grad_bytes), str(param_bytes)],
        check=True, capture_output=True, text=True,
    )
    wire = json.loads(ping.stdout.strip().splitlines()[-1])
    rows = [run_parallel(data, args.out / f"w{n}", n, args.episodes) for n in args.workers]

    lines = [f"Machine: {os.cpu_count()} cores. Q-network: {p:,} parameters.", ""]
    lines += ["| workers (ranks) | transitions/s | gradient applies/s at rank 0 | gradients sent | dropped stale "
              "| mean staleness | train s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['workers']} ({r['workers'] + 1}) | {r['transitions_per_s']:.0f} | {r['applies_per_s']:.1f} | {r['sent']} "
            f"| {r['dropped']} | {r['staleness']:.2f} | {r['train_seconds']:.1f} |"
        )
    lines += ["", "| message | bytes | one-way time on this machine |", "|---|---|---|"]
    for name, size in (("gradient (float32, header + P)", grad_bytes), ("parameters (online + target)", param_bytes)):
        lines.append(f"| {name} | {size:,} | {wire[str(size)]['one_way_us']:.0f} us |")
    lines.append(f"| decision records, 256 steps x 1 stock (float64) | {block_bytes:,} | - |")
    lines += ["", "| MPI (MPICH wheel), rank 0 <-> rank 1 | one-way latency | bandwidth |", "|---|---|---|"]
    for size in ("8", "1024", "65536", "1048576"):
        lines.append(f"| {int(size):,} B | {wire[size]['one_way_us']:.1f} us | {wire[size]['MB_per_s']:,.0f} MB/s |")
    per_worker = rows[0]["applies_per_s"]
    lines += [
        "",
        f"Rank 0 alone applies **{apply_rate:,.0f} gradients/s** (AdamW on the flat vector); one worker alone "
        f"produces **{per_worker:.1f} gradients/s** while also acting (every {Config().dqn.train_freq} clock steps, "
        f"batch {Config().dqn.batch_size}). One parameter server can therefore feed about "
        f"**{apply_rate / max(per_worker, 1e-9):,.0f} workers** before its apply rate is the ceiling; the wire "
        f"(a gradient in {wire[str(grad_bytes)]['one_way_us']:.0f} us) allows "
        f"{1e6 / max(wire[str(grad_bytes)]['one_way_us'], 1e-9):,.0f} gradient messages/s.",
    ]
    text = "\n".join(lines)
    print(text)
    (args.out / "scaling.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
