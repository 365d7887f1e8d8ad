"""TradingEnv: one stock of a panel, as a single-agent Gymnasium environment.

It is a one-stock :class:`~parallel_dqn.market.market_env.MarketEnv` underneath (the arrays'
column ``stock``, sliced without copying), so observations, the reward rule, the
tradeable rule and episode bounds are exactly those of the multi-stock env.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from parallel_dqn.market.market_env import MarketEnv
from parallel_dqn.market.step import N_ACTIONS


class TradingEnv(gym.Env):
    """Single-stock trading: ``Box(window * F + 3,)`` observations, ``Discrete(3)`` actions.

    ``info`` has ``t`` (the decision's clock index) and ``position`` (-1/0/+1) after the step.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        features: np.ndarray,
        log_returns: np.ndarray,
        tradeable: np.ndarray,
        window: int,
        cost_bps: float,
        stock: int = 0,
        start: int | None = None,
        end: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        features = np.asarray(features)
        if features.ndim != 3 or not 0 <= stock < features.shape[1]:
            raise ValueError(f"stock must index axis 1 of features [T, S, F]; got {stock}, shape {features.shape}")
        col = slice(stock, stock + 1)
        self.market = MarketEnv(
            features[:, col],
            np.asarray(log_returns)[:, col],
            np.asarray(tradeable)[:, col],
            window,
            cost_bps,
            start=start,
            end=end,
        )
        self.stock = int(stock)
        self.render_mode = render_mode
        self.observation_space = spaces.Box(
            -np.inf, np.inf, shape=self.market.observation_space.shape[1:], dtype=np.float32
        )
        self.action_space = spaces.Discrete(N_ACTIONS)

    @property
    def t(self) -> int:
        """Current clock index."""
        return self.market.t

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode at ``start``, flat."""
        super().reset(seed=seed)
        obs, info = self.market.reset()
        return obs[0], {"t": info["t"], "position": float(info["positions"][0])}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply ``action`` (0 short, 1 flat, 2 long) at ``t`` and move to ``t+1``."""
        obs, reward, terminated, truncated, info = self.market.step(np.array([action]))
        return obs[0], reward, terminated, truncated, {"t": info["t"], "position": float(info["positions"][0])}
