"""Loading stock-days from a store and aligning them on one market clock (the fill rule)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from parallel_dqn.data.align import align
from parallel_dqn.data.layout import day_key
from parallel_dqn.data.loader import available_range, load_bars
from parallel_dqn.data.store import LocalStore
from parallel_dqn.data.synthetic import SyntheticMarket, write_market
from parallel_dqn.errors import UserError


def bars(times: list[str], close: list[float], volume: float = 100.0) -> pd.DataFrame:
    """Bars in the loader's format at UTC ``times``; open = close - 1, high/low = close +/- 2."""
    c = np.asarray(close, dtype=np.float64)
    index = pd.DatetimeIndex(pd.to_datetime(times, utc=True), name="timestamp").as_unit("ns")
    data = {"open": c - 1, "high": c + 2, "low": c - 2, "close": c, "volume": np.full(c.size, volume)}
    return pd.DataFrame(data, index=index)


def write_store(root: Path, frames: dict[str, pd.DataFrame]) -> LocalStore:
    write_market(SyntheticMarket(frames=frames, structure={}), root)
    return LocalStore(root)


# --- loader -----------------------------------------------------------------------------------

DAY1 = ["2020-01-02 14:30", "2020-01-02 14:31"]
DAY2 = ["2020-01-03 14:30", "2020-01-03 14:31"]
DAY3 = ["2020-01-06 14:30"]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return write_store(
        tmp_path,
        {"AAPL": bars(DAY1 + DAY2 + DAY3, [11, 12, 13, 14, 15]), "MSFT": bars(DAY2, [20, 21])},
    )


def test_load_bars_concatenates_days_in_range(store: LocalStore) -> None:
    frames = load_bars(store, ["MSFT", "AAPL"], date(2020, 1, 2), date(2020, 1, 3))
    assert list(frames) == ["MSFT", "AAPL"]
    assert frames["AAPL"]["close"].tolist() == [11, 12, 13, 14]
    assert frames["AAPL"].index.is_monotonic_increasing
    assert frames["MSFT"].index.equals(bars(DAY2, [0, 0]).index)
    assert load_bars(store, ["AAPL"], date(2020, 1, 6), date(2020, 1, 6))["AAPL"]["close"].tolist() == [15]


def test_available_range(store: LocalStore) -> None:
    assert available_range(store, "AAPL") == (date(2020, 1, 2), date(2020, 1, 6))


def test_unknown_symbol_lists_the_available_ones(store: LocalStore) -> None:
    with pytest.raises(UserError, match=r"no data for symbol NVDA in local:.* \(available: AAPL, MSFT\)$"):
        load_bars(store, ["AAPL", "NVDA"], date(2020, 1, 2), date(2020, 1, 3))


def test_unknown_symbol_lists_at_most_ten(tmp_path: Path) -> None:
    frames = {f"S{i:02d}": bars(DAY1, [11, 12]) for i in range(13)}
    with pytest.raises(UserError, match=r"available: S00, S01, .*, S09 and 3 more\)$"):
        load_bars(write_store(tmp_path, frames), ["NVDA"], date(2020, 1, 2), date(2020, 1, 2))


def test_empty_date_range_names_the_symbols_range(store: LocalStore) -> None:
    with pytest.raises(
        UserError,
        match=r"no data for MSFT between 2020-01-04 and 2020-01-10 .*MSFT has data from 2020-01-03 to 2020-01-03",
    ):
        load_bars(store, ["AAPL", "MSFT"], date(2020, 1, 4), date(2020, 1, 10))


def test_start_after_end(store: LocalStore) -> None:
    with pytest.raises(UserError, match="start date 2020-01-06 is after end date 2020-01-02"):
        load_bars(store, ["AAPL"], date(2020, 1, 6), date(2020, 1, 2))


def test_bars_off_their_day_are_a_problem(tmp_path: Path) -> None:
    store = write_store(tmp_path, {"AAPL": bars(DAY1, [11, 12])})
    misplaced = tmp_path / day_key("AAPL", date(2020, 1, 3))
    misplaced.parent.mkdir(parents=True, exist_ok=True)
    misplaced.write_bytes((tmp_path / day_key("AAPL", date(2020, 1, 2))).read_bytes())
    with pytest.raises(UserError) as err:
        load_bars(store, ["AAPL"], date(2020, 1, 2), date(2020, 1, 3))
    assert str(err.value).startswith(
        f"{misplaced}: row 0: timestamp 2020-01-02 14:30:00+00:00 is not on the file's day 2020-01-03 (and 1 more row)"
    )


