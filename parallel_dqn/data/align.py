"""Alignment: every selected stock on one market clock.

The market clock is the sorted union of the bar timestamps of all selected stocks, so every
worker steps through the same times and the same episode boundaries.

The fill rule, for a stock with no bar at a clock time:

* after its first bar: a forward-filled bar, open = high = low = close = the stock's last close,
  volume 0, ``tradeable=False``. A whole stock-day without a file gets the same treatment: the
  stock is treated as halted that day, at its last close.
* before its first bar: open = high = low = close = the open of its first bar, volume 0,
  ``tradeable=False``.

Bars that exist are copied unchanged and are ``tradeable=True``. No value is ever filled
from a later bar except the leading fill, whose bars cannot be traded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from parallel_dqn.data.panel import MarketPanel

_FIELDS = ("open", "high", "low", "close", "volume")


def align(
    frames: Mapping[str, pd.DataFrame], symbols: Sequence[str], clock: np.ndarray | None = None
) -> MarketPanel:
    """A :class:`MarketPanel` of ``symbols`` (in that order) on one market clock.

    ``frames`` maps a symbol to its bars in the loader's format: a strictly increasing
    ``DatetimeIndex`` (tz-aware, or naive meaning UTC) and columns open, high, low, close, volume.
    ``clock`` (``datetime64[ns]`` UTC, sorted) is the clock agreed with the other workers, which
    must contain every bar time of these frames; by default, the union of these frames' times.
    """
    if not symbols:
        raise ValueError("align needs at least one symbol")
    bars = {s: _utc_ns_frame(frames[s], s) for s in symbols}
    times = {s: b.index.asi8 for s, b in bars.items()}
    if clock is None:
        clock = _union_sorted(list(times.values()))
    else:
        clock = np.asarray(clock, dtype="datetime64[ns]").view(np.int64)
    shape = (clock.size, len(symbols))
    out = {name: np.empty(shape) for name in _FIELDS}
    tradeable = np.zeros(shape, dtype=bool)
    for j, s in enumerate(symbols):
        rows = np.searchsorted(clock, times[s])
        if rows.size and (rows[-1] >= clock.size or not np.array_equal(clock[rows], times[s])):
            raise ValueError(f"bars of {s} are not all on the given market clock")
        tradeable[rows, j] = True
        for name, column in _fill_column(bars[s], rows, clock.size).items():
            out[name][:, j] = column
    return MarketPanel(
        symbols=tuple(symbols),
        timestamps=clock.view("datetime64[ns]"),
        tradeable=tradeable,
        **out,
    )


def _fill_column(bars: pd.DataFrame, rows: np.ndarray, n_steps: int) -> dict[str, np.ndarray]:
    """One stock's fields on the clock: real bars at ``rows``, the fill rule everywhere else."""
    close = bars["close"].to_numpy(dtype=np.float64)
    # For each clock step, the position (in ``bars``) of the latest real bar at or before it; -1 before the first.
    latest = np.full(n_steps, -1)
    latest[rows] = np.arange(rows.size)
    latest = np.maximum.accumulate(latest)
    fill = np.where(latest >= 0, close[np.maximum(latest, 0)], bars["open"].iat[0])
    columns = {}
    for name in _FIELDS:
        column = np.zeros(n_steps) if name == "volume" else fill.copy()
        column[rows] = bars[name].to_numpy(dtype=np.float64)
        columns[name] = column
    return columns


def _union_sorted(arrays: list[np.ndarray]) -> np.ndarray:
    """Sorted union of sorted int64 arrays (a stable sort merges the sorted runs fast)."""
    merged = np.sort(np.concatenate(arrays), kind="stable")
    return merged[np.r_[True, merged[1:] != merged[:-1]]]


def _utc_ns_frame(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """``frame`` with a UTC, nanosecond index; checks it is non-empty and strictly increasing."""
    if len(frame) == 0:
        raise ValueError(f"no bars for {symbol}: cannot place it on the market clock")
    index = pd.DatetimeIndex(frame.index)
    index = index.tz_convert("UTC") if index.tz is not None else index.tz_localize("UTC")
    index = index.as_unit("ns")
    if not (index.is_monotonic_increasing and index.is_unique):
        raise ValueError(f"bars of {symbol} are not strictly increasing in time")
    return frame.set_axis(index, axis=0)
