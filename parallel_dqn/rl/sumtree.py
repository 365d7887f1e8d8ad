"""Array-backed segment trees for prioritized replay.

A :class:`SegmentTree` keeps ``op``-reductions of a fixed number of leaves in one
flat array (root at index 1, leaves at ``[size, 2 * size)``, ``size`` a power of
two), so that updating a batch of leaves and reading the reduction are
``O(batch * log capacity)`` numpy operations instead of Python loops.
:class:`SumTree` adds proportional prefix search (sampling in proportion to
priority) and :class:`MinTree` the smallest priority (the largest IS weight).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BinaryOp = Callable[[np.ndarray, np.ndarray], np.ndarray]


class SegmentTree:
    """A complete binary tree over ``capacity`` leaves reduced with ``op``.

    Args:
        capacity: number of leaves that can be set (indices ``0 .. capacity-1``).
        op: associative, commutative elementwise numpy operation (``np.add``, ``np.minimum``).
        neutral: the identity of ``op``; the value of every leaf not yet set.
    """

    def __init__(self, capacity: int, op: BinaryOp, neutral: float) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.size = 1 << (self.capacity - 1).bit_length()  # leaves, a power of two
        self.depth = self.size.bit_length() - 1  # edges from root to leaf
        self._op = op
        self._neutral = float(neutral)
        self._tree = np.full(2 * self.size, self._neutral, dtype=np.float64)

    def update(self, indices: np.ndarray, values: np.ndarray) -> None:
        """Set leaves ``indices`` to ``values`` and refresh their ancestors.

        Duplicate indices are allowed; the last value given for an index wins.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        val = np.broadcast_to(np.asarray(values, dtype=np.float64), idx.shape)
        if idx.size == 0:
            return
        if idx.min() < 0 or idx.max() >= self.capacity:
            raise IndexError(f"leaf index out of range [0, {self.capacity})")
        # keep the last occurrence of each index (fancy assignment order is unspecified)
        rev_unique, rev_pos = np.unique(idx[::-1], return_index=True)
        nodes = rev_unique + self.size
        self._tree[nodes] = val[::-1][rev_pos]
        for _ in range(self.depth):
            nodes = np.unique(nodes >> 1)
            self._tree[nodes] = self._op(self._tree[2 * nodes], self._tree[2 * nodes + 1])

    def reduce(self) -> float:
        """``op`` over all leaves (the root)."""
        return float(self._tree[1])

    def __getitem__(self, indices: int | np.ndarray) -> float | np.ndarray:
        """Leaf value(s) at ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        if np.any(idx < 0) or np.any(idx >= self.capacity):
            raise IndexError(f"leaf index out of range [0, {self.capacity})")
        out = self._tree[idx + self.size]
        return float(out) if out.ndim == 0 else out

    def leaves(self) -> np.ndarray:
        """A copy of the ``capacity`` leaf values."""
        return self._tree[self.size : self.size + self.capacity].copy()


class SumTree(SegmentTree):
    """Sum tree: total priority and the leaf at a given prefix sum."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity, np.add, 0.0)

    def total(self) -> float:
        """Sum of all leaves."""
        return self.reduce()

    def find_prefix(self, prefix_sums: np.ndarray) -> np.ndarray:
        """Leaf ``i`` with ``cumsum[i-1] <= p < cumsum[i]`` for every ``p`` (vectorised).

        ``p`` is clipped into ``[0, total)``. The search only ever enters subtrees of
        positive sum, so a zero-priority leaf is never returned, even when rounding
        in the descent or ``p >= total`` would otherwise step past the last positive leaf.

        Raises:
            ValueError: if the total is not positive (nothing can be sampled).
        """
        if not self.total() > 0.0:
            raise ValueError("cannot search a sum tree whose total is not positive")
        p = np.clip(np.asarray(prefix_sums, dtype=np.float64).reshape(-1), 0.0, None)
        node = np.ones(p.shape, dtype=np.int64)
        tree = self._tree
        for _ in range(self.depth):
            left = tree[2 * node]
            go_right = (p >= left) & (tree[2 * node + 1] > 0.0)
            p = np.where(go_right, p - left, p)
            node = 2 * node + go_right
        return node - self.size


class MinTree(SegmentTree):
    """Min tree: the smallest leaf that has been set (unset leaves are ``+inf``)."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity, np.minimum, np.inf)

    def min(self) -> float:
        """Smallest leaf value; ``inf`` while no leaf is set."""
        return self.reduce()
