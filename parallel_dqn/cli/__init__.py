"""Command line: ``parallel-dqn train | evaluate | full-workflow | report | data ...`` (also ``python -m parallel_dqn``).

Flag names follow the user's original tool (``--start_date``, ``--cost_bps``);
hyphenated aliases (``--start-date``) work too. Every setting of the config tree
can also be set with ``--set section.key=value`` or in a ``--config FILE.toml``;
flags win over the file. A user's mistake prints one line and exits with 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any, Sequence

from parallel_dqn import __version__
from parallel_dqn.config import Config
from parallel_dqn.errors import UserError
from parallel_dqn.run.signals import EXIT_PREEMPTED, StoppedAfterCheckpoint

# modules that add `parallel-dqn data ...` subcommands: each has register(subparsers, flag)
DATA_COMMANDS = (
    "parallel_dqn.cli.data_local",
    "parallel_dqn.cli.data_import",
    "parallel_dqn.cli.data_azure",
)
# the module that adds `parallel-dqn sweep ...` subcommands: register(subparsers, flag)
SWEEP_COMMANDS = "parallel_dqn.cli.sweep"

# flag -> config key, for the flags that set one setting each
TRAIN_FLAGS: dict[str, str] = {
    "mode": "dist.mode",
    "data": "data.data",
    "stocks": "data.stocks",
    "start_date": "data.start_date",
    "end_date": "data.end_date",
    "eval_start": "data.eval_start",
    "eval_end": "data.eval_end",
    "episodes": "dqn.episodes",
    "output": "run.output",
    "seed": "run.seed",
    "cost_bps": "market.cost_bps",
    "workers": "dist.workers",
    "lr": "dqn.lr",
    "gamma": "dqn.gamma",
    "batch_size": "dqn.batch_size",
    "n_step": "dqn.n_step",
    "target_update": "dqn.target_update",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _flag(parser: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    """Add ``--name`` and, when it has underscores, the ``--hyphen-name`` alias."""
    names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*names, dest=name, **kw)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="parallel-dqn", description="Distributed DQN trading on intraday bars of many stocks.")
    p.add_argument("--version", action="version", version=f"parallel-dqn {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    _train_flags(sub.add_parser("train", help="train on a period, evaluate on held-out days, write every output"))

    e = sub.add_parser("evaluate", help="evaluate a trained model on held-out days")
    _flag(e, "model", required=True, help="trained_model.pth of a training run")
    _run_flags(e)

    _train_flags(sub.add_parser("full-workflow", help="train, evaluate the saved model, write report.html"))
    r = sub.add_parser("report", help="one self-contained HTML report over run folders")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output folders of runs, or sweep folders (their finished runs)")
    _flag(r, "output", default=None, help="HTML file (default: RUN_DIR/report.html, or ./report.html for several)")

    d = sub.add_parser("data", help="market data tools")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=OneLineParser)
    for module in DATA_COMMANDS:
        importlib.import_module(module).register(dsub, _flag)

    s = sub.add_parser("sweep", help="hyperparameter sweeps: plan, run here, submit to SLURM, status")
    ssub = s.add_subparsers(dest="sweep_command", required=True, parser_class=OneLineParser)
    importlib.import_module(SWEEP_COMMANDS).register(ssub, _flag)
    return p


def _train_flags(t: argparse.ArgumentParser) -> None:
    """Flags of train (and full-workflow): the shared ones plus the training settings."""
    _run_flags(t)
    _flag(t, "mode", choices=["single", "parallel"], default=None, help="single process, or under MPI")
    _flag(t, "start_date", default=None, help="first training day YYYY-MM-DD")
    _flag(t, "end_date", default=None, help="last training day")
    _flag(t, "episodes", type=int, default=None, help="passes over the training period")
    _flag(t, "workers", type=int, default=None, help="workers (0: one per stock)")
    _flag(t, "sync", action="store_true", default=None, help="synchronous gradient rounds (deterministic)")
    _flag(t, "resume", default=None, metavar="auto|RUN_DIR|CHECKPOINT_DIR",
          help="continue from the newest valid checkpoint (auto: of --output, starting afresh if there is none)")
    for name, typ in (("lr", float), ("gamma", float), ("batch_size", int), ("n_step", int), ("target_update", int)):
        _flag(t, name, type=typ, default=None, help=f"sets {TRAIN_FLAGS[name]}")


def _run_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by train and evaluate."""
    _flag(parser, "config", default=None, help="TOML file with any settings (flags win)")
    _flag(parser, "data", default=None, help="data folder in the key layout")
    _flag(parser, "stocks", nargs="+", default=None, help="stocks to use (default: all in --data)")
    _flag(parser, "eval_start", default=None, help="first held-out evaluation day")
    _flag(parser, "eval_end", default=None, help="last held-out evaluation day")
    _flag(parser, "output", default=None, help="output folder")
    _flag(parser, "seed", type=int, default=None)
    _flag(parser, "cost_bps", type=float, default=None, help="trading cost per unit position change, bps")
    _flag(parser, "set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="any config setting")
    _flag(parser, "overwrite", action="store_true", help="replace the outputs of an earlier run in --output")
    _flag(parser, "no_progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> Config:
    """Defaults (or, for ``--resume RUN_DIR``, the checkpoint's settings), then the --config file, then flags."""
    resume = getattr(args, "resume", None)
    if resume and resume != "auto":
        from parallel_dqn.checkpoint.resume import resume_target, saved_config

        target = resume_target(resume, "")
        cfg = saved_config(target)
        cfg.run.output = str(target.run_dir)
    else:
        cfg = Config()
    if getattr(args, "config", None):
        cfg = Config.load(args.config, base=cfg)
    for flag, key in TRAIN_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            cfg.set(key, value, source=f"--{flag}")
    if getattr(args, "sync", None):
        cfg.dist.sync = True
    if getattr(args, "no_progress", False):
        cfg.run.progress = False
    for item in getattr(args, "set", []):
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item}: expected SECTION.KEY=VALUE", "e.g. --set dqn.lr=0.001")
        cfg.set(key.strip(), value.strip(), source="--set")
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    result = run_training(cfg, overwrite=args.overwrite, resume=args.resume)
    if result is not None:  # None on MPI worker ranks: rank 0 reports
        print_results(result, cfg.run.output)
    return 0


def run_training(cfg: Config, overwrite: bool, resume: str | None = None) -> dict[str, Any] | None:
    """Train in the configured mode; the results on rank 0, None on MPI worker ranks."""
    cfg.validate()
    if cfg.dist.mode == "parallel":
        from parallel_dqn.run.mpi import train_parallel

        return train_parallel(cfg, overwrite=overwrite, resume=resume)
    from parallel_dqn.run.single import train

    return train(cfg, overwrite=overwrite, resume=resume)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from parallel_dqn.run.single import evaluate

    cfg = config_from_args(args)
    result = evaluate(cfg, args.model, overwrite=args.overwrite)
    print_results(result, cfg.run.output)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """``parallel-dqn data SUBCOMMAND``: each module in DATA_COMMANDS set its handler."""
    return args.handler(args)


def cmd_sweep(args: argparse.Namespace) -> int:
    """``parallel-dqn sweep SUBCOMMAND``: SWEEP_COMMANDS set its handler."""
    return args.handler(args)


def print_results(result: dict[str, Any], output: str) -> None:
    """The results table: agent vs baselines (and the oracle) on the evaluation period."""
    rows = []
    if result.get("eval"):
        rows.append(("agent (DQN + meta-policy)", result["eval"]))
    rows += [(name, m) for name, m in (result.get("baselines") or {}).items()]
    if result.get("oracle"):
        rows.append(("oracle (planted signal)", result["oracle"]))
    if rows:
        print(f"\nEvaluation {' .. '.join(result.get('period', []))}")
        print(f"{'strategy':28s} {'total return':>12s} {'sharpe':>8s} {'sortino':>8s} {'max dd':>8s} {'turnover':>9s}")
        for name, m in rows:
            print(
                f"{name:28s} {m['total_return']:12.4f} {m['sharpe']:8.2f} {m['sortino']:8.2f} "
                f"{m['max_drawdown']:8.4f} {m.get('turnover', 0.0):9.4f}"
            )
    print(f"\nresults: {Path(output) / 'metrics.json'}  model: {Path(output) / 'trained_model.pth'}")
    print(f"plots:   {Path(output) / 'equity_eval.png'}  {Path(output) / 'attention.png'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from parallel_dqn.cli import workflow

    handlers = {
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "data": cmd_data,
        "sweep": cmd_sweep,
        "full-workflow": workflow.full_workflow,
        "report": workflow.report,
    }
    try:
        return handlers[args.command](args)
    except UserError as exc:
        print(f"parallel-dqn: error: {exc.line()}", file=sys.stderr)
        return 2
    except StoppedAfterCheckpoint as stop:
        print(f"parallel-dqn: {stop} (continue with --resume auto)", file=sys.stderr)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        print("parallel-dqn: interrupted", file=sys.stderr)
        return 130
