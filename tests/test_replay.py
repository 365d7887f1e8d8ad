"""Uniform and prioritized replay: storage, sampling law, IS weights, exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from parallel_dqn.rl.nstep import Transitions
from parallel_dqn.rl.replay import (
    PrioritizedReplay,
    ReplaySample,
    TransitionStorage,
    UniformReplay,
    make_replay,
)
from parallel_dqn.rl.schedules import LinearSchedule


def batch(first: int, n: int) -> Transitions:
    """n transitions whose t = first .. first+n-1 identifies them."""
    t = np.arange(first, first + n)
    return Transitions.from_arrays(
        t=t, stock=t % 5, position=t % 3, action=(t + 1) % 3, reward=t * 0.5,
        next_t=t + 1, next_position=(t + 1) % 3, discount=np.full(n, 0.9),
    )


def test_sample_fields() -> None:
    assert ReplaySample._fields[:8] == Transitions._fields
    rb = UniformReplay(8, 0)
    rb.add(batch(0, 5))
    s = rb.sample(16)
    assert s.weights.dtype == np.float32 and np.all(s.weights == 1)
    assert s.t.dtype == np.int32 and s.stock.dtype == np.int16 and s.action.dtype == np.int8
    assert s.reward.dtype == np.float32 and s.discount.dtype == np.float32
    np.testing.assert_array_equal(s.t, s.indices)  # slot i holds t = i
    np.testing.assert_allclose(s.reward, s.t * 0.5)
    np.testing.assert_array_equal(s.stock, s.t % 5)


def test_storage_wraps() -> None:
    st = TransitionStorage(5)
    assert st.add(batch(0, 3)).tolist() == [0, 1, 2]
    assert st.add(batch(3, 4)).tolist() == [3, 4, 0, 1]  # wraps
    assert len(st) == 5
    assert st.get(np.arange(5)).t.tolist() == [5, 6, 2, 3, 4]
    assert st.add(batch(7, 12)).tolist() == [4, 0, 1, 2, 3]  # oversized: keeps the last 5
    assert sorted(st.get(np.arange(5)).t.tolist()) == [14, 15, 16, 17, 18]
    assert st.add(Transitions.empty()).size == 0 and len(st) == 5


def test_uniform_samples_only_filled_slots() -> None:
    rb = UniformReplay(100, 1)
    with pytest.raises(ValueError):
        rb.sample(4)
    rb.add(batch(0, 10))
    s = rb.sample(5000)
    assert set(s.indices.tolist()) == set(range(10))
    rb.update_priorities(s.indices, np.ones(5000))  # no-op


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = counts.sum() * probs
    return float(((counts - expected) ** 2 / expected).sum())


def test_per_frequencies_follow_priorities() -> None:
    n, alpha = 20, 0.7
    rb = PrioritizedReplay(32, alpha=alpha, beta=0.5, rng=0)
    rb.add(batch(0, n))
    td = np.linspace(0.05, 3.0, n)
    rb.update_priorities(np.arange(n), -td)  # sign of the TD error is irrelevant
    probs = (td + rb.eps) ** alpha
    probs /= probs.sum()
    counts = np.zeros(n)
    for _ in range(400):
        np.add.at(counts, rb.sample(64).indices, 1)
    dof = n - 1
    limit = dof + 6 * np.sqrt(2 * dof)  # generous, but ...
    assert chi_square(counts, probs) < limit
    wrong_alpha = (td + rb.eps) ** (alpha - 0.1)
    assert chi_square(counts, wrong_alpha / wrong_alpha.sum()) > limit  # ... a slightly wrong law fails
    assert chi_square(counts, np.full(n, 1 / n)) > 50 * limit
    assert counts.min() > 0


def test_per_weights_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    rb = PrioritizedReplay(16, alpha=0.6, beta=0.4, eps=1e-3, rng=rng)
    rb.add(batch(0, 12))
    td = rng.normal(size=12) * 2
    rb.update_priorities(np.arange(12), td)
    rb.add(batch(12, 2))  # new transitions get the max priority so far
    p = np.concatenate([(np.abs(td) + 1e-3) ** 0.6, np.full(2, max(1.0, ((np.abs(td) + 1e-3) ** 0.6).max()))])
    np.testing.assert_allclose(rb.priorities(), p, rtol=1e-12)
    for beta in (0.4, 1.0):
        rb.beta = beta
        s = rb.sample(50)
        big_n, probs = len(p), p / p.sum()
        w = (big_n * probs[s.indices]) ** -beta / ((big_n * probs) ** -beta).max()
        np.testing.assert_allclose(s.weights, w, rtol=1e-5)
        assert s.weights.dtype == np.float32 and s.weights.max() <= 1.0


def test_per_overwritten_slots_take_max_priority() -> None:
    rb = PrioritizedReplay(4, rng=0)
    rb.add(batch(0, 4))
    rb.update_priorities(np.arange(4), np.array([0.0, 0.0, 0.0, 10.0]))
    rb.add(batch(4, 1))  # overwrites slot 0
    top = (10.0 + rb.eps) ** rb.alpha
    np.testing.assert_allclose(rb.priorities(), [top, *rb.priorities()[1:3], top])


@pytest.mark.parametrize("prioritized", [False, True])
def test_state_dict_round_trip(prioritized: bool) -> None:
    rb = make_replay(50, prioritized, alpha=0.6, beta=0.4, seed=7)
    rb.add(batch(0, 80))  # wrapped
    s = rb.sample(10)
    rb.update_priorities(s.indices, np.arange(10.0))
    state = rb.state_dict()
    assert all(isinstance(v, (np.ndarray, int)) for v in state.values())
    expected = [rb.sample(32) for _ in range(3)]
    clone = make_replay(50, prioritized, alpha=0.6, beta=0.4, seed=123)
    clone.load_state_dict(state)
    assert len(clone) == len(rb)
    for want in expected:
        got = clone.sample(32)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    # both continue identically after more adds
    for buf in (rb, clone):
        buf.add(batch(100, 7))
    for a, b in zip(rb.sample(16), clone.sample(16)):
        np.testing.assert_array_equal(a, b)


def test_make_replay_and_capacity_check() -> None:
    assert isinstance(make_replay(10, False, seed=0), UniformReplay)
    per = make_replay(10, True, alpha=0.5, beta=0.3, seed=0)
    assert isinstance(per, PrioritizedReplay) and (per.alpha, per.beta) == (0.5, 0.3)
    with pytest.raises(ValueError, match="capacity"):
        make_replay(11, False).load_state_dict(make_replay(10, False).state_dict())


def test_linear_schedule() -> None:
    eps = LinearSchedule(1.0, 0.1, 10)
    assert [eps(s) for s in (-5, 0, 5, 10, 1000)] == pytest.approx([1.0, 1.0, 0.55, 0.1, 0.1])
    assert LinearSchedule(0.4, 1.0, 0)(0) == 1.0
