"""Importing a user's CSV files of bars into the key layout.

Reading (:func:`read_bar_csv`): column names are matched case-insensitively with common aliases
(see :data:`ALIASES`; separate ``date`` and ``time`` columns are joined; a nameless first column, the
index that pandas' ``to_csv`` writes, is the timestamp when no column is named so), timestamps are parsed
by pandas, naive ones interpreted in a given time zone, and everything is converted to UTC.

Writing goes through :mod:`parallel_dqn.data.daywriter` (validate everything, then write
atomically, one file per stock-day).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from parallel_dqn.data.daywriter import (
    DayFile,
    ImportResult,
    plan_day_files,
    write_day_files,
)
from parallel_dqn.data.layout import check_symbol
from parallel_dqn.data.validation import REQUIRED_COLUMNS, short_reason
from parallel_dqn.errors import UserError

#: stored column -> accepted CSV header names (lower case, stripped), in order of preference
ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": ("timestamp", "datetime", "time", "date"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "vol", "v"),
    "symbol": ("symbol", "ticker"),
}


# ---- reading CSV files -------------------------------------------------------------------------
def read_bar_csv(path: Path, symbol: str | None = None, timezone: str = "UTC") -> dict[str, pd.DataFrame]:
    """The bars of one CSV file per symbol, as raw frames ready for :func:`plan_day_files`.

    The symbol comes from a ``symbol`` column (several symbols per file), else from ``symbol``,
    else from the file name's stem. Naive timestamps are taken to be in ``timezone``. Each frame
    keeps the CSV's row order and has an extra ``row`` column: the 0-based data row in the file.
    Raises UserError for an unreadable file, missing columns or unparseable timestamps.
    """
    source = str(path)
    try:
        raw = pd.read_csv(path, skipinitialspace=True)
    except pd.errors.EmptyDataError as exc:
        raise UserError(f"{source}: the file is empty", "export the bars with a header row") from exc
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise UserError(f"{source}: cannot read CSV file: {short_reason(exc)}", "check the file") from exc
    frame = _rename_columns(raw, source)
    frame["timestamp"] = _parse_timestamps(frame["timestamp"], timezone, source)
    frame["row"] = np.arange(len(frame))
    if "symbol" in frame.columns:
        if symbol is not None:
            raise UserError(f"{source} has a symbol column and --symbol {symbol} was given", "drop --symbol")
        names = frame["symbol"].astype("string").str.strip()
        if names.isna().any() or (names == "").any():
            row = int(np.flatnonzero((names.isna() | (names == "")).to_numpy())[0])
            raise UserError(f"{source}: row {row}: the symbol is missing", "give every row a symbol")
        return {check_symbol(s): frame.loc[names == s].drop(columns="symbol") for s in pd.unique(names)}
    return {check_symbol(symbol if symbol is not None else Path(path).stem): frame}


def _rename_columns(raw: pd.DataFrame, source: str) -> pd.DataFrame:
    """The frame with the stored column names (first matching alias wins); UserError naming missing ones."""
    by_name = {str(c).strip().lower(): c for c in raw.columns}
    found = {col: next((by_name[a] for a in names if a in by_name), None) for col, names in ALIASES.items()}
    if found["timestamp"] in (by_name.get("date"), by_name.get("time")) and {"date", "time"} <= by_name.keys():
        raw = raw.assign(_datetime=raw[by_name["date"]].astype(str) + " " + raw[by_name["time"]].astype(str))
        found["timestamp"] = "_datetime"
    if found["timestamp"] is None and len(raw.columns) and str(raw.columns[0]).startswith("Unnamed: 0"):
        found["timestamp"] = raw.columns[0]  # a nameless first column: the index pandas' to_csv writes
    missing = [c for c in REQUIRED_COLUMNS if found[c] is None]
    if missing:
        headers = ", ".join(map(str, raw.columns)) or "none"
        raise UserError(
            f"{source}: missing column(s) {', '.join(missing)} (found: {headers})",
            "name the columns timestamp, open, high, low, close, volume",
        )
    return pd.DataFrame({col: raw[name] for col, name in found.items() if name is not None})


def _parse_timestamps(values: pd.Series, timezone: str, source: str) -> pd.Series:
    """Parse timestamps to tz-aware UTC (ns); naive values are in ``timezone``."""
    text = values.astype("string").str.strip()
    naive = None  # where values with and without an offset are mixed: which ones have none
    try:
        ts = pd.to_datetime(text, errors="coerce", format="mixed")
    except ValueError:  # several offsets (e.g. across a DST change), or naive values mixed with offset ones
        ts = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)  # naive ones read as UTC: fixed below
        naive = _without_offset(text)
    bad = np.flatnonzero((ts.isna() & text.notna()).to_numpy())
    if bad.size:
        more = f" (and {bad.size - 1} more rows)" if bad.size > 1 else ""
        raise UserError(
            f"{source}: row {bad[0]}: timestamp {text.iloc[bad[0]]!r} is not a date and time{more}",
            "use e.g. 2024-01-02 09:30:00 or 2024-01-02T09:30:00-05:00",
        )
    if naive is not None and naive.any():  # wall-clock times in ``timezone``, as in a file of naive times only
        ts = ts.copy()
        ts[naive] = _localize(ts[naive].dt.tz_localize(None), timezone, source)
    if ts.dt.tz is None:
        ts = _localize(ts, timezone, source)
    return ts.dt.tz_convert("UTC").dt.as_unit("ns")


def _localize(ts: pd.Series, timezone: str, source: str) -> pd.Series:
    """Naive wall-clock times in ``timezone`` -> UTC; UserError for an unknown zone or a time that is not one."""
    try:
        return ts.dt.tz_localize(timezone, ambiguous="raise", nonexistent="raise").dt.tz_convert("UTC")
    except Exception as exc:
        raise UserError(
            f"{source}: cannot interpret the timestamps in time zone {timezone!r}: {short_reason(exc)}",
            "pass a valid --timezone (e.g. America/New_York), or timestamps with a UTC offset",
        ) from exc


def _without_offset(text: pd.Series) -> pd.Series:
    """Which values parse to a naive time (no UTC offset, no ``Z``); missing or unparseable ones count as not."""
    def naive(value: str) -> bool:
        try:
            return pd.Timestamp(value).tzinfo is None
        except (ValueError, TypeError, OverflowError):
            return False

    known = {value: naive(value) for value in pd.unique(text.dropna())}
    return text.map(known).fillna(False).astype(bool)


def import_csv_files(
    paths: Iterable[Path], dest: Path, symbol: str | None = None, timezone: str = "UTC", overwrite: bool = False
) -> ImportResult:
    """Read, validate and split every CSV file, then write them all (nothing written if any is bad)."""
    day_files: list[DayFile] = []
    for path in paths:
        day_files += plan_day_files(read_bar_csv(Path(path), symbol, timezone), str(path))
    return write_day_files(day_files, dest, overwrite)

