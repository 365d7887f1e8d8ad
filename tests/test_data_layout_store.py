"""Key layout and stores: keys round-trip, bad keys are rejected, LocalStore lists and fetches."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from parallel_dqn.data import store as store_module
from parallel_dqn.data.layout import KEY_ROOT, day_key, parse_key
from parallel_dqn.data.store import LocalStore, Store, open_store
from parallel_dqn.errors import UserError


def test_day_key_layout() -> None:
    assert day_key("AAPL", date(2020, 1, 3)) == "stocks_intraday/AAPL/2020/01/AAPL_2020-01-03.parquet"


@pytest.mark.parametrize("symbol", ["AAPL", "BRK.B", "BF-B", "X_1", "9988"])
def test_key_round_trip(symbol: str) -> None:
    day = date(2021, 11, 30)
    assert parse_key(day_key(symbol, day)) == (symbol, day)


@pytest.mark.parametrize(
    "key",
    [
        "stocks_intraday/AAPL/2020/01/MSFT_2020-01-03.parquet",  # file symbol differs from folder
        "stocks_intraday/AAPL/2020/02/AAPL_2020-01-03.parquet",  # month folder differs
        "stocks_intraday/AAPL/2019/01/AAPL_2020-01-03.parquet",  # year folder differs
        "stocks_intraday/AAPL/2020/02/AAPL_2020-02-30.parquet",  # no such date
        "stocks_intraday/AAPL/2020/01/AAPL_2020-01-03.csv",
        "stocks_intraday/AAPL/2020/1/AAPL_2020-01-03.parquet",
        "stocks/AAPL/2020/01/AAPL_2020-01-03.parquet",
        "x/stocks_intraday/AAPL/2020/01/AAPL_2020-01-03.parquet",
        "stocks_intraday/AAPL/2020/01/extra/AAPL_2020-01-03.parquet",
        "stocks_intraday/AA PL/2020/01/AA PL_2020-01-03.parquet",
    ],
)
def test_parse_key_rejects_keys_outside_the_layout(key: str) -> None:
    assert parse_key(key) is None


@pytest.mark.parametrize("symbol", ["", "A/B", "A B", "..", "ÄPPL", "A*"])
def test_bad_symbol_is_a_user_error(symbol: str) -> None:
    with pytest.raises(UserError, match="invalid stock symbol"):
        day_key(symbol, date(2020, 1, 3))


def _touch(root: Path, key: str) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


AAPL_DAYS = [
    date(2018, 6, 1), date(2019, 12, 30), date(2019, 12, 31), date(2020, 1, 2), date(2020, 1, 31), date(2020, 2, 3)
]


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    for day in AAPL_DAYS:
        _touch(tmp_path, day_key("AAPL", day))
    _touch(tmp_path, day_key("MSFT", date(2020, 1, 2)))
    # Files that are not in the layout are ignored.
    _touch(tmp_path, "stocks_intraday/AAPL/2020/01/MSFT_2020-01-03.parquet")
    _touch(tmp_path, "stocks_intraday/AAPL/2020/01/notes.txt")
    _touch(tmp_path, "stocks_intraday/README.md")
    (tmp_path / KEY_ROOT / "bad symbol").mkdir()
    return tmp_path


def test_local_store_lists_exactly_the_days_parse_key_accepts(tmp_path: Path) -> None:
    """The listing compares names as strings (no regex per file): it keeps exactly the files of the symbol's
    folders that :func:`parse_key` reads as that symbol's days, whatever else lies there."""
    names = [
        "AAPL_2020-01-03.parquet", "AAPL_2020-01-31.parquet",  # in the layout
        "AAPL_2020-02-03.parquet", "AAPL_2019-01-03.parquet",  # another month or year than the folder
        "AAPL_2020-01-32.parquet", "AAPL_2020-01-3x.parquet", "AAPL_2020-01-0٣.parquet",  # no such day
        "AAPL_B_2020-01-03.parquet", "AAPLX_2020-01-03.parquet", "XAAPL_2020-01-03.parquet", "MSFT_2020-01-03.parquet",
        "AAPL_2020-01-03.parquet.tmp", "AAPL_2020-01-03.csv", "AAPL_2020-1-03.parquet", "AAPL_20200103.parquet",
    ]
    folder = tmp_path / KEY_ROOT / "AAPL" / "2020" / "01"
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"")
    (folder / "AAPL_2020-01-07.parquet").mkdir()  # a folder is not a file
    (tmp_path / KEY_ROOT / "AAPL" / "2020" / "1").mkdir()  # nor is a month folder of one digit listed
    (tmp_path / KEY_ROOT / "AAPL" / "2020" / "1" / "AAPL_2020-01-05.parquet").write_bytes(b"")
    expected = sorted(
        parsed[1] for name in names
        if (parsed := parse_key(f"{KEY_ROOT}/AAPL/2020/01/{name}")) is not None and parsed[0] == "AAPL"
    )
    assert expected == [date(2020, 1, 3), date(2020, 1, 31)]
    assert LocalStore(tmp_path).list_days("AAPL") == expected


