"""MarketEnv: every stock of a panel traded on one clock, as a Gymnasium environment.

The environment works on arrays (features are computed elsewhere and must already
be causal and normalised):

- ``features``: float32 ``[T, S, F]``; row ``t`` may only depend on bars ``<= t``.
- ``log_returns``: ``[T, S]``, ``r[t] = log(close[t] / close[t-1])``.
- ``tradeable``: bool ``[T, S]``; on a non-tradeable bar the position cannot change.

A decision at clock ``t`` sees the last ``window`` feature rows up to and including
``t`` (zero rows before index 0) and the one-hot of the position currently held,
sets the position held from ``t`` to ``t+1`` and earns
:func:`parallel_dqn.market.step.market_step`'s reward on ``r[t+1]``. An episode covers bars
``start .. end-1``: decisions at ``t = start .. end-2``, then it terminates.

The arrays are used in place, not copied: do not modify them during an episode.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from parallel_dqn.market.step import FLAT, N_ACTIONS, POSITIONS, market_step


def observation(features: np.ndarray, t: int, window: int, positions: np.ndarray) -> np.ndarray:
    """Observation of every stock at clock ``t``: ``[S, window * F + 3]`` float32.

    Each row is the stock's feature rows ``t-window+1 .. t`` (oldest first, zero
    before index 0) flattened, then the one-hot of its position (action index).
    Nothing after ``t`` is read.
    """
    _, n_stocks, n_feat = features.shape
    lo = t - window + 1
    win = np.zeros((window, n_stocks, n_feat), dtype=np.float32)
    win[max(0, -lo) :] = features[max(lo, 0) : t + 1]
    obs = np.zeros((n_stocks, window * n_feat + N_ACTIONS), dtype=np.float32)
    obs[:, : window * n_feat] = win.transpose(1, 0, 2).reshape(n_stocks, -1)
    obs[np.arange(n_stocks), window * n_feat + np.asarray(positions)] = 1.0
    return obs


def _episode_bounds(n_steps: int, start: int | None, end: int | None) -> tuple[int, int]:
    start = 0 if start is None else int(start)
    end = n_steps if end is None else int(end)
    if not (0 <= start and end <= n_steps and end - start >= 2):
        raise ValueError(f"need 0 <= start, end <= T={n_steps} and end - start >= 2; got start={start}, end={end}")
    return start, end


class MarketEnv(gym.Env):
    """All stocks stepped together on one market clock.

    Observation: ``Box(S, window * F + 3)``. Action: ``MultiDiscrete([3] * S)``,
    0 short / 1 flat / 2 long per stock. Reward: the sum of the stocks' step
    rewards; ``info`` has ``t`` (the decision's clock index), ``stock_rewards``
    and ``positions`` (in -1/0/+1) after the step.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        features: np.ndarray,
        log_returns: np.ndarray,
        tradeable: np.ndarray,
        window: int,
        cost_bps: float,
        start: int | None = None,
        end: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.features = np.asarray(features, dtype=np.float32)
        self.log_returns = np.asarray(log_returns, dtype=np.float64)
        self.tradeable = np.asarray(tradeable, dtype=bool)
        if self.features.ndim != 3:
            raise ValueError(f"features must be [T, S, F], got shape {self.features.shape}")
        n_steps, n_stocks, n_feat = self.features.shape
        for name, arr in (("log_returns", self.log_returns), ("tradeable", self.tradeable)):
            if arr.shape != (n_steps, n_stocks):
                raise ValueError(f"{name} must have shape {(n_steps, n_stocks)}, got {arr.shape}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if cost_bps < 0:
            raise ValueError(f"cost_bps must be >= 0, got {cost_bps}")
        self.window, self.cost_bps = int(window), float(cost_bps)
        self.start, self.end = _episode_bounds(n_steps, start, end)
        self.render_mode = render_mode
        self.observation_space = spaces.Box(
            -np.inf, np.inf, shape=(n_stocks, self.window * n_feat + N_ACTIONS), dtype=np.float32
        )
        self.action_space = spaces.MultiDiscrete(np.full(n_stocks, N_ACTIONS))
        self.t = self.start
        self._position = np.full(n_stocks, FLAT, dtype=np.int64)  # action index held
        self._done = True  # until reset

    @property
    def n_stocks(self) -> int:
        return int(self.features.shape[1])

    @property
    def episode_length(self) -> int:
        """Decisions per episode."""
        return self.end - self.start - 1

    @property
    def positions(self) -> np.ndarray:
        """Positions currently held, in -1/0/+1."""
        return POSITIONS[self._position]

    def _obs(self) -> np.ndarray:
        return observation(self.features, self.t, self.window, self._position)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode at ``start`` with every position flat."""
        super().reset(seed=seed)
        self.t = self.start
        self._position[:] = FLAT
        self._done = False
        return self._obs(), {"t": self.t, "positions": self.positions}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply one action per stock at ``t``, earn the return of ``t+1``, move to ``t+1``."""
        if self._done:
            raise RuntimeError("call reset() before step() (the episode is over or not started)")
        act = np.asarray(action, dtype=np.int64).reshape(-1)
        if act.shape != (self.n_stocks,) or act.min() < 0 or act.max() >= N_ACTIONS:
            raise ValueError(f"action must be {self.n_stocks} integers in [0, {N_ACTIONS}), got {action!r}")
        t = self.t
        new, stock_rewards = market_step(self._position, act, self.tradeable[t], self.log_returns[t + 1], self.cost_bps)
        self._position = new
        self.t = t + 1
        self._done = self.t >= self.end - 1
        info = {"t": t, "stock_rewards": stock_rewards, "positions": self.positions}
        return self._obs(), float(stock_rewards.sum()), self._done, False, info
