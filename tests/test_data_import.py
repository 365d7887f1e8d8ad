"""``parallel-dqn data import-csv`` and ``data fetch-alphavantage`` through the real CLI.

CSV: bars of a generated market written as CSV (naive local times, UTC offsets, several symbols in
one file, 5-minute and hourly bars) import into files that ``data validate`` accepts and that load
back identical; a bad CSV is one error line with nothing written; existing files are skipped when
identical and replaced only with ``--overwrite``.

Alpha Vantage: a real loopback HTTP server answers in the API's JSON format and records the
requests; the real client fetches through it (throttling, errors, a closed port, a missing key),
and the API key must never show up in the output or the written files.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from parallel_dqn.data.alphavantage import AlphaVantageClient
from parallel_dqn.data.loader import load_bars
from parallel_dqn.data.store import LocalStore
from parallel_dqn.data.synthetic import SyntheticSpec, generate_market
from tests.helpers import LoopbackJSONServer, hash_tree, run_cli, user_error

NY = "America/New_York"
KEY = "SeCrEtKeY-123"
#: three days around the 2024 DST change (Sunday 2024-03-10): Fri 8th (UTC-5), Mon 11th, Tue 12th (UTC-4)
DST_START = dt.date(2024, 3, 8)


def market(symbols: tuple[str, ...], bar_minutes: int, days: int = 3) -> dict[str, pd.DataFrame]:
    """Generated bars (loader format: UTC index) of ``symbols`` around the DST change."""
    spec = SyntheticSpec(bar_minutes=bar_minutes)
    return generate_market(list(symbols), DST_START, days, seed=3, spec=spec).frames


def loaded(dest: Path, symbols: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """What the training loader reads back from ``dest``."""
    return load_bars(LocalStore(dest), symbols, dt.date(2024, 1, 1), dt.date(2024, 12, 31))


def assert_same_bars(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    assert list(got) == list(want)
    for symbol, frame in want.items():
        pd.testing.assert_frame_equal(got[symbol], frame, check_freq=False, check_names=False)


def assert_valid_store(dest: Path) -> None:
    proc = run_cli("data", "validate", dest)
    assert proc.returncode == 0 and "no problems" in proc.stderr, proc.stdout + proc.stderr


def ok(proc) -> str:
    """stdout of a successful command."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr}\n{proc.stdout}"
    return proc.stdout


def local_csv(frame: pd.DataFrame, path: Path, **header: str) -> Path:
    """``frame`` as CSV with naive New York times; ``header`` renames columns (e.g. ``close="C"``)."""
    out = frame.copy()
    out.index = out.index.tz_convert(NY).tz_localize(None)
    out = out.rename_axis(header.pop("timestamp", "timestamp")).rename(columns=header)
    out.to_csv(path)
    return path


# ---- CSV import -------------------------------------------------------------------------------
def test_csv_naive_local_times_round_trip(tmp_path: Path) -> None:
    want = market(("AAA",), bar_minutes=5)
    csv = local_csv(want["AAA"], tmp_path / "AAA.csv", timestamp="Date", open="Open", volume="Vol")
    dest = tmp_path / "data"
    out = ok(run_cli("data", "import-csv", csv, "--to", dest, "--timezone", NY))
    assert "imported 234 bars of 1 stocks into 3 files (0 skipped, identical)" in out
    assert sorted(p.name for p in dest.rglob("*.parquet")) == [
        "AAA_2024-03-08.parquet", "AAA_2024-03-11.parquet", "AAA_2024-03-12.parquet"
    ]
    assert_valid_store(dest)
    got = loaded(dest, ("AAA",))
    assert_same_bars(got, want)
    first = got["AAA"].groupby(got["AAA"].index.date).head(1).index
    assert [t.strftime("%d %H:%M") for t in first] == ["08 14:30", "11 13:30", "12 13:30"]  # DST in UTC


def test_csv_symbol_column_hourly_with_offsets_and_aliases(tmp_path: Path) -> None:
    want = market(("AAA", "BBB", "CCC"), bar_minutes=60)
    rows = []
    for symbol, frame in want.items():
        local = frame.copy()
        local.index = local.index.tz_convert(NY)  # written with offsets -05:00 / -04:00
        rows.append(local.rename_axis("DateTime").reset_index().assign(Ticker=symbol))
    table = pd.concat(rows).rename(columns={"open": "o", "high": "H", "low": "l", "close": "Close", "volume": "v"})
    csv = tmp_path / "bars.csv"
    table.to_csv(csv, index=False)
    dest = tmp_path / "data"
    out = ok(run_cli("data", "import-csv", csv, "--to", dest, "--timezone", "Asia/Tokyo"))  # ignored: offsets given
    assert "imported 54 bars of 3 stocks into 9 files" in out
    assert_valid_store(dest)
    assert_same_bars(loaded(dest, ("AAA", "BBB", "CCC")), want)


