"""The stock-day writer every importer shares (CSV import, Alpha Vantage, ...).

Each stock's bars are validated with :func:`~parallel_dqn.data.validation.validate_bars` and
split into one file per stock-day (UTC date) by :func:`plan_day_files` *before* anything is
written, so a bad input leaves the destination untouched. :func:`write_day_files` skips identical
existing files and replaces different ones only when asked; every file is written to a temporary
name and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from parallel_dqn.data.layout import day_key
from parallel_dqn.data.validation import VALUE_COLUMNS, Problem, validate_bars
from parallel_dqn.errors import UserError


@dataclass(frozen=True)
class DayFile:
    """One stock-day file to write: its layout key and its bars (``timestamp`` UTC column + OHLCV float64)."""

    key: str
    symbol: str
    day: date
    bars: pd.DataFrame


@dataclass(frozen=True)
class ImportResult:
    """What an import did: bars and stocks imported, files written, identical files skipped."""

    bars: int
    stocks: int
    written: int
    skipped: int

    def line(self) -> str:
        """``imported N bars of K stocks into M files (S skipped, identical)``."""
        return (
            f"imported {self.bars} bars of {self.stocks} stocks into {self.written} files "
            f"({self.skipped} skipped, identical)"
        )


# ---- validating and splitting into stock-days ---------------------------------------------------
def plan_day_files(frames: Mapping[str, pd.DataFrame], source: str) -> list[DayFile]:
    """Validate each symbol's bars and split them into stock-day files (UTC date).

    ``frames`` maps symbol -> raw frame (``timestamp`` UTC and OHLCV columns; an optional ``row``
    column maps rows back to the input). Raises UserError naming ``source``, the first problem and
    how many more there are.
    """
    problems: list[Problem] = []
    for symbol, frame in frames.items():
        where = source if len(frames) == 1 else f"{source} ({symbol})"
        found = validate_bars(frame.drop(columns="row", errors="ignore").reset_index(drop=True), where)
        rows = frame["row"].to_numpy() if "row" in frame.columns else np.arange(len(frame))
        problems += [dataclasses.replace(p, row=None if p.row is None else int(rows[p.row])) for p in found]
    if problems:
        more = len(problems) - 1
        fix = f"{more} more problem{'s' if more > 1 else ''} in this file" if more else "fix the file"
        raise UserError(problems[0].line(), f"{fix}; nothing was written")
    return [day for symbol, frame in frames.items() for day in _split_days(symbol, frame)]


def _split_days(symbol: str, frame: pd.DataFrame) -> list[DayFile]:
    """One DayFile per UTC date of a validated (sorted) frame."""
    ts = frame["timestamp"]
    ts = ts.dt.tz_convert("UTC") if ts.dt.tz is not None else ts.dt.tz_localize("UTC")
    bars = pd.DataFrame({"timestamp": ts.dt.as_unit("ns").to_numpy()}).astype({"timestamp": "datetime64[ns, UTC]"})
    for col in VALUE_COLUMNS:
        bars[col] = frame[col].to_numpy(dtype=np.float64)
    return [
        DayFile(day_key(symbol, day), symbol, day, group.reset_index(drop=True))
        for day, group in bars.groupby(bars["timestamp"].dt.date, sort=True)
    ]


# ---- writing ------------------------------------------------------------------------------------
def write_day_files(day_files: Iterable[DayFile], dest: Path, overwrite: bool = False) -> ImportResult:
    """Write ``day_files`` under ``dest`` in the key layout, all-or-nothing on conflicts.

    Checks everything first: two inputs for one stock-day, or an existing different file without
    ``overwrite``, raise UserError before any file is written. Identical files are skipped.
    """
    dest = Path(dest)
    files = list(day_files)
    seen: dict[str, DayFile] = {}
    for f in files:
        if f.key in seen:
            raise UserError(f"two inputs hold bars of {f.symbol} on {f.day}", "import each stock-day once")
        seen[f.key] = f
    todo, different = [], []
    for f in files:
        state = _existing_state(dest / f.key, f.bars)
        if state != "same":
            todo.append(f)
        if state == "different":
            different.append(dest / f.key)
    if different and not overwrite:
        more = f" (and {len(different) - 1} more)" if len(different) > 1 else ""
        raise UserError(
            f"{different[0]} already exists with different bars{more}", "pass --overwrite to replace them"
        )
    mode = new_file_mode()
    for f in todo:
        _atomic_write(dest / f.key, f.bars, mode)
    return ImportResult(
        bars=sum(len(f.bars) for f in files),
        stocks=len({f.symbol for f in files}),
        written=len(todo),
        skipped=len(files) - len(todo),
    )


def _existing_state(path: Path, bars: pd.DataFrame) -> str:
    """``absent``, ``same`` (same bars) or ``different`` (other bars, or an unreadable file)."""
    if not path.exists():
        return "absent"
    try:
        old = pq.read_table(path).to_pandas()
        old_ts = pd.to_datetime(old["timestamp"])
        old_ts = old_ts.dt.tz_convert("UTC") if old_ts.dt.tz is not None else old_ts.dt.tz_localize("UTC")
        same = len(old) == len(bars) and (old_ts.dt.as_unit("ns").to_numpy() == bars["timestamp"].to_numpy()).all()
        same = same and all(np.array_equal(old[c].to_numpy(np.float64), bars[c].to_numpy()) for c in VALUE_COLUMNS)
    except Exception:  # noqa: BLE001 - an unreadable or malformed file is simply not the same
        return "different"
    return "same" if same else "different"


def new_file_mode() -> int:
    """The mode a new file gets from ``open()`` under this process's umask: ``0o666 & ~umask`` (e.g. 0o644)."""
    try:  # Linux says it without changing it (os.umask cannot be read without being set, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(path: Path, bars: pd.DataFrame, mode: int) -> None:
    """Write ``bars`` as parquet to a temporary file beside ``path``, then rename it into place.

    The temporary file is made private (0600) by mkstemp; it gets ``mode``, that of any new file, before
    the rename, so the stored file is as readable as if it had been written directly.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        pq.write_table(pa.Table.from_pandas(bars, preserve_index=False), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
