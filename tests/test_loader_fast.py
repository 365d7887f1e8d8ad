"""The one-pass loader gives exactly what reading file by file gives, and steps aside for any damaged file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from parallel_dqn.data.loader import load_bars
from parallel_dqn.data.store import open_store
from parallel_dqn.data.validation import read_bars, read_days_fast, validate_day
from parallel_dqn.errors import UserError
from tests.conftest import TINY_STOCKS


def files(market: Path, symbol: str):
    store = open_store(str(market))
    days = store.list_days(symbol)
    return store, days, [store.fetch(symbol, d) for d in days]


def test_one_pass_equals_file_by_file(tiny_market):
    for symbol in TINY_STOCKS:
        _, days, paths = files(tiny_market, symbol)
        fast = read_days_fast(paths, days)
        slow = pd.concat([read_bars(p, str(p)) for p in paths])
        assert all(not validate_day(read_bars(p, str(p)), d, str(p)) for p, d in zip(paths, days))
        assert fast is not None
        pd.testing.assert_frame_equal(fast, slow, check_freq=False)


def rewrite(path: Path, change) -> None:
    df = pd.read_parquet(path)
    change(df)
    df.to_parquet(path, index=False)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"not parquet"),
        lambda p: rewrite(p, lambda df: df.__setitem__("close", df["close"].where(df.index != 3))),
        lambda p: rewrite(p, lambda df: df.__setitem__("low", df["high"] + 1)),
        lambda p: rewrite(p, lambda df: df.__setitem__("timestamp", df["timestamp"][::-1].to_numpy())),
        lambda p: rewrite(p, lambda df: df.__setitem__("timestamp", df["timestamp"] + pd.Timedelta(days=1))),
        lambda p: rewrite(p, lambda df: df.pop("volume")),
        lambda p: pq.write_table(pa.table({c: pa.array([], pa.float64()) for c in
                                           ("timestamp", "open", "high", "low", "close", "volume")}), p),
    ],
    ids=["unreadable", "nan", "high-below-low", "unsorted", "wrong-day", "missing-column", "empty"],
)
def test_a_damaged_file_falls_back_to_the_careful_path_that_names_it(tiny_market, tmp_path, damage):
    market = Path(shutil.copytree(tiny_market, tmp_path / "m"))
    store, days, paths = files(market, "BBB")
    damage(paths[1])
    assert read_days_fast(paths, days) is None
    with pytest.raises(UserError) as err:
        load_bars(store, ["BBB"], days[0], days[-1])
    assert paths[1].name in err.value.line()
