"""What torch.compile would buy the learning update (issue 10: 3x Stable-Baselines3 at 5 stocks).

Single mode's gradient at 5 stocks is one double-DQN update over 32 whole bars (160 transitions): the online
network's pass over the current bars with autograd, the online and target networks over the next bars, the Huber
loss and the backward. This times that update on the project's own ``QNetwork`` (default settings, random
features of the real shape), eager against ``torch.compile`` (inductor, CPU), alternating, one torch thread,
and the one-off compile time. It answers whether compiling would close the gap to 3x SB3: the update is about
60% of single mode's time per transition (README, "Single mode against Stable-Baselines3").

Usage:  python bench/compile_update.py [--updates 400] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from parallel_dqn.config import ModelConfig
from parallel_dqn.data.features import N_FEATURES
from parallel_dqn.model.qnet import QNetwork

STOCKS, WINDOW, BARS, T = 5, 8, 32, 4000


def make_update(net: QNetwork, target: QNetwork, features: torch.Tensor):
    everyone = torch.arange(STOCKS)
    neighbours = everyone.expand(STOCKS, STOCKS).contiguous()
    edges = torch.randn(STOCKS, STOCKS, 2)
    offsets = torch.arange(-WINDOW + 1, 1)

    def q_values(n: QNetwork, bars: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        windows = features[(bars[:, None] + offsets).clamp(min=0)].permute(0, 2, 1, 3)  # [B, S, W, F]
        emb = n.embed(windows, everyone.expand(len(bars), -1))
        ctx, _ = n.context(emb, emb, edges.expand(len(bars), -1, -1, -1), index=neighbours.expand(len(bars), -1, -1))
        return n.q_head(emb.reshape(-1, emb.shape[-1]), ctx.reshape(-1, emb.shape[-1]), positions)

    def loss(bars, positions, next_positions, actions, rewards, discounts) -> torch.Tensor:
        q = q_values(net, bars, positions).gather(1, actions[:, None])[:, 0]
        with torch.no_grad():
            best = q_values(net, bars + 1, next_positions).argmax(1, keepdim=True)
            y = rewards + discounts * q_values(target, bars + 1, next_positions).gather(1, best)[:, 0]
        return F.huber_loss(q, y)

    return loss


def batches(n: int) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(0)
    N = BARS * STOCKS
    return [(torch.randint(WINDOW, T - 1, (BARS,), generator=g), torch.randint(0, 3, (N,), generator=g),
             torch.randint(0, 3, (N,), generator=g), torch.randint(0, 3, (N,), generator=g),
             torch.randn(N, generator=g), torch.full((N,), 0.5)) for _ in range(n)]


def time_updates(loss, net: QNetwork, data: list, updates: int) -> float:
    """Milliseconds per update (zero the gradients, loss, backward)."""
    started = time.perf_counter()
    for i in range(updates):
        for p in net.parameters():
            p.grad = None
        loss(*data[i % len(data)]).backward()
    return (time.perf_counter() - started) / updates * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net, target = QNetwork(STOCKS, N_FEATURES, WINDOW, ModelConfig()), QNetwork(STOCKS, N_FEATURES, WINDOW, ModelConfig())
    eager = make_update(net, target, torch.randn(T, STOCKS, N_FEATURES))
    data = batches(50)
    started = time.perf_counter()
    compiled = torch.compile(eager)
    compiled(*data[0]).backward()
    compile_s = time.perf_counter() - started
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        times["eager"].append(time_updates(eager, net, data, args.updates))
        times["compiled"].append(time_updates(compiled, net, data, args.updates))
    a, b = statistics.median(times["eager"]), statistics.median(times["compiled"])
    print("| update (5 stocks, 32 bars) | eager ms | torch.compile ms | speed-up | compile s |")
    print("|---|---|---|---|---|")
    print(f"| {sum(p.numel() for p in net.parameters()):,} parameters | {a:.2f} | {b:.2f} | {a / b:.2f}x | {compile_s:.0f} |")


if __name__ == "__main__":
    main()
