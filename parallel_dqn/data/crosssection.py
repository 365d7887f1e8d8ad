"""The cross-section: every stock's feature rows on the one market clock.

Each worker featurises only its own stocks; the rows are then exchanged (an
allgather over the workers, in blocks of time) so every worker holds the same
:class:`CrossSection` ``[T, S, F]``. Market data are exogenous, so exchanging
whole periods up front gives every worker exactly what it would see step by
step, and no row carries information from after its own bar.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from parallel_dqn.data.features import (
    N_FEATURES,
    N_SCALED,
    FeatureStats,
    feature_planes,
    neighbour_graph,
    raw_features,
)
from parallel_dqn.data.panel import MarketPanel

# Per stock and bar, the exchanged row holds: the F features, then these.
EXTRA = ("log_return", "close", "tradeable")
ROW_WIDTH = N_FEATURES + len(EXTRA)
#: stocks x clock steps featurised at once by :func:`shard_rows`: big enough that per-call overheads vanish,
#: small enough that the ``[T, stocks, F]`` temporaries stay at about 100 MB
GROUP_CELLS = 2**20
#: blocks of stocks featurised side by side by :func:`shard_rows` (numpy's array operations and pandas' rolling
#: windows release the GIL), for panels of at least :data:`THREAD_CELLS` stock-steps; the blocks then hold
#: GROUP_CELLS / THREADS stock-steps, so the temporaries stay as big in all
THREADS = min(2, os.cpu_count() or 1)
THREAD_CELLS = 2**16


def local_rows(panel: MarketPanel, stats: FeatureStats, raw: np.ndarray | None = None) -> np.ndarray:
    """One worker's exchange rows ``[T, k, ROW_WIDTH]`` (float64) for its own stocks; ``raw``: the panel's
    :func:`raw_features` if they were computed already (fitting the statistics), else computed here."""
    if raw is None:
        raw = raw_features(panel, stats.session_seconds)
    feats = stats.normalise(raw)
    extra = np.stack([panel.log_returns, panel.close, panel.tradeable.astype(np.float64)], axis=-1)
    return np.concatenate([feats.astype(np.float64), extra], axis=-1)


def shard_rows(
    panel: MarketPanel,
    shards: Sequence[Sequence[int]],
    session_seconds: float,
    train_rows: tuple[int, int],
    given: FeatureStats | None = None,
) -> list[tuple[FeatureStats, np.ndarray]]:
    """Each shard's feature statistics and exchange rows ``[T, k, ROW_WIDTH]``, as :func:`local_rows` per shard.

    ``panel`` holds the shards' stocks, one shard after another; ``shards`` are their indices among the
    run's stocks, which pick their rows of ``given`` statistics (a saved model's); without ``given`` each
    stock's are fitted on clock rows ``[train_rows)``. The stocks are featurised in blocks of about
    :data:`GROUP_CELLS` stock-steps, across shard boundaries: one array operation over many stocks instead
    of one per shard, and bounded temporaries however big a shard is (every feature and statistic is per
    stock, so blocking changes no value); big panels' blocks go :data:`THREADS` at a time. A shard's rows are a
    view into one array of all of them.
    """
    T, n = panel.n_steps, panel.n_stocks
    threads = THREADS if n * T >= THREAD_CELLS and n > 1 else 1
    block = max(1, min(GROUP_CELLS // threads // max(T, 1), -(-n // threads)))
    rows = np.empty((T, n, ROW_WIDTH))
    mean, std = np.empty((n, N_SCALED)), np.empty((n, N_SCALED))
    hosted = np.concatenate([np.zeros(0, dtype=np.int64), *[np.asarray(s, dtype=np.int64) for s in shards]])

    def featurise(lo: int) -> None:
        cols = slice(lo, min(n, lo + block))
        part = panel.stocks(cols)
        # the block's rows feature by feature (contiguous planes), as local_rows computes them, then interleaved
        # into the rows: no [T, k, F] float64 and float32 intermediates, no strided writes feature by feature
        planes = feature_planes(part, session_seconds)
        if given is not None:
            stats = FeatureStats(given.mean[hosted[cols]], given.std[hosted[cols]], session_seconds)
        else:
            stats = FeatureStats.fit_planes(planes[:, slice(*train_rows)], session_seconds)
        feats = stats.normalise_planes(planes, out=np.empty(planes.shape, dtype=np.float32))
        rows[:, cols, :N_FEATURES] = np.moveaxis(feats, 0, -1)
        del feats
        extra = np.stack([planes[0], part.close, part.tradeable])  # planes[0]: the 1-bar log return
        rows[:, cols, N_FEATURES:] = np.moveaxis(extra, 0, -1)
        mean[cols], std[cols] = stats.mean, stats.std

    if threads > 1:  # each block writes its own stocks' rows and statistics
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(featurise, range(0, n, block)))
    else:
        for lo in range(0, n, block):
            featurise(lo)
    bounds = np.cumsum([0] + [len(shard) for shard in shards])
    return [
        (FeatureStats(mean[a:b], std[a:b], session_seconds), rows[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])
    ]


@dataclass(frozen=True)
class CrossSection:
    """Everything a worker needs about the market, identical on every worker."""

    symbols: tuple[str, ...]
    timestamps: np.ndarray  # datetime64[ns] UTC [T]
    features: np.ndarray  # float32 [T, S, F], normalised, causal
    log_returns: np.ndarray  # float64 [T, S], r[t] = log(close[t]/close[t-1])
    close: np.ndarray  # float64 [T, S]
    tradeable: np.ndarray  # bool [T, S]
    neighbors: np.ndarray  # int32 [G, S, k]: the stocks each stock attends over, see features.neighbour_graph
    edges: np.ndarray  # float32 [G, S, k, 2]: the correlation graph's two channels for those pairs
    graph_index: np.ndarray  # int64 [T] -> row of the graph in force at t

    @classmethod
    def assemble(
        cls,
        symbols: tuple[str, ...],
        timestamps: np.ndarray,
        parts: list[tuple[np.ndarray, np.ndarray]],
        graph_window: int,
        graph_stamps: np.ndarray,
        neighbors: int | None = None,
    ) -> "CrossSection":
        """Build from every worker's ``(stock indices, rows [T, k, ROW_WIDTH])``; each stock's ``neighbors``
        most related stocks kept in the graph (None: every stock, the dense graph)."""
        T, S = len(timestamps), len(symbols)
        # each worker's rows go straight into the final arrays: no [T, S, ROW_WIDTH] float64 copy of the market
        # (at 500 stocks x a year of minute bars that copy alone is ~6 GB, and the build's peak was several of them)
        features = np.empty((T, S, N_FEATURES), dtype=np.float32)
        log_returns, close = np.empty((T, S)), np.empty((T, S))
        tradeable = np.empty((T, S), dtype=bool)
        seen = np.zeros(S, dtype=bool)
        for stocks, rows in parts:
            features[:, stocks] = rows[:, :, :N_FEATURES]  # cast to float32 as the whole array was before
            log_returns[:, stocks] = rows[:, :, N_FEATURES]
            close[:, stocks] = rows[:, :, N_FEATURES + 1]
            tradeable[:, stocks] = rows[:, :, N_FEATURES + 2] > 0.5
            seen[stocks] = True
        if not seen.all():
            raise RuntimeError(f"no rows for stocks {np.flatnonzero(~seen).tolist()}")
        nbrs, edges, index = neighbour_graph(log_returns, graph_window, graph_stamps, neighbors or S)
        return cls(
            symbols=tuple(symbols),
            timestamps=timestamps,
            features=features,
            log_returns=log_returns,
            close=close,
            tradeable=tradeable,
            neighbors=nbrs,
            edges=edges,
            graph_index=index,
        )

    @property
    def dense_graph(self) -> np.ndarray:
        """float32 ``[G, 2, S, S]``: the kept edges in the dense layout (zero elsewhere), for checks and plots."""
        G, S, _ = self.neighbors.shape
        dense = np.zeros((G, 2, S, S), dtype=np.float32)
        g, i = np.meshgrid(np.arange(G), np.arange(S), indexing="ij")
        for c in range(2):
            dense[g[..., None], c, i[..., None], self.neighbors] = self.edges[..., c]
        return dense

    @property
    def n_stocks(self) -> int:
        return len(self.symbols)

    @property
    def n_steps(self) -> int:
        return len(self.timestamps)
