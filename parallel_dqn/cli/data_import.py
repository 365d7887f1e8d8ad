"""``parallel-dqn data import-csv`` and ``data fetch-alphavantage``: bring outside bars into the key layout."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parallel_dqn.errors import UserError


def register(sub: Any, flag: Callable[..., None]) -> None:
    """Add the subcommands to ``parallel-dqn data``."""
    from parallel_dqn.data.alphavantage import DEFAULT_BASE_URL, INTERVALS

    c = sub.add_parser("import-csv", help="import your own bars from CSV files (one file per stock-day)")
    c.add_argument("files", nargs="+", metavar="FILE", help="CSV files: timestamp, open, high, low, close, volume")
    flag(c, "to", required=True, help="folder to write the key layout into")
    flag(c, "symbol", default=None, help="the stock of every file (default: a symbol column, else the file name)")
    flag(c, "timezone", default="UTC", help="time zone of naive timestamps, e.g. America/New_York")
    flag(c, "overwrite", action="store_true", help="replace existing files that hold different bars")
    c.set_defaults(handler=import_csv)

    a = sub.add_parser("fetch-alphavantage", help="download intraday bars of a month (key in $ALPHAVANTAGE_API_KEY)")
    flag(a, "stocks", nargs="+", required=True, help="symbols, e.g. AAPL MSFT")
    flag(a, "month", required=True, help="month YYYY-MM")
    flag(a, "to", required=True, help="folder to write the key layout into")
    flag(a, "interval", choices=INTERVALS, default="1min", help="bar length")
    flag(a, "base_url", default=DEFAULT_BASE_URL, help="API endpoint")
    flag(a, "min_interval", type=float, default=12.0, help="seconds between calls (free tier: 5 calls/minute)")
    flag(a, "backoff", type=float, default=15.0, help="first wait in seconds after a throttled call (doubles)")
    flag(a, "retries", type=int, default=4, help="retries of a throttled or failed call")
    flag(a, "overwrite", action="store_true", help="replace existing files that hold different bars")
    a.set_defaults(handler=fetch_alphavantage)


def import_csv(args: argparse.Namespace) -> int:
    from parallel_dqn.data.csv_import import import_csv_files

    result = import_csv_files([Path(f) for f in args.files], Path(args.to), args.symbol, args.timezone, args.overwrite)
    print(f"{result.line()} under {args.to}")
    return 0


def fetch_alphavantage(args: argparse.Namespace) -> int:
    from parallel_dqn.data.alphavantage import KEY_ENV, AlphaVantageClient
    from parallel_dqn.data.daywriter import plan_day_files, write_day_files
    from parallel_dqn.data.layout import check_symbol

    if not re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])", args.month):
        raise UserError(f"--month {args.month}: expected YYYY-MM", "e.g. --month 2024-01")
    if min(args.min_interval, args.backoff) < 0 or args.retries < 0:
        raise UserError("--min-interval, --backoff and --retries must be >= 0")
    symbols = [check_symbol(s) for s in args.stocks]
    if len(set(symbols)) != len(symbols):
        raise UserError("a symbol is listed twice in --stocks", "list each symbol once")
    client = AlphaVantageClient(
        os.environ.get(KEY_ENV, "").strip(),
        base_url=args.base_url,
        min_interval=args.min_interval,
        backoff=args.backoff,
        retries=args.retries,
    )
    day_files = []
    for symbol in symbols:
        frame = client.fetch_month(symbol, args.month, args.interval)
        day_files += plan_day_files({symbol: frame}, f"Alpha Vantage {symbol} {args.month}")
    result = write_day_files(day_files, Path(args.to), args.overwrite)
    print(f"{result.line()} under {args.to}")
    return 0
