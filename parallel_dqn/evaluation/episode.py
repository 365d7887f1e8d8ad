"""Collect one episode's decision records and turn them into a portfolio.

Workers stream :class:`DecisionBlock` records to rank 0; an :class:`EpisodeBook`
gathers them into ``[T, S]`` arrays, checks none is missing, and
:func:`build_portfolio` applies the meta-policy (or equal capital) to get the
weights, the net-of-cost portfolio returns and the per-step table written as
``portfolio_ep{N}.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from parallel_dqn.comm.messages import DecisionBlock
from parallel_dqn.evaluation.portfolio import hold_untradeable, portfolio_returns
from parallel_dqn.market.step import POSITIONS


class EpisodeBook:
    """Decision records of one episode over clock rows ``[start, stop)``."""

    def __init__(self, start: int, stop: int, n_stocks: int) -> None:
        self.start, self.stop = start, stop
        n = stop - start
        self.q = np.zeros((n, n_stocks, 3), dtype=np.float32)
        self.actions = np.full((n, n_stocks), -1, dtype=np.int64)
        self.rewards = np.zeros((n, n_stocks))
        self.epsilon = 0.0

    def add(self, block: DecisionBlock) -> None:
        rows = block.t - self.start
        if rows.size and (rows.min() < 0 or rows.max() >= len(self.actions)):
            raise ValueError(f"decision records outside the episode rows [{self.start}, {self.stop})")
        self.q[rows, block.stock] = block.q
        self.actions[rows, block.stock] = block.action
        self.rewards[rows, block.stock] = block.reward
        self.epsilon = block.epsilon

    def missing(self) -> int:
        """How many (step, stock) decisions have not arrived."""
        return int((self.actions < 0).sum())

    def state_dict(self) -> dict:
        """The records so far (for a checkpoint taken in the middle of an episode)."""
        return {"start": self.start, "stop": self.stop, "q": self.q.copy(), "actions": self.actions.copy(),
                "rewards": self.rewards.copy(), "epsilon": self.epsilon}

    @classmethod
    def from_state_dict(cls, state: dict) -> "EpisodeBook":
        book = cls(int(state["start"]), int(state["stop"]), state["actions"].shape[1])
        book.q[:], book.actions[:], book.rewards[:] = state["q"], state["actions"], state["rewards"]
        book.epsilon = float(state["epsilon"])
        return book


@dataclass
class Portfolio:
    """The portfolio built from one episode's decisions."""

    timestamps: np.ndarray  # [n] decision bars
    weights: np.ndarray  # [n, S] signed capital weights held from t to t+1
    positions: np.ndarray  # [n, S] agent positions in {-1, 0, 1}
    returns: np.ndarray  # [n] net simple return of each step t -> t+1
    rewards: np.ndarray  # [n, S] raw per-stock agent rewards

    def table(self, symbols: tuple[str, ...]) -> pd.DataFrame:
        """Per-step table: value, return, then weight and position per stock."""
        value = np.cumprod(1.0 + self.returns)
        cols: dict[str, np.ndarray] = {
            "timestamp": pd.to_datetime(self.timestamps, utc=True),
            "portfolio_value": value,
            "portfolio_return": self.returns,
            "gross_exposure": np.abs(self.weights).sum(axis=1),
        }
        for s, sym in enumerate(symbols):
            cols[f"weight_{sym}"] = self.weights[:, s]
        for s, sym in enumerate(symbols):
            cols[f"position_{sym}"] = self.positions[:, s]
        return pd.DataFrame(cols)


def build_portfolio(
    weights: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    timestamps: np.ndarray,
    log_returns_ext: np.ndarray,
    tradeable_ext: np.ndarray,
    cost_bps: float,
) -> Portfolio:
    """Account a portfolio of ``weights`` ``[n, S]`` decided at n bars.

    ``log_returns_ext`` and ``tradeable_ext`` are ``[n+1, S]``: each decision bar
    and the bar after the last one. On a bar where a stock is not tradeable its
    holding stays what it was (the baselines' rule, ``hold_untradeable``).
    """
    w_ext = hold_untradeable(np.vstack([weights, np.zeros((1, weights.shape[1]))]), tradeable_ext, log_returns_ext)
    returns = portfolio_returns(w_ext, log_returns_ext, cost_bps)
    w = w_ext[:-1]
    return Portfolio(timestamps, w, POSITIONS[actions], returns, rewards)
