"""``parallel-dqn data generate`` and ``data validate``: synthetic markets and whole-store checks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parallel_dqn.config import parse_date
from parallel_dqn.errors import UserError


def register(sub: Any, flag: Callable[..., None]) -> None:
    """Add the subcommands to ``parallel-dqn data``."""
    g = sub.add_parser("generate", help="write a synthetic market with planted structure")
    flag(g, "output", required=True, help="folder to write the key layout into")
    flag(g, "stocks", nargs="+", default=["LEAD", "FOLW", "MOMO", "MREV", "RWLK"], help="symbols (roles by position)")
    flag(g, "start", default="2024-01-02", help="first day YYYY-MM-DD")
    flag(g, "days", type=int, default=10, help="trading days")
    flag(g, "seed", type=int, default=0)
    flag(g, "bar_minutes", type=int, default=1, help="bar length in minutes")
    flag(g, "overwrite", action="store_true", help="replace an existing market in --output")
    flag(g, "regime_change", nargs="?", const="volatility", default=None, choices=["volatility", "correlation"],
         help="the follower follows its leader in one hidden market regime and moves against it in the other; "
              "the regimes differ in volatility (calm / turbulent, the default) or, with 'correlation', only in "
              "how the stocks move together (no stock's own bars reveal it)")
    g.set_defaults(handler=generate)
    v = sub.add_parser("validate", help="check every file of a data source and list all problems")
    v.add_argument("source", help="data folder (or local:DIR)")
    flag(v, "stocks", nargs="+", default=None, help="only these stocks")
    v.set_defaults(handler=validate)


def generate(args: argparse.Namespace) -> int:
    from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market

    out = Path(args.output)
    if (out / "stocks_intraday").exists() and not args.overwrite:
        raise UserError(f"{out} already holds a market", "choose another --output, or pass --overwrite")
    if args.days < 1:
        raise UserError("--days must be >= 1")
    if args.bar_minutes < 1 or 390 % args.bar_minutes:
        raise UserError(f"--bar_minutes {args.bar_minutes} must divide the 390-minute session", "e.g. 1, 5, 15, 30")
    start = parse_date(args.start, "--start")
    spec = SyntheticSpec(bar_minutes=args.bar_minutes, regime_flip=args.regime_change is not None,
                         regime_by=args.regime_change or "volatility")
    market = generate_market(args.stocks, start, args.days, args.seed, spec)
    files = write_market(market, out)
    roles = ", ".join(f"{s}={r}" for s, r in market.structure["roles"].items())
    print(f"wrote {len(files)} files for {len(args.stocks)} stocks x {args.days} days to {out} ({roles})")
    return 0


def validate(args: argparse.Namespace) -> int:
    from parallel_dqn.data.audit import audit_store
    from parallel_dqn.data.store import open_store

    report = audit_store(open_store(args.source), args.stocks)
    for problem in report.problems:
        print(problem.line())
    status = f"{len(report.problems)} problems" if report.problems else "no problems"
    print(f"checked {report.files} files of {report.symbols} stocks: {status}", file=sys.stderr)
    return 1 if report.problems else 0
