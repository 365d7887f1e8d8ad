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

from parallel_dqn.data.panel import BAR_FIELDS, MarketPanel, StockBars


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
    return align_bars(StockBars.from_frames(frames, symbols), clock)


def align_bars(bars: StockBars, clock: np.ndarray | None = None) -> MarketPanel:
    """:func:`align` for bars already loaded as flat arrays: every stock at once, with array operations.

    ``clock`` as in :func:`align`; ValueError names the first stock without bars, with bars out of
    order, or with a bar off the given clock.
    """
    symbols, times = bars.symbols, bars.timestamps
    if not symbols:
        raise ValueError("align needs at least one symbol")
    counts = np.diff(bars.bounds)
    stock = np.repeat(np.arange(len(symbols)), counts)  # the stock of every bar
    empty = counts == 0
    back = (np.diff(times) <= 0) & (stock[1:] == stock[:-1])  # a step back in time within a stock
    unordered = np.zeros(len(symbols), dtype=bool)
    unordered[stock[1:][back]] = True
    if (empty | unordered).any():  # the first stock in order with either problem
        s = int(np.argmax(empty | unordered))
        if empty[s]:
            raise ValueError(f"no bars for {symbols[s]}: cannot place it on the market clock")
        raise ValueError(f"bars of {symbols[s]} are not strictly increasing in time")
    if clock is None:
        clock = np.unique(times)
    else:
        clock = np.asarray(clock, dtype="datetime64[ns]").view(np.int64)
    rows = np.searchsorted(clock, times)
    on_clock = rows < clock.size
    on_clock[on_clock] = clock[rows[on_clock]] == times[on_clock]
    if not on_clock.all():
        raise ValueError(f"bars of {symbols[stock[int(np.argmin(on_clock))]]} are not all on the given market clock")
    # Built stock by stock (``[S, T]``, where every stock's bars land in ascending places), then turned to
    # ``[T, S]``: writes in order, and the fill is a running count rather than a running maximum across stocks.
    T, S = clock.size, len(symbols)
    place = stock * T + rows
    seen = np.zeros(S * T, dtype=bool)
    seen[place] = True
    # For each stock and clock step, the row (in ``bars``) of the stock's latest real bar at or before it: bars
    # are stock after stock in time order, so that is the count of real bars up to there, less one; below the
    # stock's first row (``bounds``) before its first bar
    latest = np.cumsum(seen).reshape(S, T)
    latest -= 1
    fill = bars.close[np.maximum(latest, 0)]
    np.copyto(fill, bars.open[bars.bounds[:-1]][:, None], where=latest < bars.bounds[:-1, None])
    del latest
    out = {}
    for name in BAR_FIELDS:
        # the prices start from the fill (close, the last of them, takes it over), the volume from 0
        column = np.zeros((S, T)) if name == "volume" else fill if name == "close" else fill.copy()
        column.reshape(-1)[place] = getattr(bars, name)
        out[name] = np.ascontiguousarray(column.T)
    tradeable = np.ascontiguousarray(seen.reshape(S, T).T)
    return MarketPanel(
        symbols=tuple(symbols),
        timestamps=clock.view("datetime64[ns]"),
        tradeable=tradeable,
        **out,
    )
