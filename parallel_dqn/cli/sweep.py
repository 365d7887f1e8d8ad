"""``parallel-dqn sweep plan | run | status | submit | config``: hyperparameter sweeps.

The logic (sweep files, the sweep folder, states, SLURM submissions) is in :mod:`parallel_dqn.sweep`;
these are the parsers and handlers, which print.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parallel_dqn.errors import UserError
from parallel_dqn.evaluation import formats

if TYPE_CHECKING:
    from parallel_dqn.sweep import PlanResult, Row


def register(sub: Any, flag: Callable[..., None]) -> None:
    """Add the subcommands to ``parallel-dqn sweep``."""
    p = sub.add_parser("plan", help="write the sweep folder: sweep.json and one config.toml per combination")
    p.add_argument("sweep_file", metavar="SWEEP.toml", help="the sweep file")
    flag(p, "output", required=True, metavar="DIR", help="the sweep folder (new, empty, or planned before: extended)")
    p.set_defaults(handler=plan)

    r = sub.add_parser("run", help="run every unfinished combination on this machine, N at a time")
    r.add_argument("source", metavar="SWEEP.toml|DIR", help="a sweep file (planned into --output first) or a sweep folder")
    flag(r, "output", default=None, metavar="DIR", help="the sweep folder (with a sweep file)")
    flag(r, "jobs", type=int, default=1, help="combinations run at the same time (default 1)")
    flag(r, "ranks", type=int, default=None, help="run each under mpiexec -n RANKS in parallel mode (default: one process)")
    r.set_defaults(handler=run)

    s = sub.add_parser("status", help="one row per combination: state, episodes, evaluation Sharpe, SLURM job")
    s.add_argument("sweep_dir", metavar="DIR", help="the sweep folder")
    s.set_defaults(handler=status)

    b = sub.add_parser("submit", help="submit the combinations still to run as one SLURM job array")
    b.add_argument("source", metavar="SWEEP.toml|DIR", help="a sweep file (planned into --output first) or a sweep folder")
    flag(b, "output", default=None, metavar="DIR", help="the sweep folder (with a sweep file)")
    flag(b, "ranks", type=int, default=2, help="MPI ranks per combination: rank 0 + workers (sbatch --ntasks, default 2)")
    flag(b, "nodes", type=int, default=1, help="nodes per combination (sbatch --nodes, default 1)")
    flag(b, "time", default=None, metavar="HH:MM:SS", help="time limit per combination (sbatch --time)")
    flag(b, "partition", default=None, help="SLURM partition (sbatch --partition)")
    flag(b, "sbatch_arg", action="append", default=[], metavar="ARG",
         help="one more sbatch option, e.g. --sbatch-arg=--overcommit (repeatable)")
    flag(b, "dry_run", action="store_true", help="print the sbatch command; submit and write nothing")
    b.set_defaults(handler=submit)

    c = sub.add_parser("config", help="print the absolute path of one combination's config.toml (for sweep.sbatch)")
    c.add_argument("sweep_dir", metavar="DIR", help="the sweep folder")
    c.add_argument("index", type=int, nargs="?", default=None, metavar="INDEX",
                   help="the combination's index (default: this array task's, SLURM or AWS Batch)")
    c.set_defaults(handler=config)

    t = sub.add_parser("task", help="train the combination of this array task (SLURM or AWS Batch), resuming; "
                                    "the sweep folder may be in an object store")
    t.add_argument("sweep_dir", metavar="DIR|URL", help="the sweep folder, or its copy in s3://, gs://, azure://")
    t.add_argument("index", type=int, nargs="?", default=None, metavar="INDEX",
                   help="the combination's index (default: this array task's, SLURM or AWS Batch)")
    flag(t, "ranks", type=int, default=None, help="train under mpiexec -n RANKS in parallel mode (default: one process)")
    t.set_defaults(handler=task)


def plan(args: argparse.Namespace) -> int:
    """Plan the sweep file into the folder and say what is new, kept and no longer in the file."""
    from parallel_dqn.sweep import load_sweep, plan_sweep

    print_plan(plan_sweep(load_sweep(args.sweep_file), args.output))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the combinations still to run here; the status table at the end; non-zero if any failed."""
    from parallel_dqn.run.signals import EXIT_PREEMPTED, StopSignals
    from parallel_dqn.sweep import gather_status, run_local, sweep_from

    sweep, planned = sweep_from(args.source, args.output)
    if planned is not None:
        print_plan(planned)
    with StopSignals() as signals:
        outcome = run_local(sweep, args.jobs, args.ranks, lambda: signals.received,
                            lambda text: print(text, file=sys.stderr, flush=True))
    if not outcome.codes and not outcome.skipped:
        print("nothing to run: every combination has finished", file=sys.stderr)
    print_status(gather_status(sweep), sweep.folder)
    if outcome.stopped_by:
        print(f"stopped by {outcome.stopped_by}: continue with `parallel-dqn sweep run {sweep.folder}`", file=sys.stderr)
        return EXIT_PREEMPTED
    failed = sorted(name for name, code in outcome.codes.items() if code != 0)
    if failed:
        print(f"{len(failed)} combination(s) failed: {', '.join(failed)} (see each one's console.log)", file=sys.stderr)
        return 1
    return 0


