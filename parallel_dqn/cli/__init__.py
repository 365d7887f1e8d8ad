"""Command line: ``parallel-dqn train | evaluate | full-workflow | walk-forward | report | data ... | sweep ...``
(also ``python -m parallel_dqn``).

Flag names follow the user's original tool (``--start_date``, ``--cost_bps``);
hyphenated aliases (``--start-date``) work too. Every setting of the config tree
can also be set with ``--set section.key=value`` or in a ``--config FILE.toml``;
flags win over the file. A user's mistake prints one line and exits with 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from parallel_dqn import __version__
from parallel_dqn.cli.args import OneLineParser, config_from_args, flag, run_flags, train_flags
from parallel_dqn.cli.output import print_results
from parallel_dqn.errors import EXIT_PREEMPTED, StoppedAfterCheckpoint, UserError

# modules that add `parallel-dqn data ...` subcommands: each has register(subparsers, flag)
DATA_COMMANDS = (
    "parallel_dqn.cli.data_local",
    "parallel_dqn.cli.data_import",
    "parallel_dqn.cli.data_azure",
    "parallel_dqn.cli.data_sync",
)
# the module that adds `parallel-dqn sweep ...` subcommands: register(subparsers, flag)
SWEEP_COMMANDS = "parallel_dqn.cli.sweep"
# the module that adds `parallel-dqn walk-forward`: register(subparsers, flag, train_flags)
WALK_FORWARD_COMMAND = "parallel_dqn.cli.walk_forward"

def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="parallel-dqn", description="Distributed DQN trading on intraday bars of many stocks.")
    p.add_argument("--version", action="version", version=f"parallel-dqn {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    train_flags(sub.add_parser("train", help="train on a period, evaluate on held-out days, write every output"))

    e = sub.add_parser("evaluate", help="evaluate a trained model on held-out days")
    flag(e, "model", required=True, help="trained_model.pth of a training run")
    run_flags(e)

    train_flags(sub.add_parser("full-workflow", help="train, evaluate the saved model, write report.html"))
    r = sub.add_parser("report", help="one self-contained HTML report over run folders")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output folders of runs, or sweep folders (their finished runs)")
    flag(r, "output", default=None, help="HTML file (default: RUN_DIR/report.html, or ./report.html for several)")

    d = sub.add_parser("data", help="market data tools")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=OneLineParser)
    for module in DATA_COMMANDS:
        importlib.import_module(module).register(dsub, flag)

    s = sub.add_parser("sweep", help="hyperparameter sweeps: plan, run here, submit to SLURM, status")
    ssub = s.add_subparsers(dest="sweep_command", required=True, parser_class=OneLineParser)
    importlib.import_module(SWEEP_COMMANDS).register(ssub, flag)
    importlib.import_module(WALK_FORWARD_COMMAND).register(sub, flag, train_flags)
    return p


def cmd_train(args: argparse.Namespace) -> int:
    from parallel_dqn.run import train

    cfg = config_from_args(args)
    output = cfg.run.output  # as given: a cloud URL's run is staged in a local folder, its files are in the store
    result = train(cfg, overwrite=args.overwrite, resume=args.resume)
    if result is not None:  # None on MPI worker ranks: rank 0 reports
        print_results(result, output)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from parallel_dqn.run import evaluate

    cfg = config_from_args(args)
    output = cfg.run.output
    result = evaluate(cfg, args.model, overwrite=args.overwrite)
    print_results(result, output)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """``parallel-dqn data SUBCOMMAND``: each module in DATA_COMMANDS set its handler."""
    return args.handler(args)


def cmd_sweep(args: argparse.Namespace) -> int:
    """``parallel-dqn sweep SUBCOMMAND`` and ``parallel-dqn walk-forward``: their modules set the handler."""
    return args.handler(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from parallel_dqn.cli import workflow  # noqa: PLC0415

    handlers = {
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "data": cmd_data,
        "sweep": cmd_sweep,
        "walk-forward": cmd_sweep,
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
