"""The vectorised build of the cross-section gives bit for bit what the per-stock, per-stamp steps gave.

Loading many stocks in one pass, aligning them together, featurising shards in groups and picking each
stock's strongest neighbours without partitioning whole rows are all array rewrites of simpler code: each
test here runs the simple form beside the fast one and asks for equal bits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import parallel_dqn.data.crosssection as crosssection
from parallel_dqn.data.align import align, align_bars
from parallel_dqn.data.crosssection import local_rows, shard_rows
from parallel_dqn.data.features import (
    FeatureStats,
    _corr,
    _strongest,
    _strongest_plain,
    feature_planes,
    neighbour_graph,
    raw_features,
    session_length,
)
from parallel_dqn.data.loader import load_bars, load_stock_bars
from parallel_dqn.data.panel import StockBars
from parallel_dqn.data.store import open_store
from parallel_dqn.data.validation import read_days_fast
from tests.conftest import TINY_STOCKS


def _frames(n_stocks: int = 7, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Minute bars over two days; every stock misses a random third of them, some start late."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-01-02 14:30", periods=120, freq="min", tz="UTC").append(
        pd.date_range("2024-01-03 14:30", periods=120, freq="min", tz="UTC")
    )
    frames = {}
    for s in range(n_stocks):
        keep = np.sort(rng.choice(len(times), size=160, replace=False))[s:]
        close = 50 * np.exp(np.cumsum(rng.normal(0, 1e-3, keep.size)))
        frames[f"S{s}"] = pd.DataFrame(
            {"open": close * 1.001, "high": close * 1.002, "low": close * 0.998, "close": close,
             "volume": rng.integers(0, 1000, keep.size).astype(float)},
            index=pd.DatetimeIndex(times[keep], name="timestamp"),
        )
    return frames


def _panels_equal(a, b) -> None:
    assert a.symbols == b.symbols
    for name in ("timestamps", "open", "high", "low", "close", "volume", "tradeable"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_aligning_all_stocks_at_once_equals_one_stock_at_a_time():
    frames = _frames()
    symbols = list(frames)
    together = align(frames, symbols)
    for j, s in enumerate(symbols):
        alone = align({s: frames[s]}, [s], clock=together.timestamps)
        for name in ("open", "high", "low", "close", "volume", "tradeable"):
            assert np.array_equal(getattr(together, name)[:, j], getattr(alone, name)[:, 0]), (s, name)


def test_align_names_the_first_stock_in_order_that_is_wrong():
    frames = _frames(3)
    frames["S1"] = frames["S1"].iloc[::-1]
    frames["S2"] = frames["S2"].iloc[:0]
    with pytest.raises(ValueError, match="bars of S1 are not strictly increasing"):
        align(frames, list(frames))
    with pytest.raises(ValueError, match="no bars for S2"):
        align(frames, ["S0", "S2", "S1"])
    off = _frames(2)
    with pytest.raises(ValueError, match="bars of S1 are not all on the given market clock"):
        align(off, ["S0", "S1"], clock=off["S0"].index.tz_localize(None).to_numpy("datetime64[ns]"))


def test_loading_many_stocks_in_one_pass_equals_one_stock_at_a_time(tiny_market):
    store = open_store(str(tiny_market))
    days = store.list_days(TINY_STOCKS[0])
    bars = load_stock_bars(store, TINY_STOCKS, days[0], days[-1])
    frames = load_bars(store, TINY_STOCKS, days[0], days[-1])
    assert list(frames) == list(TINY_STOCKS)
    for s in TINY_STOCKS:
        own = store.list_days(s, days[0], days[-1])
        alone = read_days_fast([store.fetch(s, d) for d in own], own)
        pd.testing.assert_frame_equal(frames[s], alone, check_freq=False)
    _panels_equal(align_bars(bars), align(frames, TINY_STOCKS))
    _panels_equal(align_bars(StockBars.from_frames(frames, TINY_STOCKS)), align_bars(bars))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("given", [False, True])
def test_shards_featurised_in_groups_equal_shards_featurised_alone(monkeypatch, given, threads):
    frames = _frames(9)
    symbols = list(frames)
    panel = align(frames, symbols)
    shards = [[0, 1], [2], [3, 4, 5], [6], [7, 8]]
    session, train = session_length(panel.timestamps[:150]), (0, 150)
    saved = FeatureStats(np.arange(9 * 8.0).reshape(9, 8), np.linspace(1, 2, 72).reshape(9, 8), session)
    monkeypatch.setattr(crosssection, "GROUP_CELLS", 3 * threads * panel.n_steps)  # groups of up to 3 stocks
    monkeypatch.setattr(crosssection, "THREADS", threads)  # featurised side by side
    monkeypatch.setattr(crosssection, "THREAD_CELLS", 1)
    grouped = shard_rows(panel, shards, session, train, saved if given else None)
    for shard, (stats, rows) in zip(shards, grouped):
        alone = align(frames, [symbols[i] for i in shard], clock=panel.timestamps)
        raw = raw_features(alone, session)
        if given:
            expected = FeatureStats(saved.mean[shard], saved.std[shard], session)
        else:
            expected = FeatureStats.fit(raw[slice(*train)], session)
        assert np.array_equal(stats.mean, expected.mean) and np.array_equal(stats.std, expected.std)
        assert np.array_equal(rows, local_rows(alone, expected, raw))


def _raw_features_before(panel, session_seconds):
    """raw_features as it was: pandas' rolling windows over the [T, S] frame, stock by stock, written feature by feature."""
    r = panel.log_returns
    out = np.zeros((*r.shape, 12))
    rets = pd.DataFrame(r)
    out[:, :, 0] = r
    for k, horizon in enumerate((5, 15, 60), start=1):
        out[:, :, k] = rets.rolling(horizon, min_periods=1).sum().to_numpy()
    for k, horizon in ((4, 15), (5, 60)):
        out[:, :, k] = rets.rolling(horizon, min_periods=2).std().fillna(0.0).to_numpy()
    out[:, :, 6] = np.log(panel.high / panel.low)
    logv = pd.DataFrame(np.log1p(panel.volume))
    out[:, :, 7] = (logv - logv.rolling(60, min_periods=1).mean()).to_numpy()
    out[:, :, 8:] = raw_features(panel, session_seconds)[:, :, 8:]  # the clock's features: not rolling windows
    return out