def status(args: argparse.Namespace) -> int:
    """Print the state of every combination of a sweep folder."""
    from parallel_dqn.sweep import gather_status, open_sweep

    sweep = open_sweep(args.sweep_dir)
    print_status(gather_status(sweep), sweep.folder)
    return 0


def submit(args: argparse.Namespace) -> int:
    """Submit one job array of the combinations neither finished nor queued/running (or print it: --dry-run)."""
    from parallel_dqn import sweep as sweeps

    sweep, planned = sweeps.sweep_from(args.source, args.output, write=not args.dry_run)
    if planned is not None and not args.dry_run:
        print_plan(planned)
    indices = sweeps.to_submit(sweeps.gather_status(sweep))
    if not indices:
        print("nothing to submit: every combination has finished or is queued or running", file=sys.stderr)
        return 0
    command = sweeps.sbatch_command(sweep, indices, args.ranks, args.nodes, args.time, args.partition, args.sbatch_arg)
    if args.dry_run:
        print(shlex.join(command))
        return 0
    job = sweeps.submit(sweep, command, indices)
    print(f"submitted job {job.job_id}: {len(indices)} combination(s), indices {','.join(map(str, indices))}")
    print(f"logs: {sweep.folder / sweeps.LOGS_DIR}/slurm-{job.job_id}_INDEX.out  "
          f"status: parallel-dqn sweep status {sweep.folder}")
    return 0


def config(args: argparse.Namespace) -> int:
    """Print the absolute path of combination INDEX's config.toml, and nothing else (sweep.sbatch reads it)."""
    from parallel_dqn.sweep import open_sweep
    from parallel_dqn.sweep.array import array_task_index

    sweep = open_sweep(args.sweep_dir)
    path = sweep.config_path(sweep.combination(array_task_index() if args.index is None else args.index))
    if not path.is_file():
        raise UserError(f"{path} is missing", f"plan the sweep again: parallel-dqn sweep plan SWEEP.toml --output {sweep.folder}")
    print(path)
    return 0


def task(args: argparse.Namespace) -> int:
    """Replace this process by the training of the array task's combination (signals and exit code are then
    the training's own: 75 after a checkpoint on SIGTERM, which the AWS Batch job definition retries)."""
    from parallel_dqn.sweep.array import task_command

    combination, command = task_command(args.sweep_dir, args.index, args.ranks)
    print(f"sweep task: {combination.name} (index {combination.index}): {shlex.join(command)}", file=sys.stderr, flush=True)
    os.execv(command[0], command)
    return 0  # not reached


# ---- printing --------------------------------------------------------------------------------
def print_plan(result: PlanResult) -> None:
    """What planning did: every combination of the file (new or planned before) and those no longer in it."""
    sweep = result.sweep
    current = [c for c in sweep.combinations if c.in_sweep]
    new = {c.index for c in result.new}
    dup = f"; {result.duplicates} duplicate(s) skipped" if result.duplicates else ""
    print(f"sweep {sweep.folder}: {len(current)} combination(s), {len(new)} new{dup}")
    for c in current:
        print(f"  {c.name}{'  (new)' if c.index in new else ''}")
    if result.dropped:
        names = ", ".join(c.name for c in result.dropped)
        print(f"kept {len(result.dropped)} combination(s) no longer in the sweep file (not run, not deleted): {names}")


def print_status(rows: Sequence[Row], folder: Path) -> None:
    """The status table, a summary line of counts per state and the best finished combination, by evaluation
    Sharpe and by deflated Sharpe (the finished combinations taken as the trials of one search)."""
    from parallel_dqn.sweep import best, best_deflated, count_states, deflated_sharpe_ratios, describe

    finished = [folder / r.combination.name for r in rows if r.state == "finished"]
    deflated = {path.name: value for path, value in deflated_sharpe_ratios(finished).items()}
    head = ("combination", "settings", "state", "episodes", "eval Sharpe", "deflated Sharpe", "SLURM", "note")
    table = [
        (r.combination.name, describe(r.combination.settings) or "(base)", r.state,
         f"{r.episodes_done}/{r.episodes_total if r.episodes_total is not None else '?'}",
         formats.ratio(r.sharpe), _probability(deflated.get(r.combination.name)), r.job or "-",
         r.note)
        for r in rows
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(head, *table)]
    for line in (head, *table):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
    counts = ", ".join(f"{n} {state}" for state, n in count_states(rows).items())
    print(f"\n{len(rows)} combination(s): {counts or 'none'}")
    top = best(rows)
    if top is not None:
        print(f"best: {top.combination.name} (eval Sharpe {formats.ratio(top.sharpe)}): {folder / top.combination.name}")
    top_deflated = best_deflated(rows, deflated)
    if top_deflated is not None:
        row, value = top_deflated
        print(f"best by deflated Sharpe: {row.combination.name} (deflated Sharpe {_probability(value)} over "
              f"{len(finished)} finished combination(s)): {folder / row.combination.name}")


def _probability(value: float | None) -> str:
    """A deflated Sharpe ratio (a probability) as the table shows it: 3 decimals, ``-`` when there is none."""
    return formats.probability(value)
