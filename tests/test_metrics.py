"""Portfolio accounting and performance metrics (checked against empyrical)."""

from __future__ import annotations

import empyrical
import numpy as np
import pytest

from parallel_dqn.evaluation import metrics as m
from parallel_dqn.evaluation.portfolio import (
    bars_per_year,
    drawdown,
    drifted_weights,
    equity_curve,
    hold_untradeable,
    portfolio_returns,
    turnover,
)

BPY = 252 * 390  # one-minute bars


def _series(seed: int, n: int = 2000, drift: float = 2e-5, vol: float = 1e-3) -> np.ndarray:
    return np.random.default_rng(seed).normal(drift, vol, n)


SERIES = [_series(0), _series(1, drift=-3e-5), _series(2, n=300, vol=5e-3), _series(3, n=50, drift=1e-4)]


# --- portfolio accounting -------------------------------------------------------------------

def test_portfolio_returns_matches_explicit_loop():
    rng = np.random.default_rng(5)
    T, S, cost_bps = 30, 3, 7.0
    r = rng.normal(0, 0.01, (T, S))
    r[0] = 0
    w = rng.uniform(-1, 1, (T, S))
    w /= np.abs(w).sum(axis=1, keepdims=True)
    got = portfolio_returns(w, r, cost_bps)
    assert got.shape == (T - 1,)
    prev = np.zeros(S)
    for t in range(T - 1):
        g = np.exp(r[t])
        pre = prev * g / (1 + (prev * (g - 1)).sum()) if t else np.zeros(S)
        want = (w[t] * np.expm1(r[t + 1])).sum() - cost_bps * 1e-4 * np.abs(w[t] - pre).sum()
        assert got[t] == pytest.approx(want, abs=1e-15)
        prev = w[t]


def test_holding_one_stock_pays_only_entry_cost():
    r = np.array([[0.0], [0.01], [-0.02], [0.03]])
    w = np.ones((4, 1))
    ret = portfolio_returns(w, r, cost_bps=10.0)
    np.testing.assert_allclose(ret, np.expm1(r[1:, 0]) - np.array([1e-3, 0, 0]), atol=1e-15)
    np.testing.assert_allclose(turnover(w, r), [1, 0, 0, 0], atol=1e-12)


def test_turnover_without_prices_is_plain_weight_change():
    w = np.array([[0.5, 0.0], [0.5, -0.5], [0.0, 0.0]])
    np.testing.assert_allclose(turnover(w), [0.5, 0.5, 1.0])
    np.testing.assert_allclose(drifted_weights(w, np.zeros_like(w)), [[0, 0], [0.5, 0], [0.5, -0.5]])


def test_equity_and_drawdown():
    ret = np.array([0.1, -0.5, 0.2])
    eq = equity_curve(ret, start_value=2.0)
    np.testing.assert_allclose(eq, [2.0, 2.2, 1.1, 1.32])
    np.testing.assert_allclose(drawdown(eq), [0, 0, 0.5, 0.4])
    assert bars_per_year(390) == BPY


def test_hold_untradeable_keeps_drifted_holding_at_no_cost():
    rng = np.random.default_rng(3)
    T, S = 20, 3
    r = rng.normal(0, 0.01, (T, S))
    r[0] = 0
    target = np.full((T, S), 0.25)  # gross 0.75: room for the held stock's drift
    target[::2] *= -1
    tradeable = np.ones((T, S), dtype=bool)
    tradeable[5:9, 1] = False
    tradeable[0, 2] = False
    w = hold_untradeable(target, tradeable, r)
    traded = np.abs(w - drifted_weights(w, r))
    assert np.all(traded[~tradeable] < 1e-15)
    assert w[0, 2] == 0
    np.testing.assert_array_equal(w[tradeable], target[tradeable])
    # fully invested targets: the tradeable stocks give way so gross exposure stays <= 1
    full = hold_untradeable(np.sign(target) / S, tradeable, r)
    assert np.all(np.abs(full).sum(axis=1) <= 1 + 1e-12)
    assert np.all(np.abs(full - drifted_weights(full, r))[~tradeable] < 1e-15)


