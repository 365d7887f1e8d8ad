"""Replay buffers of panel indices: uniform and proportional prioritized (PER).

Both buffers compose one :class:`TransitionStorage` (a circular set of
preallocated arrays, one per transition field) and differ only in how slots are
drawn: uniformly, or in proportion to ``priority^alpha`` through a sum tree with
importance-sampling weights from a min tree (Schaul et al., 2016). A transition
is a handful of integers (see :mod:`parallel_dqn.rl.nstep`), so a buffer of a
million transitions takes about 21 MB.

``state_dict()`` returns only numpy arrays and ints (the RNG state is JSON
encoded into a ``uint8`` array), so a checkpoint can hold it without pickling
objects, and ``load_state_dict`` makes the next samples identical.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import NamedTuple, Protocol

import numpy as np

from parallel_dqn.rl.nstep import TRANSITION_DTYPES, Transitions
from parallel_dqn.rl.priorities import PriorityMix
from parallel_dqn.rl.sumtree import MinTree, SumTree

StateDict = dict[str, np.ndarray | int]
#: the rarity of transitions at bars ``t`` of ``stock`` (see :class:`parallel_dqn.rl.priorities.Rarity`)
RarityFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class ReplaySample(NamedTuple):
    """A sampled batch: the transition fields, IS weights and the buffer slots drawn."""

    t: np.ndarray
    stock: np.ndarray
    position: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_t: np.ndarray
    next_position: np.ndarray
    discount: np.ndarray
    weights: np.ndarray  # float32 importance-sampling weights (ones for uniform replay)
    indices: np.ndarray  # int64 buffer slots, for update_priorities


class ReplayBuffer(Protocol):
    """What a worker needs from a replay buffer (both buffers below satisfy it)."""

    def add(self, transitions: Transitions) -> None: ...
    def sample(self, batch_size: int, group: int = 1) -> ReplaySample: ...
    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None: ...
    def __len__(self) -> int: ...
    def state_dict(self) -> StateDict: ...
    def load_state_dict(self, state: StateDict) -> None: ...


def _as_rng(seed_or_rng: int | np.random.Generator | None) -> np.random.Generator:
    return seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)


def rng_state(rng: np.random.Generator) -> np.ndarray:
    """The generator's state as a uint8 array of its JSON (exact: Python ints are unbounded)."""
    return np.frombuffer(json.dumps(rng.bit_generator.state).encode(), dtype=np.uint8).copy()


def set_rng_state(rng: np.random.Generator, encoded: np.ndarray) -> None:
    rng.bit_generator.state = json.loads(np.asarray(encoded, dtype=np.uint8).tobytes().decode())


