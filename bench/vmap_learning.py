"""Batched learning across hosted workers: ``torch.func.vmap`` of per-worker gradients against one backward per
worker, side by side, at 500 stocks with k = 16 neighbours and batches of 32 (the README's 1.2x / 1.7x figure).

Usage:  python bench/vmap_learning.py [WORKERS ...]   (default 5 50)
"""

from __future__ import annotations

import sys
import time
import types

import torch
from torch.func import functional_call, grad, vmap

import parallel_dqn.model.qnet as qnet_module
from parallel_dqn.config import ModelConfig
from parallel_dqn.model.qnet import QNetwork

# F.one_hot checks its input's values (an .item() vmap cannot batch); the same one-hot by indexing an identity
qnet_module.F = types.SimpleNamespace(one_hot=lambda x, n: torch.eye(n, dtype=torch.long)[x])  # type: ignore[assignment]

S, F, W, K, B = 500, 9, 8, 16, 32


def measure(n_workers: int, rounds: int = 5) -> tuple[float, float]:
    """Seconds per round: (vmapped gradients of all workers, one backward per worker)."""
    net = QNetwork(S, F, W, ModelConfig())
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    sizes = [p.numel() for p in net.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(v, windows, nb, slot, edges, pos):  # type: ignore[no-untyped-def]
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(v, sizes), shapes)}
        q, _ = functional_call(net, params, (windows, nb, slot, edges, pos))
        return (q**2).mean()

    g = torch.Generator().manual_seed(0)
    windows = torch.randn(n_workers, 2 * B, K, W, F, generator=g)
    nb = torch.randint(0, S, (n_workers, 2 * B, K), generator=g)
    slot = torch.zeros(n_workers, 2 * B, dtype=torch.long)
    edges = torch.randn(n_workers, 2 * B, K, 2, generator=g)
    pos = torch.randint(0, 3, (n_workers, 2 * B), generator=g)
    batched = vmap(grad(loss), in_dims=(None, 0, 0, 0, 0, 0))
    batched(flat, windows, nb, slot, edges, pos)  # warm-up
    t0 = time.perf_counter()
    for _ in range(rounds):
        batched(flat, windows, nb, slot, edges, pos)
    vmapped = (time.perf_counter() - t0) / rounds
    t0 = time.perf_counter()
    for _ in range(rounds):
        for i in range(n_workers):
            net.zero_grad()
            q, _ = net(windows[i], nb[i], slot[i], edges[i], pos[i])
            (q**2).mean().backward()
    one_by_one = (time.perf_counter() - t0) / rounds
    return vmapped, one_by_one


def main() -> None:
    torch.set_num_threads(1)
    print("| workers | vmapped (ms) | one by one (ms) | ratio |\n|---|---|---|---|")
    for n in [int(a) for a in sys.argv[1:]] or [5, 50]:
        v, o = measure(n)
        print(f"| {n} | {v * 1e3:.1f} | {o * 1e3:.1f} | {o / v:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
