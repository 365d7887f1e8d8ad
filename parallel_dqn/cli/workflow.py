"""``parallel-dqn report`` and ``parallel-dqn full-workflow``: HTML reports, and train -> evaluate -> report.

The parsers are built in :mod:`parallel_dqn.cli` (full-workflow takes exactly train's flags);
these are their handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from parallel_dqn.cli import config_from_args, print_results, run_training
from parallel_dqn.config import Config
from parallel_dqn.errors import UserError

REPORT_NAME = "report.html"
EVALUATION_DIR = "evaluation"


def report(args: argparse.Namespace) -> int:
    """Write one HTML report over the given run folders (a sweep folder: its finished combinations) and say where it is."""
    from parallel_dqn.evaluation.report import write_report
    from parallel_dqn.sweep import expand_run_dirs

    dirs = [Path(d) for d in args.run_dirs]
    default = dirs[0] / REPORT_NAME if len(dirs) == 1 else Path(REPORT_NAME)
    path = write_report(expand_run_dirs(dirs), Path(args.output) if args.output else default)
    print(f"report: {path}")
    return 0


def full_workflow(args: argparse.Namespace) -> int:
    """Train into --output, evaluate the saved model into OUTPUT/evaluation, write OUTPUT/report.html."""
    from parallel_dqn.run.single import evaluate
    from parallel_dqn.evaluation.report import write_report

    cfg = config_from_args(args)
    trained = run_training(cfg, overwrite=args.overwrite, resume=args.resume)
    if trained is None:  # an MPI worker rank: rank 0 evaluates and reports
        return 0
    output = Path(cfg.run.output)
    period = trained.get("period")
    if not period:
        raise UserError("the training run has no evaluation period to evaluate on", "give --eval_start and --eval_end")
    eval_cfg = Config.from_dict(cfg.to_dict(), source="full-workflow")
    eval_cfg.set("data.eval_start", period[0][:10])  # UTC days, as the store's keys
    eval_cfg.set("data.eval_end", period[1][:10])
    eval_cfg.set("run.output", str(output / EVALUATION_DIR))
    # the evaluation belongs to this run: a resumed workflow redoes it over an earlier attempt's
    evaluated = evaluate(eval_cfg, str(output / "trained_model.pth"), overwrite=args.overwrite or args.resume is not None)
    print_results(evaluated, eval_cfg.run.output)
    path = write_report([output], output / REPORT_NAME)
    print(f"report: {path}")
    return 0
