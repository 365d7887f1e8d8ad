"""Double-DQN targets and the TD loss, independent of any network or transport.

With n-step transitions ``(s_t, a_t, R_t^(k), s_{t+k}, gamma^k)`` the target is

    y = R + gamma^k * Q_target(s_{t+k}, argmax_a Q_online(s_{t+k}, a))

(the discount is 0 when the episode ended within the k steps). The loss is the
Huber loss of ``Q_online(s_t, a_t) - y``, weighted by the replay's importance
weights (all ones for uniform replay). The TD errors come back for prioritised
replay.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def double_dqn_targets(
    q_next_online: torch.Tensor, q_next_target: torch.Tensor, rewards: torch.Tensor, discounts: torch.Tensor
) -> torch.Tensor:
    """Targets ``[B]`` from next-state Q-values ``[B, A]`` of both networks."""
    best = q_next_online.argmax(dim=-1, keepdim=True)
    return rewards + discounts * q_next_target.gather(-1, best).squeeze(-1)


def td_loss(
    q_taken: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, huber_delta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance-weighted Huber loss and the TD errors ``q_taken - targets`` (detached)."""
    per_sample = F.huber_loss(q_taken, targets.detach(), delta=huber_delta, reduction="none")
    return (weights * per_sample).mean(), (q_taken - targets).detach()
