"""Portfolio accounting: from capital weights to net-of-cost returns, equity and drawdown.

One accounting for everything that is compared (the agent's portfolio and every
baseline), so differences in the figures come from the decisions, not the bookkeeping.

Conventions (``T`` clock steps, ``S`` stocks):

- ``log_returns[t, s] = log(close[t] / close[t-1])``, row 0 = 0 (see ``MarketPanel.log_returns``).
- ``weights[t, s]`` is the signed exposure to stock ``s`` as a fraction of capital, decided at
  bar ``t`` with information up to ``t`` and held from ``t`` to ``t+1``.
- A *step* ``t`` is the holding period ``t -> t+1``. ``T`` bars give ``T-1`` steps, so
  :func:`portfolio_returns` returns ``T-1`` values and the last row of ``weights`` is never
  held (no bar follows it; the caller can append a zero row to include a final decision).
- An equity curve has one value per *bar*: ``T`` values aligned with the timestamps,
  ``equity[0] = start_value``, ``equity[t+1]`` = value after step ``t``.
- Costs are charged on what is actually traded: at bar ``t`` the holdings of ``t-1`` have
  drifted with prices to :func:`drifted_weights` ``[t]``, and moving them to ``weights[t]``
  trades ``sum_s |weights[t, s] - drifted[t, s]|`` of capital. A portfolio that never trades
  (buy and hold) pays only its entry cost; one that keeps constant target weights pays for
  rebalancing the drift.
"""

from __future__ import annotations

import numpy as np


def _check_panel_shapes(weights: np.ndarray, log_returns: np.ndarray) -> None:
    if weights.ndim != 2 or weights.shape != log_returns.shape:
        raise ValueError(
            f"weights {weights.shape} and log_returns {log_returns.shape} must both be [T, S] of the same shape"
        )


def _drift(weights: np.ndarray, log_returns: np.ndarray) -> np.ndarray:
    """Weights (rows on the last axis) after prices moved by ``log_returns``; zero where the value is gone."""
    growth = np.exp(log_returns)
    value = 1.0 + (weights * (growth - 1.0)).sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(value > 0, weights * growth / value, 0.0)


def drifted_weights(weights: np.ndarray, log_returns: np.ndarray) -> np.ndarray:
    """Pre-trade weights ``[T, S]``: the weights of bar ``t-1`` after prices moved to bar ``t``.

    Row 0 is zero (nothing is held before the first bar). A stock's share of capital grows
    with its own return and shrinks with the portfolio's: ``w * g_s / (1 + sum_s w * (g_s - 1))``
    with ``g = exp(r)``. If the portfolio was wiped out (value <= 0) the row is zero.
    """
    w = np.asarray(weights, dtype=np.float64)
    r = np.asarray(log_returns, dtype=np.float64)
    _check_panel_shapes(w, r)
    out = np.zeros_like(w)
    out[1:] = _drift(w[:-1], r[1:])
    return out


def turnover(weights: np.ndarray, log_returns: np.ndarray | None = None) -> np.ndarray:
    """Capital traded at each bar, ``sum_s |w[t] - drifted[t]|``, shape ``[T]``.

    Step ``t`` pays for the trade at bar ``t``. Without ``log_returns`` prices are taken as
    unchanged, which gives the plain weight change ``sum_s |w[t] - w[t-1]|`` (``w[-1] = 0``).
    """
    w = np.asarray(weights, dtype=np.float64)
    r = np.zeros_like(w) if log_returns is None else np.asarray(log_returns, dtype=np.float64)
    return np.abs(w - drifted_weights(w, r)).sum(axis=1)


def portfolio_returns(weights: np.ndarray, log_returns: np.ndarray, cost_bps: float) -> np.ndarray:
    """Net simple return of each step ``t -> t+1``, shape ``[T-1]``.

    ``ret[t] = sum_s w[t, s] * (exp(r[t+1, s]) - 1) - cost * turnover[t]`` with
    ``cost = cost_bps / 1e4`` and :func:`turnover` measured against the drifted holdings.
    The last row of ``weights`` is not held (no bar follows it).
    """
    w = np.asarray(weights, dtype=np.float64)
    r = np.asarray(log_returns, dtype=np.float64)
    _check_panel_shapes(w, r)
    gross = (w[:-1] * np.expm1(r[1:])).sum(axis=1)
    return gross - cost_bps * 1e-4 * turnover(w, r)[:-1]


def equity_curve(returns: np.ndarray, start_value: float = 1.0) -> np.ndarray:
    """Compounded value per bar, ``len(returns) + 1`` values starting at ``start_value``.

    With ``T-1`` step returns this is ``T`` values, aligned with the bar timestamps.
    """
    r = np.asarray(returns, dtype=np.float64)
    return start_value * np.concatenate([[1.0], np.cumprod(1.0 + r)])


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Fraction below the running peak at each point (``>= 0``; 0.1 = 10% under the peak).

    Points where the running peak is not positive (a wiped-out curve) count as a full drawdown of 1.
    """
    e = np.asarray(equity, dtype=np.float64)
    if e.size == 0:
        return e.copy()
    peak = np.maximum.accumulate(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, 1.0 - e / peak, 1.0)
    return np.clip(dd, 0.0, None)


def bars_per_year(bars_per_day: float, trading_days: int = 252) -> float:
    """Annualisation factor for per-bar returns: bars in a trading year."""
    return float(bars_per_day) * trading_days


def hold_untradeable(weights: np.ndarray, tradeable: np.ndarray | None, log_returns: np.ndarray) -> np.ndarray:
    """Target weights ``[T, S]`` made executable: no trade in a stock on a bar where it is not tradeable.

    On such a bar the stock keeps its drifted holding from the bar before (so it costs nothing);
    at bar 0 that holding is zero. If the held and target weights together would pass a gross
    exposure of 1, the tradeable stocks' targets are scaled down to fit.
    """
    w = np.array(weights, dtype=np.float64)
    r = np.asarray(log_returns, dtype=np.float64)
    _check_panel_shapes(w, r)
    if tradeable is None:
        return w
    frozen = ~np.asarray(tradeable, dtype=bool)
    if frozen.shape != w.shape:
        raise ValueError(f"tradeable {frozen.shape} must have the shape of weights {w.shape}")
    prev = np.zeros(w.shape[1])
    for t in range(len(w)):
        if frozen[t].any():
            held = _drift(prev, r[t])
            w[t, frozen[t]] = held[frozen[t]]
            room = 1.0 - np.abs(w[t, frozen[t]]).sum()
            free = np.abs(w[t, ~frozen[t]]).sum()
            if free > max(room, 0.0):
                w[t, ~frozen[t]] *= max(room, 0.0) / free
        prev = w[t]
    return w

