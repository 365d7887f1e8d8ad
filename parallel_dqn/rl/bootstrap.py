"""Bootstrapped DQN: which replayed transitions each member of an ensemble learns from, and their loss.

Each member (head) learns from a transition with probability ``p`` (``ensemble.bootstrap``), so the members see
different resamples of the replay and stay diverse where the data do not pin the value down. The mask is not
drawn and stored: it is a hash of (run seed, worker, replay slot, member), so it costs no memory, no random
draws from any stream the rest of training uses, and no checkpoint state; a resumed run, and every MPI rank,
computes the very masks of the run it continues.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a well-mixed 64-bit hash of each value (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def bootstrap_masks(slots: np.ndarray, members: int, p: float, seed: int, worker: int) -> np.ndarray:
    """Float32 ``[N, K]``: 1 where member k learns from the transition in replay slot ``slots[n]``.

    ``p`` = 1 gives all ones (no masks). The same (seed, worker, slot, member) always gives the same bit.
    """
    if p >= 1.0:
        return np.ones((len(slots), members), dtype=np.float32)
    key = _splitmix64(np.array([seed * 1_000_003 + worker], dtype=np.uint64))[0]
    ids = np.asarray(slots, dtype=np.uint64)[:, None] * np.uint64(members) + np.arange(members, dtype=np.uint64)
    with np.errstate(over="ignore"):
        bits = _splitmix64(ids ^ key)
    uniform = (bits >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return (uniform < p).astype(np.float32)


def masked_td_loss(
    q_taken: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, masks: torch.Tensor, huber_delta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The members' Huber loss, each on its own masked samples, and the TD errors ``[B]`` (their mean).

    ``q_taken``, ``targets``, ``masks``: ``[B, K]``; ``weights`` ``[B]`` (the replay's importance weights). The
    loss is the importance-weighted sum over (sample, member) pairs a mask keeps, over their number: every kept
    pair counts the same, and a member's gradient does not grow with how many samples the others keep.
    """
    per_pair = F.huber_loss(q_taken, targets.detach(), delta=huber_delta, reduction="none")
    kept = masks.sum().clamp(min=1.0)
    loss = (weights[:, None] * masks * per_pair).sum() / kept
    return loss, (q_taken - targets).detach().mean(dim=1)
