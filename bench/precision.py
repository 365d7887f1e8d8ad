"""Mixed precision on this CPU: bf16 autocast against fp32, side by side (``optim.precision``).

Two figures, each measured alternately (fp32, bf16, fp32, ...) ``--repeats`` times with one torch thread, the
median kept (this machine is shared and noisy: compare the ratio, not absolute times):

* **learning step**: a worker's ``_push_gradient`` (sample, three forward passes, backward, clip) on a filled
  replay of S stocks, gradients/s, as the network's default size (``model.*`` settings) and a wider one;
* **training**: one episode of ``parallel-dqn train --mode single`` (acting stays fp32), transitions/s.

Usage:  python bench/precision.py [--stocks 5] [--days 5] [--repeats 3] [--steps 60] [--out bench/out/precision]
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
from parallel_dqn.training.driver import LocalShard, build_cross_section
from parallel_dqn.training.plan import plan_training
from parallel_dqn.training.worker import ActingValues, Worker

START = dt.date(2024, 1, 2)
PRECISIONS = ("fp32", "bf16")
WIDE = {"model.embed_dim": 128, "model.hidden": 256}  # a wider network, where matrix products dominate


class Discard:
    """A transport that drops what a worker sends (the step alone is measured)."""

    def push_gradient(self, msg) -> None: ...
    def send_decisions(self, block) -> None: ...


def make_market(out: Path, stocks: int, days: int) -> tuple[Path, str, str]:
    names = [f"S{i:03d}" for i in range(stocks)]
    if not (out / "stocks_intraday").exists():
        write_market(generate_market(names, START, days + 1, seed=7, spec=SyntheticSpec()), out)
    all_days = open_store(str(out)).list_days(names[0])
    return out, str(all_days[days - 1]), str(all_days[days])


def config(data: Path, end: str, eval_day: str, settings: dict[str, object]) -> Config:
    cfg = Config()
    for key, value in {"data.data": str(data), "data.start_date": str(START), "data.end_date": end,
                       "data.eval_start": eval_day, "data.eval_end": eval_day, "data.cache": "off",
                       "run.progress": False, **settings}.items():
        cfg.set(key, value)
    return cfg


def learning_worker(cfg: Config) -> Worker:
    """One worker over every stock with a replay of 400 bars of random positions."""
    store = open_store(cfg.data.data)
    plan = plan_training(cfg, store)
    shards = [LocalShard(i, s) for i, s in enumerate(plan.shards)]
    xs, _ = build_cross_section(shards, plan, store, InProcessTransport(endpoint=None), cfg)  # type: ignore[arg-type]
    torch.manual_seed(0)
    w = Worker(0, list(range(xs.n_stocks)), cfg, xs, Discard(), 100.0, 10_000)  # type: ignore[arg-type]
    w._online.copy_(0.1 * torch.randn_like(w._online))
    w._target.copy_(w._online)
    w.begin_episode(1, "train", (0, 500))
    rng = np.random.default_rng(0)
    for t in range(20, 420):
        w.act(t, ActingValues(rng.normal(size=(xs.n_stocks, 3, 3)), np.zeros((xs.n_stocks, 1), np.int64), None))
    w._records.clear()
    return w


def step_rate(w: Worker, precision: str, steps: int) -> float:
    """Gradients/s of the learning step in ``precision``."""
    w.cfg.optim.precision = precision
    for _ in range(3):  # warm-up: autocast's weight casts and the allocator
        w._push_gradient()
    started = time.perf_counter()
    for _ in range(steps):
        w._push_gradient()
    return steps / (time.perf_counter() - started)


def training_rate(data: Path, end: str, eval_day: str, out: Path, stocks: int, precision: str) -> float:
    """Transitions/s of one training episode in single mode."""
    subprocess.run(
        [sys.executable, "-m", "parallel_dqn", "train", "--mode", "single", "--data", str(data),
         "--start_date", str(START), "--end_date", end, "--eval_start", eval_day, "--eval_end", eval_day,
         "--episodes", "1", "--output", str(out), "--overwrite", "--no_progress", "--set", "run.threads=1",
         "--set", f"optim.precision={precision}"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    return line["n_steps"] * stocks / line["elapsed_s"]


def side_by_side(measure, repeats: int) -> dict[str, float]:
    """Median of ``measure(precision)`` over alternating repeats."""
    rates: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(repeats):
        for p in PRECISIONS:
            rates[p].append(measure(p))
    return {p: statistics.median(r) for p, r in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, default=5)
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60, help="learning steps per measurement")
    ap.add_argument("--out", type=Path, default=Path("bench/out/precision"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    data, end, eval_day = make_market(args.out / f"market{args.stocks}", args.stocks, args.days)
    rows = []
    for name, settings in (("learning step, default network", {}), ("learning step, wide network", WIDE)):
        w = learning_worker(config(data, end, eval_day, settings))
        r = side_by_side(lambda p, w=w: step_rate(w, p, args.steps), args.repeats)
        rows.append((name, "gradients/s", r))
        print(name, r, flush=True)
    r = side_by_side(lambda p: training_rate(data, end, eval_day, args.out / "run", args.stocks, p), args.repeats)
    rows.append(("training, one episode (acting in fp32)", "transitions/s", r))
    table = "| measured | unit | fp32 | bf16 | bf16 / fp32 |\n|---|---|---|---|---|\n" + "".join(
        f"| {name} | {unit} | {r['fp32']:,.1f} | {r['bf16']:,.1f} | {r['bf16'] / r['fp32']:.2f}x |\n"
        for name, unit, r in rows
    )
    header = (f"{args.stocks} stocks x {args.days} days of 1-minute bars, one torch thread, median of "
              f"{args.repeats} alternating repeats, torch {torch.__version__}\n\n")
    print(header + table)
    (args.out / "precision.md").write_text(header + table)


if __name__ == "__main__":
    main()
