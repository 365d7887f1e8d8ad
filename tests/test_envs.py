"""Gymnasium envs: API conformance, the reward rule by hand, no look-ahead, episode bounds."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import MarketEnv, TradingEnv

# features are normalised but unbounded: the observation Box is (-inf, inf) on purpose
pytestmark = pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum):UserWarning")


def arrays(n_steps: int = 12, n_stocks: int = 3, n_feat: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "features": rng.normal(size=(n_steps, n_stocks, n_feat)).astype(np.float32),
        "log_returns": rng.normal(scale=0.01, size=(n_steps, n_stocks)),
        "tradeable": np.ones((n_steps, n_stocks), dtype=bool),
        "window": 4,
        "cost_bps": 5.0,
    }


def test_check_env_passes() -> None:
    check_env(MarketEnv(**arrays()), skip_render_check=True)
    check_env(TradingEnv(**arrays(), stock=2), skip_render_check=True)


def test_gymnasium_make() -> None:
    m = gymnasium.make(envs.MARKET_ENV_ID, **arrays(), start=2, end=9)
    obs, _ = m.reset(seed=0)
    assert obs.shape == (3, 4 * 2 + 3) and m.unwrapped.start == 2
    tr = gymnasium.make("parallel_dqn/Trading-v0", **arrays(), stock=1)
    obs, _ = tr.reset(seed=0)
    assert obs.shape == (11,) and isinstance(tr.unwrapped, TradingEnv)
    check_env(tr.unwrapped, skip_render_check=True)


def test_reward_rule_by_hand() -> None:
    # one stock, 10 bps: long at t=0, flat at t=1, short at t=2
    r = np.array([[0.0], [0.01], [-0.02], [0.03]])
    env = TradingEnv(np.zeros((4, 1, 1), np.float32), r, np.ones((4, 1), bool), window=1, cost_bps=10.0)
    env.reset()
    _, rew, term, _, info = env.step(2)
    assert rew == pytest.approx(0.01 - 0.001) and info == {"t": 0, "position": 1.0} and not term
    _, rew, term, _, info = env.step(1)
    assert rew == pytest.approx(0.0 - 0.001) and info["position"] == 0.0 and not term
    obs, rew, term, _, info = env.step(0)
    assert rew == pytest.approx(-0.03 - 0.001) and info == {"t": 2, "position": -1.0} and term
    np.testing.assert_array_equal(obs[-3:], [1, 0, 0])  # short one-hot


def test_market_reward_is_sum_of_stock_rewards() -> None:
    a = arrays()
    env = MarketEnv(**a)
    env.reset()
    env.step(np.array([2, 1, 0]))
    _, rew, _, _, info = env.step(np.array([0, 1, 0]))
    cost = 5e-4
    want = np.array([-a["log_returns"][2, 0] - 2 * cost, 0.0, -a["log_returns"][2, 2]])
    np.testing.assert_allclose(info["stock_rewards"], want)
    assert rew == pytest.approx(want.sum()) and info["t"] == 1
    np.testing.assert_array_equal(info["positions"], [-1, 0, -1])


def test_observation_layout_and_padding() -> None:
    a = arrays()
    env = MarketEnv(**a)
    obs, info = env.reset()
    assert info["t"] == 0
    f = a["features"]
    # t=0, window 4: three zero rows then row 0, per stock, then flat one-hot
    np.testing.assert_array_equal(obs[1, :6], 0)
    np.testing.assert_array_equal(obs[1, 6:8], f[0, 1])
    np.testing.assert_array_equal(obs[:, 8:], [[0, 1, 0]] * 3)
    for _ in range(5):
        obs, *_ = env.step(np.array([2, 1, 0]))
    assert env.t == 5
    np.testing.assert_array_equal(obs[2, :8], f[2:6, 2].reshape(-1))  # rows 2..5, oldest first
    np.testing.assert_array_equal(obs[:, 8:], [[0, 0, 1], [0, 1, 0], [1, 0, 0]])


def test_no_look_ahead() -> None:
    a = arrays(seed=1)
    t_star = 6
    changed = {**a, "features": a["features"].copy(), "log_returns": a["log_returns"].copy()}
    changed["features"][t_star + 1 :] += 100.0
    changed["log_returns"][t_star + 1 :] *= -3.0
    actions = np.random.default_rng(0).integers(0, 3, size=(t_star, 3))
    observations = []
    for kw in (a, changed):
        env = MarketEnv(**kw)
        obs, _ = env.reset()
        for act in actions:
            obs, *_ = env.step(act)
        assert env.t == t_star
        observations.append(obs)
    np.testing.assert_array_equal(observations[0], observations[1])


def test_episode_bounds() -> None:
    env = MarketEnv(**arrays(), start=3, end=8)
    obs, info = env.reset()
    assert info["t"] == 3 and env.episode_length == 4
    ts, term = [], False
    while not term:
        obs, _, term, trunc, info = env.step(env.action_space.sample())
        ts.append(info["t"])
        assert not trunc
    assert ts == [3, 4, 5, 6] and env.t == 7  # last decision at end-2; obs of end-1 returned
    with pytest.raises(RuntimeError):
        env.step(np.ones(3, dtype=int))
    env.reset()
    assert env.t == 3 and np.all(env.positions == 0)
    full = MarketEnv(**arrays())
    assert full.episode_length == 11
    with pytest.raises(ValueError):
        MarketEnv(**arrays(), start=5, end=6)  # no decision possible


def test_tradeable_rule() -> None:
    a = arrays()
    a["tradeable"][1, 0] = False
    env = MarketEnv(**a)
    env.reset()
    env.step(np.array([2, 2, 2]))
    _, _, _, _, info = env.step(np.array([0, 0, 0]))  # stock 0 cannot trade at t=1: stays long
    np.testing.assert_array_equal(info["positions"], [1, -1, -1])
    r = a["log_returns"][2]
    np.testing.assert_allclose(info["stock_rewards"], [r[0], -r[1] - 2 * 5e-4, -r[2] - 2 * 5e-4])
    a["tradeable"][0, 1] = False  # not tradeable at the first bar: stays flat, no cost
    env = MarketEnv(**a)
    env.reset()
    _, _, _, _, info = env.step(np.array([2, 2, 2]))
    np.testing.assert_array_equal(info["positions"], [1, 0, 1])
    assert info["stock_rewards"][1] == 0.0


def test_trading_env_equals_market_column() -> None:
    a = arrays(seed=4)
    market, single = MarketEnv(**a), TradingEnv(**a, stock=1)
    mo, _ = market.reset()
    so, _ = single.reset()
    rng = np.random.default_rng(1)
    term = False
    while not term:
        act = rng.integers(0, 3, size=3)
        mo, _, term, _, minfo = market.step(act)
        so, srew, sterm, _, sinfo = single.step(int(act[1]))
        np.testing.assert_array_equal(so, mo[1])
        assert srew == pytest.approx(minfo["stock_rewards"][1]) and sterm == term


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="log_returns"):
        MarketEnv(**{**arrays(), "log_returns": np.zeros((5, 3))})
    with pytest.raises(ValueError, match="stock"):
        TradingEnv(**arrays(), stock=3)
    env = MarketEnv(**arrays())
    env.reset()
    with pytest.raises(ValueError, match="action"):
        env.step(np.array([0, 3, 1]))