def test_csv_symbol_flag_utc_default_and_separate_date_time(tmp_path: Path) -> None:
    want = market(("AAA",), bar_minutes=30)["AAA"]
    utc = want.index.tz_localize(None)
    frame = want.reset_index(drop=True).assign(date=utc.strftime("%Y-%m-%d"), time=utc.strftime("%H:%M:%S"))
    csv = tmp_path / "export_2024.csv"
    frame.to_csv(csv, index=False)
    dest = tmp_path / "data"
    ok(run_cli("data", "import-csv", csv, "--to", dest, "--symbol", "XYZ"))
    assert_same_bars(loaded(dest, ("XYZ",)), {"XYZ": want})



def test_csv_with_a_nameless_index_column_as_pandas_writes_it(tmp_path: Path) -> None:
    """``frame.to_csv(path)`` of a frame indexed by time writes the index under an empty header (as the CSV files
    that backtesting.py ships are): that column is the timestamp."""
    want = market(("AAA",), bar_minutes=60)["AAA"]
    frame = want.rename(columns=str.capitalize)
    frame.index = frame.index.tz_localize(None).rename(None)
    csv = tmp_path / "EURUSD.csv"
    frame.to_csv(csv)
    assert csv.read_text().startswith(",Open,High,Low,Close,Volume")
    dest = tmp_path / "data"
    ok(run_cli("data", "import-csv", csv, "--to", dest, "--symbol", "AAA"))
    assert_same_bars(loaded(dest, ("AAA",)), {"AAA": want})

def _missing_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="close")


