"""Reading and checking one stock-day bar file.

:func:`validate_bars` lists every problem of a raw frame (one :class:`Problem` per kind of
problem, at its first offending row, with a count of the others); :func:`read_bars` reads a
parquet file, validates it and returns the loader's frame format, or raises a
:class:`~parallel_dqn.errors.UserError` naming the file, the row and what is wrong.

Timestamps: tz-aware values are converted to UTC; naive values are taken to be UTC already.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from parallel_dqn.errors import UserError

REQUIRED_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a bar file.

    Attributes:
        source: the file, as shown to the user.
        row: 0-based index of the (first) offending data row, not counting the header;
            None when the problem concerns the whole file.
        what: what is wrong, e.g. ``high 99.1 < low 99.5 (and 3 more rows)``.
    """

    source: str
    row: int | None
    what: str

    def line(self) -> str:
        """``SOURCE: row N: WHAT`` (or ``SOURCE: WHAT`` for a whole-file problem)."""
        where = f"row {self.row}: " if self.row is not None else ""
        return f"{self.source}: {where}{self.what}"


def validate_bars(df: pd.DataFrame, source: str) -> list[Problem]:
    """All problems of a raw bar frame (columns as stored in the file); empty when it is usable.

    Checked: missing columns, empty file, column types, NaN/None/infinite values, non-positive
    prices, negative volume, high < low, unsorted and duplicate timestamps.
    """
    problems: list[Problem] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns)) or "none"
        problems.append(Problem(source, None, f"missing column(s) {', '.join(missing)} (found: {found})"))
    if len(df) == 0:
        problems.append(Problem(source, None, "the file has no rows"))
        return problems

    values: dict[str, np.ndarray] = {}
    for col in (c for c in VALUE_COLUMNS if c in df.columns):
        if not (pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col])):
            problems.append(Problem(source, None, f"column {col} has type {df[col].dtype}, expected numbers"))
            continue
        v = df[col].to_numpy(dtype=np.float64, na_value=np.nan)
        values[col] = v
        _add(problems, source, np.isnan(v), lambda i, c=col: f"{c} is missing (NaN)")
        _add(problems, source, np.isinf(v), lambda i, c=col, v=v: f"{c} is {v[i]}, expected a finite number")
    for col in (c for c in PRICE_COLUMNS if c in values):
        v = values[col]
        _add(problems, source, v <= 0, lambda i, c=col, v=v: f"{c} {v[i]} is not a positive price")
    if "volume" in values:
        vol = values["volume"]
        _add(problems, source, vol < 0, lambda i: f"volume {vol[i]} is negative")
    if "high" in values and "low" in values:
        hi, lo = values["high"], values["low"]
        _add(problems, source, hi < lo, lambda i: f"high {hi[i]} < low {lo[i]}")
    if "timestamp" in df.columns:
        problems.extend(_timestamp_problems(df["timestamp"], source))
    return problems


def _timestamp_problems(ts: pd.Series, source: str) -> list[Problem]:
    """Missing, unsorted and duplicate timestamps."""
    if not pd.api.types.is_datetime64_any_dtype(ts):
        return [Problem(source, None, f"column timestamp has type {ts.dtype}, expected timestamps")]
    problems: list[Problem] = []
    _add(problems, source, ts.isna().to_numpy(), lambda i: "timestamp is missing (NaT)")
    t = ts.to_numpy()
    earlier = np.zeros(len(t), dtype=bool)
    earlier[1:] = t[1:] < t[:-1]
    _add(
        problems, source, earlier, lambda i: f"timestamp {ts.iloc[i]} is earlier than the row before ({ts.iloc[i - 1]})"
    )
    dup = (ts.duplicated(keep="first") & ts.notna()).to_numpy()
    _add(problems, source, dup, lambda i: f"duplicate timestamp {ts.iloc[i]}")
    return problems


def validate_day(bars: pd.DataFrame, day: date, source: str) -> list[Problem]:
    """Problems of a frame from :func:`read_bars` whose bars do not lie on ``day`` (UTC date)."""
    off = (bars.index.date != day) if len(bars) else np.zeros(0, dtype=bool)
    return _add([], source, np.asarray(off), lambda i: f"timestamp {bars.index[i]} is not on the file's day {day}")


def _add(problems: list[Problem], source: str, bad: np.ndarray, describe: Callable[[int], str]) -> list[Problem]:
    """Append one Problem for the rows flagged in ``bad``: the first one, plus how many more."""
    rows = np.flatnonzero(bad)
    if rows.size:
        first, more = int(rows[0]), rows.size - 1
        tail = f" (and {more} more row{'s' if more > 1 else ''})" if more else ""
        problems.append(Problem(source, first, describe(first) + tail))
    return problems


def problems_error(problems: list[Problem], data_spec: str = "DIR") -> UserError:
    """The UserError reporting the first of ``problems`` (non-empty), pointing to the full list."""
    more = len(problems) - 1
    if more:
        fix = (
            f"{more} more problem{'s' if more > 1 else ''}; "
            f"run `parallel-dqn data validate {data_spec}` to list them all"
        )
    else:
        fix = "fix the file, or re-download or regenerate it"
    return UserError(problems[0].line(), fix)


