"""A store whose listing is taken once: what a run's start would otherwise list three times.

A run's plan lists every stock's days, its cross-section cache key lists them again (with each file's
identity), and the loader lists them a third time before it reads. At hundreds of stocks each listing costs
about as much as reading the files (a local folder's scandir per month, a remote store's list calls), so
:class:`ListedOnce` keeps each stock's days from the first time they are asked and answers the later ranges from
them. The run then sees its store as it was when the run started, which is also what it should see: days added
while it loads do not join it half way.
"""

from __future__ import annotations

import bisect
from datetime import date
from pathlib import Path
from typing import Any

from parallel_dqn.data.store import Store


class ListedOnce:
    """``store`` (any :class:`~parallel_dqn.data.store.Store`) with its symbols and each symbol's days listed
    once; everything else (fetch, prefetch, source names, a local root) is the store's own."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._symbols: list[str] | None = None
        self._days: dict[str, list[date]] = {}

    def describe(self) -> str:
        return self.store.describe()

    def list_symbols(self) -> list[str]:
        if self._symbols is None:
            self._symbols = self.store.list_symbols()
        return list(self._symbols)

    def list_days(self, symbol: str, start: date | None = None, end: date | None = None) -> list[date]:
        """The symbol's days in ``[start, end]`` from its whole listing (taken on the first call)."""
        days = self._days.get(symbol)
        if days is None:
            days = self._days[symbol] = self.store.list_days(symbol)
        lo = 0 if start is None else bisect.bisect_left(days, start)
        hi = len(days) if end is None else bisect.bisect_right(days, end)
        return days[lo:hi]

    def fetch(self, symbol: str, day: date) -> Path:
        return self.store.fetch(symbol, day)

    def __getattr__(self, name: str) -> Any:
        # optional parts of a store (prefetch, source, root, counts) are the wrapped store's own
        if name == "store":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.store, name)
