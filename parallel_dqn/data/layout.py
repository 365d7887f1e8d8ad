"""The key layout of intraday bar files, shared by every store.

One parquet file per stock-day::

    stocks_intraday/{SYMBOL}/{YYYY}/{MM}/{SYMBOL}_{YYYY-MM-DD}.parquet

Keys are POSIX paths relative to the store root (a local folder or a blob container).
This module only builds and parses keys; it never touches a file.
"""

from __future__ import annotations

import re
from datetime import date

from parallel_dqn.errors import UserError

KEY_ROOT = "stocks_intraday"
SUFFIX = ".parquet"

_SYMBOL_RE = re.compile(r"[A-Za-z0-9._-]+")
_KEY_RE = re.compile(
    rf"{KEY_ROOT}/(?P<sym>[A-Za-z0-9._-]+)/(?P<y>[0-9]{{4}})/(?P<m>[0-9]{{2}})/"
    rf"(?P<fsym>[A-Za-z0-9._-]+)_(?P<day>[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}){re.escape(SUFFIX)}"
)


def check_symbol(symbol: str) -> str:
    """Return ``symbol`` if it is usable in a key (letters, digits, ``.``, ``-``, ``_``), else raise UserError."""
    if not isinstance(symbol, str) or not _SYMBOL_RE.fullmatch(symbol) or symbol in {".", ".."}:
        raise UserError(
            f"invalid stock symbol {symbol!r}",
            "use only letters, digits, '.', '-' and '_', e.g. AAPL or BRK.B",
        )
    return symbol


def symbol_prefix(symbol: str) -> str:
    """The key prefix (folder) holding all files of one symbol."""
    return f"{KEY_ROOT}/{check_symbol(symbol)}"


def month_prefix(symbol: str, year: int, month: int) -> str:
    """The key prefix (folder) holding one symbol's files of one month."""
    return f"{symbol_prefix(symbol)}/{year:04d}/{month:02d}"


def day_key(symbol: str, day: date) -> str:
    """The key of one stock-day file, e.g. ``stocks_intraday/AAPL/2020/01/AAPL_2020-01-03.parquet``."""
    return f"{month_prefix(symbol, day.year, day.month)}/{symbol}_{day.isoformat()}{SUFFIX}"


def parse_key(key: str) -> tuple[str, date] | None:
    """``(symbol, day)`` of a key in the layout; None if the key is not in it.

    A key whose file name disagrees with its folders (another symbol, year or month)
    is not in the layout either, so a misplaced file is never read as the wrong stock-day.
    """
    m = _KEY_RE.fullmatch(key)
    if m is None or m["sym"] != m["fsym"] or m["sym"] in {".", ".."}:
        return None
    try:
        day = date.fromisoformat(m["day"])
    except ValueError:
        return None
    if (day.year, day.month) != (int(m["y"]), int(m["m"])):
        return None
    return m["sym"], day


def is_symbol(name: str) -> bool:
    """True if ``name`` is usable as a stock symbol in a key (see :func:`~parallel_dqn.data.layout.check_symbol`)."""
    try:
        check_symbol(name)
    except UserError:
        return False
    return True
