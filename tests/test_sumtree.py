"""SumTree / MinTree against brute force (numpy cumsum, searchsorted, min)."""

from __future__ import annotations

import numpy as np
import pytest

from parallel_dqn.rl.sumtree import MinTree, SumTree


def brute_prefix(values: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """Leaf i with cumsum[i-1] <= p < cumsum[i]."""
    return np.searchsorted(np.cumsum(values), prefix, side="right")


@pytest.mark.parametrize("capacity", [1, 2, 7, 64, 100])
def test_random_updates_match_brute_force(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    tree, mins = SumTree(capacity), MinTree(capacity)
    values = np.zeros(capacity)
    is_set = np.zeros(capacity, dtype=bool)
    for _ in range(30):
        idx = rng.integers(0, capacity, size=rng.integers(1, 2 * capacity + 1))
        val = rng.random(idx.size) * (rng.random(idx.size) > 0.3)  # ~30% zero priorities
        tree.update(idx, val)
        mins.update(idx, val)
        for i, v in zip(idx, val):  # sequential semantics: last write wins
            values[i] = v
        np.testing.assert_allclose(tree.total(), values.sum(), rtol=1e-12)
        np.testing.assert_array_equal(tree.leaves(), values)
        np.testing.assert_array_equal(tree[np.arange(capacity)], values)
        is_set[idx] = True
        assert mins.min() == values[is_set].min()
        if values.sum() > 0:
            p = rng.random(500) * values.sum()
            got = tree.find_prefix(p)
            np.testing.assert_array_equal(got, brute_prefix(values, p))
            assert np.all(values[got] > 0)


def test_min_tree_tracks_set_leaves_only() -> None:
    mins = MinTree(10)
    assert mins.min() == np.inf
    mins.update(np.array([3, 7]), np.array([0.5, 0.2]))
    assert mins.min() == 0.2
    mins.update(np.array([7]), np.array([0.9]))
    assert mins.min() == 0.5
    assert mins[7] == 0.9


def test_zero_priority_leaves_are_never_found_at_edges() -> None:
    # integer values: cumsums are exact, so boundaries can be tested exactly
    values = np.array([0, 2, 0, 0, 3, 1, 0, 0, 0], dtype=float)  # capacity 9 -> 16 leaves, 7 padding
    tree = SumTree(values.size)
    tree.update(np.arange(values.size), values)
    cs = np.cumsum(values)
    edges = np.array([0.0, 1.999, 2.0, 4.999, 5.0, 5.5, np.nextafter(6.0, 0.0)])
    np.testing.assert_array_equal(tree.find_prefix(edges), [1, 1, 4, 4, 5, 5, 5])
    np.testing.assert_array_equal(tree.find_prefix(edges), brute_prefix(values, edges))
    assert cs[-1] == tree.total() == 6.0
    # out-of-range prefixes are clipped to the first / last positive leaf, never a zero leaf
    np.testing.assert_array_equal(tree.find_prefix(np.array([-1.0, 6.0, 1e9])), [1, 5, 5])


def test_all_prefixes_hit_positive_leaves_only() -> None:
    rng = np.random.default_rng(0)
    values = rng.random(1000) * (rng.random(1000) < 0.05)
    tree = SumTree(values.size)
    tree.update(np.arange(values.size), values)
    p = rng.random(10_000) * tree.total()
    np.testing.assert_array_equal(tree.find_prefix(p), brute_prefix(values, p))
    grid = np.linspace(0.0, tree.total(), 1001)  # includes p == total
    assert np.all(values[tree.find_prefix(grid)] > 0)


def test_errors() -> None:
    tree = SumTree(4)
    with pytest.raises(ValueError):
        tree.find_prefix(np.array([0.0]))  # total 0: nothing to sample
    with pytest.raises(IndexError):
        tree.update(np.array([4]), np.array([1.0]))
    with pytest.raises(IndexError):
        tree[-1]
    with pytest.raises(ValueError):
        SumTree(0)
