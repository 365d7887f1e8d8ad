"""``parallel-dqn report`` and ``parallel-dqn full-workflow``: parse, call :mod:`parallel_dqn.run`, print.

The parsers are built in :mod:`parallel_dqn.cli` (full-workflow takes exactly train's flags).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from parallel_dqn import outputs
from parallel_dqn.cli.args import config_from_args
from parallel_dqn.cli.output import print_results


def report(args: argparse.Namespace) -> int:
    """Write one HTML report over the given run folders (a sweep folder: its finished combinations) and say where it is."""
    from parallel_dqn.evaluation.report import write_report
    from parallel_dqn.sweep import expand_run_dirs

    dirs = [Path(d) for d in args.run_dirs]
    default = dirs[0] / outputs.REPORT if len(dirs) == 1 else Path(outputs.REPORT)
    path = write_report(expand_run_dirs(dirs), Path(args.output) if args.output else default)
    print(f"report: {path}")
    return 0


def full_workflow(args: argparse.Namespace) -> int:
    """Train into --output, evaluate the saved model into OUTPUT/evaluation, write OUTPUT/report.html."""
    from parallel_dqn.run import full_workflow as run_full_workflow

    cfg = config_from_args(args)
    done = run_full_workflow(cfg, overwrite=args.overwrite, resume=args.resume)
    if done is None:  # an MPI worker rank
        return 0
    _, evaluated, path = done
    print_results(evaluated, str(Path(cfg.run.output) / outputs.EVALUATION))
    print(f"report: {path}")
    return 0
