"""The tear sheet of one run, as the report's HTML section: what a quant reads first (pyfolio, QuantStats).

Summary (annual return and volatility, Sharpe, Sortino, Calmar, max drawdown and its duration) for the agent and
every baseline; the agent against buy-and-hold (alpha, beta, information ratio, tracking error); trading (costs
paid, turnover, holding periods, exposure); the returns table (monthly, or daily for a run shorter than two
months), best and worst periods; rolling Sharpe, exposure and turnover over the evaluation. The figures come from
:mod:`.tearsheet`, read from the run's ``returns_eval.csv`` and ``portfolio_eval.csv``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parallel_dqn import outputs
from parallel_dqn.evaluation import formats, plots, tearsheet
from parallel_dqn.evaluation.html_parts import figure, png, table

#: summary columns: key of :func:`tearsheet.summary` -> heading
SUMMARY = {
    "total_return": "total return", "annual_return": "annual return", "annual_volatility": "annual volatility",
    "sharpe": "Sharpe", "sortino": "Sortino", "calmar": "Calmar", "max_drawdown": "max drawdown",
    "max_drawdown_duration_bars": "max drawdown duration (bars)",
}
AGENT = "agent"


def tearsheet_html(folder: Path, metrics: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """The tear-sheet section of the run in ``folder`` (empty without ``returns_eval.csv``: a run from before it).

    Raises OSError or ValueError when the run's CSV files cannot be read; the caller leaves the section out
    with a note.
    """
    path = folder / outputs.RETURNS_EVAL
    if not path.is_file():
        return ""
    frame = pd.read_csv(path)
    weights, positions = _portfolio(folder / outputs.PORTFOLIO_EVAL, len(frame))
    ev = metrics.get("eval") if isinstance(metrics.get("eval"), Mapping) else {}
    return returns_tearsheet_html(frame, metrics.get("annualisation"), "evaluation",
                                  _trading_table_of(ev, settings, weights, positions), weights)


def returns_tearsheet_html(frame: pd.DataFrame, annualisation: Any, period: str,
                           trading: Callable[[float, int], str] | None = None,
                           weights: np.ndarray | None = None) -> str:
    """The tear sheet of every strategy's return per bar in ``frame`` (``timestamp``, ``agent``, baselines: a
    run's ``returns_eval.csv`` or a walk-forward's folds joined); ``trading(per_day, n)`` gives the trading
    table's HTML when the weights and positions are known; ``period`` names the bars (``evaluation``)."""
    if AGENT not in frame or "timestamp" not in frame:
        raise ValueError(f"{outputs.RETURNS_EVAL} has no agent or timestamp column")
    stamps = pd.to_datetime(frame["timestamp"], utc=True, format="mixed")
    annual = annualisation if isinstance(annualisation, Mapping) else {}
    per_day = float(annual.get("bars_per_day") or _bars_per_day(stamps))  # a run from before it was recorded
    bpy = float(annual.get("bars_per_year") or 252.0 * per_day)
    strategies = {str(c): pd.to_numeric(frame[c]).to_numpy(dtype=np.float64) for c in frame.columns
                  if c != "timestamp"}
    agent = strategies[AGENT]
    parts = [f"<h3>Tear sheet: {len(agent):,} {period} bars, annualised with {bpy:,.0f} bars a year "
             f"({per_day:g} a day x 252)</h3>", _summary_table(strategies, bpy, per_day, period)]
    bench = tearsheet.benchmark_name(list(strategies))
    if bench is not None:
        parts.append(_relative_table(agent, strategies[bench], bpy))
    if trading is not None:
        parts.append(trading(per_day, len(agent)))
    kind, periods = tearsheet.period_returns(pd.Series(agent, index=pd.DatetimeIndex(stamps)))
    head, rows = tearsheet.calendar_table(kind, periods)
    parts.append(f"<h4>{kind.capitalize()} returns of the agent</h4>"
                 + table(head, rows, css_id=f"{kind}-returns", kinds=[formats.PLAIN] + [formats.PERCENT] * len(head)))
    best, worst = tearsheet.extremes(periods)
    unit = "day" if kind == "daily" else "month"
    pairs = [[*(best[i] if i < len(best) else (None, None)), *(worst[i] if i < len(worst) else (None, None))]
             for i in range(max(len(best), len(worst)))]
    parts.append(f"<h4>Best and worst {unit}s</h4>" + table(
        [f"best {unit}", "return", f"worst {unit}", "return"], pairs, css_id="extremes",
        kinds=[formats.PLAIN, formats.PERCENT, formats.PLAIN, formats.PERCENT]))
    parts.append(_over_time(agent, weights, stamps, bpy, per_day, period))
    return "\n".join(parts)


def _trading_table_of(ev: Mapping[str, Any], settings: Mapping[str, Any], weights: np.ndarray | None,
                      positions: np.ndarray | None) -> Callable[[float, int], str]:
    """The trading table, once the bars per day are known (:func:`returns_tearsheet_html` finds them)."""
    return lambda per_day, n: _trading_table(ev, settings, weights, positions, per_day, n)


def _bars_per_day(stamps: pd.Series) -> float:
    """The median number of bars per UTC day: the run's own rule (:mod:`.metrics`), for a run that did not record
    its annualisation."""
    counts = stamps.dt.floor("D").value_counts()
    return float(counts.median()) if len(counts) else 1.0


