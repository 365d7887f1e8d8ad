"""An ensemble's members acting together: combination rules, agreement, diversity.

The members are the K Q-heads of :class:`parallel_dqn.model.qnet.EnsembleHead`. At every decision each member
has Q-values ``[3]`` at the position held; a combination rule turns the K of them into the ensemble's Q-values
and its greedy action:

* ``mean``: the mean of the members' Q-values; the action is its argmax.
* ``vote``: each member votes for its own greedy action; the most votes win, a tie goes to the tied action with
  the highest mean Q. The Q-values recorded are the mean.
* ``confidence``: the members' Q-values weighted by their agreement: a member's weight is the share of members
  (itself included) whose greedy action is its own, so members in the majority count more than a lone dissenter.

The **agreement** of a decision is the share of members whose greedy action is the ensemble's action: 1 when
all agree. With ``ensemble.size_down`` it multiplies the decision's capital weight (rank 0's meta-policy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parallel_dqn.config import COMBINE_RULES
from parallel_dqn.market.step import N_ACTIONS


@dataclass(frozen=True)
class Combined:
    """The ensemble's view of N decisions."""

    q: np.ndarray  # [N, 3] the combined Q-values (recorded, and the meta-policy's input)
    action: np.ndarray  # [N] the ensemble's greedy action
    agreement: np.ndarray  # [N] share of members whose greedy action is ``action``


def combine(member_q: np.ndarray, rule: str) -> Combined:
    """Combine the members' Q-values ``[N, K, 3]`` by ``rule`` (mean | vote | confidence)."""
    if rule not in COMBINE_RULES:
        raise ValueError(f"unknown combination rule {rule!r}")
    greedy = member_q.argmax(axis=-1)  # [N, K]
    mean = member_q.mean(axis=1)
    if rule == "mean":
        q, action = mean, mean.argmax(axis=-1)
    elif rule == "vote":
        votes = (greedy[:, :, None] == np.arange(N_ACTIONS)).sum(axis=1)  # [N, 3]
        tied = votes == votes.max(axis=-1, keepdims=True)
        q, action = mean, np.where(tied, mean, -np.inf).argmax(axis=-1)
    else:
        weight = (greedy[:, :, None] == greedy[:, None, :]).mean(axis=-1)  # [N, K]: the member's camp's share
        q = (weight[:, :, None] * member_q).sum(axis=1) / weight.sum(axis=1)[:, None]
        action = q.argmax(axis=-1)
    agreement = (greedy == action[:, None]).mean(axis=1)
    return Combined(q.astype(member_q.dtype), action.astype(np.int64), agreement)


class DiversityStats:
    """Running sums over an episode's decisions, from which its diversity follows (:meth:`summary`).

    Sums add up: workers' stats are summed on rank 0 (in worker order), and the sums travel in checkpoints.
    Layout of :attr:`sums`: decisions, split decisions, Q entries, then sum and cross-product sums of the
    members' Q-values and of their advantages (Q minus its mean over actions).
    """

    def __init__(self, members: int, sums: np.ndarray | None = None) -> None:
        self.members = members
        size = 3 + 2 * (members + members * members)
        self.sums = np.zeros(size) if sums is None else np.asarray(sums, dtype=np.float64).copy()
        if self.sums.shape != (size,):
            raise ValueError(f"diversity sums of {members} members have {size} values, not {self.sums.shape}")

    def add(self, member_q: np.ndarray) -> None:
        """Count N decisions' member Q-values ``[N, K, 3]`` (at the position held)."""
        K = self.members
        greedy = member_q.argmax(axis=-1)
        self.sums[0] += len(member_q)
        self.sums[1] += int((greedy != greedy[:, :1]).any(axis=1).sum())
        self.sums[2] += len(member_q) * member_q.shape[-1]
        q = member_q.astype(np.float64)
        at = 3
        for x in (q, q - q.mean(axis=-1, keepdims=True)):
            flat = x.transpose(0, 2, 1).reshape(-1, K)  # [N * 3, K]
            self.sums[at : at + K] += flat.sum(axis=0)
            self.sums[at + K : at + K + K * K] += (flat.T @ flat).reshape(-1)
            at += K + K * K

    def merge(self, other: np.ndarray) -> None:
        """Add another worker's :attr:`sums`."""
        self.sums += np.asarray(other, dtype=np.float64)

    def reset(self) -> None:
        self.sums[:] = 0.0

    def summary(self) -> dict[str, float]:
        """``disagreement`` (share of decisions where the members' greedy actions are not all the same) and the
        mean pairwise Pearson correlation of the members' Q-values (``q_correlation``) and advantages
        (``advantage_correlation``) over every (bar, stock, action); NaN where undefined."""
        K, s = self.members, self.sums
        out = {"disagreement": s[1] / s[0] if s[0] else float("nan")}
        at = 3
        for name in ("q_correlation", "advantage_correlation"):
            out[name] = _mean_correlation(s[2], s[at : at + K], s[at + K : at + K + K * K].reshape(K, K))
            at += K + K * K
        return out


def _mean_correlation(n: float, s1: np.ndarray, s2: np.ndarray) -> float:
    """Mean off-diagonal Pearson correlation from the count, sums and cross-product sums of K series."""
    if n < 2 or len(s1) < 2:
        return float("nan")
    mean = s1 / n
    cov = s2 / n - np.outer(mean, mean)
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.outer(sd, sd)
    off = corr[~np.eye(len(s1), dtype=bool)]
    off = off[np.isfinite(off)]
    return float(np.clip(off, -1.0, 1.0).mean()) if off.size else float("nan")


# ---- what a decision record carries (DecisionBlock.ensemble) ----------------------------
def record_columns(agreement: np.ndarray, members: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> np.ndarray:
    """A decision record's ensemble columns ``[N, E]`` (float32): the agreement, then, when each member also
    acts alone (evaluation), its actions ``[N, K]``, raw rewards ``[N, K]`` and Q-values ``[N, K, 3]``."""
    parts = [agreement[:, None]]
    if members is not None:
        actions, rewards, q = members
        parts += [actions, rewards, q.reshape(len(q), -1)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def split_columns(cols: np.ndarray, members: int) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
    """:func:`record_columns` ``[..., E]`` back into the agreement ``[...]`` and, when present, the members'
    actions ``[..., K]``, rewards ``[..., K]`` and Q-values ``[..., K, 3]``."""
    K = members
    if cols.shape[-1] == 1:
        return cols[..., 0], None
    actions = cols[..., 1 : 1 + K].astype(np.int64)
    rewards = cols[..., 1 + K : 1 + 2 * K].astype(np.float64)
    q = cols[..., 1 + 2 * K :].reshape(*cols.shape[:-1], K, N_ACTIONS)
    return cols[..., 0], (actions, rewards, q)
