"""Walk-forward validation: rolling folds of training and test days, each a training run, joined out of sample.

A single train/evaluate split cannot tell skill from luck. A walk-forward trains on ``train_days`` trading
days, skips ``embargo_days``, tests on the next ``test_days``, moves on by ``step_days`` and does it again;
the test periods joined end to end are an out-of-sample record as long as the data allow, on which the
agent is compared with every baseline on the same bars and costs, with its significance
(:mod:`parallel_dqn.evaluation.significance`).

A walk-forward folder is a sweep folder (:mod:`parallel_dqn.sweep`) whose combinations are the folds
(``fold-000``, ``fold-001``, ...), each one's settings its training and test days. So the sweep machinery
runs them here N at a time (:func:`parallel_dqn.sweep.run_local`), or on SLURM as one job array
(``parallel-dqn sweep submit OUT``), resumes a stopped fold from its checkpoint and skips finished ones.
Once every fold has finished, :func:`join` reads each fold's ``returns_eval.csv`` (the agent's and every
baseline's return per test bar) and writes ``walk_forward.json``.

Everything here is logic: the CLI (``parallel_dqn.cli.walk_forward``) parses and prints.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parallel_dqn import outputs
from parallel_dqn.config import Config, parse_date
from parallel_dqn.data.store import open_store
from parallel_dqn.errors import UserError
from parallel_dqn.evaluation.metrics import performance_metrics
from parallel_dqn.evaluation.report import joined_fold_returns
from parallel_dqn.evaluation.significance import significance
from parallel_dqn.files import write_atomically
from parallel_dqn.sweep import (
    Candidate,
    Sweep,
    SweepSpec,
    combination_id,
    gather_status,
    is_sweep_dir,
    open_sweep,
    plan_sweep,
)
from parallel_dqn.training.plan import available_days, resolve_symbols

RESULT_FILE = "walk_forward.json"
SPEC_KIND = "walk-forward"  # sweep.json's sweep_text of a walk-forward folder starts with this
#: the settings each fold sets (and ``run.warm_start`` with ``--warm_start``)
FOLD_KEYS = ("data.start_date", "data.end_date", "data.eval_start", "data.eval_end")
LEVEL = 0.05  # the significance level of the verdict


@dataclass(frozen=True)
class WalkForwardSpec:
    """How the trading days are cut into folds (all counts in trading days of the data)."""

    train_days: int
    test_days: int
    step_days: int | None = None  # None: test_days (test periods end to end, none overlapping)
    embargo_days: int = 0  # days skipped between a fold's last training day and its first test day
    folds: int | None = None  # at most this many folds, the first ones
    warm_start: bool = False  # each fold after the first starts from the previous fold's trained model

    @property
    def step(self) -> int:
        return self.step_days or self.test_days

    def check(self) -> None:
        """One-line UserErrors for counts that cannot make folds."""
        for name, value, least in (("--train_days", self.train_days, 1), ("--test_days", self.test_days, 1),
                                   ("--step_days", self.step, 1), ("--embargo_days", self.embargo_days, 0),
                                   ("--folds", 1 if self.folds is None else self.folds, 1)):
            if value < least:
                raise UserError(f"{name} {value} must be >= {least}")
        if self.step < self.test_days:
            raise UserError(f"--step_days {self.step} is shorter than --test_days {self.test_days}: test periods would "
                            "overlap and a bar would count twice out of sample", f"use --step_days >= {self.test_days}")


@dataclass(frozen=True)
class Fold:
    """One fold: its first and last training day and its first and last test day (inclusive)."""

    index: int
    train: tuple[dt.date, dt.date]
    test: tuple[dt.date, dt.date]

    @property
    def name(self) -> str:
        return fold_name(self.index)

    def settings(self) -> dict[str, str]:
        """The fold's settings over the base configuration."""
        return dict(zip(FOLD_KEYS, (str(self.train[0]), str(self.train[1]), str(self.test[0]), str(self.test[1]))))


def fold_name(index: int) -> str:
    return f"fold-{index:03d}"


