"""Stores: where stock-day parquet files come from.

A :class:`Store` lists the symbols and days it holds and hands out a local, readable
path for one stock-day file (see :mod:`parallel_dqn.data.layout` for the key layout).
The loader talks only to this protocol, so a local folder and a remote container
(with a local read-through cache) are interchangeable.

:func:`open_store` turns a user's spec into a store; the scheme -> factory table
:data:`STORE_FACTORIES` is the one place a new kind of store is plugged in.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from parallel_dqn.data.layout import KEY_ROOT, SUFFIX, day_key, is_symbol, symbol_prefix
from parallel_dqn.errors import UserError


@runtime_checkable
class Store(Protocol):
    """A source of stock-day bar files laid out as in :mod:`parallel_dqn.data.layout`."""

    def describe(self) -> str:
        """A short human description for messages (e.g. ``local:/data``); never contains a secret."""
        ...

    def list_symbols(self) -> list[str]:
        """All symbols with a folder in the store, sorted."""
        ...

    def list_days(self, symbol: str, start: date | None = None, end: date | None = None) -> list[date]:
        """Sorted days with a file for ``symbol``, optionally limited to ``[start, end]`` (inclusive)."""
        ...

    def fetch(self, symbol: str, day: date) -> Path:
        """A local readable path of the ``symbol``/``day`` parquet file."""
        ...


class LocalStore:
    """A store over a local folder ``root`` holding ``root/stocks_intraday/...``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return f"local:{self.root}"

    def list_symbols(self) -> list[str]:
        base = self.root / KEY_ROOT
        if not base.is_dir():
            return []
        return sorted(e.name for e in os.scandir(base) if e.is_dir() and is_symbol(e.name))

    def list_days(self, symbol: str, start: date | None = None, end: date | None = None) -> list[date]:
        """Walk only the year and month folders that can hold days in ``[start, end]``.

        Names are compared as strings (no regular expression or ``Path`` per file): at hundreds of stocks the
        listing, which a run's plan, its cache key and its loader each do, costs as much as reading the files.
        """
        sym_dir = f"{self.root}/{symbol_prefix(symbol)}"
        lo = (start.year, start.month) if start else (0, 0)
        hi = (end.year, end.month) if end else (9999, 12)
        days: list[date] = []
        for year_name in _numbered_subdirs(sym_dir, 4):
            year = int(year_name)
            if not lo[0] <= year <= hi[0]:
                continue
            for month_name in _numbered_subdirs(f"{sym_dir}/{year_name}", 2):
                if lo <= (year, int(month_name)) <= hi:
                    days.extend(_days_in(f"{sym_dir}/{year_name}/{month_name}", symbol, year, int(month_name)))
        return sorted(d for d in days if (start is None or d >= start) and (end is None or d <= end))

    def fetch(self, symbol: str, day: date) -> Path:
        path = self.root / day_key(symbol, day)
        if not path.is_file():
            raise UserError(
                f"no bar file for {symbol} on {day.isoformat()} in {self.describe()} (expected {path})",
                "pick a symbol and day that the store holds",
            )
        return path


def _numbered_subdirs(folder: str, width: int) -> list[str]:
    """Names of the sub-folders of ``folder`` named by exactly ``width`` digits (years, months), sorted."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        e.name for e in entries if len(e.name) == width and e.name.isascii() and e.name.isdigit() and e.is_dir()
    )


def _days_in(month_dir: str, symbol: str, year: int, month: int) -> list[date]:
    """Days of ``symbol`` in its ``year``/``month`` folder: the files named ``{symbol}_{YYYY-MM-DD}.parquet`` of
    that month (what :func:`~parallel_dqn.data.layout.parse_key` accepts there); other files are ignored."""
    head = f"{symbol}_{year:04d}-{month:02d}-"
    size = len(head) + 2 + len(SUFFIX)
    days = []
    for entry in os.scandir(month_dir):
        name = entry.name
        if len(name) == size and name.startswith(head) and name.endswith(SUFFIX) and entry.is_file():
            day = name[len(head) : len(head) + 2]
            if day.isascii() and day.isdigit():
                with contextlib.suppress(ValueError):  # e.g. the 31st of April
                    days.append(date(year, month, int(day)))
    return days


def _open_local(location: str) -> Store:
    root = Path(location).expanduser()
    fix = f"generate one with `parallel-dqn data generate --output {location}`"
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist", fix)
    if not (root / KEY_ROOT).is_dir():
        raise UserError(f"data folder {root} has no {KEY_ROOT}/ subfolder, so it holds no bar files", fix)
    return LocalStore(root)


def _open_azure(location: str) -> Store:
    from parallel_dqn.data.azure_store import open_azure  # the Azure SDK is imported only when used

    return open_azure(location)


def _object_store(scheme: str) -> StoreFactory:
    """The factory of an fsspec store (``s3``, ``gs``): the location is ``BUCKET[/PREFIX]``."""

    def factory(location: str) -> Store:
        from parallel_dqn.data.object_store import open_object_store  # s3fs / gcsfs are imported only when used

        return open_object_store(f"{scheme}://{location}")

    return factory


StoreFactory = Callable[[str], Store]

#: scheme -> factory taking the location after ``scheme:`` (a leading ``//`` removed).
STORE_FACTORIES: Mapping[str, StoreFactory] = MappingProxyType(
    {"local": _open_local, "azure": _open_azure, "s3": _object_store("s3"), "gs": _object_store("gs")}
)


def open_store(spec: str) -> Store:
    """Open the store named by ``spec``: ``local:DIR``, ``s3://BUCKET[/PREFIX]``, ``gs://BUCKET[/PREFIX]``,
    ``azure://CONTAINER[/PREFIX]`` or a plain folder path.

    Raises UserError for an unknown scheme or a store that cannot be opened.
    """
    scheme, sep, rest = spec.partition(":")
    if sep and scheme in STORE_FACTORIES:
        location = rest[2:] if rest.startswith("//") else rest
        if not location:
            raise UserError(f"store spec {spec!r} names no location", f"write it as {scheme}:LOCATION")
        return STORE_FACTORIES[scheme](location)
    if sep and rest.startswith("//"):
        known = ", ".join(f"{s}:" for s in STORE_FACTORIES)
        raise UserError(f"unknown store scheme {scheme!r} in {spec!r}", f"use one of {known} or a folder path")
    return _open_local(spec)


def source_name(store: Store, symbol: str, day: date, path: Path) -> str:
    """How a stock-day file is named in messages: a remote store's own name for it, else its path."""
    source = getattr(store, "source", None)
    return source(symbol, day) if source is not None else str(path)
