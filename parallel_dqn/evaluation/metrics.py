"""Performance figures of a per-step return series.

Inputs are per-step *simple* net returns (as from
:func:`parallel_dqn.evaluation.portfolio.portfolio_returns`) and an annualisation factor
``bars_per_year`` (steps per year, e.g. ``390 * 252`` for minute bars).

The definitions match empyrical (risk-free rate 0, required return 0), with two deliberate
differences so the figures can go straight into JSON and tables:

- ``max_drawdown`` is a *positive* fraction (0.12 = 12% peak to trough); empyrical's is negative.
- Every figure is finite. Where a figure is undefined (fewer than two steps, zero dispersion,
  no downside, no drawdown) it is 0.0 rather than NaN or inf. An annual return too large for a
  float (a short, strongly trending sample extrapolated to a year) is capped at ``exp(700) - 1``.
"""

from __future__ import annotations

import numpy as np

from parallel_dqn.evaluation.portfolio import drawdown, equity_curve, turnover

_MAX_LOG_GROWTH = 700.0  # exp(700) ~ 1e304: the largest annual growth reported


def _as_returns(returns: np.ndarray) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"returns must be one-dimensional, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("returns contain NaN or inf")
    return r


def _check_annualisation(bars_per_year: float) -> None:
    if not bars_per_year > 0:
        raise ValueError(f"bars_per_year must be positive, got {bars_per_year}")


def _log_growth(returns: np.ndarray) -> float:
    """``log(prod(1 + r))``; a step that loses everything counts as a loss of all but 1e-300."""
    return float(np.log(np.maximum(1.0 + returns, 1e-300)).sum())


def _is_constant(r: np.ndarray) -> bool:
    # The sample std of identical values is mathematically 0 but can come out ~1e-18;
    # dividing by that residue would give an arbitrary huge ratio.
    return r.size == 0 or r.max() == r.min()


def total_return(returns: np.ndarray) -> float:
    """Compounded return over the whole series, ``prod(1 + r) - 1``."""
    r = _as_returns(returns)
    return float(np.prod(1.0 + r) - 1.0)


def annual_return(returns: np.ndarray, bars_per_year: float) -> float:
    """Compound annual growth rate (empyrical's ``annual_return``); 0.0 for an empty series.

    -1.0 if the series loses everything; capped at ``exp(700) - 1`` when the extrapolation overflows.
    """
    _check_annualisation(bars_per_year)
    r = _as_returns(returns)
    if r.size == 0:
        return 0.0
    if np.any(r <= -1.0):
        return -1.0
    years = r.size / bars_per_year
    return float(np.expm1(min(_log_growth(r) / years, _MAX_LOG_GROWTH)))


def annual_volatility(returns: np.ndarray, bars_per_year: float) -> float:
    """Annualised standard deviation, ``std(r, ddof=1) * sqrt(bars_per_year)``; 0.0 with < 2 steps."""
    _check_annualisation(bars_per_year)
    r = _as_returns(returns)
    if r.size < 2 or _is_constant(r):
        return 0.0
    return float(r.std(ddof=1) * np.sqrt(bars_per_year))


def sharpe_ratio(returns: np.ndarray, bars_per_year: float) -> float:
    """Annualised Sharpe ratio, ``mean / std(ddof=1) * sqrt(bars_per_year)``, risk-free 0.

    0.0 with fewer than two steps or zero dispersion.
    """
    _check_annualisation(bars_per_year)
    r = _as_returns(returns)
    if r.size < 2 or _is_constant(r):
        return 0.0
    return float(r.mean() / r.std(ddof=1) * np.sqrt(bars_per_year))


def sortino_ratio(returns: np.ndarray, bars_per_year: float) -> float:
    """Annualised Sortino ratio (empyrical's, required return 0).

    ``mean * bars_per_year / downside_risk`` with
    ``downside_risk = sqrt(mean(min(r, 0)^2)) * sqrt(bars_per_year)`` (mean over all steps).
    0.0 with fewer than two steps or no negative step.
    """
    _check_annualisation(bars_per_year)
    r = _as_returns(returns)
    if r.size < 2:
        return 0.0
    downside = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    if downside == 0.0:
        return 0.0
    return float(r.mean() * np.sqrt(bars_per_year) / downside)