# --- metrics against empyrical --------------------------------------------------------------

@pytest.mark.parametrize("ret", SERIES)
def test_ratios_match_empyrical(ret):
    kw = {"annualization": BPY}
    assert m.sharpe_ratio(ret, BPY) == pytest.approx(empyrical.sharpe_ratio(ret, **kw), rel=1e-10)
    assert m.sortino_ratio(ret, BPY) == pytest.approx(empyrical.sortino_ratio(ret, **kw), rel=1e-10)
    assert m.annual_return(ret, BPY) == pytest.approx(empyrical.annual_return(ret, **kw), rel=1e-9)
    assert m.annual_volatility(ret, BPY) == pytest.approx(empyrical.annual_volatility(ret, **kw), rel=1e-10)
    # empyrical's drawdown is negative; ours is the positive fraction
    assert m.max_drawdown(ret) == pytest.approx(-empyrical.max_drawdown(ret), rel=1e-10)
    assert m.calmar_ratio(ret, BPY) == pytest.approx(empyrical.calmar_ratio(ret, **kw), rel=1e-9)
    assert m.total_return(ret) == pytest.approx(empyrical.cum_returns_final(ret), rel=1e-10)


def test_drawdown_counts_the_start_as_a_peak():
    ret = np.array([-0.1, 0.05])
    assert m.max_drawdown(ret) == pytest.approx(0.1)
    assert m.max_drawdown(ret) == pytest.approx(-empyrical.max_drawdown(ret))


@pytest.mark.parametrize(
    "ret",
    [np.array([]), np.array([0.01]), np.zeros(10), np.full(10, 1e-3), np.array([0.01, 0.02, 0.0]),
     np.array([0.5, -1.0, 0.1]), np.full(5, 0.5)],
    ids=["empty", "one", "zeros", "constant", "no-downside", "wiped-out", "overflowing-cagr"],
)
def test_degenerate_series_give_finite_figures(ret):
    out = m.performance_metrics(ret, BPY, weights=np.ones((len(ret) + 1, 2)) * 0.5)
    assert all(np.isfinite(v) for v in out.values()), out
    if len(ret) < 2 or np.all(ret == ret[0]):
        assert out["sharpe"] == 0.0 and out["sortino"] == 0.0 and out["annual_volatility"] == 0.0
    if np.all(ret >= 0):
        assert out["max_drawdown"] == 0.0 and out["calmar"] == 0.0 and out["sortino"] == 0.0


def test_performance_metrics_keys_and_bookkeeping_figures():
    ret = np.array([0.01, -0.02, 0.0, 0.03])
    w = np.array([[0.5, 0.0], [0.5, -0.5], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # 5 rows: last not held
    out = m.performance_metrics(ret, BPY, weights=w)
    assert set(out) == {
        "total_reward", "total_return", "annual_return", "annual_volatility", "sharpe", "sortino",
        "max_drawdown", "calmar", "turnover", "hit_rate", "n_steps",
    }
    assert out["n_steps"] == 4
    assert out["total_reward"] == pytest.approx(np.log1p(ret).sum())
    assert out["turnover"] == pytest.approx((0.5 + 0.5 + 1.0 + 1.0) / 4)
    assert out["hit_rate"] == pytest.approx(2 / 3)  # step 2 is flat; of the other three, two gained
    assert m.hit_rate(ret) == pytest.approx(2 / 3)  # without weights: among non-zero steps
    rewards = np.array([[0.1, 0.2], [0.3, -0.1]])
    assert m.performance_metrics(ret, BPY, rewards=rewards)["total_reward"] == pytest.approx(0.5)
    assert m.performance_metrics(ret, BPY)["turnover"] == 0.0


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError):
        m.sharpe_ratio(np.array([0.1, np.nan]), BPY)
    with pytest.raises(ValueError):
        m.annual_return(np.array([0.1]), 0)
    with pytest.raises(ValueError):
        m.performance_metrics(np.zeros(4), BPY, weights=np.zeros((7, 2)))
