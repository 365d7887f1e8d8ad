"""n-step transitions built from a worker's per-clock-step decisions.

Replay stores indices into the market panel, never observation windows: a
transition names the clock index ``t`` and the ``stock`` of its observation, the
position held before the decision, and the clock index ``next_t`` of the
bootstrap observation; the learner rebuilds both observations from the panel.

For a decision at ``t`` that looks ``k <= n`` steps ahead::

    reward        = sum_{i<k} gamma^i * r[t+i]
    next_t        = t + k
    next_position = action taken at t+k-1 (the position held at next_t)
    discount      = gamma^k, or 0 if the episode ended within those k steps

so the target is ``reward + discount * max_a Q(obs(next_t, stock, next_position), a)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: dtype of each transition field, shared by the builder and the replay storage.
TRANSITION_DTYPES: dict[str, type[np.generic]] = {
    "t": np.int32,
    "stock": np.int16,
    "position": np.int8,
    "action": np.int8,
    "reward": np.float32,
    "next_t": np.int32,
    "next_position": np.int8,
    "discount": np.float32,
}


class Transitions(NamedTuple):
    """A batch of transitions, one array per field (dtypes in :data:`TRANSITION_DTYPES`)."""

    t: np.ndarray
    stock: np.ndarray
    position: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_t: np.ndarray
    next_position: np.ndarray
    discount: np.ndarray

    @classmethod
    def from_arrays(cls, **fields: np.ndarray) -> Transitions:
        """Build a batch, casting every field to its storage dtype."""
        return cls(**{k: np.asarray(fields[k], dtype=d) for k, d in TRANSITION_DTYPES.items()})

    @classmethod
    def empty(cls) -> Transitions:
        """A batch of zero transitions."""
        return cls(**{k: np.empty(0, dtype=d) for k, d in TRANSITION_DTYPES.items()})

    @property
    def size(self) -> int:
        """Number of transitions in the batch (``len()`` stays the tuple's field count)."""
        return int(self.t.shape[0])


class NStepBuilder:
    """Turns one worker's per-step decisions on its stocks into n-step transitions.

    Holds the last ``n`` steps of every stock in preallocated ring arrays. Each
    :meth:`push` returns the transitions completed by that step: the one started
    ``n - 1`` steps ago for every stock, or, when the step ends the episode, every
    pending one (shorter tails, discount 0).

    Args:
        n: steps of real reward before bootstrapping (1 = one-step DQN).
        gamma: per-step discount.
        n_stocks: number of stocks pushed at every step (fixed for the builder).
    """

    def __init__(self, n: int, gamma: float, n_stocks: int) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if n_stocks < 1:
            raise ValueError(f"n_stocks must be >= 1, got {n_stocks}")
        self.n, self.gamma, self.n_stocks = int(n), float(gamma), int(n_stocks)
        self._t = np.zeros(n, dtype=np.int64)
        self._positions = np.zeros((n, n_stocks), dtype=np.int8)
        self._actions = np.zeros((n, n_stocks), dtype=np.int8)
        self._rewards = np.zeros((n, n_stocks), dtype=np.float64)
        self._stocks: np.ndarray | None = None  # set by the first push, then fixed
        self._pushed_stocks: np.ndarray | None = None  # the read-only array last pushed as stocks, if it was one
        self._head = 0  # ring slot of the oldest pending step
        self._count = 0  # pending steps

    def reset(self) -> None:
        """Drop pending steps (e.g. an episode aborted without ``done``)."""
        self._head = 0
        self._count = 0

    def __len__(self) -> int:
        """Number of pending (not yet emitted) steps."""
        return self._count

    def state_dict(self) -> dict[str, np.ndarray | int | None]:
        """The pending steps, for a checkpoint taken in the middle of an episode."""
        return {
            "t": self._t.copy(), "positions": self._positions.copy(), "actions": self._actions.copy(),
            "rewards": self._rewards.copy(), "stocks": None if self._stocks is None else self._stocks.copy(),
            "head": self._head, "count": self._count,
        }

    def load_state_dict(self, state: dict) -> None:
        if np.shape(state["positions"]) != self._positions.shape:
            raise ValueError(f"n-step state of shape {np.shape(state['positions'])}, builder {self._positions.shape}")
        self._t[:], self._positions[:] = state["t"], state["positions"]
        self._actions[:], self._rewards[:] = state["actions"], state["rewards"]
        self._stocks = None if state["stocks"] is None else np.array(state["stocks"], dtype=np.int16)
        self._head, self._count = int(state["head"]), int(state["count"])

    def push(
        self,
        t: int,
        stocks: np.ndarray,
        positions: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        done: bool,
    ) -> Transitions:
        """Record the decisions of clock step ``t`` for all stocks; return completed transitions.

        Args:
            t: clock index of the observation; consecutive within an episode.
            stocks: panel stock index of each of the ``n_stocks`` columns.
            positions: action index (0/1/2) of the position held before the decision.
            actions: action index taken (the position actually held from ``t`` to ``t+1``).
            rewards: one-step reward of each decision.
            done: True if this was the episode's last decision (no bootstrap after it).
        """
        if self._count and t != self._t[(self._head + self._count - 1) % self.n] + 1:
            prev = self._t[(self._head + self._count - 1) % self.n]
            raise ValueError(f"clock steps must be consecutive within an episode: {prev} then {t}")
        for name, arr in (("stocks", stocks), ("positions", positions), ("actions", actions), ("rewards", rewards)):
            if np.shape(arr) != (self.n_stocks,):
                raise ValueError(f"{name} must have shape ({self.n_stocks},), got {np.shape(arr)}")
        if self._stocks is None:
            self._stocks = np.array(stocks, dtype=np.int16)
        elif stocks is not self._pushed_stocks and not np.array_equal(self._stocks, stocks):
            raise ValueError("a builder's stocks are fixed: push the same stocks at every step")
        # a caller pushes the one array of its stocks at every step (a worker does): compared once, not per step,
        # when nothing can change it (read-only, and its own memory: not a view of a writable array)
        fixed = isinstance(stocks, np.ndarray) and not stocks.flags.writeable and stocks.base is None
        self._pushed_stocks = stocks if fixed else None
        if self.n == 1:  # one-step returns: every step is its own transitions, nothing pending (every clock step)
            S, d = self.n_stocks, TRANSITION_DTYPES
            return Transitions(
                t=np.full(S, t, dtype=d["t"]), stock=self._stocks, position=np.asarray(positions, d["position"]),
                action=np.asarray(actions, d["action"]), reward=np.asarray(rewards, d["reward"]),
                next_t=np.full(S, t + 1, dtype=d["next_t"]), next_position=np.asarray(actions, d["next_position"]),
                discount=np.full(S, 0.0 if done else self.gamma, dtype=d["discount"]),
            )
        slot = (self._head + self._count) % self.n
        self._t[slot] = t
        self._positions[slot] = positions
        self._actions[slot] = actions
        self._rewards[slot] = rewards
        self._count += 1

        if done:
            out = self._emit(self._count, terminal=True)
            self.reset()
            return out
        if self._count == self.n:
            out = self._emit(1, terminal=False)
            self._head = (self._head + 1) % self.n
            self._count -= 1
            return out
        return Transitions.empty()

    def _emit(self, n_starts: int, terminal: bool) -> Transitions:
        """Transitions starting at the ``n_starts`` oldest pending steps, each running to the newest."""
        order = (self._head + np.arange(self._count)) % self.n
        rewards = self._rewards[order]  # [count, S], oldest first
        # discounted reward-to-go from every pending step to the newest, newest first
        returns = np.empty_like(rewards)
        acc = np.zeros(self.n_stocks)
        for i in range(self._count - 1, -1, -1):
            acc = rewards[i] + self.gamma * acc
            returns[i] = acc
        starts = order[:n_starts]
        k = self._count - np.arange(n_starts)  # steps of real reward per start
        last = order[-1]
        next_t = self._t[last] + 1
        discount = np.zeros(n_starts) if terminal else self.gamma ** k.astype(np.float64)
        s = self.n_stocks
        return Transitions.from_arrays(
            t=np.repeat(self._t[starts], s),
            stock=np.tile(self._stocks, n_starts),
            position=self._positions[starts].reshape(-1),
            action=self._actions[starts].reshape(-1),
            reward=returns[:n_starts].reshape(-1),
            next_t=np.full(n_starts * s, next_t),
            next_position=np.tile(self._actions[last], n_starts),
            discount=np.repeat(discount, s),
        )
