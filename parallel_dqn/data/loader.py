"""Loading the bars of selected stocks and dates from a store: per-stock frames, or flat arrays for many stocks.

Every file is read and validated (:mod:`parallel_dqn.data.validation`): the files of all the requested
stocks in one vectorised pass, and, only when that pass finds anything wrong, stock by stock and file
by file, so that a bad file, an unknown symbol or an empty date range stops the load with one line
naming what is wrong and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd

from parallel_dqn.data.layout import check_symbol
from parallel_dqn.data.panel import StockBars
from parallel_dqn.data.store import Store, source_name
from parallel_dqn.data.validation import problems_error, read_bars, read_days_fast, read_files_fast, validate_day
from parallel_dqn.errors import UserError

_MAX_LISTED = 10


def load_bars(store: Store, symbols: Sequence[str], start: date, end: date) -> dict[str, pd.DataFrame]:
    """Each symbol's bars of the days in ``[start, end]`` (inclusive), concatenated in time order.

    Frames are in :func:`~parallel_dqn.data.validation.read_bars` format, keyed by symbol in
    ``symbols`` order. Days the store lacks are simply absent (alignment treats them as halted).
    """
    return load_stock_bars(store, symbols, start, end).frames()


def load_stock_bars(store: Store, symbols: Sequence[str], start: date, end: date) -> StockBars:
    """What :func:`load_bars` loads, as flat arrays (:class:`~parallel_dqn.data.panel.StockBars`).

    All the stocks' files are read and checked in one pass; only if anything is off (a stock without
    days, a bad file) does it go stock by stock, file by file, to raise the error that names it.
    """
    if start > end:
        raise UserError(f"start date {start} is after end date {end}", "swap them or pick another range")
    seen: set[str] = set()
    for symbol in symbols:
        check_symbol(symbol)
        if symbol in seen:
            raise UserError(f"symbol {symbol} is listed twice", "list each symbol once")
        seen.add(symbol)
    days = {symbol: store.list_days(symbol, start, end) for symbol in symbols}
    if all(days.values()):
        if hasattr(store, "prefetch"):  # a remote store downloads a stock's files at once, concurrently
            for symbol in symbols:
                store.prefetch(symbol, days[symbol])
        paths = [store.fetch(symbol, day) for symbol in symbols for day in days[symbol]]
        fast = read_files_fast(paths, [day for symbol in symbols for day in days[symbol]])
        if fast is not None:
            files_before = np.cumsum([0] + [len(days[symbol]) for symbol in symbols])
            rows_before = np.r_[0, np.cumsum(fast.counts, dtype=np.int64)]
            return StockBars(
                symbols=tuple(symbols), bounds=rows_before[files_before], timestamps=fast.timestamps, **fast.values
            )
    frames = {symbol: _load_symbol(store, symbol, start, end) for symbol in symbols}
    return StockBars.from_frames(frames, symbols)


def _load_symbol(store: Store, symbol: str, start: date, end: date) -> pd.DataFrame:
    days = store.list_days(symbol, start, end)
    if not days:
        first, last = available_range(store, symbol)
        raise UserError(
            f"no data for {symbol} between {start} and {end} in {store.describe()}",
            f"{symbol} has data from {first} to {last}; pick dates in that range",
        )
    if hasattr(store, "prefetch"):  # a remote store downloads the files at once, concurrently
        store.prefetch(symbol, days)
    paths = [store.fetch(symbol, day) for day in days]
    fast = read_days_fast(paths, days)  # all files in one pass; None if anything is off
    if fast is not None:
        return fast
    frames = []
    for day, path in zip(days, paths):
        source = source_name(store, symbol, day, path)
        bars = read_bars(path, source, store.describe())
        problems = validate_day(bars, day, source)
        if problems:
            raise problems_error(problems, store.describe())
        frames.append(bars)
    return pd.concat(frames) if len(frames) > 1 else frames[0]


def available_range(store: Store, symbol: str) -> tuple[date, date]:
    """First and last day with a file for ``symbol``; UserError if the store has none."""
    days = store.list_days(symbol)
    if not days:
        symbols = store.list_symbols()
        if not symbols:
            listed = "it holds no symbols at all"
        else:
            shown = ", ".join(symbols[:_MAX_LISTED])
            extra = f" and {len(symbols) - _MAX_LISTED} more" if len(symbols) > _MAX_LISTED else ""
            listed = f"available: {shown}{extra}"
        raise UserError(f"no data for symbol {symbol} in {store.describe()}", listed)
    return days[0], days[-1]