def plan_folds(days: Sequence[dt.date], spec: WalkForwardSpec) -> list[Fold]:
    """Rolling folds over the sorted trading ``days``: fold k trains on ``train_days`` days from day
    ``k * step``, skips ``embargo_days`` and tests on the next ``test_days``; only whole folds."""
    spec.check()
    folds: list[Fold] = []
    start = 0
    while spec.folds is None or len(folds) < spec.folds:
        test_start = start + spec.train_days + spec.embargo_days
        test_stop = test_start + spec.test_days
        if test_stop > len(days):
            break
        train = (days[start], days[start + spec.train_days - 1])
        folds.append(Fold(len(folds), train, (days[test_start], days[test_stop - 1])))
        start += spec.step
    if not folds:
        span = f"{days[0]} to {days[-1]}" if days else "no days"
        need = spec.train_days + spec.embargo_days + spec.test_days
        raise UserError(f"the data hold {len(days)} trading days ({span}): too few for one fold of {need} "
                        f"({spec.train_days} training + {spec.embargo_days} embargo + {spec.test_days} test)",
                        "widen --start_date..--end_date or shorten --train_days / --test_days")
    return folds


def trading_days(cfg: Config) -> list[dt.date]:
    """The days any of the run's stocks has data, within ``data.start_date..data.end_date`` when given."""
    store = open_store(cfg.data.data)
    days = available_days(store, resolve_symbols(store, cfg.data.stocks))
    lo = parse_date(cfg.data.start_date, "--start_date") if cfg.data.start_date else None
    hi = parse_date(cfg.data.end_date, "--end_date") if cfg.data.end_date else None
    return [d for d in days if (lo is None or d >= lo) and (hi is None or d <= hi)]


def plan(base: Config, spec: WalkForwardSpec, folder: str | Path) -> tuple[Sweep, list[Fold]]:
    """Plan the folds into ``folder`` (a sweep folder); planning the same walk-forward again changes nothing,
    so a stopped walk-forward continues where it stopped. A folder that holds another one is refused."""
    days = trading_days(base)
    folds = plan_folds(days, spec)
    text = spec_text(base, spec)
    out = Path(folder)
    if is_sweep_dir(out):
        held = open_sweep(out).text
        if held != text:
            what = "another walk-forward" if held.startswith(SPEC_KIND) else "a sweep"
            raise UserError(f"--output {out} holds {what} (other folds or settings)",
                            "give a new --output, or the same settings to continue it")
    candidates = []
    for fold in folds:
        cfg = copy.deepcopy(base)
        settings: dict[str, Any] = fold.settings()
        if spec.warm_start and fold.index > 0:
            settings["run.warm_start"] = str(Path(out).resolve() / fold_name(fold.index - 1) / outputs.MODEL)
        for key, value in settings.items():
            cfg.set(key, value, source=fold.name)
        cfg.validate()
        candidates.append(Candidate(settings, cfg, combination_id(cfg)))
    keys = [*FOLD_KEYS, "run.warm_start"] if spec.warm_start else list(FOLD_KEYS)
    sweep_spec = SweepSpec(out / RESULT_FILE, text, candidates, 0, keys)
    result = plan_sweep(sweep_spec, out, name_of=fold_name)
    return result.sweep, folds


def spec_text(base: Config, spec: WalkForwardSpec) -> str:
    """What identifies a walk-forward: its fold settings and its base configuration (``run.output`` aside)."""
    settings = base.to_dict()
    settings.get("run", {}).pop("output", None)
    return f"{SPEC_KIND} " + json.dumps({"spec": dataclasses.asdict(spec), "base": settings}, sort_keys=True)