def _nan_price_and_negative_volume(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.iloc[7, frame.columns.get_loc("high")] = float("nan")
    frame.iloc[9, frame.columns.get_loc("volume")] = -5
    return frame


def _unsorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[[0, 1, 3, 2, *range(4, len(frame))]]


@pytest.mark.parametrize(
    ("corrupt", "names"),
    [
        (_missing_column, ["missing column(s) close"]),
        (_nan_price_and_negative_volume, ["row 7", "high is missing (NaN)", "1 more problem", "nothing was written"]),
        (_unsorted, ["row 3", "earlier than the row before"]),
    ],
)
def test_bad_csv_is_one_line_and_writes_nothing(tmp_path: Path, corrupt, names: list[str]) -> None:
    good = local_csv(market(("AAA",), 5)["AAA"], tmp_path / "AAA.csv")
    bad = tmp_path / "BBB.csv"
    corrupt(pd.read_csv(good)).to_csv(bad, index=False)
    dest = tmp_path / "data"
    user_error(run_cli("data", "import-csv", good, bad, "--to", dest, "--timezone", NY), str(bad), *names)
    assert not dest.exists()


@pytest.mark.slow  # several CLI runs (~3 s)
def test_bad_timestamp_and_unknown_zone_are_one_line(tmp_path: Path) -> None:
    frame = pd.read_csv(local_csv(market(("AAA",), 5)["AAA"], tmp_path / "AAA.csv"))
    frame.loc[4, "timestamp"] = "yesterday-ish"
    frame.to_csv(tmp_path / "BAD.csv", index=False)
    dest = tmp_path / "data"
    user_error(run_cli("data", "import-csv", tmp_path / "BAD.csv", "--to", dest), "row 4", "'yesterday-ish'")
    user_error(run_cli("data", "import-csv", tmp_path / "AAA.csv", "--to", dest, "--timezone", "Mars/Base"),
               "Mars/Base")
    assert not dest.exists()


@pytest.mark.slow  # several CLI runs (~7 s)
def test_existing_files_skipped_when_identical_replaced_only_with_overwrite(tmp_path: Path) -> None:
    want = market(("AAA",), 5)["AAA"]
    csv = local_csv(want, tmp_path / "AAA.csv")
    dest = tmp_path / "data"
    ok(run_cli("data", "import-csv", csv, "--to", dest, "--timezone", NY))
    before = hash_tree(dest)
    again = ok(run_cli("data", "import-csv", csv, "--to", dest, "--timezone", NY))
    assert "into 0 files (3 skipped, identical)" in again
    assert hash_tree(dest) == before

    changed = pd.read_csv(csv)
    changed.loc[len(changed) - 1, "close"] += 0.5  # the last day differs
    changed.to_csv(csv, index=False)
    line = user_error(run_cli("data", "import-csv", csv, "--to", dest, "--timezone", NY),
                      "AAA_2024-03-12.parquet", "--overwrite")
    assert "different" in line
    assert hash_tree(dest) == before

    out = ok(run_cli("data", "import-csv", csv, "--to", dest, "--timezone", NY, "--overwrite"))
    assert "into 1 files (2 skipped, identical)" in out
    assert loaded(dest, ("AAA",))["AAA"]["close"].iloc[-1] == pytest.approx(want["close"].iloc[-1] + 0.5)
    assert not [p for p in dest.rglob("*") if p.name.endswith(".tmp")]


# ---- Alpha Vantage ----------------------------------------------------------------------------
def av_payload(symbol: str, frame: pd.DataFrame, interval: str) -> dict:
    """``frame`` as a TIME_SERIES_INTRADAY answer: US/Eastern local times, newest first, values as strings."""
    local = frame.index.tz_convert("US/Eastern").strftime("%Y-%m-%d %H:%M:%S")
    series = {
        t: {"1. open": repr(r.open), "2. high": repr(r.high), "3. low": repr(r.low),
            "4. close": repr(r.close), "5. volume": str(int(r.volume))}
        for t, r in zip(local, frame.itertuples())
    }
    meta = {"1. Information": "Intraday (5min) open, high, low, close prices and volume", "2. Symbol": symbol,
            "3. Last Refreshed": local[-1], "4. Interval": interval, "5. Output Size": "Full size",
            "6. Time Zone": "US/Eastern"}
    return {"Meta Data": meta, f"Time Series ({interval})": dict(reversed(list(series.items())))}


NOTE = {"Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute "
                "and 500 calls per day."}
#: the real daily-limit answer echoes the key: it must be redacted from the error line
RATE_INFO = {"Information": f"Thank you for using Alpha Vantage! We have detected your API key as {KEY} and our "
                            "standard API rate limit is 25 requests per day."}
BAD_SYMBOL = {"Error Message": "Invalid API call. Please retry or visit the documentation "
                               "(https://www.alphavantage.co/documentation/) for TIME_SERIES_INTRADAY."}
BAD_KEY = {"Error Message": "the parameter apikey is invalid or missing. Please claim your free API key on "
                            "(https://www.alphavantage.co/support/#api-key)."}


class FakeAlphaVantage:
    """A loopback HTTP server answering like Alpha Vantage; ``answers[symbol]`` is consumed in order
    (its last answer repeats) and ``requests`` records every query it got."""

    def __init__(self) -> None:
        self.answers: dict[str, list[dict]] = {}
        self.requests: list[dict[str, str]] = []
        self.loopback = LoopbackJSONServer(self._respond)
        self.url = self.loopback.url + "/query"

    def _respond(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))
        self.requests.append(query)
        queue = self.answers.get(query.get("symbol", ""), [BAD_SYMBOL])
        return 200, queue.pop(0) if len(queue) > 1 else queue[0]

    def symbols_requested(self) -> list[str]:
        return [q["symbol"] for q in self.requests]


@pytest.fixture
def fake_av() -> Iterator[FakeAlphaVantage]:
    fake = FakeAlphaVantage()
    with fake.loopback:
        yield fake


