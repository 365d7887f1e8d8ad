"""Replay priorities other than the TD error (issue 12): PnL impact, rare events, mixtures, against brute force.

* sampling frequencies over many draws follow ``(measure + eps)^alpha`` computed by hand from the transitions;
* the rarity table equals a loop of ``np.std`` over the trailing windows, and uses no return after its bar;
* a mixture's priority is the weighted sum of its parts over their running means, computed by hand;
* a mix's state survives ``state_dict``/``load_state_dict`` (the next samples are identical);
* a bad ``replay.priority`` is one line.
"""

from __future__ import annotations

import numpy as np
import pytest

from parallel_dqn.config import Config, parse_priority
from parallel_dqn.errors import UserError
from parallel_dqn.rl.nstep import Transitions
from parallel_dqn.rl.priorities import RARITY_CAP, Rarity, trailing_std
from parallel_dqn.rl.replay import PrioritizedReplay

ALPHA, EPS = 0.7, 1e-6


def transitions(t: np.ndarray, stock: np.ndarray, reward: np.ndarray) -> Transitions:
    n = len(t)
    return Transitions.from_arrays(t=t, stock=stock, position=np.ones(n), action=np.ones(n), reward=reward,
                                   next_t=t + 1, next_position=np.ones(n), discount=np.full(n, 0.5))


