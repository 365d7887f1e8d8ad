"""Rank 0's apply ceiling: gradient applies per second, one flat AdamW vector against one AdamW tensor per parameter.

One apply = take a flat float32 gradient from a message, AdamW step, produce the flat float32 parameters a pull
returns. Both ways run here side by side, alternating, on the default Q-network (one torch thread):

* **per tensor** (before): scatter the gradient into every parameter's ``.grad``, AdamW over the module's ~20
  tensors, concatenate the parameters again;
* **flat** (now, :func:`parallel_dqn.model.flat.flatten_parameters`): the parameters are views of one vector;
  the gradient is that vector's ``.grad``, AdamW steps one tensor, the parameters leave as one copy.

:func:`server_apply_rate` times the server's own apply (``ParameterServer._apply``, whatever its optimizer is
today), per wall and per CPU second; bench/server_ceiling.py sets it against real runs' gradient rates.

Usage:  python bench/server_apply.py [--stocks 5 50 500] [--applies 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from parallel_dqn.comm.messages import SetupInfo
from parallel_dqn.config import Config
from parallel_dqn.data.features import N_FEATURES
from parallel_dqn.model.flat import flatten_parameters, get_flat_params, n_params, set_flat_grads
from parallel_dqn.model.qnet import QNetwork
from parallel_dqn.training.observers import Observers
from parallel_dqn.training.server import ParameterServer


def per_tensor(cfg: Config, stocks: int, grads: list[np.ndarray]) -> float:
    net = QNetwork(stocks, N_FEATURES, cfg.market.window, cfg.model)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.dqn.lr, weight_decay=cfg.dqn.weight_decay)
    start = time.perf_counter()
    for g in grads:
        set_flat_grads(net, g)
        opt.step()
        get_flat_params(net)
    return len(grads) / (time.perf_counter() - start)


def flat(cfg: Config, stocks: int, grads: list[np.ndarray]) -> float:
    net = QNetwork(stocks, N_FEATURES, cfg.market.window, cfg.model)
    vector = flatten_parameters(net)
    opt = torch.optim.AdamW([vector], lr=cfg.dqn.lr, weight_decay=cfg.dqn.weight_decay)
    start = time.perf_counter()
    for g in grads:
        vector.grad = torch.from_numpy(g)
        opt.step()
        vector.detach().numpy().copy()
    return len(grads) / (time.perf_counter() - start)


def server_apply_rate(stocks: int, applies: int = 2000, rounds: int = 3) -> dict[str, float]:
    """Rank 0's apply ceiling for S stocks as the server applies today (``ParameterServer._apply``: its optimizer
    step, the version, the parameters' copy a pull returns, the target every ``dqn.target_update``): median applies
    per wall second and per CPU second of one thread (what a busy machine changes little), and the parameters."""
    torch.set_num_threads(1)
    cfg = Config()
    T = 10
    info = SetupInfo(
        symbols=tuple(f"S{i:03d}" for i in range(stocks)),
        timestamps=np.arange(T).astype("datetime64[m]").astype("datetime64[ns]"),
        close=np.ones((T, stocks)), log_returns=np.zeros((T, stocks)), tradeable=np.ones((T, stocks), bool),
        train_rows=(0, T), eval_rows=(0, 0), bars_per_day=T, reward_scale=1.0, return_std=1.0,
        n_features=N_FEATURES, feature_stats={}, shards=[list(range(stocks))], episodes=0,
    )
    wall, cpu, p = [], [], 0
    for _ in range(rounds):
        server = ParameterServer(cfg, 1, Observers(cfg.market.cost_bps))
        server.setup(info)
        p = n_params(server.qnet)
        grads = [np.random.default_rng(i).normal(0, 1e-3, p).astype(np.float32) for i in range(applies)]
        start, start_cpu = time.perf_counter(), time.process_time()
        for g in grads:
            server._apply(g)
        wall.append(applies / (time.perf_counter() - start))
        cpu.append(applies / (time.process_time() - start_cpu))
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