def av_env(key: str | None = KEY) -> dict[str, str]:
    """This environment without proxies or a key, plus ``key`` if given."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "ALPHAVANTAGE_API_KEY"}
    return env | ({"ALPHAVANTAGE_API_KEY": key} if key is not None else {})


def fetch(url: str, dest: Path, *stocks: str, key: str | None = KEY, retries: str = "3"):
    return run_cli(
        "data", "fetch-alphavantage", "--stocks", *stocks, "--month", "2024-03", "--interval", "5min",
        "--to", dest, "--base-url", url, "--min-interval", "0", "--backoff", "0", "--retries", retries,
        env=av_env(key),
    )


def assert_key_nowhere(proc, dest: Path) -> None:
    assert KEY not in proc.stdout + proc.stderr
    for path in dest.rglob("*") if dest.exists() else []:
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path


def test_fetch_two_symbols_utc_across_dst_key_never_shown(fake_av: FakeAlphaVantage, tmp_path: Path) -> None:
    want = market(("AAPL", "MSFT"), bar_minutes=5)
    fake_av.answers = {s: [av_payload(s, f, "5min")] for s, f in want.items()}
    dest = tmp_path / "data"
    proc = fetch(fake_av.url, dest, "AAPL", "MSFT")
    assert "imported 468 bars of 2 stocks into 6 files (0 skipped, identical)" in ok(proc)
    assert_valid_store(dest)
    got = loaded(dest, ("AAPL", "MSFT"))
    assert_same_bars(got, want)
    assert [t.strftime("%d %H:%M") for t in got["AAPL"].index[[0, 78]]] == ["08 14:30", "11 13:30"]
    assert fake_av.symbols_requested() == ["AAPL", "MSFT"]
    expected = {"function": "TIME_SERIES_INTRADAY", "interval": "5min", "month": "2024-03", "outputsize": "full",
                "extended_hours": "false", "datatype": "json", "apikey": KEY}
    assert all(q.items() >= expected.items() for q in fake_av.requests)
    assert_key_nowhere(proc, dest)


@pytest.mark.parametrize("throttle", [NOTE, RATE_INFO], ids=["Note", "Information"])
def test_throttled_then_retried(fake_av: FakeAlphaVantage, tmp_path: Path, throttle: dict) -> None:
    frame = market(("AAPL",), 5)["AAPL"]
    fake_av.answers = {"AAPL": [throttle, av_payload("AAPL", frame, "5min")]}
    dest = tmp_path / "data"
    ok(fetch(fake_av.url, dest, "AAPL"))
    assert fake_av.symbols_requested() == ["AAPL", "AAPL"]
    assert_same_bars(loaded(dest, ("AAPL",)), {"AAPL": frame})


def test_throttled_forever_gives_up_in_one_line_without_the_key(fake_av: FakeAlphaVantage, tmp_path: Path) -> None:
    fake_av.answers = {"AAPL": [RATE_INFO]}
    proc = fetch(fake_av.url, tmp_path / "data", "AAPL", retries="2")
    user_error(proc, "AAPL", "throttled", "3 tries", "***")
    assert len(fake_av.requests) == 3
    assert_key_nowhere(proc, tmp_path)


def test_non_http_base_url_is_refused(tmp_path: Path) -> None:
    user_error(fetch("file:///etc/passwd", tmp_path / "data", "AAPL"), "--base-url", "file:///etc/passwd")


def test_error_message_names_symbol_and_writes_nothing(fake_av: FakeAlphaVantage, tmp_path: Path) -> None:
    fake_av.answers = {"AAPL": [av_payload("AAPL", market(("AAPL",), 5)["AAPL"], "5min")], "NOPE": [BAD_SYMBOL]}
    dest = tmp_path / "data"
    proc = fetch(fake_av.url, dest, "AAPL", "NOPE")
    user_error(proc, "NOPE", "unknown symbol or bad parameters")
    assert not dest.exists()
    assert_key_nowhere(proc, dest)


def test_invalid_key_is_one_line_without_the_key(fake_av: FakeAlphaVantage, tmp_path: Path) -> None:
    fake_av.answers = {"AAPL": [BAD_KEY]}
    proc = fetch(fake_av.url, tmp_path / "data", "AAPL")
    user_error(proc, "API key", "ALPHAVANTAGE_API_KEY")
    assert_key_nowhere(proc, tmp_path)


def test_missing_key_says_how_to_set_it(fake_av: FakeAlphaVantage, tmp_path: Path) -> None:
    user_error(fetch(fake_av.url, tmp_path / "data", "AAPL", key=None), "ALPHAVANTAGE_API_KEY", "api_keys.env")
    assert fake_av.requests == []


def test_server_down_is_one_line_after_retries(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = fetch(f"http://127.0.0.1:{port}/query", tmp_path / "data", "AAPL", retries="2")
    user_error(proc, "AAPL", f"127.0.0.1:{port}", "3 tries")
    assert_key_nowhere(proc, tmp_path)


def test_client_paces_calls_and_backs_off(fake_av: FakeAlphaVantage) -> None:
    """The injected clock and sleep see the 12 s spacing and the doubling backoff, without waiting."""
    frame = market(("AAPL",), 5, days=1)["AAPL"]
    fake_av.answers = {
        "AAPL": [NOTE, NOTE, av_payload("AAPL", frame, "5min")],
        "MSFT": [av_payload("MSFT", frame, "5min")],
    }
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    client = AlphaVantageClient(KEY, fake_av.url, min_interval=12, backoff=15, sleep=sleep, clock=lambda: now[0])
    client.fetch_month("AAPL", "2024-03", "5min")
    client.fetch_month("MSFT", "2024-03", "5min")
    assert slept == [15, 30, 12]  # two backoffs (already past the 12 s spacing), then the spacing before MSFT
    assert fake_av.symbols_requested() == ["AAPL", "AAPL", "AAPL", "MSFT"]
