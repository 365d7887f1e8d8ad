"""Shared parsing: the one-line argument parser, the flags of train and evaluate, and the config they resolve to."""

from __future__ import annotations

import argparse
from typing import Any

from parallel_dqn.config import Config
from parallel_dqn.errors import UserError

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


def flag(parser: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    """Add ``--name`` and, when it has underscores, the ``--hyphen-name`` alias."""
    names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*names, dest=name, **kw)


def train_flags(t: argparse.ArgumentParser) -> None:
    """Flags of train (and full-workflow): the shared ones plus the training settings."""
    run_flags(t)
    flag(t, "mode", choices=["single", "parallel"], default=None, help="single process, or under MPI")
    flag(t, "start_date", default=None, help="first training day YYYY-MM-DD")
    flag(t, "end_date", default=None, help="last training day")
    flag(t, "episodes", type=int, default=None, help="passes over the training period")
    flag(t, "workers", type=int, default=None, help="workers to simulate in single mode (0: one for all stocks)")
    flag(t, "sync", action="store_true", default=None, help="synchronous gradient rounds (deterministic)")
    flag(t, "resume", default=None, metavar="auto|RUN_DIR|CHECKPOINT_DIR",
          help="continue from the newest valid checkpoint (auto: of --output, starting afresh if there is none)")
    for name, typ in (("lr", float), ("gamma", float), ("batch_size", int), ("n_step", int), ("target_update", int)):
        flag(t, name, type=typ, default=None, help=f"sets {TRAIN_FLAGS[name]}")


def run_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by train and evaluate."""
    flag(parser, "config", default=None, help="TOML file with any settings (flags win)")
    flag(parser, "data", default=None, help="data folder in the key layout")
    flag(parser, "stocks", nargs="+", default=None, help="stocks to use (default: all in --data)")
    flag(parser, "eval_start", default=None, help="first held-out evaluation day")
    flag(parser, "eval_end", default=None, help="last held-out evaluation day")
    flag(parser, "output", default=None, help="output folder")
    flag(parser, "seed", type=int, default=None)
    flag(parser, "cost_bps", type=float, default=None, help="trading cost per unit position change, bps")
    flag(parser, "set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="any config setting")
    flag(parser, "overwrite", action="store_true", help="replace the outputs of an earlier run in --output")
    flag(parser, "no_progress", action="store_true", help="no progress bar")


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
