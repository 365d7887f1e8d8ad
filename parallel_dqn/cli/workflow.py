"""``parallel-dqn report`` and ``parallel-dqn full-workflow``: parse, call :mod:`parallel_dqn.run`, print.

The parsers are built in :mod:`parallel_dqn.cli` (full-workflow takes exactly train's flags).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from parallel_dqn import outputs
from parallel_dqn.cli.args import config_from_args
from parallel_dqn.cli.output import print_results
from parallel_dqn.errors import UserError

if TYPE_CHECKING:
    from parallel_dqn.evaluation.report import WalkForward
    from parallel_dqn.sweep import Sweep


def report(args: argparse.Namespace) -> int:
    """Write one HTML report over the given run folders and say where it is.

    A sweep folder stands for its finished combinations, with each one's deflated Sharpe ratio among them;
    a walk-forward folder (a sweep folder of folds) for its joined walk_forward.json first, then its folds.
    A folder in an object store (``s3://``, ``gs://``, ``azure://``) is read from a local copy of it.
    """
    from parallel_dqn.evaluation.report import write_report
    from parallel_dqn.run.cloud_output import readable
    from parallel_dqn.sweep import expand_run_dirs

    dirs = [Path(readable(d)) for d in args.run_dirs]
    default = dirs[0] / outputs.REPORT if len(dirs) == 1 else Path(outputs.REPORT)
    walks = [w for w in map(_walk_forward, dirs) if w is not None]
    walk_folders = {w.folder.resolve() for w in walks}
    deflated = _deflated_sharpes([d for d in dirs if d.resolve() not in walk_folders])
    path = write_report(expand_run_dirs(dirs), Path(args.output) if args.output else default, walks, deflated)
    print(f"report: {path}")
    return 0


def _walk_forward(folder: Path) -> WalkForward | None:
    """The walk-forward ``folder`` holds (None if it is not a walk-forward folder); a one-line UserError naming
    the folds that have not finished when it has not been joined yet."""
    from parallel_dqn import walkforward as wf
    from parallel_dqn.evaluation.report import WalkForward
    from parallel_dqn.sweep import is_sweep_dir, open_sweep

    if not is_sweep_dir(folder):
        return None
    sweep = open_sweep(folder)
    if not sweep.text.startswith(wf.SPEC_KIND):
        return None
    result = wf.read_result(folder)
    if result is None:
        raise _not_joined(sweep)
    dirs = {c.name: sweep.run_dir(c) for c in sweep.combinations}
    folds = [f.get("fold") for f in result.get("folds") or [] if isinstance(f, dict)]
    return WalkForward(sweep.folder, result, {name: dirs[name] for name in folds if name in dirs})


def _not_joined(sweep: Sweep) -> UserError:
    """Why a walk-forward folder has no walk_forward.json: the folds not finished, or it was never joined."""
    from parallel_dqn import walkforward as wf

    if (sweep.folder / wf.RESULT_FILE).is_file():
        return UserError(f"{sweep.folder / wf.RESULT_FILE} cannot be read",
                         "run the same walk-forward command again to join the folds anew (nothing is trained again)")
    total = sum(c.in_sweep for c in sweep.combinations)
    waiting = wf.unfinished_folds(sweep)
    if waiting:
        return UserError(f"walk-forward {sweep.folder} has no {wf.RESULT_FILE} yet: {len(waiting)} of {total} "
                         f"folds have not finished: {', '.join(waiting)}",
                         "run the walk-forward command again (or wait for its SLURM jobs) to finish and join them")
    return UserError(f"walk-forward {sweep.folder} has no {wf.RESULT_FILE} yet: its {total} folds have finished "
                     "but were not joined", "run the same walk-forward command again to join them (nothing is trained again)")


def _deflated_sharpes(dirs: list[Path]) -> dict[Path, float | None]:
    """Each finished combination's deflated Sharpe ratio, the finished combinations of its sweep as the trials."""
    from parallel_dqn.sweep import deflated_sharpe_ratios, expand_run_dirs, is_sweep_dir

    out: dict[Path, float | None] = {}
    for d in dirs:
        if is_sweep_dir(d):
            out.update(deflated_sharpe_ratios(expand_run_dirs([d])))
    return out


def full_workflow(args: argparse.Namespace) -> int:
    """Train into --output, evaluate the saved model into OUTPUT/evaluation, write OUTPUT/report.html."""
    from parallel_dqn.run import full_workflow as run_full_workflow

    cfg = config_from_args(args)
    output = str(cfg.run.output).rstrip("/")  # as given: a cloud URL's run is staged locally, its files are in the store
    done = run_full_workflow(cfg, overwrite=args.overwrite, resume=args.resume)
    if done is None:  # an MPI worker rank
        return 0
    _, evaluated, path = done
    print_results(evaluated, f"{output}/{outputs.EVALUATION}")
    print(f"report: {output}/{path.relative_to(cfg.run.output)}")
    return 0
