"""Throughput benchmark: parallel-dqn single mode against Stable-Baselines3's DQN, same market, same replay ratio.

Both learn one episode over the same generated market (S stocks of 1-minute bars, one torch thread):

* **parallel-dqn**: ``parallel-dqn train --mode single --episodes 1`` (defaults: one worker for all S stocks,
  a gradient every 8 clock steps over 32 bars of every stock = 32 x S transitions = 4 gradient samples per
  transition); transitions/s = the episode's clock steps x S / its seconds (``metrics.jsonl``: ``n_steps``
  and ``elapsed_s``).
* **Stable-Baselines3** DQN (an optional benchmark dependency: ``pip install stable-baselines3``) stepping
  the project's own ``TradingEnv``, one per stock in a ``DummyVecEnv``, on the same features, S gradient
  steps every few vector steps (4 samples per transition), learning after 500 clock steps, in two shapes:

  - *as the scale issue configures it*: train every 8 vector steps, S gradient steps of batch 32;
  - *our shape*: train every ``dqn.train_freq`` vector steps, S gradient steps of ``dqn.batch_size`` (with
    the defaults every 32 steps, batch 128): SB3 too is faster with fewer, larger updates.

The runs alternate in this one process tree, ``--repeats`` times each; the table gives each one's median
transitions/s and the ratios (this machine is shared and noisy: compare ratios, not absolute times).

Usage:  python bench/throughput.py [--stocks 5] [--days 10] [--repeats 2] [--set KEY=VALUE ...] [--out bench/out/throughput]
(``--set`` applies to parallel-dqn and to SB3 in our shape: ``--set dqn.train_freq=16 --set dqn.batch_size=64``
keeps the replay ratio.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from parallel_dqn.comm.inprocess import InProcessTransport
from parallel_dqn.config import Config
from parallel_dqn.data.store import open_store
from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market
from parallel_dqn.market import TradingEnv
from parallel_dqn.training.driver import LocalShard, build_cross_section
from parallel_dqn.training.plan import plan_training

START = dt.date(2024, 1, 2)
# Stable-Baselines3 as the scale issue measured it: a gradient step of 32 per environment every 8 vector steps
ISSUE_SHAPE = ["dqn.train_freq=8", "dqn.batch_size=32", "dqn.target_update=250", "dqn.lr=5e-4"]


def make_market(out: Path, stocks: int, days: int) -> tuple[Path, str, str]:
    """``days`` training days + 1 held-out day of 1-minute bars; returns (folder, last training day, eval day)."""
    names = [f"S{i:03d}" for i in range(stocks)]
    if not (out / "stocks_intraday").exists():
        write_market(generate_market(names, START, days + 1, seed=7, spec=SyntheticSpec()), out)
    store = open_store(str(out))
    all_days = store.list_days(names[0])
    return out, str(all_days[days - 1]), str(all_days[days])


def run_parallel_dqn(data: Path, end: str, eval_day: str, out: Path, stocks: int, settings: list[str]) -> float:
    """Transitions/s of one training episode in single mode."""
    subprocess.run(
        [sys.executable, "-m", "parallel_dqn", "train", "--mode", "single", "--data", str(data),
         "--start_date", str(START), "--end_date", end, "--eval_start", eval_day, "--eval_end", eval_day,
         "--episodes", "1", "--output", str(out), "--overwrite", "--no_progress",
         *(arg for setting in settings for arg in ("--set", setting))],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    return line["n_steps"] * stocks / line["elapsed_s"]


def run_sb3(data: Path, end: str, eval_day: str, settings: list[str]) -> float:
    """Transitions/s of Stable-Baselines3's DQN over the same training days at the same replay ratio."""
    from stable_baselines3 import DQN
    from stable_baselines3.common.vec_env import DummyVecEnv

    cfg = Config()
    for key, value in {"data.data": str(data), "data.start_date": str(START), "data.end_date": end,
                       "data.eval_start": eval_day, "data.eval_end": eval_day}.items():
        cfg.set(key, value)
    for setting in settings:  # the same dqn.* settings: its batch and train_freq follow ours
        key, _, value = setting.partition("=")
        cfg.set(key, value)
    store = open_store(cfg.data.data)
    plan = plan_training(cfg, store)
    shards = [LocalShard(i, s) for i, s in enumerate(plan.shards)]
    xs, _ = build_cross_section(shards, plan, store, InProcessTransport(endpoint=None), cfg)  # type: ignore[arg-type]
    days = xs.timestamps.astype("datetime64[D]")
    stop = int(np.searchsorted(days, np.datetime64(end, "D"), side="right"))
    S = xs.n_stocks

    def env(stock: int):
        return lambda: TradingEnv(xs.features, xs.log_returns, xs.tradeable, cfg.market.window, cfg.market.cost_bps,
                                  stock=stock, start=0, end=stop)

    vec = DummyVecEnv([env(s) for s in range(S)])
    q = cfg.dqn
    model = DQN(
        "MlpPolicy", vec, learning_rate=q.lr, buffer_size=cfg.replay.capacity, learning_starts=q.learning_starts * S,
        batch_size=q.batch_size, gamma=q.gamma, train_freq=(q.train_freq, "step"), gradient_steps=S,
        target_update_interval=q.target_update * S, exploration_fraction=q.eps_fraction, exploration_final_eps=q.eps_end,
        max_grad_norm=q.grad_clip, device="cpu", seed=0, verbose=0,
    )
    steps = (stop - 1) * S  # one pass over the training days, every stock
    started = time.perf_counter()
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, default=5)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for both sides (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("bench/out/throughput"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    data, end, eval_day = make_market(args.out / f"market{args.stocks}", args.stocks, args.days)
    ours, issue, same = [], [], []
    for r in range(args.repeats):
        ours.append(run_parallel_dqn(data, end, eval_day, args.out / "run", args.stocks, args.settings))
        issue.append(run_sb3(data, end, eval_day, [*args.settings, *ISSUE_SHAPE]))
        same.append(run_sb3(data, end, eval_day, args.settings))
        print(f"repeat {r + 1}: parallel-dqn {ours[-1]:,.0f} transitions/s, Stable-Baselines3 {issue[-1]:,.0f} "
              f"(the issue's shape), {same[-1]:,.0f} (our shape)", flush=True)
    a, b, c = statistics.median(ours), statistics.median(issue), statistics.median(same)
    table = (
        f"| stocks | days | parallel-dqn single (transitions/s) | SB3 DQN, the issue's shape | ratio "
        f"| SB3 DQN, our shape | ratio |\n"
        f"|---|---|---|---|---|---|---|\n"
        f"| {args.stocks} | {args.days} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x | {c:,.0f} | {a / c:.2f}x |\n"
    )
    print(table)
    (args.out / "throughput.md").write_text(table)


if __name__ == "__main__":
    main()
