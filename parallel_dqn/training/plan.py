"""Turn a configuration and a data store into the concrete plan of a run.

Every process of a run (and every MPI rank) computes the same plan from the
same inputs: which stocks, which worker owns which, which days are trained on,
which are held out for evaluation, and which days are loaded as warm-up
history. The rules for settings left empty are here, and quoted in the README:

* no ``--stocks``: every stock in the store;
* no ``--start_date``: the first day any selected stock has data;
* no evaluation period: the days after ``--end_date`` if it is given, else the
  last quarter of the available days (at least one) is held out;
* no ``--end_date`` with an evaluation period: the last day before ``--eval_start``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from parallel_dqn.config import Config, parse_date
from parallel_dqn.data.features import MAX_LOOKBACK, FeatureStats
from parallel_dqn.data.store import Store
from parallel_dqn.errors import UserError


@dataclass
class RunPlan:
    """What a run does, resolved."""

    symbols: tuple[str, ...]
    shards: list[list[int]]  # stock indices of each worker
    train_start: dt.date | None
    train_end: dt.date | None
    eval_start: dt.date | None
    eval_end: dt.date | None
    load_start: dt.date
    load_end: dt.date
    episodes: int
    stats: FeatureStats | None = None  # from a saved model (evaluation); None: fit on training days
    reward_scale: float | None = None
    return_std: float | None = None
    bars_per_day: float | None = None  # from a saved model, so an evaluation annualises as its training run did
    structure: dict[str, Any] | None = None
    valid_start: dt.date | None = None  # validation.days held out at the end of the training period (None: none)
    valid_end: dt.date | None = None
    regime: dict[str, Any] | None = None  # a saved model's regime detector ([regime]); None: fitted on training days


def make_shards(n_stocks: int, workers: int) -> list[list[int]]:
    """Contiguous, balanced shards: ``workers`` lists of stock indices (0: one worker for all the stocks)."""
    n = workers or 1
    if n > n_stocks:
        raise UserError(f"--workers {n} is more than the {n_stocks} stocks", f"use at most --workers {n_stocks}")
    return [list(map(int, part)) for part in np.array_split(np.arange(n_stocks), n)]


def available_days(store: Store, symbols: tuple[str, ...]) -> list[dt.date]:
    """Sorted union of the days any of ``symbols`` has data."""
    days: set[dt.date] = set()
    for sym in symbols:
        days.update(store.list_days(sym))
    return sorted(days)


def require_days(days: list[dt.date], lo: dt.date, hi: dt.date, lo_flag: str, hi_flag: str) -> None:
    """UserError unless some day in ``days`` lies in ``[lo, hi]``."""
    if not any(lo <= x <= hi for x in days):
        raise UserError(
            f"no data between {lo_flag} {lo} and {hi_flag} {hi}",
            f"the data covers {days[0]} to {days[-1]}" if days else "the store is empty",
        )


def resolve_symbols(store: Store, requested: list[str]) -> tuple[str, ...]:
    """The requested stocks in the order given, or every stock in the store."""
    known = store.list_symbols()
    if not requested:
        if not known:
            raise UserError(f"{store.describe()} holds no stocks", "check --data, or run `parallel-dqn data generate`")
        return tuple(known)
    missing = [s for s in requested if s not in known]
    if missing:
        shown = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
        raise UserError(
            f"no data for stock {missing[0]} in {store.describe()}", f"available stocks: {shown or 'none'}"
        )
    return tuple(requested)


def plan_training(cfg: Config, store: Store, structure: dict | None = None) -> RunPlan:
    """Plan a training run (training episodes, then the held-out evaluation)."""
    d = cfg.data
    symbols = resolve_symbols(store, d.stocks)
    shards = make_shards(len(symbols), cfg.dist.workers)
    days = available_days(store, symbols)
    if not days:
        raise UserError(f"no data files for {' '.join(symbols)} in {store.describe()}")
    start = parse_date(d.start_date, "--start_date") if d.start_date else days[0]
    eval_start = parse_date(d.eval_start, "--eval_start") if d.eval_start else None
    eval_end = parse_date(d.eval_end, "--eval_end") if d.eval_end else None
    end = parse_date(d.end_date, "--end_date") if d.end_date else None
    if end is None and eval_start is not None:
        before = [x for x in days if x < eval_start]
        end = before[-1] if before else start
    if eval_start is None:
        later = [x for x in days if (end is None or x > end) and x >= start]
        if end is None:
            in_range = [x for x in days if x >= start]
            held = max(1, len(in_range) // 4)
            if len(in_range) < 2:
                raise UserError("need at least two days of data to train and evaluate", "add days or stocks")
            end, later = in_range[-held - 1], in_range[-held:]
        if later:
            eval_start = later[0]
            eval_end = eval_end or later[-1]
    elif eval_end is None:
        eval_end = days[-1]
    require_days(days, start, end, "--start_date", "--end_date")
    if eval_start is not None:
        require_days(days, eval_start, eval_end, "--eval_start", "--eval_end")
    end, valid = hold_out_validation(days, start, end, cfg.validation.days)
    return RunPlan(
        symbols=symbols,
        shards=shards,
        train_start=start,
        train_end=end,
        eval_start=eval_start,
        eval_end=eval_end,
        load_start=start,
        load_end=eval_end or (valid[1] if valid else end),
        episodes=cfg.dqn.episodes,
        structure=structure,
        valid_start=valid[0] if valid else None,
        valid_end=valid[1] if valid else None,
    )


def hold_out_validation(
    days: list[dt.date], start: dt.date, end: dt.date, n_days: int
) -> tuple[dt.date, tuple[dt.date, dt.date] | None]:
    """The training period's last day once ``n_days`` trading days are held out at its end for validation,
    and the validation's first and last day (None when ``n_days`` is 0).

    The held-out days are scored, never trained on, and the feature statistics are not fitted on them.
    """
    if not n_days:
        return end, None
    trading = [x for x in days if start <= x <= end]
    if len(trading) <= n_days:
        raise UserError(
            f"validation.days = {n_days} leaves no training day: the training period {start}..{end} has "
            f"{len(trading)} trading days",
            f"set validation.days below {len(trading)}, or train on more days",
        )
    return trading[-n_days - 1], (trading[-n_days], trading[-1])


def plan_evaluation(
    cfg: Config, store: Store, symbols: tuple[str, ...], saved: dict[str, Any], structure: dict | None = None
) -> RunPlan:
    """Plan an evaluation of a saved model on ``--eval_start``..``--eval_end``.

    Loads enough earlier days as warm-up that every feature and the correlation
    graph at the first evaluated bar are what they were in the training run.
    """
    d = cfg.data
    if not d.eval_start or not d.eval_end:
        raise UserError("evaluate needs --eval_start and --eval_end", "give the held-out days to evaluate on")
    eval_start, eval_end = parse_date(d.eval_start, "--eval_start"), parse_date(d.eval_end, "--eval_end")
    resolve_symbols(store, list(symbols))
    days = available_days(store, symbols)
    require_days(days, eval_start, eval_end, "--eval_start", "--eval_end")
    warmup_bars = MAX_LOOKBACK + cfg.market.graph_window + cfg.market.window + 1
    warmup_days = math.ceil(warmup_bars / max(saved["bars_per_day"], 1.0)) + 1
    before = [x for x in days if x < eval_start]
    load_start = before[-warmup_days] if len(before) >= warmup_days else (before[0] if before else eval_start)
    return RunPlan(
        symbols=tuple(symbols),
        shards=make_shards(len(symbols), cfg.dist.workers),
        train_start=None,
        train_end=None,
        eval_start=eval_start,
        eval_end=eval_end,
        load_start=load_start,
        load_end=eval_end,
        episodes=0,
        stats=FeatureStats.from_dict(saved["feature_stats"]),
        reward_scale=saved["reward_scale"],
        return_std=saved["return_std"],
        bars_per_day=saved["bars_per_day"],
        structure=structure,
        regime=saved.get("regime"),
    )
