"""The tear sheet's figures, from a run's own per-bar returns (what pyfolio and QuantStats show first).

Every figure is computed here from the agent's net return per evaluation bar (``returns_eval.csv``), buy-and-hold's
on the same bars (the benchmark), the weights and positions per bar (``portfolio_eval.csv``) and the run's
annualisation (``bars_per_year``: 252 x the data's bars per day, as :mod:`parallel_dqn.evaluation.metrics`). The
summary reuses :mod:`.metrics`; the rest follows empyrical's definitions (risk-free 0), which the tests check
figure by figure against empyrical-reloaded on the same returns. Nothing here draws or writes HTML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from parallel_dqn.evaluation import metrics

#: a run spanning fewer calendar days than this gets a table of daily returns instead of monthly ones
MONTHLY_FROM_DAYS = 60
#: best and worst periods listed
EXTREMES = 5
_MAX_LOG_GROWTH = 700.0  # as metrics.annual_return: exp(700) is the largest growth reported


@dataclass(frozen=True)
class Relative:
    """The agent against a benchmark on the same bars (empyrical's definitions, risk-free 0)."""

    alpha: float  # annualised: (1 + mean(r - beta * b)) ** bars_per_year - 1
    beta: float  # cov(r, b) / var(b)
    information_ratio: float  # mean(r - b) / std(r - b, ddof=1) * sqrt(bars_per_year)
    tracking_error: float  # std(r - b, ddof=1) * sqrt(bars_per_year)
    correlation: float


def summary(returns: np.ndarray, bars_per_year: float) -> dict[str, float]:
    """Total and annual return, annual volatility, Sharpe, Sortino, Calmar, max drawdown and its duration (bars
    from the peak before the deepest trough to the recovery, or to the last bar when it has not recovered)."""
    r = np.asarray(returns, dtype=np.float64)
    return {
        "total_return": metrics.total_return(r),
        "annual_return": metrics.annual_return(r, bars_per_year),
        "annual_volatility": metrics.annual_volatility(r, bars_per_year),
        "sharpe": metrics.sharpe_ratio(r, bars_per_year),
        "sortino": metrics.sortino_ratio(r, bars_per_year),
        "calmar": metrics.calmar_ratio(r, bars_per_year),
        "max_drawdown": metrics.max_drawdown(r),
        "max_drawdown_duration_bars": float(max_drawdown_duration(r)),
    }


def max_drawdown_duration(returns: np.ndarray) -> int:
    """Bars from the peak before the deepest trough until the curve is back at that peak (or the series ends)."""
    equity = np.r_[1.0, np.cumprod(1.0 + np.asarray(returns, dtype=np.float64))]
    peak = np.maximum.accumulate(equity)
    depth = 1.0 - equity / peak
    if depth.size == 0 or depth.max() <= 0.0:
        return 0
    trough = int(depth.argmax())
    start = int(np.flatnonzero(equity[: trough + 1] == peak[trough])[-1])
    recovered = np.flatnonzero(equity[trough:] >= peak[trough])
    end = trough + int(recovered[0]) if recovered.size else len(equity) - 1
    return end - start


def relative(returns: np.ndarray, benchmark: np.ndarray, bars_per_year: float) -> Relative:
    """Alpha, beta, information ratio, tracking error and correlation of ``returns`` against ``benchmark``."""
    r = np.asarray(returns, dtype=np.float64)
    b = np.asarray(benchmark, dtype=np.float64)
    if r.shape != b.shape:
        raise ValueError(f"returns {r.shape} and benchmark {b.shape} differ in shape")
    if r.size < 2:
        return Relative(0.0, 0.0, 0.0, 0.0, 0.0)
    rc, bc = r - r.mean(), b - b.mean()
    var = float(np.mean(bc * bc))
    beta = float(np.mean(rc * bc) / var) if var > 0 else 0.0
    mean_alpha = float(np.mean(r - beta * b))
    alpha = float(np.expm1(min(bars_per_year * np.log1p(max(mean_alpha, -1 + 1e-300)), _MAX_LOG_GROWTH)))
    active = r - b
    spread = float(active.std(ddof=1)) if active.max() != active.min() else 0.0
    te = spread * float(np.sqrt(bars_per_year))
    ir = float(active.mean() / spread * np.sqrt(bars_per_year)) if spread > 0 else 0.0
    corr = float(np.corrcoef(r, b)[0, 1]) if r.std() > 0 and b.std() > 0 else 0.0
    return Relative(alpha, beta, ir, te, corr)


def period_returns(returns: pd.Series) -> tuple[str, pd.Series]:
    """Compounded returns per month (``"monthly"``) or, for a run shorter than :data:`MONTHLY_FROM_DAYS`, per
    calendar day (``"daily"``); ``returns`` is indexed by each bar's time (UTC)."""
    index = pd.DatetimeIndex(returns.index)
    span = (index.max() - index.min()).days if len(index) else 0
    naive = index.tz_convert(None) if index.tz is not None else index
    key = naive.to_period("M") if span >= MONTHLY_FROM_DAYS else naive.normalize()
    grouped = (1.0 + pd.Series(returns.to_numpy(dtype=np.float64), index=key)).groupby(level=0).prod() - 1.0
    return ("monthly" if span >= MONTHLY_FROM_DAYS else "daily"), grouped


def calendar_table(kind: str, periods: pd.Series) -> tuple[list[str], list[list[object]]]:
    """The returns table as a quant reads it: monthly returns as years x months (and the year), daily returns as
    weeks x weekdays (and the week). Returns the heading and the rows (None where there is no period)."""
    if kind == "monthly":
        months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        years = sorted({p.year for p in periods.index})
        rows: list[list[object]] = []
        for year in years:
            cells = {p.month: float(v) for p, v in periods.items() if p.year == year}
            total = float(np.prod([1.0 + v for v in cells.values()]) - 1.0)
            rows.append([str(year), *(cells.get(m) for m in range(1, 13)), total])
        return ["year", *months, "year return"], rows
    days = pd.DatetimeIndex(periods.index)
    weekdays = sorted(set(days.day_of_week))
    names = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    weeks = sorted({(d - pd.Timedelta(days=d.day_of_week)).date() for d in days})
    rows = []
    for week in weeks:
        cells = {d.day_of_week: float(v) for d, v in zip(days, periods.to_numpy())
                 if (d - pd.Timedelta(days=d.day_of_week)).date() == week}
        total = float(np.prod([1.0 + v for v in cells.values()]) - 1.0)
        rows.append([f"week of {week}", *(cells.get(w) for w in weekdays), total])
    return ["week", *(names[w] for w in weekdays), "week return"], rows


def extremes(periods: pd.Series, n: int = EXTREMES) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """The ``n`` best and ``n`` worst periods (label, return), best first and worst first; fewer when there are
    under ``2 n`` periods, so that no period is both (one period alone is both)."""
    n = min(n, max(len(periods) // 2, 1))
    ordered = periods.sort_values(kind="stable")
    worst = [(_label(p), float(v)) for p, v in ordered.iloc[:n].items()]
    best = [(_label(p), float(v)) for p, v in ordered.iloc[::-1].iloc[:n].items()]
    return best, worst


def _label(period: object) -> str:
    """A period's name: the day of a daily period, ``2024-03`` for a month."""
    return str(period.date()) if isinstance(period, pd.Timestamp) else str(period)


def rolling_window(n_bars: int, bars_per_day: float) -> int:
    """The rolling Sharpe's window: a month of bars (21 days) when the run has four of them, else a day's bars
    when it has four days, else a quarter of the run (at least 2 bars)."""
    per_day = max(int(round(bars_per_day)), 1)
    for window in (21 * per_day, per_day):
        if n_bars >= 4 * window and window >= 2:
            return window
    return max(n_bars // 4, 2)


def rolling_sharpe(returns: np.ndarray, window: int, bars_per_year: float) -> np.ndarray:
    """Annualised Sharpe over each trailing ``window`` bars (NaN before the first full window), as empyrical's
    ``roll_sharpe_ratio`` (std with ddof=1)."""
    r = pd.Series(np.asarray(returns, dtype=np.float64))
    roll = r.rolling(window)
    std = roll.std(ddof=1)
    out = roll.mean() / std.where(std > 0) * np.sqrt(bars_per_year)
    return out.to_numpy()


def exposure(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gross (sum of |w|) and net (sum of w) exposure per bar, as fractions of capital."""
    w = np.asarray(weights, dtype=np.float64)
    return np.abs(w).sum(axis=1), w.sum(axis=1)


def weight_change(weights: np.ndarray) -> np.ndarray:
    """Capital traded per bar as the plain change of weights ``sum |w[t] - w[t-1]|`` (``w[-1] = 0``): the turnover
    over time drawn from ``portfolio_eval.csv``, which keeps no prices (the evaluation's mean turnover, measured
    against the holdings as prices moved them, is in ``metrics.json``)."""
    w = np.asarray(weights, dtype=np.float64)
    return np.abs(np.diff(np.vstack([np.zeros((1, w.shape[1])), w]), axis=0)).sum(axis=1)


def holding_periods(positions: np.ndarray) -> np.ndarray:
    """Length in bars of every holding: each run of bars in which a stock keeps the same non-zero position
    (long or short); a holding still open at the last bar counts to there."""
    p = np.asarray(positions)
    lengths: list[int] = []
    for column in p.T:
        change = np.flatnonzero(np.diff(column) != 0) + 1
        starts = np.r_[0, change]
        ends = np.r_[change, len(column)]
        lengths += [int(e - s) for s, e in zip(starts, ends) if column[s] != 0]
    return np.asarray(lengths, dtype=np.int64)


def costs_paid(mean_turnover: float, n_steps: int, cost_bps: float) -> float:
    """Costs paid over the evaluation as a fraction of capital: ``cost_bps / 1e4 x`` the capital traded (the mean
    turnover per step, measured against drifted holdings as costs are charged, times the steps)."""
    return float(cost_bps) * 1e-4 * float(mean_turnover) * int(n_steps)


def top_informants(matrix: np.ndarray, k: int = 3) -> list[list[tuple[int, float]]]:
    """Each stock's ``k`` strongest informants in an attention matrix (row attends to column), itself excluded:
    ``[[(column, weight), ...] per row]``, strongest first."""
    m = np.array(matrix, dtype=np.float64)
    np.fill_diagonal(m, -np.inf)
    k = min(k, max(m.shape[1] - 1, 0))
    order = np.argsort(-m, axis=1, kind="stable")[:, :k]
    return [[(int(j), float(m[i, j])) for j in row] for i, row in enumerate(order)]


def strongest_links(matrix: np.ndarray, n: int = 20) -> list[tuple[int, int, float]]:
    """The ``n`` largest off-diagonal attention weights as (attending row, informing column, weight)."""
    m = np.array(matrix, dtype=np.float64)
    np.fill_diagonal(m, -np.inf)
    flat = np.argsort(-m, axis=None, kind="stable")[: min(n, max(m.size - len(m), 0))]
    return [(int(i), int(j), float(m[i, j])) for i, j in zip(*np.unravel_index(flat, m.shape))]


def benchmark_name(columns: Mapping[str, object] | list[str]) -> str | None:
    """The benchmark column of ``returns_eval.csv``: buy-and-hold when it is there."""
    return "buy_and_hold" if "buy_and_hold" in list(columns) else None
