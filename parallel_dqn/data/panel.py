"""The market panel: every selected stock on one global clock.

A :class:`MarketPanel` is what alignment produces and what everything downstream
(features, environments, workers, baselines) consumes. Arrays are indexed
``[t, s]``: ``t`` is a position on the market clock (one bar), ``s`` a stock in
``symbols`` order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MarketPanel:
    """Aligned OHLCV bars of S stocks over T clock steps.

    Attributes:
        symbols: stock symbols, in column order.
        timestamps: ``datetime64[ns]`` bar timestamps in UTC, shape ``[T]``, strictly increasing.
        open, high, low, close, volume: float64 arrays ``[T, S]``.
        tradeable: bool ``[T, S]``; False where the bar was missing and forward-filled
            (price = last close, volume 0). A position cannot be changed on such a bar.
    """

    symbols: tuple[str, ...]
    timestamps: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    tradeable: np.ndarray

    @property
    def n_steps(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def n_stocks(self) -> int:
        return len(self.symbols)

    @property
    def log_returns(self) -> np.ndarray:
        """``r[t, s] = log(close[t] / close[t-1])``, with ``r[0] = 0``. Shape ``[T, S]``."""
        r = np.zeros_like(self.close)
        r[1:] = np.log(self.close[1:] / self.close[:-1])
        return r

    @property
    def dates(self) -> np.ndarray:
        """The UTC calendar date of every bar, ``datetime64[D]``, shape ``[T]``."""
        return self.timestamps.astype("datetime64[D]")

    def bars_per_day(self) -> float:
        """Median number of bars per trading day: the basis for annualisation."""
        return bars_per_day(self.timestamps)

    def index_of_dates(self, start: str | np.datetime64, end: str | np.datetime64) -> slice:
        """Clock positions whose date lies in ``[start, end]`` (inclusive), as a slice."""
        d = self.dates
        lo = int(np.searchsorted(d, np.datetime64(start, "D"), side="left"))
        hi = int(np.searchsorted(d, np.datetime64(end, "D"), side="right"))
        return slice(lo, hi)

    def select(self, rows: slice) -> "MarketPanel":
        """A panel restricted to a range of clock positions."""
        return MarketPanel(
            symbols=self.symbols,
            timestamps=self.timestamps[rows],
            open=self.open[rows],
            high=self.high[rows],
            low=self.low[rows],
            close=self.close[rows],
            volume=self.volume[rows],
            tradeable=self.tradeable[rows],
        )


def bars_per_day(timestamps: np.ndarray) -> float:
    """Median number of bars per UTC day of a clock (1.0 for an empty one)."""
    _, counts = np.unique(timestamps.astype("datetime64[D]"), return_counts=True)
    return float(np.median(counts)) if counts.size else 1.0