def test_bad_file_error_points_to_data_validate(store: LocalStore, tmp_path: Path) -> None:
    path = tmp_path / day_key("AAPL", date(2020, 1, 3))
    frame = pd.read_parquet(path)
    frame.loc[0, "close"] = -1.0
    frame.loc[1, "volume"] = -1.0
    frame.to_parquet(path)
    with pytest.raises(UserError) as err:
        load_bars(store, ["AAPL"], date(2020, 1, 2), date(2020, 1, 3))
    assert str(err.value) == (
        f"{path}: row 0: close -1.0 is not a positive price "
        f"(1 more problem; run `parallel-dqn data validate local:{tmp_path}` to list them all)"
    )


# --- alignment ----------------------------------------------------------------------------------


def test_clock_is_the_union_of_all_timestamps() -> None:
    panel = align(
        {"A": bars(["2020-01-02 14:30", "2020-01-02 14:32"], [1, 2]), "B": bars(["2020-01-02 14:31"], [5])},
        ["A", "B"],
    )
    expected = np.array(["2020-01-02T14:30", "2020-01-02T14:31", "2020-01-02T14:32"], dtype="datetime64[ns]")
    np.testing.assert_array_equal(panel.timestamps, expected)
    assert panel.timestamps.dtype == np.dtype("datetime64[ns]")
    assert panel.symbols == ("A", "B")


def test_missing_bar_is_forward_filled_and_not_tradeable() -> None:
    a = bars(["2020-01-02 14:30", "2020-01-02 14:31", "2020-01-02 14:32"], [10, 11, 12], volume=7)
    b = bars(["2020-01-02 14:30", "2020-01-02 14:32"], [20, 22], volume=9)
    panel = align({"A": a, "B": b}, ["A", "B"])
    assert panel.tradeable.tolist() == [[True, True], [True, False], [True, True]]
    for field in ("open", "high", "low", "close"):
        assert getattr(panel, field)[1, 1] == 20.0  # B's last close
    assert panel.volume[:, 1].tolist() == [9, 0, 9]
    assert panel.close[:, 0].tolist() == [10, 11, 12] and panel.open[:, 0].tolist() == [9, 10, 11]
    assert panel.high[2, 1] == 24.0 and panel.low[2, 1] == 20.0  # real bars are untouched


def test_missing_stock_day_is_a_halt_at_the_last_close() -> None:
    a = bars(DAY1 + DAY2, [1, 2, 3, 4])
    b = bars(DAY1, [50, 51])
    panel = align({"A": a, "B": b}, ["A", "B"])
    assert panel.tradeable[:, 1].tolist() == [True, True, False, False]
    assert panel.close[2:, 1].tolist() == [51, 51] and panel.open[2:, 1].tolist() == [51, 51]
    assert panel.low[2:, 1].tolist() == [51, 51] and panel.high[2:, 1].tolist() == [51, 51]
    assert panel.volume[2:, 1].tolist() == [0, 0]
    assert panel.tradeable[:, 0].all()


def test_clock_before_a_stocks_first_bar_uses_its_first_open() -> None:
    a = bars(DAY1 + DAY2, [1, 2, 3, 4])
    b = bars(DAY2[1:], [40])  # first bar opens at 39
    panel = align({"A": a, "B": b}, ["A", "B"])
    assert panel.tradeable[:, 1].tolist() == [False, False, False, True]
    for field in ("open", "high", "low", "close"):
        assert getattr(panel, field)[:3, 1].tolist() == [39, 39, 39]
    assert panel.volume[:3, 1].tolist() == [0, 0, 0]


def test_naive_and_non_utc_indexes_are_utc() -> None:
    a = bars(DAY1, [1, 2])
    b = bars(DAY1, [3, 4]).tz_convert("America/New_York")
    c = bars(DAY1, [5, 6]).tz_localize(None)
    panel = align({"A": a, "B": b, "C": c}, ["A", "B", "C"])
    assert panel.n_steps == 2 and panel.tradeable.all()


def test_align_rejects_unsorted_bars() -> None:
    with pytest.raises(ValueError, match="not strictly increasing"):
        align({"A": bars(DAY1[::-1], [1, 2])}, ["A"])


def test_load_then_align(store: LocalStore) -> None:
    symbols = ["AAPL", "MSFT"]
    panel = align(load_bars(store, symbols, date(2020, 1, 2), date(2020, 1, 6)), symbols)
    assert panel.n_steps == 5
    assert panel.tradeable[:, 1].tolist() == [False, False, True, True, False]
    assert panel.close[:, 1].tolist() == [19, 19, 20, 21, 21]
