"""Baseline strategies, accounted exactly like the agent.

Every baseline is a function that returns target weights ``[T, S]`` (signed fractions of capital,
gross exposure <= 1, decided at bar ``t`` from bars ``<= t``). :func:`run_baselines` makes them
executable on non-tradeable bars (:func:`~parallel_dqn.evaluation.portfolio.hold_untradeable`), and
runs them through the same :func:`~parallel_dqn.evaluation.portfolio.portfolio_returns` (same costs)
and :func:`~parallel_dqn.evaluation.metrics.performance_metrics` as the agent's portfolio. So T bars
give T-1 step returns; to compare with an agent that decided at ``n`` bars, pass those ``n`` bars plus
the bar after the last decision.

Only :func:`oracle` looks ahead (it is given the planted expected next return): it is an upper
reference, not a strategy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from parallel_dqn.evaluation.metrics import performance_metrics
from parallel_dqn.evaluation.portfolio import hold_untradeable, portfolio_returns


def buy_and_hold(close: np.ndarray) -> np.ndarray:
    """Equal capital in every stock at bar 0, never rebalanced: weights drift with prices (long only)."""
    c = np.asarray(close, dtype=np.float64)
    value = c / c[0]  # value of each stock's bar-0 stake, per unit invested
    return value / value.sum(axis=1, keepdims=True)


def equal_weight(n_steps: int, n_stocks: int) -> np.ndarray:
    """``1/S`` long in every stock at every bar (rebalanced back to equal each bar)."""
    return np.full((n_steps, n_stocks), 1.0 / n_stocks)


def trailing_return(log_returns: np.ndarray, lookback: int) -> np.ndarray:
    """Log return over the last ``lookback`` bars up to and including ``t``: ``log(close[t] / close[t-lookback])``.

    Rows ``t < lookback`` (no full window yet) are 0. Shape ``[T, S]``.
    """
    if lookback < 1:
        raise ValueError(f"lookback must be >= 1, got {lookback}")
    r = np.asarray(log_returns, dtype=np.float64)
    out = np.zeros_like(r)
    if len(r) > lookback:
        # A windowed sum rather than a cumsum difference: an exactly flat window stays exactly 0.
        windows = np.lib.stride_tricks.sliding_window_view(r[1:], lookback, axis=0)
        out[lookback:] = windows.sum(axis=-1)
    return out


def momentum(log_returns: np.ndarray, lookback: int = 10) -> np.ndarray:
    """Follow the trend: ``sign(trailing lookback-bar return) / S``; flat before a full window."""
    r = np.asarray(log_returns)
    return np.sign(trailing_return(r, lookback)) / r.shape[1]


def mean_reversion(log_returns: np.ndarray, lookback: int = 10) -> np.ndarray:
    """Bet against the trend: the negative of :func:`momentum`."""
    return -momentum(log_returns, lookback)


def random_positions(n_steps: int, n_stocks: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform random position in {-1, 0, +1} per stock and bar, scaled by ``1/S``."""
    return rng.integers(-1, 2, size=(n_steps, n_stocks)) / n_stocks


def oracle(expected_next_returns: np.ndarray, cost_bps: float) -> np.ndarray:
    """Upper reference: ``sign(E[t, s]) / S`` where the planted expected return of ``t -> t+1``
    beats the cost of trading one unit (``|E| > cost_bps / 1e4``), flat elsewhere. Looks ahead by design.
    """
    e = np.asarray(expected_next_returns, dtype=np.float64)
    return np.where(np.abs(e) > cost_bps * 1e-4, np.sign(e), 0.0) / e.shape[1]


class BaselineRun(NamedTuple):
    """Results of :func:`run_baselines`, keyed by baseline name."""

    metrics: dict[str, dict[str, float]]  # performance_metrics of each baseline
    returns: dict[str, np.ndarray]  # [T-1] net step returns (for equity curves)
    weights: dict[str, np.ndarray]  # [T, S] executed weights


def run_baselines(
    close: np.ndarray,
    log_returns: np.ndarray,
    tradeable: np.ndarray | None,
    cost_bps: float,
    bars_per_year: float,
    seed: int,
    expected_next_returns: np.ndarray | None = None,
    lookback: int = 10,
) -> BaselineRun:
    """Run every baseline over the same bars and costs; ``oracle`` only if expected returns are given.

    Arrays are ``[T, S]`` over the evaluation bars; ``seed`` drives the random baseline.
    """
    c = np.asarray(close, dtype=np.float64)
    r = np.asarray(log_returns, dtype=np.float64)
    if c.ndim != 2 or c.shape != r.shape:
        raise ValueError(f"close {c.shape} and log_returns {r.shape} must both be [T, S] of the same shape")
    n_steps, n_stocks = c.shape
    targets = {
        "buy_and_hold": buy_and_hold(c),
        "equal_weight": equal_weight(n_steps, n_stocks),
        "momentum": momentum(r, lookback),
        "mean_reversion": mean_reversion(r, lookback),
        "random": random_positions(n_steps, n_stocks, np.random.default_rng(seed)),
    }
    if expected_next_returns is not None:
        targets["oracle"] = oracle(expected_next_returns, cost_bps)
    result = BaselineRun({}, {}, {})
    for name, target in targets.items():
        w = hold_untradeable(target, tradeable, r)
        ret = portfolio_returns(w, r, cost_bps)
        result.weights[name] = w
        result.returns[name] = ret
        result.metrics[name] = performance_metrics(ret, bars_per_year, weights=w, log_returns=r)
    return result