def test_local_store_lists_symbols_and_days(store_root: Path) -> None:
    store = LocalStore(store_root)
    assert isinstance(store, Store)
    assert store.list_symbols() == ["AAPL", "MSFT"]
    assert store.list_days("AAPL") == AAPL_DAYS
    assert store.list_days("MSFT") == [date(2020, 1, 2)]
    assert store.list_days("NVDA") == []


def test_local_store_date_filter_is_inclusive(store_root: Path) -> None:
    store = LocalStore(store_root)
    assert store.list_days("AAPL", date(2019, 12, 31), date(2020, 1, 31)) == [
        date(2019, 12, 31), date(2020, 1, 2), date(2020, 1, 31)
    ]
    assert store.list_days("AAPL", start=date(2020, 2, 1)) == [date(2020, 2, 3)]
    assert store.list_days("AAPL", end=date(2019, 1, 1)) == [date(2018, 6, 1)]
    assert store.list_days("AAPL", date(2020, 1, 3), date(2020, 1, 30)) == []


def test_local_store_walks_only_the_needed_folders(store_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scanned: list[str] = []
    real_scandir = os.scandir

    def recording_scandir(path):  # type: ignore[no-untyped-def]
        scanned.append(Path(path).relative_to(store_root).as_posix())
        return real_scandir(path)

    monkeypatch.setattr(store_module.os, "scandir", recording_scandir)
    LocalStore(store_root).list_days("AAPL", date(2020, 1, 5), date(2020, 1, 20))
    assert "stocks_intraday/AAPL/2020/01" in scanned
    skipped = ("stocks_intraday/MSFT", "stocks_intraday/AAPL/2018", "stocks_intraday/AAPL/2019")
    assert not any(p.startswith(skipped) for p in scanned)
    assert "stocks_intraday/AAPL/2020/02" not in scanned


def test_local_store_fetch(store_root: Path) -> None:
    store = LocalStore(store_root)
    path = store.fetch("AAPL", date(2020, 1, 2))
    assert path == store_root / "stocks_intraday/AAPL/2020/01/AAPL_2020-01-02.parquet"
    assert path.is_file()
    with pytest.raises(UserError, match=r"no bar file for AAPL on 2020-01-03"):
        store.fetch("AAPL", date(2020, 1, 3))


def test_open_store_local_specs(store_root: Path) -> None:
    for spec in (str(store_root), f"local:{store_root}"):
        store = open_store(spec)
        assert isinstance(store, LocalStore)
        assert store.describe() == f"local:{store_root}"
        assert store.list_symbols() == ["AAPL", "MSFT"]


def test_open_store_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UserError) as err:
        open_store(f"local:{missing}")
    message = str(err.value)
    assert str(missing) in message and "does not exist" in message
    assert f"parallel-dqn data generate --output {missing}" in message


def test_open_store_folder_without_layout(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"has no stocks_intraday/ subfolder.*parallel-dqn data generate"):
        open_store(str(tmp_path))


def test_open_store_azure_without_connection_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(UserError, match=r"azure://bars: AZURE_STORAGE_CONNECTION_STRING is not set.*run_with_env"):
        open_store("azure://bars")


def test_open_store_unknown_scheme() -> None:
    with pytest.raises(UserError, match=r"unknown store scheme 'ftp'.*local:, azure:, s3:, gs:"):
        open_store("ftp://bucket/x")
