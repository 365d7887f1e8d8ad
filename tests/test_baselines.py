"""Baseline strategies: shapes, rules, causality and the shared accounting."""

from __future__ import annotations

import numpy as np
import pytest

from parallel_dqn.evaluation import baselines as b
from parallel_dqn.evaluation.portfolio import drifted_weights, portfolio_returns

T, S, COST_BPS, BPY = 300, 3, 2.0, 252 * 390


def _market(seed: int = 0):
    """Close, log returns, tradeable mask and the planted expected next log return."""
    rng = np.random.default_rng(seed)
    expected = rng.choice([-1.0, 0.0, 1.0], size=(T, S)) * 1e-3
    r = np.zeros((T, S))
    r[1:] = expected[:-1] + rng.normal(0, 5e-4, (T - 1, S))
    tradeable = rng.random((T, S)) > 0.05
    r[~tradeable] = 0.0  # forward-filled bars: price unchanged
    close = 100 * np.exp(np.cumsum(r, axis=0))
    return close, r, tradeable, expected


def test_buy_and_hold_drifts_and_pays_only_entry():
    close, r, _, _ = _market()
    w = b.buy_and_hold(close)
    np.testing.assert_allclose(w[0], 1 / S)
    np.testing.assert_allclose(np.abs(w).sum(axis=1), 1.0)
    np.testing.assert_allclose(np.abs(w - drifted_weights(w, r))[1:], 0.0, atol=1e-12)  # never trades
    ret = portfolio_returns(w, r, COST_BPS)
    value = (close / close[0]).mean(axis=1)
    ret[0] += COST_BPS * 1e-4  # undo the one (entry) cost
    growth = np.prod(1 + ret)
    assert growth == pytest.approx(value[-1] / value[0], rel=1e-10)


def test_rule_baselines():
    close, r, _, expected = _market()
    np.testing.assert_allclose(b.equal_weight(T, S), 1 / S)
    mom = b.momentum(r, lookback=5)
    assert np.all(mom[:5] == 0)
    np.testing.assert_allclose(mom[5:], np.sign(np.log(close[5:] / close[:-5])) / S)
    np.testing.assert_array_equal(b.mean_reversion(r, 5), -mom)
    flat = np.zeros((20, 2))
    assert np.all(b.momentum(flat, 3) == 0)  # an exactly flat window gives no position
    rnd = b.random_positions(T, S, np.random.default_rng(1))
    assert set(np.unique(rnd * S)) == {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(rnd, b.random_positions(T, S, np.random.default_rng(1)))
    orc = b.oracle(expected, cost_bps=5.0)
    np.testing.assert_array_equal(orc, np.sign(expected) / S)
    assert np.all(b.oracle(expected, cost_bps=20.0) == 0)  # |E| = 10 bps never beats a 20 bps cost


def test_run_baselines_accounting_and_figures():
    close, r, tradeable, expected = _market()
    run = b.run_baselines(close, r, tradeable, COST_BPS, BPY, seed=7, expected_next_returns=expected)
    names = {"buy_and_hold", "equal_weight", "momentum", "mean_reversion", "random", "oracle"}
    assert set(run.metrics) == set(run.returns) == set(run.weights) == names
    for name in names:
        w = run.weights[name]
        assert w.shape == (T, S) and run.returns[name].shape == (T - 1,)
        assert np.all(np.abs(w).sum(axis=1) <= 1 + 1e-12)
        np.testing.assert_array_equal(run.returns[name], portfolio_returns(w, r, COST_BPS))
        assert np.all(np.abs(w - drifted_weights(w, r))[~tradeable] < 1e-15), name  # no trade when frozen
        assert all(np.isfinite(v) for v in run.metrics[name].values())
        assert run.metrics[name]["n_steps"] == T - 1
    assert run.metrics["oracle"]["total_return"] > max(run.metrics[n]["total_return"] for n in names - {"oracle"})
    assert "oracle" not in b.run_baselines(close, r, None, COST_BPS, BPY, seed=7).metrics


@pytest.mark.parametrize("t", [0, 40, 150, T - 2])
def test_baselines_are_causal(t):
    """Changing every bar after t leaves every baseline's weights up to t unchanged."""
    close, r, tradeable, expected = _market()
    before = b.run_baselines(close, r, tradeable, COST_BPS, BPY, seed=3, expected_next_returns=expected)
    r2 = r.copy()
    r2[t + 1:] = np.random.default_rng(99).normal(0, 0.02, r2[t + 1:].shape)
    close2 = close[0] * np.exp(np.cumsum(r2, axis=0))
    tradeable2 = tradeable.copy()
    tradeable2[t + 1:] = ~tradeable2[t + 1:]
    after = b.run_baselines(close2, r2, tradeable2, COST_BPS, BPY, seed=3, expected_next_returns=expected)
    for name in before.weights:
        np.testing.assert_allclose(after.weights[name][: t + 1], before.weights[name][: t + 1], rtol=1e-12,
                                   err_msg=name)