def max_drawdown(returns: np.ndarray) -> float:
    """Largest peak-to-trough loss of the compounded curve as a positive fraction.

    The starting value counts as a peak, as in empyrical (whose figure is the negative of this).
    """
    r = _as_returns(returns)
    return float(drawdown(equity_curve(r)).max())


def calmar_ratio(returns: np.ndarray, bars_per_year: float) -> float:
    """``annual_return / max_drawdown``; 0.0 when there is no drawdown."""
    mdd = max_drawdown(returns)
    if mdd <= 0.0:
        return 0.0
    return annual_return(returns, bars_per_year) / mdd


def hit_rate(returns: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Fraction of positive steps among the steps that were in the market.

    "In the market" means non-zero gross exposure ``sum_s |w[t]|`` when ``weights`` are given
    (rows beyond ``len(returns)`` ignored), else a non-zero return. 0.0 when there is no such step.
    """
    r = _as_returns(returns)
    if weights is None:
        active = r != 0.0
    else:
        active = np.abs(_step_rows(weights, r.size)).sum(axis=1) > 0.0
    n = int(active.sum())
    return float((r[active] > 0.0).sum() / n) if n else 0.0


def _step_rows(a: np.ndarray, n_steps: int) -> np.ndarray:
    """The first ``n_steps`` rows of a ``[T, S]`` array (``T = n_steps`` or ``n_steps + 1``)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] not in (n_steps, n_steps + 1):
        raise ValueError(f"expected a [T, S] array with T = {n_steps} or {n_steps + 1} rows, got shape {a.shape}")
    return a[:n_steps]


def performance_metrics(
    returns: np.ndarray,
    bars_per_year: float,
    weights: np.ndarray | None = None,
    rewards: np.ndarray | None = None,
    log_returns: np.ndarray | None = None,
) -> dict[str, float]:
    """All figures of one strategy over one period, as a flat JSON-ready dict.

    Args:
        returns: ``[n]`` per-step net simple returns.
        bars_per_year: annualisation factor (steps per year).
        weights: ``[n, S]`` or ``[n+1, S]`` weights behind ``returns`` (rows past ``n`` are not
            held and are ignored); enables ``turnover`` and the exposure-based ``hit_rate``.
        rewards: agent rewards (any shape); ``total_reward`` is their sum. Without them it is
            the log growth ``sum(log(1 + r))``, the portfolio's own reward.
        log_returns: ``[n, S]`` or ``[n+1, S]``, the panel's log returns; with them ``turnover``
            is measured against drifted holdings exactly as costs are charged, without them as
            the plain weight change.

    Returns:
        ``total_reward, total_return, annual_return, annual_volatility, sharpe, sortino,
        max_drawdown, calmar, turnover`` (0.0 without weights; mean capital traded per step),
        ``hit_rate`` and ``n_steps``. All finite.
    """
    r = _as_returns(returns)
    n = r.size
    traded = 0.0
    if weights is not None and n:
        w = _step_rows(weights, n)
        lr = None if log_returns is None else _step_rows(log_returns, n)
        traded = float(turnover(w, lr).mean())
    total_reward = float(np.sum(rewards)) if rewards is not None else _log_growth(r)
    return {
        "total_reward": total_reward,
        "total_return": total_return(r),
        "annual_return": annual_return(r, bars_per_year),
        "annual_volatility": annual_volatility(r, bars_per_year),
        "sharpe": sharpe_ratio(r, bars_per_year),
        "sortino": sortino_ratio(r, bars_per_year),
        "max_drawdown": max_drawdown(r),
        "calmar": calmar_ratio(r, bars_per_year),
        "turnover": traded,
        "hit_rate": hit_rate(r, weights),
        "n_steps": n,
    }