def frequencies(replay: PrioritizedReplay, draws: int = 200_000, batch: int = 1000) -> np.ndarray:
    counts = np.zeros(len(replay))
    for _ in range(draws // batch):
        counts += np.bincount(replay.sample(batch).indices, minlength=len(replay))
    return counts / counts.sum()


def assert_follows(freq: np.ndarray, measure: np.ndarray) -> None:
    """Empirical frequencies within 4 binomial standard errors (and 5% of relative error) of p^alpha / sum."""
    p = (measure + EPS) ** ALPHA
    expected = p / p.sum()
    se = np.sqrt(expected * (1 - expected) / 200_000)
    assert np.all(np.abs(freq - expected) <= 4 * se + 1e-4), np.c_[freq, expected]


def test_pnl_priorities_sample_in_proportion_to_abs_reward_to_the_alpha():
    rng = np.random.default_rng(0)
    reward = rng.normal(0, 1, 40) * np.r_[np.ones(35), np.full(5, 6.0)]  # five large profits or losses
    replay = PrioritizedReplay(64, alpha=ALPHA, rng=1, priority="pnl")
    replay.add(transitions(np.arange(40), np.zeros(40), reward))
    np.testing.assert_allclose(replay.priorities(), (np.abs(reward.astype(np.float32).astype(np.float64)) + EPS) ** ALPHA)
    assert_follows(frequencies(replay), np.abs(reward.astype(np.float32).astype(np.float64)))
    replay.update_priorities(np.arange(10), np.full(10, 50.0))  # no td part: TD errors change nothing
    np.testing.assert_allclose(replay.priorities(), (np.abs(reward.astype(np.float32).astype(np.float64)) + EPS) ** ALPHA)


def brute_force_rarity(r: np.ndarray, short: int, long: int) -> np.ndarray:
    """The documented definition, one bar at a time."""
    def std(x):
        return float(np.std(x)) if len(x) >= 2 else 0.0

    def ratio(a, b):
        return a / b if b > 0 else (RARITY_CAP if a > 0 else 1.0)

    out = np.empty_like(r)
    for t in range(len(r)):
        tail = ratio(abs(r[t]), std(r[max(0, t - long):t]))
        spike = ratio(std(r[max(0, t - short + 1):t + 1]), std(r[max(0, t - long + 1):t + 1]))
        out[t] = min(max(tail, spike), RARITY_CAP)
    return out


def test_rarity_matches_its_definition_bar_by_bar_and_sees_no_later_return():
    rng = np.random.default_rng(3)
    T, S = 300, 4
    r = rng.normal(0, 1e-3, (T, S))
    r[150:170, 2] *= 8  # a volatility spike on stock 2
    r[200, 1] = 0.02  # a tail return on stock 1
    r[:30, 3] = 0.0  # a flat start: nothing is rare
    own = np.array([1, 2, 3])
    rarity = Rarity(r, own, short=8, long=40)
    for j, s in enumerate(own):
        np.testing.assert_allclose(rarity.table[:, j], brute_force_rarity(r[:, s], 8, 40), rtol=1e-6, atol=1e-9)
    assert rarity(np.array([200]), np.array([1]))[0] > 10  # a ~20 sigma bar
    assert rarity(np.array([160]), np.array([2]))[0] > 2  # inside the spike
    assert rarity(np.array([100]), np.array([2]))[0] < 3  # an ordinary bar
    assert np.all(rarity.table[:30, 2] == 1.0)  # stock 3 (own index 2): 0/0 is not rare
    later = r.copy()
    later[201:] = rng.normal(0, 5e-2, (T - 201, S))  # change every return after bar 200
    np.testing.assert_array_equal(Rarity(later, own, 8, 40).table[:201], rarity.table[:201])


def test_trailing_std_with_a_lag_excludes_the_bar():
    x = np.arange(10.0)[:, None]
    np.testing.assert_allclose(trailing_std(x, 3, lag=1)[5, 0], np.std([2.0, 3.0, 4.0]))
    np.testing.assert_allclose(trailing_std(x, 3)[5, 0], np.std([3.0, 4.0, 5.0]))
    assert trailing_std(x, 3, lag=1)[1, 0] == 0.0  # one bar before: no spread


def test_rare_priorities_sample_in_proportion_to_rarity_to_the_alpha():
    rng = np.random.default_rng(4)
    r = rng.normal(0, 1e-3, (120, 2))
    r[90, 0] = 0.01
    rarity = Rarity(r, np.array([0, 1]), 8, 40)
    replay = PrioritizedReplay(128, alpha=ALPHA, rng=2, priority="rare", rarity=rarity)
    t = np.repeat(np.arange(60, 110), 2)
    stock = np.tile([0, 1], 50)
    replay.add(transitions(t, stock, np.zeros(100)))
    measure = np.array([brute_force_rarity(r[:, s], 8, 40)[tt] for tt, s in zip(t, stock)])
    np.testing.assert_allclose(replay.priorities(), (measure + EPS) ** ALPHA, rtol=1e-6)
    freq = frequencies(replay)
    assert_follows(freq, measure)
    assert freq[np.flatnonzero((t == 90) & (stock == 0))[0]] > 3 * np.median(freq)  # the tail bar stands out


def test_a_mixture_is_the_weighted_sum_of_its_parts_over_their_running_means():
    rng = np.random.default_rng(5)
    r = rng.normal(0, 1e-3, (200, 1))
    rarity = Rarity(r, np.array([0]), 8, 40)
    replay = PrioritizedReplay(256, alpha=ALPHA, rng=3, priority="td:0.5,pnl:0.2,rare:0.3", rarity=rarity)
    t1, t2 = np.arange(50, 100), np.arange(100, 150)
    rew1, rew2 = rng.normal(0, 1, 50), rng.normal(0, 3, 50)
    replay.add(transitions(t1, np.zeros(50), rew1))
    replay.add(transitions(t2, np.zeros(50), rew2))
    td = rng.normal(0, 2, 30)
    slots = rng.choice(100, 30, replace=False)
    replay.update_priorities(slots, td)
    # by hand: each part's mean over every value it took; a new transition's td part is the largest |td| seen
    pnl = np.abs(np.r_[rew1, rew2].astype(np.float32)).astype(np.float64)
    rare = brute_force_rarity(r[:, 0], 8, 40)[np.r_[t1, t2]]
    td_part = np.ones(100)  # the largest |td| before any came back
    td_part[slots] = np.abs(td)
    pnl_mean_then = {0: np.abs(rew1.astype(np.float32)).mean(), 1: pnl.mean()}  # when each batch was added
    rare_mean_then = {0: rare[:50].mean(), 1: rare.mean()}
    expected = np.empty(100)
    for i in range(100):
        batch = i // 50
        if i in slots:  # set again when its TD error came back, with the means of that moment
            mix = 0.5 * td_part[i] / np.abs(td).mean() + 0.2 * pnl[i] / pnl.mean() + 0.3 * rare[i] / rare.mean()
        else:  # the td mean was still undefined (1) when it was added
            mix = 0.5 * 1.0 + 0.2 * pnl[i] / pnl_mean_then[batch] + 0.3 * rare[i] / rare_mean_then[batch]
        expected[i] = (mix + EPS) ** ALPHA
    np.testing.assert_allclose(replay.priorities(), expected, rtol=1e-6)
    assert_follows(frequencies(replay), expected ** (1 / ALPHA) - EPS)
    # new transitions start at the largest |td| seen so far in their td part
    replay.add(transitions(np.array([160]), np.zeros(1), np.array([0.0])))
    assert replay._parts["td"][100] == np.abs(td).max()


def test_a_mix_resumes_exactly_from_its_state():
    r = np.random.default_rng(6).normal(0, 1e-3, (200, 1))
    make = lambda: PrioritizedReplay(64, alpha=ALPHA, rng=4, priority="td,rare", rarity=Rarity(r, np.array([0]), 8, 40))  # noqa: E731
    a = make()
    a.add(transitions(np.arange(50, 120), np.zeros(70), np.linspace(-1, 1, 70)))  # wraps: 64 slots
    a.update_priorities(np.arange(10), np.linspace(0, 3, 10))
    b = make()
    b.load_state_dict(a.state_dict())
    for replay in (a, b):
        replay.add(transitions(np.arange(120, 130), np.zeros(10), np.zeros(10)))
        replay.update_priorities(np.arange(5, 15), np.linspace(1, 2, 10))
    np.testing.assert_array_equal(a.priorities(), b.priorities())
    np.testing.assert_array_equal(a.sample(32).indices, b.sample(32).indices)


@pytest.mark.parametrize("spec", ["tdd", "td:0", "td:-1", "td:x", "td,td", "pnl:0.5,", ""])
def test_a_bad_priority_is_one_line(spec):
    cfg = Config()
    cfg.replay.prioritized = True
    cfg.replay.priority = spec
    with pytest.raises(UserError, match="replay.priority"):
        cfg.validate()


def test_priority_grammar_and_it_needs_prioritized_replay():
    assert parse_priority("td") == {"td": 1.0}
    assert parse_priority("td:0.5, rare:0.5") == {"td": 0.5, "rare": 0.5}
    assert parse_priority("pnl,rare:2") == {"pnl": 1.0, "rare": 2.0}
    cfg = Config()
    cfg.replay.priority = "pnl"
    with pytest.raises(UserError, match="prioritized"):
        cfg.validate()
