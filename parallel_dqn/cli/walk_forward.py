"""``parallel-dqn walk-forward``: rolling training/test folds, run here or on SLURM, joined out of sample.

The logic (folds, the walk-forward folder, joining, significance) is in :mod:`parallel_dqn.walkforward`;
this is the parser and the handler, which prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from parallel_dqn.errors import UserError

#: train's flags a walk-forward sets per fold, or does its own way
REFUSED = {
    "eval_start": "each fold's test days are its evaluation period",
    "eval_end": "each fold's test days are its evaluation period",
    "resume": "running the same walk-forward command again continues every unfinished fold",
    "overwrite": "a walk-forward continues what its --output holds; give a new --output to start afresh",
}


def register(sub: Any, flag: Callable[..., None], train_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``parallel-dqn walk-forward``: train's flags plus the folds'."""
    w = sub.add_parser("walk-forward", help="rolling train/test folds over --start_date..--end_date, joined out of sample")
    train_flags(w)
    flag(w, "train_days", type=int, required=True, help="trading days each fold trains on")
    flag(w, "test_days", type=int, required=True, help="trading days each fold is tested on")
    flag(w, "step_days", type=int, default=None, help="trading days from one fold's start to the next (default: --test_days)")
    flag(w, "embargo_days", type=int, default=0, help="trading days skipped between a fold's training and test days")
    flag(w, "folds", type=int, default=None, help="at most this many folds (the first ones)")
    flag(w, "warm_start", action="store_true",
         help="start each fold from the previous fold's trained model (the folds then run one at a time, in order)")
    flag(w, "jobs", type=int, default=1, help="folds trained at the same time on this machine (default 1)")
    flag(w, "ranks", type=int, default=None, help="train each fold under mpiexec -n RANKS (default: one process)")
    flag(w, "plan_only", action="store_true",
         help="only plan the folds (then `parallel-dqn sweep submit OUT` runs them as a SLURM job array)")
    flag(w, "n_boot", type=int, default=2000, help="bootstrap resamples of the significance figures (default 2000)")
    w.set_defaults(handler=walk_forward)


def walk_forward(args: argparse.Namespace) -> int:
    """Plan the folds, run the unfinished ones here, join them and print the out-of-sample table."""
    from parallel_dqn import walkforward as wf
    from parallel_dqn.cli.args import config_from_args
    from parallel_dqn.run.signals import EXIT_PREEMPTED, StopSignals
    from parallel_dqn.sweep import run_local

    for name, why in REFUSED.items():
        if getattr(args, name, None):
            raise UserError(f"walk-forward takes no --{name}: {why}")
    if not args.output:
        raise UserError("walk-forward needs --output DIR", "the folder of its folds and walk_forward.json")
    cfg = config_from_args(args)
    spec = wf.WalkForwardSpec(args.train_days, args.test_days, args.step_days, args.embargo_days, args.folds,
                              args.warm_start)
    if spec.warm_start and args.jobs > 1:
        raise UserError(f"--warm_start with --jobs {args.jobs}: each fold starts from the previous one's model",
                        "drop --jobs (warm-started folds run one at a time, in order)")
    sweep, folds = wf.plan(cfg, spec, args.output)
    start = "each from the previous fold's model" if spec.warm_start else "each from scratch"
    print(f"walk-forward {sweep.folder}: {len(folds)} fold(s) of {spec.train_days} training + {spec.embargo_days} "
          f"embargo + {spec.test_days} test days, every {spec.step} days, {start}")
    for fold in folds:
        print(f"  {fold.name}: train {fold.train[0]} .. {fold.train[1]}  test {fold.test[0]} .. {fold.test[1]}")
    if args.plan_only:
        print(f"planned; run the folds with `parallel-dqn sweep submit {sweep.folder}` (SLURM) or "
              f"`parallel-dqn sweep run {sweep.folder} --jobs N`, then this command again to join them")
        return 0
    with StopSignals() as signals:
        outcome = run_local(sweep, args.jobs, args.ranks, lambda: signals.received,
                            lambda text: print(text, file=sys.stderr, flush=True))
    if outcome.stopped_by:
        print(f"stopped by {outcome.stopped_by}: run the same command again to continue", file=sys.stderr)
        return EXIT_PREEMPTED
    failed = sorted(name for name, code in outcome.codes.items() if code != 0)
    if failed:
        raise UserError(f"{len(failed)} fold(s) failed: {', '.join(failed)}",
                        f"see each one's console.log in {sweep.folder}, fix it and run the same command again")
    print_result(wf.join(sweep, n_boot=args.n_boot, seed=cfg.run.seed), sweep.folder)
    return 0


def print_result(result: dict[str, Any], folder: Any) -> None:
    """Per fold: the agent's and buy-and-hold's test Sharpe; then the joined table and the verdict."""
    print(f"\n{'fold':10s} {'test':25s} {'agent sharpe':>12s} {'buy&hold':>9s}")
    for f in result["folds"]:
        print(f"{f['fold']:10s} {f['test'][0] + ' .. ' + f['test'][1]:25s} {f['eval']['sharpe']:12.2f} "
              f"{f['baselines']['buy_and_hold']['sharpe']:9.2f}")
    oos = result["oos"]
    print(f"\nOut of sample, {oos['folds']} folds joined ({oos['first_bar']} .. {oos['last_bar']})")
    print(f"{'strategy':28s} {'total return':>12s} {'sharpe':>8s} {'max dd':>8s}")
    rows = [("agent (DQN + meta-policy)", oos), *result["baselines"].items()]
    if result.get("oracle"):
        rows.append(("oracle (planted signal)", result["oracle"]))
    for name, m in rows:
        print(f"{name:28s} {m['total_return']:12.4f} {m['sharpe']:8.2f} {m['max_drawdown']:8.4f}")
    sig = result["significance"]
    print(f"\nPSR (Sharpe > 0): {_num(sig['psr'], 3)}   p-value vs buy-and-hold: "
          f"{_num(sig['p_value_vs_buy_and_hold'], 4)} (SPA {_num(sig['spa_p_value_vs_buy_and_hold'], 4)})")
    print(f"verdict: {result['verdict']}")
    print(f"\nresults: {folder}/walk_forward.json")


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
