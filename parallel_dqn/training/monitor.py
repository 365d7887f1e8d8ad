"""The convergence monitor: a state per training episode, and what to do about it (pure logic, on rank 0).

The parameter server feeds it every gradient it receives (its norm, whether it is finite, the worker's
loss and mean Q-value) and, once per training episode, a score: the validation Sharpe when there is a
validation period, else minus the episode's mean loss. :meth:`ConvergenceMonitor.verdict` then calls
the episode

* **diverging** when a gradient or loss was NaN/inf, a gradient norm exceeded ``monitor.explode_norm``,
  the mean Q-value left the range any discounted return can reach (``q_bound``), or the loss more than
  doubled over the trend window (its least-squares slope x window >= its mean);
* **plateau** when no better score came for ``monitor.patience`` episodes, or the gradients vanish (mean
  norm below ``monitor.vanish_norm``);
* **improving** otherwise,

with its reasons in words, and the intervention the settings name for that state (``monitor.on_plateau``,
``monitor.on_diverge``). The server carries it out; after one, the patience count starts again, so an
intervention is not repeated every episode. A diverging episode never becomes the best one.

The gradients seen are the workers' clipped ones (``dqn.grad_clip``): their norm never exceeds the clip
unless it is not finite, so ``explode_norm`` matters when it is set below ``dqn.grad_clip``. The TD-error
statistics are the per-gradient TD losses' mean and spread over the episode.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parallel_dqn.config import MonitorConfig

STATES = ("improving", "plateau", "diverging")
#: a numeric code per state, for TensorBoard
STATE_CODES = {state: i for i, state in enumerate(STATES)}
LOSS_RISE = 1.0  # the loss trend is diverging when the window's fitted rise is this many times its mean


@dataclass
class EpisodeStats:
    """What the monitor saw of one training episode's gradients (the numbers of its ``metrics.jsonl`` line)."""

    gradients: int = 0
    nonfinite: int = 0  # gradients or losses that were NaN or inf
    grad_norm: float = math.nan  # mean
    grad_norm_max: float = math.nan
    loss_slope: float = math.nan  # least-squares slope of the loss per gradient over the trend window
    td_loss_mean: float = math.nan
    td_loss_std: float = math.nan
    q_mean: float = math.nan
    q_drift: float = math.nan  # q_mean minus the previous episode's

    def line(self) -> dict[str, Any]:
        return {"grad_norm": self.grad_norm, "grad_norm_max": self.grad_norm_max, "loss_slope": self.loss_slope,
                "td_loss_std": self.td_loss_std, "q_mean": self.q_mean, "q_drift": self.q_drift,
                "nonfinite_grads": self.nonfinite}


@dataclass
class Verdict:
    """The monitor's call on training episode ``episode``."""

    episode: int
    state: str  # one of STATES
    reasons: list[str]
    action: str | None  # the intervention due (warn, reduce_lr, restore_best, stop), None when improving
    best: bool = False  # this episode is the best so far (the server keeps its weights)
    score: float = math.nan