def read_bars(path: Path, source: str, data_spec: str = "DIR") -> pd.DataFrame:
    """Read and validate one bar parquet file.

    Returns a frame indexed by a UTC ``DatetimeIndex`` named ``timestamp`` with float64 columns
    open, high, low, close, volume (extra columns are dropped). ``source`` names the file in
    messages; ``data_spec`` is the store to suggest for ``parallel-dqn data validate``.
    Raises UserError if the file cannot be read as parquet or fails validation.
    """
    try:
        raw = pq.read_table(path).to_pandas()
    except Exception as exc:  # noqa: BLE001 - any reader failure means a bad file
        raise UserError(
            f"{source}: cannot read parquet file: {short_reason(exc)}", "re-download or regenerate it"
        ) from exc
    problems = validate_bars(raw, source)
    if problems:
        raise problems_error(problems, data_spec)
    return to_bar_frame(raw)


def short_reason(exc: Exception) -> str:
    """The reader's reason on one short line, without the file name it repeats."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = re.sub(r"^Could not open Parquet input source '.*?': ", "", text)
    return text[:200]


def to_bar_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """A valid raw frame in the loader's format: UTC ``timestamp`` index (ns), float64 OHLCV columns."""
    ts = raw["timestamp"]
    ts = ts.dt.tz_convert("UTC") if ts.dt.tz is not None else ts.dt.tz_localize("UTC")
    index = pd.DatetimeIndex(ts.dt.as_unit("ns"), name="timestamp")
    return pd.DataFrame({c: raw[c].to_numpy(dtype=np.float64) for c in VALUE_COLUMNS}, index=index)


def read_days_fast(paths: list[Path], days: list[date]) -> pd.DataFrame | None:
    """The bars of many stock-day files (``paths[i]`` holds ``days[i]``) as one frame in the loader's format.

    :func:`read_files_fast`, concatenated; None as soon as anything is off.
    """
    fast = read_files_fast(paths, days)
    if fast is None:
        return None
    index = pd.DatetimeIndex(fast.timestamps.view("datetime64[ns]"), name="timestamp").tz_localize("UTC")
    return pd.DataFrame(fast.values, index=index)


@dataclass(frozen=True)
class FileBars:
    """The valid bars of many files, file after file: what :func:`read_files_fast` returns."""

    timestamps: np.ndarray  # int64 [N], UTC nanoseconds
    values: dict[str, np.ndarray]  # VALUE_COLUMNS -> float64 [N]
    counts: np.ndarray  # int64 [files]: rows of each file


def read_files_fast(paths: Sequence[Path], days: Sequence[date]) -> FileBars | None:
    """The bars of many stock-day files (``paths[i]`` holds ``days[i]``), read and checked in one pass.

    All files are scanned at once with pyarrow's dataset API (only the needed columns), whatever stocks
    they belong to, and every check of :func:`validate_bars` and :func:`validate_day` runs once over all
    rows, vectorised. Returns None as soon as anything is off (a file that cannot be read, columns of
    other types, any problem): the caller then reads file by file, which names the file, the row and
    what is wrong.
    """
    if not paths:
        return None
    try:  # one dataset scan (pyarrow reads the files concurrently); __fragment_index says which file a row is from
        scan = pads.dataset([str(p) for p in paths], format="parquet")
        table = scan.to_table(columns=[*REQUIRED_COLUMNS, "__fragment_index"])
    except Exception:  # noqa: BLE001 - any surprise: the careful path says what it is
        return None
    file_of_row = table.column("__fragment_index").to_numpy()
    if len(file_of_row) and (np.diff(file_of_row) < 0).any():  # keep every file's rows in file order
        order = np.argsort(file_of_row, kind="stable")
        table, file_of_row = table.take(order), file_of_row[order]
    counts = np.bincount(file_of_row, minlength=len(paths))
    if table.num_rows == 0 or (counts == 0).any():
        return None
    ts_type = table.schema.field("timestamp").type
    if not pa.types.is_timestamp(ts_type) or table.column("timestamp").null_count:
        return None
    values = {}
    for col in VALUE_COLUMNS:
        typ = table.schema.field(col).type
        if not (pa.types.is_floating(typ) or pa.types.is_integer(typ)):
            return None
        values[col] = table.column(col).to_numpy().astype(np.float64, copy=False)
    if any(not np.isfinite(v).all() for v in values.values()):
        return None
    lowest = np.minimum(values["open"], values["high"])
    for col in ("low", "close"):
        np.minimum(lowest, values[col], out=lowest)
    if (lowest <= 0).any() or (values["volume"] < 0).any():
        return None
    if (values["high"] < values["low"]).any():
        return None
    ns = table.column("timestamp").cast(pa.timestamp("ns", tz=ts_type.tz)).to_numpy().view(np.int64)
    first_row = np.r_[0, np.cumsum(counts)[:-1]]
    step = np.diff(ns)
    inside = np.ones(len(ns) - 1, dtype=bool)
    inside[first_row[1:] - 1] = False  # a file's first row is not compared with the previous file's last
    if (step[inside] <= 0).any():  # unsorted or duplicate within a file
        return None
    # the file's day, as ns since the epoch: a bar is on its day when it lies in [day, day + 1 day)
    day_ns = np.asarray(days, dtype="datetime64[D]").astype("datetime64[ns]").view(np.int64)
    # (as unsigned, a bar before its day is a huge offset, so one comparison checks both ends)
    if ((ns - np.repeat(day_ns, counts)).view(np.uint64) >= _DAY_NS).any():
        return None
    return FileBars(timestamps=ns, values=values, counts=counts)


_DAY_NS = 86_400 * 10**9
