"""``parallel-dqn data sync SRC DST``: copy the key layout between any two of a local folder, s3://, gs://, azure://.

Skips files whose size and MD5 already match (see :mod:`parallel_dqn.data.sync`), shows a progress bar on a
terminal and ends with one summary line: copied, skipped, bytes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from parallel_dqn.config import parse_date


def register(sub: Any, flag: Callable[..., None]) -> None:
    """Add ``sync`` to ``parallel-dqn data``."""
    s = sub.add_parser("sync", help="copy stock-day files between local folders and s3://, gs://, azure:// "
                                    "(skips files whose size and MD5 match)")
    s.add_argument("src", metavar="SRC", help="data folder (or local:DIR), s3://BUCKET[/PREFIX], gs://..., azure://...")
    s.add_argument("dst", metavar="DST", help="where to copy to (same forms; a missing bucket is created)")
    flag(s, "symbols", nargs="+", default=None, help="only these stocks")
    flag(s, "start", default=None, help="first day YYYY-MM-DD (inclusive)")
    flag(s, "end", default=None, help="last day YYYY-MM-DD (inclusive)")
    s.set_defaults(handler=sync)


def sync(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from parallel_dqn.data.sync import sync as run_sync

    start = parse_date(args.start, "--start") if args.start else None
    end = parse_date(args.end, "--end") if args.end else None
    # the bar only on a terminal (disable=None): a script's or a test's stderr keeps just the summary or the error
    with tqdm(unit="file", desc="sync", disable=None, leave=False) as bar:
        counts = run_sync(args.src, args.dst, args.symbols or (), start, end, progress=bar.update,
                          total=lambda n: setattr(bar, "total", n))
    print(counts.line(args.src, args.dst))
    return 0