def _summary_table(strategies: Mapping[str, np.ndarray], bpy: float, per_day: float, period: str) -> str:
    rows = []
    for name, r in strategies.items():
        s = tearsheet.summary(r, bpy)
        rows.append([name, *(s[k] for k in SUMMARY), s["max_drawdown_duration_bars"] / max(per_day, 1.0)])
    return f"<h4>Summary ({period})</h4>" + table(
        ["strategy", *SUMMARY.values(), "max drawdown duration (days)"], rows, css_id="tearsheet-summary",
        first_row_class="agent")


def _relative_table(agent: np.ndarray, bench: np.ndarray, bpy: float) -> str:
    rel = tearsheet.relative(agent, bench, bpy)
    rows = [
        ["alpha (annual)", formats.percent(rel.alpha), "the return a year not explained by buy-and-hold's moves"],
        ["beta", formats.ratio(rel.beta), "how much of buy-and-hold's move the agent carries (1: all of it)"],
        ["information ratio", formats.ratio(rel.information_ratio),
         "mean return over buy-and-hold's, per unit of tracking error, annualised"],
        ["tracking error", formats.percent(rel.tracking_error),
         "annualised standard deviation of the return over buy-and-hold's"],
        ["correlation", formats.ratio(rel.correlation), "of the per-bar returns"],
    ]
    return "<h4>Against buy-and-hold (the benchmark)</h4>" + table(
        ["figure", "value", "how to read it"], rows, css_id="benchmark-relative", last_column_class="how")


def _portfolio(path: Path, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Weights and positions ``[n, S]`` from ``portfolio_eval.csv`` (None, None without the file)."""
    if not path.is_file():
        return None, None
    frame = pd.read_csv(path)
    weights = frame[[c for c in frame.columns if str(c).startswith("weight_")]].to_numpy(dtype=np.float64)
    positions = frame[[c for c in frame.columns if str(c).startswith("position_")]].to_numpy(dtype=np.float64)
    if len(frame) != n:
        raise ValueError(f"{path.name} has {len(frame)} rows for {n} evaluation bars")
    return weights, positions


def _trading_table(ev: Mapping[str, Any], settings: Mapping[str, Any], weights: np.ndarray | None,
                   positions: np.ndarray | None, per_day: float, n: int) -> str:
    rows: list[list[Any]] = []
    turnover, steps, cost_bps = ev.get("turnover"), ev.get("n_steps", n), settings.get("market.cost_bps")
    if isinstance(turnover, (int, float)) and isinstance(cost_bps, (int, float)):
        paid = tearsheet.costs_paid(turnover, int(steps), cost_bps)
        rows.append(["costs paid", formats.percent(paid, 3),
                     f"of starting capital, at {cost_bps:g} bp of the capital traded"])
        rows.append(["capital traded", formats.percent(turnover * int(steps)),
                     "of capital, over the evaluation (mean turnover per bar x bars)"])
    if isinstance(turnover, (int, float)):
        rows.append(["turnover per bar", formats.percent(turnover), "mean capital traded per bar"])
    if positions is not None and positions.size:
        held = tearsheet.holding_periods(positions)
        if held.size:
            rows.append(["average holding period", f"{formats.count(held.mean())} bars",
                         f"{held.mean() / max(per_day, 1.0):.2f} days; median {formats.count(np.median(held))} "
                         f"bars over {formats.count(held.size)} holdings (a stock kept long or short)"])
    if weights is not None and weights.size:
        gross, net = tearsheet.exposure(weights)
        rows.append(["gross exposure", formats.percent(gross.mean()), "mean sum of |weight|"])
        rows.append(["net exposure", formats.percent(net.mean()), "mean sum of weights (long minus short)"])
    if isinstance(ev.get("hit_rate"), (int, float)):
        rows.append(["hit rate", formats.percent(ev["hit_rate"]), "positive bars among the bars in the market"])
    if not rows:
        return ""
    return "<h4>Trading</h4>" + table(["figure", "value", "how to read it"], rows, css_id="trading",
                                      last_column_class="how")


def _over_time(agent: np.ndarray, weights: np.ndarray | None, stamps: pd.Series, bpy: float,
               per_day: float, period: str) -> str:
    """Rolling Sharpe, exposure and turnover (with the weights) over the bars, one figure of stacked panels."""
    window = tearsheet.rolling_window(len(agent), per_day)
    panels: list[tuple[str, Mapping[str, np.ndarray]]] = [
        (f"rolling Sharpe ({window} bars)", {"agent": tearsheet.rolling_sharpe(agent, window, bpy)})]
    if weights is not None and weights.size:
        gross, net = tearsheet.exposure(weights)
        panels.append(("exposure (%)", {"gross": 100 * gross, "net": 100 * net}))
        traded = pd.Series(tearsheet.weight_change(weights)).rolling(window, min_periods=1).mean().to_numpy()
        panels.append(("turnover (%)", {"weight change": 100 * traded}))
    times = stamps.dt.tz_convert(None).to_numpy()
    fig = plots.panels_figure(panels, times, f"The agent over the {period}")
    what = ", gross and net exposure, and turnover (weight change, {window}-bar mean)" if len(panels) > 1 else ""
    return figure(png(fig), f"rolling Sharpe (annualised, trailing {window} bars){what.format(window=window)} "
                            f"over the {period}", "tearsheet_over_time")
