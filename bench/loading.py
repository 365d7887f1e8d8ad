"""Loading benchmark: stock-day files per second, parallel-dqn's loader against pyarrow's dataset API.

On one generated market (``--stocks`` x ``--days`` files of ``--bar_minutes`` bars), side by side, alternating:

* **pyarrow**: ``pyarrow.dataset.dataset(paths).to_table()``, the raw read of every file, nothing else;
* **load_bars**: parallel-dqn's loader (read and validate every file in one pass, one frame per stock);
* **file by file**: the same work one file at a time, as the loader did before its one-pass read;
* **through the features**: the issue's "read, validate, align, features": plan, load and validate every file,
  align on one clock, the feature rows of every stock (the build's steps before the graph);
* **end to end**: what a run does before its first step: plan, load, validate, align on one clock, features,
  correlation graph (``build_cross_section`` in one process, with the cross-section cache off: a cached
  second run would measure the cache, not the build).

Usage:  python bench/loading.py [--stocks 10] [--days 250] [--bar_minutes 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads

from parallel_dqn.comm.inprocess import InProcessTransport
from parallel_dqn.config import Config
from parallel_dqn.data.align import align_bars
from parallel_dqn.data.crosssection import shard_rows
from parallel_dqn.data.features import session_length
from parallel_dqn.data.loader import load_bars, load_stock_bars
from parallel_dqn.data.snapshot import ListedOnce
from parallel_dqn.data.store import open_store
from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market
from parallel_dqn.data.validation import read_bars, validate_day
from parallel_dqn.training.driver import BuildRecipe, LocalShard, build_cross_section
from parallel_dqn.training.plan import plan_training

START = dt.date(2020, 1, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, default=10)
    ap.add_argument("--days", type=int, default=250)
    ap.add_argument("--bar_minutes", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/out/loading"))
    args = ap.parse_args()
    market = args.out / f"market-{args.stocks}x{args.days}x{args.bar_minutes}m"
    names = [f"S{i:03d}" for i in range(args.stocks)]
    if not (market / "stocks_intraday").exists():
        spec = SyntheticSpec(bar_minutes=args.bar_minutes)
        write_market(generate_market(names, START, args.days, seed=3, spec=spec), market)
    store = open_store(str(market))
    days = {s: store.list_days(s) for s in names}
    paths = [str(store.fetch(s, d)) for s in names for d in days[s]]
    first, last = min(d[0] for d in days.values()), max(d[-1] for d in days.values())
    cfg = Config()
    for key, value in {"data.data": str(market), "data.end_date": str(last), "data.eval_start": "",
                       "market.graph_window": 40, "data.cache": "off"}.items():
        cfg.set(key, value)

    def pyarrow_read() -> None:
        pads.dataset(paths, format="parquet").to_table()

    def loader() -> None:
        load_bars(store, names, first, last)

    def through_features() -> None:  # the build's own steps (``driver._build``) up to the graph, one process
        listed = ListedOnce(store)  # as a run's plan_run wraps its store: the plan's listing serves the loader
        recipe = BuildRecipe.of(plan_training(cfg, listed), cfg)
        bars = load_stock_bars(listed, list(recipe.symbols), *recipe.load)
        clock = np.unique(bars.timestamps).view("datetime64[ns]")
        train = slice(0, int(np.searchsorted(clock.astype("datetime64[D]"), np.datetime64(recipe.train[1], "D"),
                                             side="right")))
        shard_rows(align_bars(bars, clock), [np.arange(len(recipe.symbols))], session_length(clock[train]),
                   (train.start, train.stop), None)

    def end_to_end() -> None:
        listed = ListedOnce(store)
        plan = plan_training(cfg, listed)
        shards = [LocalShard(i, s) for i, s in enumerate(plan.shards)]
        build_cross_section(shards, plan, listed, InProcessTransport(endpoint=None), cfg)  # type: ignore[arg-type]

    def file_by_file() -> None:  # the loader's careful path (before the one-pass read): each file on its own
        for s in names:
            for d in days[s]:
                path = store.fetch(s, d)
                validate_day(read_bars(path, str(path)), d, str(path))

    runs = {
        "pyarrow dataset read": pyarrow_read,
        "load_bars (read + validate every file in one pass)": loader,
        "file by file (read + validate each file; the loader before)": file_by_file,
        "through the features (+ align, features; no graph)": through_features,
        "end to end (+ align, features, graph)": end_to_end,
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            rates[name].append(len(paths) / (time.perf_counter() - start))
    base = statistics.median(rates["pyarrow dataset read"])
    print(f"{len(paths)} files ({args.stocks} stocks x {args.days} days of {args.bar_minutes}-minute bars)\n")
    print("| what | files/s | / pyarrow |")
    print("|---|---|---|")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
