"""What a prioritized replay's priorities measure: TD error, PnL impact, rare events, or a mixture.

A transition's priority comes from what it holds, causally:

* ``td``: ``|TD error|`` of its last replay (new transitions: the largest seen so far, as PER does);
* ``pnl``: ``|reward|``, its realised profit or loss after costs (the n-step reward, reward-scaled);
* ``rare``: how unusual the market was at its bar ``t`` (:class:`Rarity`), from returns up to ``t`` only.

One part alone is used as it is. A mixture (``td:0.5,rare:0.5``) divides each part by its running mean over every
value it has taken in the buffer, so that parts measured in different units weigh what their weights say, and
sums them with the weights; a priority is computed when it is set (the mean of that moment), not re-normalised
later, so setting one stays ``O(log capacity)``.
"""

from __future__ import annotations

import numpy as np

from parallel_dqn.config import parse_priority

#: the largest rarity: one bar after a long flat stretch cannot take the whole sample
RARITY_CAP = 100.0


class RunningMean:
    """Mean of every value seen (a sum and a count: exact to resume, independent of how values were batched)."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, values: np.ndarray) -> None:
        self.total += float(np.sum(values, dtype=np.float64))
        self.count += int(np.size(values))

    @property
    def mean(self) -> float:
        """The mean; 1 before any value (or while every value is 0), so it can always divide."""
        return self.total / self.count if self.count and self.total > 0 else 1.0

    def state(self) -> np.ndarray:
        return np.array([self.total, self.count], dtype=np.float64)

    def load(self, state: np.ndarray) -> None:
        self.total, self.count = float(state[0]), int(state[1])


class PriorityMix:
    """The weighted parts of ``replay.priority`` and how they combine into one measure per transition."""

    def __init__(self, spec: str) -> None:
        self.weights = parse_priority(spec)
        self.means = {name: RunningMean() for name in self.weights}

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.weights)

    @property
    def is_td(self) -> bool:
        """TD error alone: the classic PER that existed before the other measures."""
        return self.parts == ("td",)

    def combine(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """The measure of transitions whose parts are ``values``: one part as it is, a mixture as the weighted
        sum of each part over its running mean."""
        if len(self.weights) == 1:
            return np.asarray(values[self.parts[0]], dtype=np.float64)
        return sum(w * np.asarray(values[k], dtype=np.float64) / self.means[k].mean for k, w in self.weights.items())


def trailing_std(x: np.ndarray, window: int, lag: int = 0) -> np.ndarray:
    """Population std of ``x [T, K]`` over the ``window`` rows ending at row ``t - lag`` (fewer at the start; 0
    with fewer than 2), for every ``t``: sums of cumulative sums, O(T K) whatever the window."""
    T = x.shape[0]
    c1 = np.concatenate([np.zeros((1, *x.shape[1:])), np.cumsum(x, axis=0)])
    c2 = np.concatenate([np.zeros((1, *x.shape[1:])), np.cumsum(x * x, axis=0)])
    end = np.arange(T) - lag + 1  # exclusive end of each window
    start = np.clip(end - window, 0, None)
    end = np.clip(end, 0, None)
    n = (end - start).astype(np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (c1[end] - c1[start]) / n
        var = (c2[end] - c2[start]) / n - mean * mean
    return np.where(n >= 2, np.sqrt(np.clip(var, 0.0, None)), 0.0)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, with 0/0 = 1 (nothing moved: nothing is rare) and x/0 = the cap."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    return np.where(den > 0, r, np.where(num > 0, RARITY_CAP, 1.0))


class Rarity:
    """How rare the market was at each bar for a worker's own stocks, from log returns up to that bar.

    With ``r[t]`` a stock's log return into bar ``t``, ``s_L(t)`` the std of the ``long`` returns before ``t``,
    ``s_L'(t)`` that of the ``long`` returns up to ``t`` and ``s_w(t)`` that of the ``short`` returns up to ``t``::

        rarity(t) = min(max(|r[t]| / s_L(t),  s_w(t) / s_L'(t)), RARITY_CAP)

    the larger of the bar's return in units of the trailing spread (a tail return: 3 = a three-sigma bar) and the
    recent volatility relative to the trailing one (a volatility spike: 2 = twice as volatile as usual). Both are
    about 1 in an ordinary bar. The windows: ``market.window`` (what the encoder sees) and ``market.graph_window``.
    """

    def __init__(self, log_returns: np.ndarray, stocks: np.ndarray, short: int, long: int) -> None:
        r = np.nan_to_num(np.asarray(log_returns, dtype=np.float64)[:, stocks])  # [T, own]
        tail = _ratio(np.abs(r), trailing_std(r, long, lag=1))
        spike = _ratio(trailing_std(r, short), trailing_std(r, long))
        self.table = np.minimum(np.maximum(tail, spike), RARITY_CAP)  # [T, own]
        self.stocks = np.asarray(stocks, dtype=np.int64)

    def __call__(self, t: np.ndarray, stock: np.ndarray) -> np.ndarray:
        """The rarity of the transitions at bars ``t`` of (global) ``stock``, both ``[N]``."""
        return self.table[np.asarray(t, dtype=np.int64), np.searchsorted(self.stocks, stock)]
