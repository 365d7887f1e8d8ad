"""The tear sheet's figures against empyrical-reloaded on the same returns, and the number formats by kind."""

from __future__ import annotations

import empyrical
import numpy as np
import pandas as pd
import pytest

from parallel_dqn.cli.output import print_results
from parallel_dqn.evaluation import formats, tearsheet

BPY = 252 * 390  # minute bars: the annualisation of an intraday run


def _returns(seed: int, n: int, drift: float = 2e-5, vol: float = 1e-3) -> np.ndarray:
    return np.random.default_rng(seed).normal(drift, vol, n)


@pytest.mark.parametrize("seed,n,bpy", [(0, 2000, BPY), (1, 300, 252.0), (2, 60, 252.0 * 78)])
def test_summary_matches_empyrical(seed, n, bpy):
    r = _returns(seed, n, vol=1e-3 if bpy > 252 else 1e-2)
    got = tearsheet.summary(r, bpy)
    assert got["annual_return"] == pytest.approx(empyrical.annual_return(r, annualization=bpy), rel=1e-9)
    assert got["annual_volatility"] == pytest.approx(empyrical.annual_volatility(r, annualization=bpy), rel=1e-9)
    assert got["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r, annualization=bpy), rel=1e-9)
    assert got["sortino"] == pytest.approx(empyrical.sortino_ratio(r, annualization=bpy), rel=1e-9)
    assert got["calmar"] == pytest.approx(empyrical.calmar_ratio(r, annualization=bpy), rel=1e-9)
    assert got["max_drawdown"] == pytest.approx(-empyrical.max_drawdown(r), rel=1e-9)
    assert got["total_return"] == pytest.approx(empyrical.cum_returns_final(r), rel=1e-9)
    # the drawdown's duration: from empyrical's compounded curve, walked bar by bar
    equity = np.r_[1.0, empyrical.cum_returns(r, starting_value=1.0)]
    peak, trough_at, depth = equity[0], 0, 0.0
    for t, v in enumerate(equity):
        peak = max(peak, v)
        if 1 - v / peak > depth:
            depth, trough_at = 1 - v / peak, t
    start = max(t for t in range(trough_at + 1) if equity[t] == equity[: trough_at + 1].max())
    end = next((t for t in range(trough_at, len(equity)) if equity[t] >= equity[start]), len(equity) - 1)
    assert got["max_drawdown_duration_bars"] == end - start > 0


@pytest.mark.parametrize("seed,bpy", [(3, BPY), (4, 252.0)])
def test_benchmark_relative_figures_match_empyrical(seed, bpy):
    bench = _returns(seed, 1500)
    r = 0.6 * bench + _returns(seed + 10, 1500, drift=1e-5, vol=5e-4)
    got = tearsheet.relative(r, bench, bpy)
    alpha, beta = empyrical.alpha_beta(r, bench, annualization=bpy)
    assert got.beta == pytest.approx(beta, rel=1e-9) and 0.4 < got.beta < 0.8
    assert got.alpha == pytest.approx(alpha, rel=1e-6)
    assert got.information_ratio == pytest.approx(empyrical.excess_sharpe(r, bench) * np.sqrt(bpy), rel=1e-9)
    assert got.tracking_error == pytest.approx(empyrical.annual_volatility(r - bench, annualization=bpy), rel=1e-9)
    assert got.correlation == pytest.approx(np.corrcoef(r, bench)[0, 1], rel=1e-9)


def test_monthly_and_daily_returns_match_empyrical():
    days = pd.bdate_range("2023-01-02", periods=300, tz="UTC")
    r = pd.Series(_returns(5, 300, vol=1e-2), index=days)
    kind, monthly = tearsheet.period_returns(r)
    expected = empyrical.aggregate_returns(r, "monthly")  # indexed by (year, month)
    assert kind == "monthly" and len(monthly) == len(expected) == 14
    assert [(p.year, p.month) for p in monthly.index] == list(expected.index)
    np.testing.assert_allclose(monthly.to_numpy(), expected.to_numpy(), rtol=1e-9)
    head, rows = tearsheet.calendar_table(kind, monthly)
    assert head[0] == "year" and head[-1] == "year return" and [row[0] for row in rows] == ["2023", "2024"]
    assert rows[0][-1] == pytest.approx(empyrical.aggregate_returns(r, "yearly").iloc[0], rel=1e-9)
    # a short intraday run: one figure per day, each the day's bars compounded (empyrical's cum_returns_final)
    bars = pd.date_range("2024-01-02 14:30", periods=78, freq="5min", tz="UTC")
    stamps = bars.append([bars + pd.Timedelta(days=d) for d in (1, 2, 6)])  # Tue, Wed, Thu, next Mon
    intraday = pd.Series(_returns(6, len(stamps)), index=stamps)
    kind, daily = tearsheet.period_returns(intraday)
    assert kind == "daily" and len(daily) == 4
    for day, value in daily.items():
        on_day = intraday[intraday.index.normalize().tz_convert(None) == day]
        assert value == pytest.approx(empyrical.cum_returns_final(on_day.to_numpy()), rel=1e-9)
    head, rows = tearsheet.calendar_table(kind, daily)
    assert head == ["week", "Mon", "Tue", "Wed", "Thu", "week return"] and len(rows) == 2
    assert rows[1][1] == pytest.approx(daily.iloc[-1]) and rows[1][2] is None
    best, worst = tearsheet.extremes(daily, 2)
    assert best[0][1] == pytest.approx(daily.max()) and worst[0][1] == pytest.approx(daily.min())
    assert best[0][0] == str(daily.idxmax().date())


def test_rolling_sharpe_matches_empyrical():
    r = _returns(7, 500)
    window = tearsheet.rolling_window(len(r), 20)
    assert window == 20  # a month of 20-bar days (420 bars) does not fit 4 times in 500 bars; a day does
    got = tearsheet.rolling_sharpe(r, window, BPY)
    expected = empyrical.roll_sharpe_ratio(r, window, annualization=BPY)
    assert np.isnan(got[: window - 1]).all()
    np.testing.assert_allclose(got[window - 1 :], expected, rtol=1e-9)


def test_holding_periods_turnover_exposure_costs_and_informants():
    positions = np.array([[1, 0], [1, -1], [0, -1], [-1, -1], [-1, 0], [-1, 1]])
    # stock 0: long 2 bars, short 3 (open at the end); stock 1: short 3, long 1 (open)
    assert sorted(tearsheet.holding_periods(positions).tolist()) == [1, 2, 3, 3]
    w = np.array([[0.5, -0.5], [0.2, -0.8], [0.0, 0.0]])
    gross, net = tearsheet.exposure(w)
    np.testing.assert_allclose(gross, [1.0, 1.0, 0.0])
    np.testing.assert_allclose(net, [0.0, -0.6, 0.0])
    np.testing.assert_allclose(tearsheet.weight_change(w), [1.0, 0.6, 1.0])
    assert tearsheet.costs_paid(0.25, 400, 10.0) == pytest.approx(0.1)  # 100 capitals traded at 10 bp
    m = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    assert tearsheet.top_informants(m, 2) == [[(1, 0.3), (2, 0.2)], [(2, 0.8), (0, 0.1)], [(0, 0.6), (1, 0.3)]]
    assert tearsheet.strongest_links(m, 2) == [(1, 2, 0.8), (2, 0, 0.6)]


def test_formats_by_kind():
    assert formats.format_metric("sharpe", 1.23456) == "1.23"
    assert formats.format_metric("eval Sharpe", -0.104553) == "-0.10"
    assert formats.format_metric("total_return", 0.104553) == "10.46%"
    assert formats.format_metric("max drawdown", 0.05) == "5.00%"
    assert formats.format_metric("turnover", 0.0123) == "1.23%"
    assert formats.format_metric("n_steps", 98280) == "98,280"
    assert formats.format_metric("max drawdown duration (bars)", 1234.0) == "1,234"
    assert formats.format_metric("p-value vs buy-and-hold", 0.04213) == "0.042"
    assert formats.format_metric("rank by deflated Sharpe", 2) == "2"
    assert formats.money(12345.678) == "12,345.68"
    assert formats.format_metric("lr", 0.0001) == "0.0001"
    assert formats.format_metric("sharpe", None) == formats.MISSING == formats.format_metric("sharpe", float("nan"))
    assert formats.format_metric("stock", "LEAD") == "LEAD"


def test_the_cli_results_table_uses_the_formats(capsys):
    figures = {"total_return": 0.104553, "sharpe": 89.709093, "sortino": 1.5, "max_drawdown": 0.0321, "turnover": 0.5}
    print_results({"eval": figures, "baselines": {"buy_and_hold": {**figures, "sharpe": -0.1}},
                   "period": ["2024-01-08", "2024-01-09"]}, "runs/x")
    lines = capsys.readouterr().out.splitlines()
    agent = next(line for line in lines if line.startswith("agent"))
    assert agent.split()[-5:] == ["10.46%", "89.71", "1.50", "3.21%", "50.00%"]
    assert next(line for line in lines if line.startswith("buy_and_hold")).split()[2] == "-0.10"
