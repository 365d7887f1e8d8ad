"""Reading and validating bar files: every kind of problem is named with its file, row and value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from parallel_dqn.data.validation import Problem, read_bars, validate_bars
from parallel_dqn.errors import UserError


def raw_bars(n: int = 20, tz: str | None = "UTC") -> pd.DataFrame:
    """A valid raw bar frame (as stored in a file): 1-minute bars from 14:30 on 2020-01-03."""
    close = 100.0 + np.arange(n) * 0.1
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2020-01-03 14:30", periods=n, freq="min", tz=tz),
            "open": close - 0.05,
            "high": close + 0.2,
            "low": close - 0.2,
            "close": close,
            "volume": np.full(n, 1000, dtype=np.int64),
        }
    )


def write(tmp_path: Path, df: pd.DataFrame) -> Path:
    path = tmp_path / "AAPL_2020-01-03.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    return path


def read_error(path: Path) -> str:
    with pytest.raises(UserError) as err:
        read_bars(path, str(path))
    return str(err.value)


def test_problem_line_format() -> None:
    source = "data/stocks_intraday/AAPL/2020/01/AAPL_2020-01-03.parquet"
    assert Problem(source, 17, "high 99.1 < low 99.5").line() == f"{source}: row 17: high 99.1 < low 99.5"
    assert Problem(source, None, "the file has no rows").line() == f"{source}: the file has no rows"


def test_valid_file_is_returned_in_loader_format(tmp_path: Path) -> None:
    df = raw_bars().assign(extra="x")
    bars = read_bars(write(tmp_path, df), "f")
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert all(dtype == np.float64 for dtype in bars.dtypes)
    assert bars.index.name == "timestamp"
    assert str(bars.index.tz) == "UTC" and bars.index.unit == "ns"
    assert bars.index[0] == pd.Timestamp("2020-01-03 14:30", tz="UTC")
    np.testing.assert_array_equal(bars["close"].to_numpy(), df["close"].to_numpy())


def test_tz_aware_timestamps_are_converted_to_utc(tmp_path: Path) -> None:
    df = raw_bars(tz=None)
    df["timestamp"] = df["timestamp"].dt.tz_localize("America/New_York")  # 14:30 New York = 19:30 UTC
    bars = read_bars(write(tmp_path, df), "f")
    assert bars.index[0] == pd.Timestamp("2020-01-03 19:30", tz="UTC")


def test_naive_timestamps_are_taken_as_utc(tmp_path: Path) -> None:
    bars = read_bars(write(tmp_path, raw_bars(tz=None)), "f")
    assert bars.index[0] == pd.Timestamp("2020-01-03 14:30", tz="UTC")


@pytest.mark.parametrize("content", [b"\x00garbage\xff" * 50, b"timestamp,open\n1,2\n", b""])
def test_unreadable_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "AAPL_2020-01-03.parquet"
    path.write_bytes(content)
    message = read_error(path)
    assert message.startswith(f"{path}: cannot read parquet file: ")
    assert message.endswith("(re-download or regenerate it)")
    assert "\n" not in message


def test_truncated_parquet_file(tmp_path: Path) -> None:
    path = write(tmp_path, raw_bars())
    path.write_bytes(path.read_bytes()[:-40])
    assert "cannot read parquet file" in read_error(path)


def _set(df: pd.DataFrame, column: str, row: int, value: object) -> pd.DataFrame:
    df = df.astype({column: "float64"}) if column == "volume" else df
    df.loc[row, column] = value
    return df


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda df: df.drop(columns=["volume", "low"]),
         ": missing column(s) low, volume (found: timestamp, open, high, close)"),
        (lambda df: _set(df, "close", 3, np.nan), ": row 3: close is missing (NaN)"),
        (lambda df: _set(df, "volume", 5, None), ": row 5: volume is missing (NaN)"),
        (lambda df: _set(df, "open", 2, np.inf), ": row 2: open is inf, expected a finite number"),
        (lambda df: _set(df, "close", 4, 0.0), ": row 4: close 0.0 is not a positive price"),
        (lambda df: _set(df, "low", 6, -1.5), ": row 6: low -1.5 is not a positive price"),
        (lambda df: _set(df, "volume", 7, -10.0), ": row 7: volume -10.0 is negative"),
        (lambda df: _set(_set(df, "high", 17, 99.1), "low", 17, 99.5), ": row 17: high 99.1 < low 99.5"),
        (lambda df: _set(df, "timestamp", 9, pd.Timestamp("2020-01-03 14:00", tz="UTC")),
         ": row 9: timestamp 2020-01-03 14:00:00+00:00 is earlier than the row before (2020-01-03 14:38:00+00:00)"),
        (lambda df: _set(df, "timestamp", 9, df["timestamp"][8]),
         ": row 9: duplicate timestamp 2020-01-03 14:38:00+00:00"),
        (lambda df: _set(df, "timestamp", 0, pd.NaT), ": row 0: timestamp is missing (NaT)"),
        (lambda df: df.iloc[:0], ": the file has no rows"),
        (lambda df: df.assign(close="x"), ": column close has type str, expected numbers"),
        (lambda df: df.assign(timestamp=np.arange(len(df))), ": column timestamp has type int64, expected timestamps"),
    ],
    ids=["missing-columns", "nan-close", "none-volume", "inf-open", "zero-price", "negative-price",
         "negative-volume", "high-below-low", "unsorted", "duplicate", "nat", "empty", "text-prices", "int-times"],
)
def test_each_problem_kind_is_reported(tmp_path: Path, mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, mutate(raw_bars()))
    message = read_error(path)
    assert message.startswith(f"{path}{expected}")
    assert "\n" not in message


def test_first_row_and_count_of_each_kind() -> None:
    df = raw_bars()
    df.loc[[4, 8, 12], "close"] = 0.0
    problems = validate_bars(df, "f.parquet")
    assert problems == [Problem("f.parquet", 4, "close 0.0 is not a positive price (and 2 more rows)")]
    df.loc[12, "close"] = 1.0
    assert validate_bars(df, "f")[0].what.endswith("(and 1 more row)")


def test_all_problems_are_listed_and_the_error_points_to_the_full_list(tmp_path: Path) -> None:
    df = raw_bars().drop(columns=["volume"])
    df.loc[3, "close"] = np.nan
    df.loc[5, ["high", "low"]] = [90.0, 95.0]
    df.loc[7, "timestamp"] = df.loc[6, "timestamp"]
    problems = validate_bars(df, "f")
    assert [(p.row, p.what.split()[0]) for p in problems] == [
        (None, "missing"), (3, "close"), (5, "high"), (7, "duplicate")
    ]
    message = read_error(write(tmp_path, df))
    assert message.endswith("(3 more problems; run `parallel-dqn data validate DIR` to list them all)")


def test_valid_frame_has_no_problems() -> None:
    assert validate_bars(raw_bars(), "f") == []
