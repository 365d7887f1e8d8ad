"""One episode on rank 0: its decision records, its outcome, and the portfolio built from it.

Workers stream :class:`DecisionBlock` records to rank 0; an :class:`EpisodeBook`
gathers them into ``[T, S]`` arrays and checks none is missing. The parameter server
turns a complete book into an :class:`EpisodeOutcome` (capital weights from the
meta-policy, which it then trains); :func:`account_episode` turns an outcome into an
:class:`EpisodeReport`: the net-of-cost portfolio (:func:`build_portfolio`, the table
written as ``portfolio_ep{N}.csv``) and the episode's line of metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from parallel_dqn.comm.messages import DecisionBlock, SetupInfo
from parallel_dqn.evaluation.metrics import performance_metrics
from parallel_dqn.evaluation.portfolio import bars_per_year, hold_untradeable, portfolio_returns
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
        self.ensemble: np.ndarray | None = None  # [n, S, E] an ensemble's record columns (made by the first block)

    def add(self, block: DecisionBlock) -> None:
        rows = block.t - self.start
        if rows.size and (rows.min() < 0 or rows.max() >= len(self.actions)):
            raise ValueError(f"decision records outside the episode rows [{self.start}, {self.stop})")
        self.q[rows, block.stock] = block.q
        self.actions[rows, block.stock] = block.action
        self.rewards[rows, block.stock] = block.reward
        self.epsilon = block.epsilon
        if block.ensemble is not None:
            if self.ensemble is None:
                self.ensemble = np.zeros((*self.actions.shape, block.ensemble.shape[1]), dtype=np.float32)
            self.ensemble[rows, block.stock] = block.ensemble

    def missing(self) -> int:
        """How many (step, stock) decisions have not arrived."""
        return int((self.actions < 0).sum())

    def state_dict(self) -> dict:
        """The records so far (for a checkpoint taken in the middle of an episode)."""
        return {"start": self.start, "stop": self.stop, "q": self.q.copy(), "actions": self.actions.copy(),
                "rewards": self.rewards.copy(), "epsilon": self.epsilon,
                **({"ensemble": self.ensemble.copy()} if self.ensemble is not None else {})}

    @classmethod
    def from_state_dict(cls, state: dict) -> EpisodeBook:
        book = cls(int(state["start"]), int(state["stop"]), state["actions"].shape[1])
        book.q[:], book.actions[:], book.rewards[:] = state["q"], state["actions"], state["rewards"]
        book.epsilon = float(state["epsilon"])
        if "ensemble" in state:
            book.ensemble = np.asarray(state["ensemble"], dtype=np.float32).copy()
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


@dataclass
class EpisodeOutcome:
    """What an episode produced, as the parameter server hands it on (nothing here changes training)."""

    episode: int  # 1, 2, ... for training episodes (and their validations), 0 for the evaluation
    phase: str  # "train", "valid" or "eval"
    book: EpisodeBook  # every worker's decisions
    weights: np.ndarray  # [n, S] signed capital weights from the meta-policy (or equal capital)
    summary: dict[str, Any]  # steps and gradient counters
    loss: float  # mean TD loss of the gradients received during the episode (NaN for the evaluation)
    meta_in_sample_sharpe: float | None  # the meta-policy's fit on this episode (training, meta-policy on)
    elapsed_s: float  # since the market was loaded
    extra: dict[str, Any] = field(default_factory=dict)  # learning rate, convergence monitor (when on)


@dataclass
class EpisodeReport:
    """An episode accounted: its portfolio and its line of the training curve (``metrics.jsonl``)."""

    outcome: EpisodeOutcome
    portfolio: Portfolio
    metrics: dict[str, Any] = field(default_factory=dict)  # the portfolio's performance (rounded)
    line: dict[str, Any] = field(default_factory=dict)  # metrics, counters, epsilon, loss, ...
    bars_per_year: float = math.nan


def account_episode(outcome: EpisodeOutcome, info: SetupInfo, cost_bps: float) -> EpisodeReport:
    """The portfolio of an episode's weights on its bars, net of costs, and its metrics line."""
    book = outcome.book
    rows = slice(book.start, book.stop)
    ext = slice(book.start, book.stop + 1)  # each decision bar and the bar after the last one
    pf = build_portfolio(
        outcome.weights, book.actions, book.rewards, info.timestamps[rows], info.log_returns[ext],
        info.tradeable[ext], cost_bps,
    )
    bpy = bars_per_year(info.bars_per_day)
    metrics = performance_metrics(
        pf.returns, bpy, np.vstack([pf.weights, np.zeros((1, pf.weights.shape[1]))]),
        rewards=pf.rewards.sum(axis=1), log_returns=info.log_returns[ext],
    )
    metrics = rounded(metrics)
    line: dict[str, Any] = {"phase": outcome.phase, "episode": outcome.episode, **metrics, **outcome.summary}
    line["elapsed_s"] = round(outcome.elapsed_s, 3)
    if outcome.phase == "train":
        line["epsilon"] = book.epsilon
        line["loss"] = outcome.loss
        line["meta_in_sample_sharpe"] = outcome.meta_in_sample_sharpe
    line.update(outcome.extra)
    return EpisodeReport(outcome, pf, metrics, line, bpy)


def rounded(d: dict[str, Any], digits: int = 6) -> dict[str, Any]:
    """Floats rounded for the JSON outputs."""
    return {k: (round(float(v), digits) if isinstance(v, (float, np.floating)) else v) for k, v in d.items()}
