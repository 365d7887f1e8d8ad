"""The market panel: every selected stock on one global clock.

A :class:`MarketPanel` is what alignment produces and what everything downstream
(features, environments, workers, baselines) consumes. Arrays are indexed
``[t, s]``: ``t`` is a position on the market clock (one bar), ``s`` a stock in
``symbols`` order. :class:`StockBars` is what alignment starts from: the loaded
bars of many stocks, each on its own times.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

BAR_FIELDS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class StockBars:
    """The bars of several stocks before alignment, stock after stock, each stock's in time order.

    Flat arrays rather than one frame per stock, so that loading, checking and aligning many
    stocks are a few array operations instead of a Python pass per stock.

    Attributes:
        symbols: the stocks, in order.
        bounds: int64 ``[S + 1]``; stock ``s``'s bars are rows ``bounds[s]:bounds[s + 1]``.
        timestamps: int64 ``[N]``, UTC nanoseconds.
        open, high, low, close, volume: float64 ``[N]``.
    """

    symbols: tuple[str, ...]
    bounds: np.ndarray
    timestamps: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def frames(self) -> dict[str, pd.DataFrame]:
        """Each stock's bars in the loader's frame format (UTC ``timestamp`` index in ns, float64 OHLCV columns)."""
        out = {}
        for s, symbol in enumerate(self.symbols):
            rows = slice(int(self.bounds[s]), int(self.bounds[s + 1]))
            index = pd.DatetimeIndex(self.timestamps[rows].view("datetime64[ns]"), name="timestamp")
            out[symbol] = pd.DataFrame({n: getattr(self, n)[rows] for n in BAR_FIELDS}, index=index.tz_localize("UTC"))
        return out

    @classmethod
    def from_frames(cls, frames: Mapping[str, pd.DataFrame], symbols: Sequence[str]) -> StockBars:
        """``symbols``' frames (a ``DatetimeIndex``, tz-aware or naive meaning UTC; OHLCV columns) as flat arrays."""
        times = [_utc_ns(frames[s].index) for s in symbols]
        bounds = np.r_[0, np.cumsum([len(t) for t in times], dtype=np.int64)]
        # a leading empty array: no symbols gives empty columns, not an error
        columns = {
            name: np.concatenate([np.zeros(0)] + [frames[s][name].to_numpy(dtype=np.float64) for s in symbols])
            for name in BAR_FIELDS
        }
        stamps = np.concatenate([np.zeros(0, dtype=np.int64), *times])
        return cls(symbols=tuple(symbols), bounds=bounds, timestamps=stamps, **columns)


def _utc_ns(index: pd.Index) -> np.ndarray:
    """A frame's index as int64 UTC nanoseconds (tz-aware: converted; naive: taken as UTC)."""
    if len(index) == 0:
        return np.zeros(0, dtype=np.int64)
    index = pd.DatetimeIndex(index)
    index = index.tz_convert("UTC") if index.tz is not None else index.tz_localize("UTC")
    return index.as_unit("ns").asi8


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

    def stocks(self, columns: slice) -> "MarketPanel":
        """A panel of a range of its stocks (views of its arrays)."""
        return MarketPanel(
            symbols=self.symbols[columns],
            timestamps=self.timestamps,
            open=self.open[:, columns],
            high=self.high[:, columns],
            low=self.low[:, columns],
            close=self.close[:, columns],
            volume=self.volume[:, columns],
            tradeable=self.tradeable[:, columns],
        )

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
