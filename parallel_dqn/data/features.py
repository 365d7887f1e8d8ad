"""Causal per-stock features and the rolling cross-stock correlation graph.

Every value at clock step ``t`` is computed from bars at or before ``t`` only
(trailing windows, no centring, no backward fill), and normalisation uses
statistics of the training period alone (:class:`FeatureStats`), so nothing
from the evaluation period, or from after ``t``, leaks into a decision at ``t``.
``tests/test_no_lookahead.py`` proves it by perturbing bars after ``t``.

Features (one row per stock and bar, in :data:`FEATURE_NAMES` order):

* ``ret_1, ret_5, ret_15, ret_60``: log-returns over the last 1/5/15/60 bars;
* ``vol_15, vol_60``: standard deviation of 1-bar log-returns over 15/60 bars;
* ``range``: log(high / low) of the bar;
* ``volume_rel``: log(1 + volume) minus its trailing 60-bar mean;
* ``tod_sin, tod_cos``: time since the day's first bar, as a phase of the session;
* ``first_bar``: 1 on the first bar of a day (its return spans the overnight gap);
* ``tradeable``: 0 where the bar was missing and forward-filled.

The last four are left as they are; the others are z-scored per stock with the
training period's mean and standard deviation and clipped to +-5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

from parallel_dqn.data.panel import MarketPanel

FEATURE_NAMES = (
    "ret_1",
    "ret_5",
    "ret_15",
    "ret_60",
    "vol_15",
    "vol_60",
    "range",
    "volume_rel",
    "tod_sin",
    "tod_cos",
    "first_bar",
    "tradeable",
)
N_FEATURES = len(FEATURE_NAMES)
N_SCALED = 8  # the first N_SCALED features are z-scored; the rest are kept as they are
MAX_LOOKBACK = 60  # bars: the longest trailing window of any feature
CLIP = 5.0


def raw_features(panel: MarketPanel, session_seconds: float | None = None) -> np.ndarray:
    """Unnormalised features ``[T, S, F]`` (float64), each from bars <= t.

    ``session_seconds`` scales the time-of-day phase; by default the median
    length of the panel's days. Pass the training value when featurising other
    periods so the phase means the same thing.
    """
    planes = feature_planes(panel, session_seconds)
    return np.ascontiguousarray(np.moveaxis(planes, 0, -1))  # one interleaving copy: far cheaper than F strided writes


def feature_planes(panel: MarketPanel, session_seconds: float | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """:func:`raw_features`' values feature by feature: float64 ``[F, T, S]``, ``[f]`` = ``raw_features(...)[:, :, f]``.

    ``out``: a float64 ``[F, T, S]`` array (C-contiguous planes) to fill instead of a new one.
    """
    r = panel.log_returns
    T, S = r.shape
    if out is None:
        out = np.empty((N_FEATURES, T, S))
    out[0] = r
    # every stock's column one after another in one series: one pass of pandas' rolling code over all stocks
    rets, places = _stock_after_stock(r), _StockWindows.places(T, S)
    for k, horizon in enumerate((5, 15, 60), start=1):
        out[k] = _per_stock(rets.rolling(_StockWindows(horizon, places), min_periods=1).sum(), (T, S))
    for k, horizon in ((4, 15), (5, 60)):
        out[k] = _per_stock(rets.rolling(_StockWindows(horizon, places), min_periods=2).std(), (T, S))
        out[k][np.isnan(out[k])] = 0.0  # what fillna(0.0) did
    np.log(panel.high / panel.low, out=out[6])
    logv = np.log1p(panel.volume)
    mean_logv = _stock_after_stock(logv).rolling(_StockWindows(60, places), min_periods=1).mean()
    np.subtract(logv, _per_stock(mean_logv, (T, S)), out=out[7])

    elapsed, first = _session_clock(panel.timestamps)
    if session_seconds is None:
        session_seconds = session_length(panel.timestamps)
    phase = 2.0 * np.pi * np.clip(elapsed / max(session_seconds, 1.0), 0.0, 1.0)
    out[8] = np.sin(phase)[:, None]
    out[9] = np.cos(phase)[:, None]
    out[10] = first[:, None]
    out[11] = panel.tradeable
    return out


class _StockWindows(BaseIndexer):
    """pandas' trailing windows of ``window_size`` rows over a series of stocks' columns of ``length`` rows each,
    one after another, that never reach back into the previous stock's column.

    Each window is the one ``Series.rolling(window_size)`` gives within the stock's own column, and pandas'
    rolling code starts afresh at every stock's first row (a window that shares no row with the one before),
    so every value equals, bit for bit, that of ``DataFrame.rolling`` over the ``[T, S]`` frame (column by
    column), in one call instead of one per stock. ``ends`` and ``firsts`` (each row's window end and its
    stock's first row, :meth:`places`) are shared by the windows of every size.
    """

    def __init__(self, window_size: int, places: tuple[np.ndarray, np.ndarray]) -> None:
        super().__init__(window_size=window_size)
        self.ends, self.firsts = places

    @staticmethod
    def places(length: int, stocks: int) -> tuple[np.ndarray, np.ndarray]:
        ends = np.arange(1, length * stocks + 1, dtype=np.int64)
        firsts = np.repeat(np.arange(0, length * stocks, max(length, 1), dtype=np.int64), length)
        return ends, firsts

    def get_window_bounds(self, num_values=0, min_periods=None, center=None, closed=None, step=None):
        return np.maximum(self.ends - self.window_size, self.firsts), self.ends


def _stock_after_stock(values: np.ndarray) -> pd.Series:
    """``[T, S]`` values as one series: stock 0's T values, then stock 1's, ..."""
    return pd.Series(np.ascontiguousarray(values.T).ravel())


def _per_stock(series: pd.Series, shape: tuple[int, int]) -> np.ndarray:
    """:func:`_stock_after_stock` undone: ``[T, S]`` (a view)."""
    return series.to_numpy().reshape(shape[::-1]).T


def _day_starts(timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per clock step: whether it is its day's first bar, and the row of that first bar."""
    days = timestamps.astype("datetime64[D]")
    first = np.ones(len(days), dtype=bool)
    first[1:] = days[1:] != days[:-1]
    return first, np.maximum.accumulate(np.where(first, np.arange(len(days)), 0))


def _session_clock(timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seconds since the day's first bar, and a first-bar-of-day flag, per clock step."""
    ts = timestamps.astype("datetime64[ns]").astype(np.int64)
    first, starts = _day_starts(timestamps)
    elapsed = (ts - ts[starts]) / 1e9
    return elapsed, first.astype(np.float64)


def session_length(timestamps: np.ndarray) -> float:
    """Median seconds from a day's first bar to its last, plus one bar (a session's length)."""
    elapsed, first = _session_clock(timestamps)
    ends = np.r_[np.flatnonzero(first)[1:] - 1, len(elapsed) - 1] if len(elapsed) else np.array([], int)
    if ends.size == 0:
        return 1.0
    spacing = np.median(np.diff(timestamps.astype("datetime64[ns]").astype(np.int64))) / 1e9 if len(elapsed) > 1 else 60.0
    return float(np.median(elapsed[ends]) + spacing)


@dataclass(frozen=True)
class FeatureStats:
    """Per-stock normalisation statistics, fitted on the training period only."""

    mean: np.ndarray  # [S, N_SCALED]
    std: np.ndarray  # [S, N_SCALED]
    session_seconds: float

    @classmethod
    def fit(cls, raw_train: np.ndarray, session_seconds: float) -> FeatureStats:
        """Fit on the training rows of :func:`raw_features` (``[T_train, S, F]``)."""
        scaled = raw_train[:, :, :N_SCALED]
        mean = scaled.mean(axis=0)
        std = scaled.std(axis=0)
        return cls(mean=mean, std=np.where(std > 1e-12, std, 1.0), session_seconds=session_seconds)

    @classmethod
    def fit_planes(cls, planes_train: np.ndarray, session_seconds: float) -> FeatureStats:
        """:meth:`fit` on the training rows of :func:`feature_planes` (``[F, T_train, S]``): the same values, bit
        for bit: numpy sums over the rows one after another, as over ``[T, S, F]``, when the stocks' axis is the
        inner loop; with one stock the rows would be, and numpy would sum them pairwise, so it goes as :meth:`fit`)."""
        if planes_train.shape[2] == 1:
            return cls.fit(np.ascontiguousarray(np.moveaxis(planes_train[:N_SCALED], 0, -1)), session_seconds)
        T, S = planes_train.shape[1:]
        mean, std = np.empty((N_SCALED, S)), np.empty((N_SCALED, S))
        for f in range(N_SCALED):  # np.mean and np.std's steps, the sum of the rows done once for both
            np.add.reduce(planes_train[f], axis=0, out=mean[f])
            np.true_divide(mean[f], T, out=mean[f])
            deviation = planes_train[f] - mean[f]
            np.square(deviation, out=deviation)
            np.add.reduce(deviation, axis=0, out=std[f])
            np.true_divide(std[f], T, out=std[f])
            np.sqrt(std[f], out=std[f])
        mean, std = mean.T, std.T
        return cls(mean=mean, std=np.where(std > 1e-12, std, 1.0), session_seconds=session_seconds)

    def normalise_planes(self, planes: np.ndarray, out: np.ndarray) -> np.ndarray:
        """:meth:`normalise` of :func:`feature_planes` (``[F, T, S]``) into ``out`` (float32 ``[F, T, S]``), the
        same values; ``planes`` are left as they are."""
        for f in range(N_FEATURES):
            if f < N_SCALED:
                z = planes[f] - self.mean[:, f]
                z /= self.std[:, f]
                np.clip(z, -CLIP, CLIP, out=out[f])
            else:
                out[f] = planes[f]
        return out

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        """Z-score and clip the scaled features; float32 ``[T, S, F]``."""
        out = raw.astype(np.float32, copy=True)
        z = (raw[:, :, :N_SCALED] - self.mean[None]) / self.std[None]
        out[:, :, :N_SCALED] = np.clip(z, -CLIP, CLIP)
        return out

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "session_seconds": self.session_seconds}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureStats:
        return cls(np.asarray(d["mean"]), np.asarray(d["std"]), float(d["session_seconds"]))


def graph_stamps(timestamps: np.ndarray, stride: int) -> np.ndarray:
    """Clock rows where the correlation graph is recomputed: every ``stride`` bars from each day's open.

    Tied to the time of day, not to where the loaded range starts, so a run that
    loads a few days of warm-up sees the same graph as one that loaded more.
    """
    _, starts = _day_starts(timestamps)
    return np.flatnonzero((np.arange(len(starts)) - starts) % stride == 0)


def correlation_graph(log_returns: np.ndarray, window: int, stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rolling cross-stock correlation graph, recomputed at the clock rows ``stamps``.

    Returns ``(graph, index)``: ``graph[g, 0, i, j]`` is the correlation of stock
    i's and stock j's 1-bar returns over the ``window`` bars up to ``stamps[g]``,
    and ``graph[g, 1, i, j]`` the correlation of i's return with j's *previous*
    return (how much j leads i: "j informs i"); ``index[t]`` is the graph row in
    force at ``t``, the last one computed at or before ``t`` (so from bars <= t).
    Rows with fewer than 3 bars of history are zero.
    """
    T, S = log_returns.shape
    graph = np.zeros((len(stamps), 2, S, S), dtype=np.float32)
    for g, t in enumerate(stamps):
        lo = max(1, t - window + 1)
        x = log_returns[lo : t + 1]
        if len(x) < 3:
            continue
        graph[g, 0] = _corr(x, x)
        graph[g, 1] = _corr(x[1:], x[:-1])
    index = np.searchsorted(stamps, np.arange(T), side="right") - 1
    return graph, np.maximum(index, 0)


def neighbour_graph(
    log_returns: np.ndarray, window: int, stamps: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The correlation graph kept sparse: each stock's ``k`` most related stocks at every stamp.

    Returns ``(neighbors, edges, index)``: ``neighbors[g, i]`` (int32 ``[G, S, k]``, ascending) are the
    stocks i attends over after stamp ``g``: itself, then the strongest ``max(|same-bar corr|, |lead corr|)``
    of :func:`correlation_graph`'s two channels over the ``window`` bars up to ``stamps[g]`` (ties go to the
    lower index); ``edges[g, i, n]`` (float32 ``[G, S, k, 2]``) are those two channels for the pair
    ``(i, neighbors[g, i, n])``; ``index`` as in :func:`correlation_graph`. With ``k >= S`` every stock is a
    neighbour, in index order: the dense graph, rearranged. Only bars <= the stamp are read, and the dense
    ``S x S`` matrices exist one stamp at a time, so memory is ``O(G * S * k)``.
    """
    T, S = log_returns.shape
    k = min(k, S)
    neighbors = np.zeros((len(stamps), S, k), dtype=np.int32)
    edges = np.zeros((len(stamps), S, k, 2), dtype=np.float32)
    rows = np.arange(S)[:, None]
    # a tiny index-based tie-break makes the chosen set unique (rows without history are all ties)
    tie_break = np.arange(S) * 1e-9
    same, lead, score, work = (np.empty((S, S)) for _ in range(4))  # reused at every stamp
    # one stamp at a time, no threads: OpenBLAS's own threads (the matrix products) and ours would fight for cores
    for g, t in enumerate(stamps):
        lo = max(1, t - window + 1)
        x = log_returns[lo : t + 1]
        if len(x) < 3:
            same[:] = lead[:] = 0.0
        else:  # unclipped: only the kept pairs' values are clipped, below (clipping commutes with picking)
            _corr(x, x, clip=False, out=same, work=work)
            _corr(x[1:], x[:-1], clip=False, out=lead, work=work)
        if k == S:
            chosen = np.broadcast_to(np.arange(S), (S, S))
        else:
            # max(|clip(same)|, |clip(lead)|) - tie_break, in place: clip-then-abs is min(|.|, 1)
            np.abs(same, out=score)
            np.maximum(score, np.abs(lead, out=work), out=score)
            np.minimum(score, 1.0, out=score)
            score -= tie_break
            np.fill_diagonal(score, np.inf)  # a stock always attends over itself
            chosen = _strongest(score, k) if np.isfinite(x).all() else _strongest_plain(score, k)
        neighbors[g] = chosen
        edges[g, :, :, 0] = np.clip(same[rows, chosen], -1.0, 1.0)
        edges[g, :, :, 1] = np.clip(lead[rows, chosen], -1.0, 1.0)
    index = np.searchsorted(stamps, np.arange(T), side="right") - 1
    return neighbors, edges, np.maximum(index, 0)


def _strongest_plain(score: np.ndarray, k: int) -> np.ndarray:
    """The columns of each row's ``k`` largest scores, ascending ``[rows, k]``: what :func:`_strongest` must match."""
    return np.sort(np.argpartition(-score, k - 1, axis=1)[:, :k], axis=1)


def _strongest(score: np.ndarray, k: int) -> np.ndarray:
    """:func:`_strongest_plain`, the same columns, without partitioning every full row (the graph's hot spot).

    A row's k largest scores all reach a cheap lower bound of its k-th largest (the k-th largest of the
    maxima of 2k or more groups of columns: k scores reach it), so only the few columns at or above that bound
    are partitioned. Where the k-th largest is tied, which k of the tied columns the plain partition keeps
    is its own affair: those rows (and rows with NaN, which compare false) are left to it.
    """
    n, m = score.shape
    if m < 4 * k:  # too few columns to gain anything
        return _strongest_plain(score, k)
    # maxima of disjoint groups of columns, by halving the row (an odd last column is left out of the bound)
    maxima = score
    while maxima.shape[1] >= 4 * k:
        half = maxima.shape[1] // 2
        maxima = np.maximum(maxima[:, :half], maxima[:, half : 2 * half])
    groups = maxima.shape[1]  # at least 2k
    bound = np.partition(maxima, groups - k, axis=1)[:, groups - k]
    flat = np.flatnonzero(score >= bound[:, None])  # far faster than a 2-d np.nonzero; row-major all the same
    r, c = np.divmod(flat, m)
    per_row = np.bincount(r, minlength=n)
    if (per_row < k).any():  # only NaN rows fall short
        return _strongest_plain(score, k)
    # each row's candidates side by side, padded with -inf, and their k-th largest: the row's k-th largest
    slot = np.arange(r.size) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    values = score[r, c]
    candidates = np.full((n, int(per_row.max())), -np.inf)
    candidates[r, slot] = values
    kth = np.partition(candidates, candidates.shape[1] - k, axis=1)[:, candidates.shape[1] - k]
    keep = values >= kth[r]
    kept = np.bincount(r[keep], minlength=n)
    if (kept == k).all():  # the candidates go row by row, column by column: ascending columns per row
        return c[keep].reshape(n, k)
    chosen = np.zeros((n, k), dtype=np.int64)
    exact = kept == k
    chosen[exact] = c[keep & exact[r]].reshape(-1, k)
    chosen[~exact] = _strongest_plain(score[~exact], k)
    return chosen


def _corr(
    a: np.ndarray, b: np.ndarray, clip: bool = True, out: np.ndarray | None = None, work: np.ndarray | None = None
) -> np.ndarray:
    """Correlation matrix between the columns of a and the columns of b (0 where a column is flat).

    ``clip=False``: not clipped to [-1, 1] (rounding can take a value just past 1). ``out`` (the result) and
    ``work``: float64 ``[a columns, b columns]`` buffers to reuse, as this runs on S x S matrices at every
    graph stamp.
    """
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    na = np.sqrt((a * a).sum(axis=0))
    nb = np.sqrt((b * b).sum(axis=0))
    c = np.matmul(a.T, b, out=out)
    denom = np.outer(na, nb, out=work)
    if na.min() * nb.min() > 0:  # every product is at least this one: no flat column, no check per pair
        np.divide(c, denom, out=c)
    else:
        flat = ~(denom > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(c, denom, out=c, where=~flat)
        c[flat] = 0.0
    return np.clip(c, -1.0, 1.0, out=c) if clip else c