@dataclass
class ConvergenceMonitor:
    """Per-gradient observations in, one :class:`Verdict` per training episode out."""

    cfg: MonitorConfig
    q_bound: float = math.inf  # no mean Q-value can exceed this in size (the largest discounted return)
    losses: deque = field(default_factory=deque)  # the trend window, across episodes
    best_score: float = -math.inf
    best_episode: int = 0
    since_best: int = 0  # training episodes since the best one (or the last intervention)
    last_q: float = math.nan
    history: list[dict[str, Any]] = field(default_factory=list)  # every verdict, for the report
    _norms: list[float] = field(default_factory=list)
    _td: list[float] = field(default_factory=list)
    _q: list[float] = field(default_factory=list)
    _nonfinite: int = 0
    _stats: EpisodeStats | None = None

    def __post_init__(self) -> None:
        self.losses = deque(self.losses, maxlen=self.cfg.window)

    # ---- fed by the server ----------------------------------------------------------------------
    def observe(self, grad_norm: float, loss: float, q_mean: float) -> None:
        """One received gradient."""
        if not (math.isfinite(grad_norm) and math.isfinite(loss) and math.isfinite(q_mean)):
            self._nonfinite += 1
            return
        self._norms.append(grad_norm)
        self._td.append(loss)
        self._q.append(q_mean)
        self.losses.append(loss)

    def end_training(self) -> EpisodeStats:
        """A training episode ended: its gradient statistics (kept for its verdict); the counts start again."""
        norms, td, q = np.asarray(self._norms), np.asarray(self._td), np.asarray(self._q)
        stats = EpisodeStats(gradients=len(norms) + self._nonfinite, nonfinite=self._nonfinite)
        if len(norms):
            stats.grad_norm, stats.grad_norm_max = float(norms.mean()), float(norms.max())
            stats.td_loss_mean, stats.td_loss_std = float(td.mean()), float(td.std())
            stats.q_mean = float(q.mean())
            stats.q_drift = stats.q_mean - self.last_q
            self.last_q = stats.q_mean
        stats.loss_slope = loss_slope(np.asarray(self.losses))
        self._norms, self._td, self._q, self._nonfinite = [], [], [], 0
        self._stats = stats
        return stats

    def verdict(self, episode: int, score: float) -> Verdict:
        """The state of training episode ``episode`` (after :meth:`end_training`) given its ``score``."""
        stats = self._stats if self._stats is not None else EpisodeStats()
        diverging = self._diverging(stats)
        reasons = list(diverging)
        best = False
        if diverging:
            state = "diverging"
        else:
            best = math.isfinite(score) and score > self.best_score
            if best:
                self.best_score, self.best_episode, self.since_best = score, episode, 0
                reasons.append(f"best score so far {score:.4g}")
            else:
                self.since_best += 1
            stalled = self.since_best >= self.cfg.patience
            if stalled:
                reasons.append(f"no better score than {self.best_score:.4g} (episode {self.best_episode}) "
                               f"for {self.since_best} episodes")
            vanishing = stats.grad_norm < self.cfg.vanish_norm  # False when there were no gradients (NaN)
            if vanishing:
                reasons.append(f"gradients vanish: mean norm {stats.grad_norm:.3g} < {self.cfg.vanish_norm:g}")
            state = "plateau" if stalled or vanishing else "improving"
            if state == "improving" and not best:
                reasons.append(f"no better score for {self.since_best} of {self.cfg.patience} episodes")
        action = {"plateau": self.cfg.on_plateau, "diverging": self.cfg.on_diverge}.get(state)
        if action is not None:
            self.since_best = 0  # the patience starts again after an intervention
        verdict = Verdict(episode, state, reasons, action, best, score)
        self.history.append({"episode": episode, "state": state, "reasons": reasons, "score": score})
        self._stats = None
        return verdict

    def _diverging(self, stats: EpisodeStats) -> list[str]:
        """Why the episode diverged (empty: it did not)."""
        why = []
        if stats.nonfinite:
            why.append(f"{stats.nonfinite} non-finite gradients or losses")
        if stats.grad_norm_max > self.cfg.explode_norm:
            why.append(f"gradient norm {stats.grad_norm_max:.3g} > {self.cfg.explode_norm:g}")
        if abs(stats.q_mean) > self.q_bound:
            why.append(f"mean Q-value {stats.q_mean:.3g} beyond any discounted return ({self.q_bound:.3g})")
        window = len(self.losses)
        if window >= 2 and stats.loss_slope * window >= LOSS_RISE * float(np.mean(self.losses)) > 0:
            why.append(f"loss rising: slope {stats.loss_slope:.3g} per gradient over {window} gradients")
        return why

    # ---- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "losses": list(self.losses), "best_score": self.best_score, "best_episode": self.best_episode,
            "since_best": self.since_best, "last_q": self.last_q, "history": list(self.history),
            "norms": list(self._norms), "td": list(self._td), "q": list(self._q), "nonfinite": self._nonfinite,
            "stats": None if self._stats is None else dict(vars(self._stats)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = deque(state["losses"], maxlen=self.cfg.window)
        self.best_score, self.best_episode = float(state["best_score"]), int(state["best_episode"])
        self.since_best, self.last_q = int(state["since_best"]), float(state["last_q"])
        self.history = list(state["history"])
        self._norms, self._td, self._q = list(state["norms"]), list(state["td"]), list(state["q"])
        self._nonfinite = int(state["nonfinite"])
        self._stats = None if state["stats"] is None else EpisodeStats(**state["stats"])


def loss_slope(losses: np.ndarray) -> float:
    """Least-squares slope of ``losses`` against their index (NaN for fewer than two)."""
    n = len(losses)
    if n < 2:
        return math.nan
    x = np.arange(n) - (n - 1) / 2
    return float((x * (losses - losses.mean())).sum() / (x * x).sum())
