"""NStepBuilder against a brute-force n-step computation over whole trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from parallel_dqn.rl.nstep import TRANSITION_DTYPES, NStepBuilder, Transitions


def random_episodes(rng: np.random.Generator, n_stocks: int, lengths: list[int]):
    """Episodes as (t0, positions[L,S], actions[L,S], rewards[L,S]); t restarts at t0 each episode."""
    episodes = []
    for length in lengths:
        t0 = int(rng.integers(0, 50))
        actions = rng.integers(0, 3, size=(length, n_stocks))
        positions = np.vstack([np.ones((1, n_stocks), dtype=np.int64), actions[:-1]])
        episodes.append((t0, positions, actions, rng.normal(size=(length, n_stocks))))
    return episodes


def brute_force(episodes, stocks: np.ndarray, n: int, gamma: float) -> list[tuple]:
    """Rows (t, stock, position, action, next_t, next_position, reward, discount), sorted."""
    out = []
    for t0, positions, actions, rewards in episodes:
        length = len(actions)
        for i in range(length):
            k = min(n, length - i)
            ended = i + k == length  # the last decision of the episode is within the k steps
            for s, stock in enumerate(stocks):
                ret = sum(gamma**j * rewards[i + j, s] for j in range(k))
                out.append((
                    t0 + i, int(stock), int(positions[i, s]), int(actions[i, s]),
                    t0 + i + k, int(actions[i + k - 1, s]), ret, 0.0 if ended else gamma**k,
                ))
    return sorted(out)


def as_rows(tr: Transitions) -> list[tuple]:
    return [
        (int(t), int(s), int(p), int(a), int(nt), int(npos), float(r), float(d))
        for t, s, p, a, r, nt, npos, d in zip(*tr)
    ]


@pytest.mark.parametrize("n", [1, 3, 5])
def test_matches_brute_force(n: int) -> None:
    rng = np.random.default_rng(n)
    gamma, stocks = 0.9, np.array([4, 0, 9])
    episodes = random_episodes(rng, len(stocks), [1, 2, 4, 5, 6, 13])
    builder = NStepBuilder(n, gamma, len(stocks))
    rows: list[tuple] = []
    total = 0
    for t0, positions, actions, rewards in episodes:
        for i in range(len(actions)):
            done = i == len(actions) - 1
            tr = builder.push(t0 + i, stocks, positions[i], actions[i], rewards[i], done)
            assert all(a.dtype == TRANSITION_DTYPES[k] for k, a in zip(tr._fields, tr))
            assert len({a.shape for a in tr}) == 1
            # non-terminal pushes emit exactly one transition per stock once n steps are pending
            if not done:
                assert tr.size == (len(stocks) if i >= n - 1 else 0)
            total += tr.size
            rows += as_rows(tr)
        assert len(builder) == 0
    assert total == len(stocks) * sum(len(e[2]) for e in episodes)  # every decision emitted once
    got, want = np.array(sorted(rows)), np.array(brute_force(episodes, stocks, n, gamma))
    assert got.shape == want.shape
    np.testing.assert_array_equal(got[:, :6], want[:, :6])  # indices, positions, actions
    np.testing.assert_allclose(got[:, 6:], want[:, 6:], rtol=1e-6, atol=1e-6)  # reward, discount


def test_one_step_values_by_hand() -> None:
    b = NStepBuilder(2, 0.5, 1)
    s = np.array([7])
    assert b.push(10, s, np.array([1]), np.array([2]), np.array([1.0]), False).size == 0
    tr = b.push(11, s, np.array([2]), np.array([0]), np.array([2.0]), False)
    assert tr.t.tolist() == [10] and tr.next_t.tolist() == [12] and tr.next_position.tolist() == [0]
    assert tr.reward.tolist() == [2.0] and tr.discount.tolist() == [0.25]
    tr = b.push(12, s, np.array([0]), np.array([1]), np.array([4.0]), True)
    assert tr.t.tolist() == [11, 12] and tr.next_t.tolist() == [13, 13]
    assert tr.reward.tolist() == [4.0, 4.0] and tr.discount.tolist() == [0.0, 0.0]
    assert tr.next_position.tolist() == [1, 1] and tr.stock.tolist() == [7, 7]


def test_reset_and_misuse() -> None:
    b = NStepBuilder(3, 0.9, 2)
    s = np.array([0, 1])
    z = np.zeros(2)
    b.push(0, s, z, z, z, False)
    with pytest.raises(ValueError, match="consecutive"):
        b.push(5, s, z, z, z, False)
    with pytest.raises(ValueError, match="fixed"):
        b.push(1, np.array([1, 2]), z, z, z, False)
    with pytest.raises(ValueError, match="shape"):
        b.push(1, s, np.zeros(3), z, z, False)
    b.reset()
    assert len(b) == 0
    assert b.push(5, s, z, z, z, True).size == 2  # after reset, any t may start an episode


@pytest.mark.parametrize("n", [1, 3])
def test_the_stocks_pushed_are_checked_at_every_step_unless_they_cannot_change(n: int) -> None:
    """A read-only array pushed again is the same stocks (compared once); a writable one changed in place, or
    another array, is caught."""
    z = np.zeros(2)
    fixed = np.array([4, 7])
    fixed.flags.writeable = False
    b = NStepBuilder(n, 0.9, 2)
    b.push(0, fixed, z, z, z, False)
    b.push(1, fixed, z, z, z, False)
    other = np.array([4, 8])
    other.flags.writeable = False
    with pytest.raises(ValueError, match="fixed"):
        b.push(2, other, z, z, z, False)
    mutable = np.array([4, 7])
    b = NStepBuilder(n, 0.9, 2)
    b.push(0, mutable, z, z, z, False)
    mutable[1] = 8
    with pytest.raises(ValueError, match="fixed"):
        b.push(1, mutable, z, z, z, False)
    base = np.array([4, 7])  # a read-only view of a writable array can still change
    view = base[:]
    view.flags.writeable = False
    b = NStepBuilder(n, 0.9, 2)
    b.push(0, view, z, z, z, False)
    base[1] = 8
    with pytest.raises(ValueError, match="fixed"):
        b.push(1, view, z, z, z, False)