# ---- joining the folds ------------------------------------------------------------------------
def join(sweep: Sweep, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The out-of-sample record: every fold's test bars end to end, the agent and every baseline's figures
    over them and the agent's significance; written to ``walk_forward.json`` and returned.

    A UserError names the folds that have not finished (still to run, running, queued on SLURM or failed).
    """
    folds = [c for c in sweep.combinations if c.in_sweep]
    waiting = unfinished_folds(sweep)
    if waiting:
        raise UserError(f"{len(waiting)} of {len(folds)} folds have not finished: {', '.join(waiting)}",
                        "run the walk-forward command again (or wait for its SLURM jobs) to finish them")
    records = []
    for c in folds:
        metrics = _read_json(sweep.run_dir(c) / outputs.METRICS)
        settings = c.settings
        records.append({
            "fold": c.name,
            "train": [settings["data.start_date"], settings["data.end_date"]],
            "test": [settings["data.eval_start"], settings["data.eval_end"]],
            "eval": metrics["eval"],
            "baselines": metrics["baselines"],
            "oracle": metrics.get("oracle"),
            "beats_buy_and_hold": metrics["eval"]["sharpe"] > metrics["baselines"]["buy_and_hold"]["sharpe"],
            "bars_per_year": metrics["annualisation"]["bars_per_year"],
        })
    joined, _ = joined_fold_returns([sweep.run_dir(c) for c in folds])
    stamps = pd.to_datetime(joined["timestamp"], utc=True)
    if not stamps.is_monotonic_increasing or stamps.duplicated().any():
        raise UserError(f"{sweep.folder}: the folds' test bars overlap or are out of order", "plan a new walk-forward")
    bars_per_year = float(np.median([r["bars_per_year"] for r in records]))
    strategies = {name: joined[name].to_numpy(dtype=np.float64) for name in joined.columns if name != "timestamp"}
    agent = strategies.pop("agent")
    oracle = strategies.pop("oracle", None)
    stats = significance(agent, strategies, bars_per_year, n_boot=n_boot, seed=seed)
    result = {
        "folds": records,
        "oos": {**performance_metrics(agent, bars_per_year), "turnover": _turnover(records, "eval"),
                "first_bar": str(stamps.iloc[0]), "last_bar": str(stamps.iloc[-1]), "folds": len(records),
                "folds_beating_buy_and_hold": sum(r["beats_buy_and_hold"] for r in records)},
        "baselines": {name: {**performance_metrics(r, bars_per_year), "turnover": _turnover(records, "baselines", name)}
                      for name, r in strategies.items()},
        "oracle": performance_metrics(oracle, bars_per_year) if oracle is not None else None,
        "significance": contract(stats),
        "significance_detail": stats,
        "bars_per_year": bars_per_year,
    }
    result["verdict"] = verdict(result["significance"])
    write_atomically(sweep.folder / RESULT_FILE, lambda tmp: tmp.write_text(json.dumps(result, indent=1) + "\n"))
    return result


def _turnover(records: list[dict[str, Any]], part: str, name: str | None = None) -> float:
    """Mean capital traded per bar over the joined test bars: the folds' own figures (the weights behind them
    stay in the folds' portfolio files), weighted by their bars."""
    figures = [(r[part] if name is None else r[part][name]) for r in records]
    bars = sum(f["n_steps"] for f in figures)
    return sum(f["turnover"] * f["n_steps"] for f in figures) / bars if bars else 0.0


def unfinished_folds(sweep: Sweep) -> list[str]:
    """``"fold-002 (running)"`` for every fold of the walk-forward that has not finished."""
    rows = [r for r in gather_status(sweep) if r.combination.in_sweep]
    return [f"{r.combination.name} ({r.state})" for r in rows if r.state != "finished"]


def contract(stats: dict[str, Any]) -> dict[str, Any]:
    """The issue's short form of the significance: Sharpe interval, PSR, p-value against buy-and-hold, DSR."""
    ci, versus = stats["sharpe_ci"], stats["vs_buy_and_hold"]
    return {
        "sharpe_ci": [ci["low"], ci["high"]],
        "confidence": ci["confidence"],
        "psr": stats["psr_vs_zero"],
        "psr_vs_buy_and_hold": stats["psr_vs_buy_and_hold"],
        "p_value_vs_buy_and_hold": versus["p_value"],
        "spa_p_value_vs_buy_and_hold": versus["spa"]["consistent"],
        "deflated_sharpe": stats.get("deflated_sharpe"),
    }


def verdict(sig: dict[str, Any], level: float = LEVEL) -> str:
    """The significance in plain words."""
    p = sig["p_value_vs_buy_and_hold"]
    lo, hi = sig["sharpe_ci"]
    interval = (f"{sig['confidence']:.0%} Sharpe interval [{lo:.2f}, {hi:.2f}]" if lo is not None
                else "no Sharpe interval (too few bars)")
    if p is None:
        return f"not tested against buy-and-hold (too few bars); {interval}"
    if p < level:
        return f"significant skill over buy-and-hold at the {level:.0%} level (p = {p:.3g}); {interval}"
    return f"no significant skill over buy-and-hold at the {level:.0%} level (p = {p:.3g}); {interval}"


def read_result(folder: str | Path) -> dict[str, Any] | None:
    """``walk_forward.json`` of a walk-forward folder (None if it has not been joined yet)."""
    return _read_json(Path(folder) / RESULT_FILE)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