@pytest.mark.parametrize("n_stocks, seed", [(1, 0), (9, 1), (30, 2)])
def test_rolling_features_of_all_stocks_in_one_series_equal_the_frame_stock_by_stock(n_stocks, seed):
    frames = _frames(n_stocks, seed)  # gaps, late starts: forward-filled bars, zero returns
    for name in list(frames)[::3]:  # and a flat stretch: runs of equal values in the rolling windows
        frames[name].iloc[20:90, :4] = frames[name]["close"].iloc[20]
    panel = align(frames, list(frames))
    session = session_length(panel.timestamps)
    raw = raw_features(panel, session)
    assert raw.flags.c_contiguous and np.array_equal(raw, _raw_features_before(panel, session))
    planes = feature_planes(panel, session)
    assert np.array_equal(np.moveaxis(planes, 0, -1), raw)
    for train in ((0, 240), (30, 170), (0, 5)):
        fitted, from_planes = FeatureStats.fit(raw[slice(*train)], session), FeatureStats.fit_planes(
            planes[:, slice(*train)], session
        )
        assert np.array_equal(fitted.mean, from_planes.mean) and np.array_equal(fitted.std, from_planes.std)
        normalised = from_planes.normalise_planes(planes, out=np.empty(planes.shape, dtype=np.float32))
        assert np.array_equal(np.moveaxis(normalised, 0, -1), fitted.normalise(raw))


def _graph_before(log_returns: np.ndarray, window: int, stamps: np.ndarray, k: int):
    """neighbour_graph as it was: whole matrices clipped, whole rows partitioned."""
    T, S = log_returns.shape
    k = min(k, S)
    neighbors = np.zeros((len(stamps), S, k), dtype=np.int32)
    edges = np.zeros((len(stamps), S, k, 2), dtype=np.float32)
    rows = np.arange(S)[:, None]
    tie_break = np.arange(S)[None, :] * 1e-9
    for g, t in enumerate(stamps):
        x = log_returns[max(1, t - window + 1) : t + 1]
        same, lead = (np.zeros((S, S)),) * 2 if len(x) < 3 else (_corr(x, x), _corr(x[1:], x[:-1]))
        if k == S:
            chosen = np.broadcast_to(np.arange(S), (S, S))
        else:
            score = np.maximum(np.abs(same), np.abs(lead)) - tie_break
            np.fill_diagonal(score, np.inf)
            chosen = np.sort(np.argpartition(-score, k - 1, axis=1)[:, :k], axis=1)
        neighbors[g] = chosen
        edges[g, :, :, 0] = same[rows, chosen]
        edges[g, :, :, 1] = lead[rows, chosen]
    return neighbors, edges


@pytest.mark.parametrize("S, k", [(60, 4), (60, 60), (200, 16), (40, 16)])
def test_neighbour_graph_equals_the_plain_per_stamp_graph(S, k):
    rng = np.random.default_rng(S + k)
    r = rng.normal(0, 1e-3, (300, S)) + rng.normal(0, 1e-3, (300, 1)) * rng.random(S)
    r[:, 3] = 0.0  # a flat stock: correlations 0
    r[100:140, 5] = r[100:140, 6]  # two identical stocks for a while: correlations of exactly 1
    r[200, 7] = np.nan  # a hole: NaN correlations for the windows that hold it
    stamps = np.arange(0, 300, 5)
    neighbors, edges, _ = neighbour_graph(r, 40, stamps, k)
    before = _graph_before(r, 40, stamps, k)
    assert np.array_equal(neighbors, before[0])
    assert np.array_equal(edges, before[1], equal_nan=True)


def test_strongest_columns_equal_the_plain_partition_also_with_ties():
    rng = np.random.default_rng(1)
    score = rng.random((300, 300))
    score[:50] = np.round(score[:50], 1)  # many ties, also at the k-th largest
    score[50, :] = 0.5  # a row of ties
    score[51, 7] = np.nan
    np.fill_diagonal(score, np.inf)
    for k in (1, 2, 16, 40):
        assert np.array_equal(_strongest(score, k), _strongest_plain(score, k)), k