class TransitionStorage:
    """Circular storage of up to ``capacity`` transitions in preallocated arrays."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._data = {k: np.zeros(self.capacity, dtype=d) for k, d in TRANSITION_DTYPES.items()}
        self._next = 0  # slot the next transition goes to
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, transitions: Transitions) -> np.ndarray:
        """Write a batch, overwriting the oldest slots when full; return the slots written.

        A batch larger than the capacity keeps only its last ``capacity`` transitions.
        """
        n = transitions.size
        if n == 0:
            return np.empty(0, dtype=np.int64)
        keep = min(n, self.capacity)
        slots = (self._next + np.arange(n - keep, n)) % self.capacity
        for k, arr in zip(transitions._fields, transitions):
            self._data[k][slots] = arr[n - keep :]
        self._next = (self._next + n) % self.capacity
        self._size = min(self._size + n, self.capacity)
        return slots

    def get(self, slots: np.ndarray) -> Transitions:
        """The transitions stored at ``slots`` (copies)."""
        return Transitions(**{k: arr[slots] for k, arr in self._data.items()})

    def state_dict(self) -> StateDict:
        """Arrays of the filled slots plus the write pointer."""
        state: StateDict = {k: arr[: self._size].copy() for k, arr in self._data.items()}
        state.update(capacity=self.capacity, next=self._next, size=self._size)
        return state

    def load_state_dict(self, state: StateDict) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"replay capacity {self.capacity} != saved capacity {int(state['capacity'])}")
        self._size, self._next = int(state["size"]), int(state["next"])
        for k, arr in self._data.items():
            arr[: self._size] = state[k]


class UniformReplay:
    """Replay that draws slots uniformly with replacement."""

    def __init__(self, capacity: int, seed_or_rng: int | np.random.Generator | None = None) -> None:
        self.storage = TransitionStorage(capacity)
        self.rng = _as_rng(seed_or_rng)

    def __len__(self) -> int:
        return len(self.storage)

    def add(self, transitions: Transitions) -> None:
        """Append a batch of transitions."""
        self.storage.add(transitions)

    def sample(self, batch_size: int, group: int = 1) -> ReplaySample:
        """``batch_size`` transitions drawn uniformly, with unit weights: ``batch_size // group`` whole groups
        of ``group`` consecutive slots.

        A worker adds the transitions of its ``group`` stocks at a bar together (the capacity a multiple of
        ``group``), so a group is one bar of its shard: every transition is still drawn with the same
        probability, and the batch needs the windows of only ``batch_size // group`` bars.
        """
        if len(self) == 0:
            raise ValueError("cannot sample an empty replay buffer")
        if batch_size % group or self.storage.capacity % group or len(self) % group:
            raise ValueError(f"groups of {group} need a batch, a capacity and a size that are multiples of it")
        if group == 1:
            slots = self.rng.integers(0, len(self), size=batch_size)
        else:
            groups = self.rng.integers(0, len(self) // group, size=batch_size // group)
            slots = (groups[:, None] * group + np.arange(group)).reshape(-1)
        return ReplaySample(*self.storage.get(slots), np.ones(batch_size, dtype=np.float32), slots)

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """No-op: uniform replay has no priorities."""

    def state_dict(self) -> StateDict:
        return {**self.storage.state_dict(), "rng": rng_state(self.rng)}

    def load_state_dict(self, state: StateDict) -> None:
        self.storage.load_state_dict(state)
        set_rng_state(self.rng, state["rng"])  # type: ignore[arg-type]


class PrioritizedReplay:
    """Proportional prioritized replay (PER) with stratified sampling.

    A slot is drawn with probability ``P(i) = p_i / sum_j p_j`` where
    ``p_i = (|td_i| + eps)^alpha``; new transitions get the largest ``p`` seen so far,
    so each is replayed at least once with high probability. Weights are
    ``(N * P(i))^-beta`` divided by the largest possible weight (that of the
    smallest priority), so they lie in ``(0, 1]``.

    ``priority`` other than ``td`` (see :mod:`parallel_dqn.rl.priorities`): ``p_i = (m_i + eps)^alpha`` with
    ``m_i`` the measure of the mix, set when a transition is added (``pnl``, ``rare``; a ``td`` part starts at the
    largest ``|td|`` seen) and again when its TD error comes back (if the mix has a ``td`` part).

    Args:
        capacity: number of transitions kept.
        alpha: how strongly priorities shape sampling (0 = uniform).
        beta: IS correction exponent; settable, annealed towards 1 by the caller.
        eps: added to ``|td|`` so no transition gets priority 0.
        rng: seed or generator.
        priority: ``replay.priority``: ``td``, ``pnl``, ``rare`` or a mixture.
        rarity: the rarity of transitions (needed by a ``rare`` part).
    """

    def __init__(
        self,
        capacity: int,
        alpha: float = 0.6,
        beta: float = 0.4,
        eps: float = 1e-6,
        rng: int | np.random.Generator | None = None,
        priority: str = "td",
        rarity: RarityFn | None = None,
    ) -> None:
        if alpha < 0 or beta < 0 or eps <= 0:
            raise ValueError(f"need alpha >= 0, beta >= 0, eps > 0; got {alpha}, {beta}, {eps}")
        self.mix = PriorityMix(priority)
        if "rare" in self.mix.parts and rarity is None:
            raise ValueError("a rare priority needs the rarity of the transitions")
        self.rarity = rarity
        # each part's value per slot (the classic td priority needs none: p is all it keeps)
        self._parts = {} if self.mix.is_td else {k: np.zeros(capacity) for k in self.mix.parts}
        self._max_td = 1.0  # a td part's value for new transitions: the largest |td| seen so far
        self.storage = TransitionStorage(capacity)
        self.alpha, self.beta, self.eps = float(alpha), float(beta), float(eps)
        self.rng = _as_rng(rng)
        self._sum = SumTree(capacity)
        self._min = MinTree(capacity)
        self._max_priority = 1.0  # largest p_i = (|td|+eps)^alpha so far

    def __len__(self) -> int:
        return len(self.storage)

    def add(self, transitions: Transitions) -> None:
        """Append a batch of transitions at the maximum priority seen so far (td), or at their measure."""
        slots = self.storage.add(transitions)
        if self.mix.is_td:
            self._set_priorities(slots, self._max_priority)
            return
        kept = slice(transitions.size - len(slots), None)  # an oversized batch keeps its last transitions
        for name, values in self._parts.items():
            if name == "td":
                values[slots] = self._max_td
                continue
            if name == "pnl":
                new = np.abs(transitions.reward[kept].astype(np.float64))
            else:
                new = np.asarray(self.rarity(transitions.t[kept], transitions.stock[kept]), dtype=np.float64)  # type: ignore[misc]
            self.mix.means[name].add(new)
            values[slots] = new
        self._refresh(slots)

    def sample(self, batch_size: int, group: int = 1) -> ReplaySample:
        """``batch_size`` slots drawn in proportion to priority, one per equal-mass segment (each transition has
        its own priority: ``group`` is not used)."""
        if len(self) == 0:
            raise ValueError("cannot sample an empty replay buffer")
        total = self._sum.total()
        prefix = (np.arange(batch_size) + self.rng.random(batch_size)) * (total / batch_size)
        slots = self._sum.find_prefix(prefix)
        return ReplaySample(*self.storage.get(slots), self.weights(slots), slots)

    def weights(self, slots: np.ndarray) -> np.ndarray:
        """Normalized IS weights ``(p_i / p_min)^-beta`` of ``slots`` (float32)."""
        p = np.asarray(self._sum[slots], dtype=np.float64)
        return ((p / self._min.min()) ** -self.beta).astype(np.float32)

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Set the priority of ``indices`` to ``(|td| + eps)^alpha`` (a mix: its td part to ``|td|``; without
        one, nothing changes)."""
        td = np.abs(np.asarray(td_errors, dtype=np.float64).reshape(-1))
        if not self.mix.is_td:
            if "td" in self._parts and td.size:
                slots = np.asarray(indices, dtype=np.int64).reshape(-1)
                self._parts["td"][slots] = td
                self.mix.means["td"].add(td)
                self._max_td = max(self._max_td, float(td.max()))
                self._refresh(slots)
            return
        p = (td + self.eps) ** self.alpha
        self._set_priorities(np.asarray(indices, dtype=np.int64).reshape(-1), p)
        if p.size:
            self._max_priority = max(self._max_priority, float(p.max()))

    def _refresh(self, slots: np.ndarray) -> None:
        """Priorities of ``slots`` from their parts: ``(measure + eps)^alpha``."""
        measure = self.mix.combine({k: v[slots] for k, v in self._parts.items()})
        self._set_priorities(slots, (measure + self.eps) ** self.alpha)

    def _set_priorities(self, slots: np.ndarray, priorities: np.ndarray | float) -> None:
        self._sum.update(slots, priorities)
        self._min.update(slots, priorities)

    def priorities(self) -> np.ndarray:
        """``p_i`` of the filled slots (for inspection and tests)."""
        return self._sum.leaves()[: len(self)]

    def state_dict(self) -> StateDict:
        state: StateDict = {
            **self.storage.state_dict(),
            "rng": rng_state(self.rng),
            "priorities": self.priorities(),
            "max_priority": np.array(self._max_priority),
        }
        if self._parts:  # a mix: each part's values and running mean (the classic td state is unchanged)
            state["max_td"] = np.array(self._max_td)
            for name, values in self._parts.items():
                state[f"part_{name}"] = values[: len(self)].copy()
                state[f"mean_{name}"] = self.mix.means[name].state()
        return state

    def load_state_dict(self, state: StateDict) -> None:
        self.storage.load_state_dict(state)
        set_rng_state(self.rng, state["rng"])  # type: ignore[arg-type]
        self._sum = SumTree(self.storage.capacity)
        self._min = MinTree(self.storage.capacity)
        self._set_priorities(np.arange(len(self)), np.asarray(state["priorities"]))
        self._max_priority = float(np.asarray(state["max_priority"]))
        if self._parts:
            self._max_td = float(np.asarray(state["max_td"]))
            for name, values in self._parts.items():
                values[: len(self)] = state[f"part_{name}"]
                self.mix.means[name].load(np.asarray(state[f"mean_{name}"]))


def make_replay(
    capacity: int, prioritized: bool, alpha: float = 0.6, beta: float = 0.4,
    seed: int | np.random.Generator | None = None, priority: str = "td", rarity: RarityFn | None = None,
) -> UniformReplay | PrioritizedReplay:
    """The replay buffer a worker's config asks for."""
    if prioritized:
        return PrioritizedReplay(capacity, alpha=alpha, beta=beta, rng=seed, priority=priority, rarity=rarity)
    return UniformReplay(capacity, seed)
