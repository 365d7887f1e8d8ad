"""Rank 0's apply ceiling: gradient applies per second, one flat AdamW vector against one AdamW tensor per parameter.

One apply = take a flat float32 gradient from a message, AdamW step, produce the flat float32 parameters a pull
returns. Both ways run here side by side, alternating, on the default Q-network (one torch thread):

* **per tensor** (before): scatter the gradient into every parameter's ``.grad``, AdamW over the module's ~20
  tensors, concatenate the parameters again;
* **flat** (now, :func:`parallel_dqn.model.flat.flatten_parameters`): the parameters are views of one vector;
  the gradient is that vector's ``.grad``, AdamW steps one tensor, the parameters leave as one copy.

Usage:  python bench/server_apply.py [--stocks 5 50 500] [--applies 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from parallel_dqn.config import Config
from parallel_dqn.data.features import N_FEATURES
from parallel_dqn.model.flat import flatten_parameters, get_flat_params, n_params, set_flat_grads
from parallel_dqn.model.qnet import QNetwork


def per_tensor(cfg: Config, stocks: int, grads: list[np.ndarray]) -> float:
    net = QNetwork(stocks, N_FEATURES, cfg.market.window, cfg.model)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.dqn.lr, weight_decay=cfg.dqn.weight_decay)
    start = time.perf_counter()
    for g in grads:
        set_flat_grads(net, g)
        opt.step()
        get_flat_params(net)
    return len(grads) / (time.perf_counter() - start)


def flat(cfg: Config, stocks: int, grads: list[np.ndarray], clock: Callable[[], float] = time.perf_counter) -> float:
    """Applies per second of ``clock`` (wall clock; ``time.process_time``: per CPU second, what a busy machine
    does not change)."""
    net = QNetwork(stocks, N_FEATURES, cfg.market.window, cfg.model)
    vector = flatten_parameters(net)
    opt = torch.optim.AdamW([vector], lr=cfg.dqn.lr, weight_decay=cfg.dqn.weight_decay)
    start = clock()
    for g in grads:
        vector.grad = torch.from_numpy(g)
        opt.step()
        vector.detach().numpy().copy()
    return len(grads) / (clock() - start)


def flat_apply_rate(stocks: int, applies: int = 2000, rounds: int = 3) -> dict[str, float]:
    """Rank 0's apply ceiling for S stocks, the flat way (as the server applies now): median applies per wall
    second and per CPU second of one thread, and the network's parameters."""
    torch.set_num_threads(1)
    cfg = Config()
    p = n_params(QNetwork(stocks, N_FEATURES, cfg.market.window, cfg.model))
    grads = [np.random.default_rng(i).normal(0, 1e-3, p).astype(np.float32) for i in range(applies)]
    wall = [flat(cfg, stocks, grads) for _ in range(rounds)]
    cpu = [flat(cfg, stocks, grads, time.process_time) for _ in range(rounds)]
    return {"applies_per_s": statistics.median(wall), "applies_per_cpu_s": statistics.median(cpu), "parameters": p}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, nargs="+", default=[5, 50, 500])
    ap.add_argument("--applies", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = Config()
    print("| stocks | parameters | per tensor (applies/s) | flat (applies/s) | flat / per tensor |")
    print("|---|---|---|---|---|")
    for stocks in args.stocks:
        p = n_params(QNetwork(stocks, N_FEATURES, cfg.market.window, cfg.model))
        grads = [np.random.default_rng(i).normal(0, 1e-3, p).astype(np.float32) for i in range(args.applies)]
        a, b = [], []
        for _ in range(args.rounds):  # alternate, so both see the same machine load
            a.append(per_tensor(cfg, stocks, grads))
            b.append(flat(cfg, stocks, grads))
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {stocks} | {p:,} | {ma:,.0f} | {mb:,.0f} | {mb / ma:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
