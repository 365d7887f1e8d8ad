"""``status.json`` in a run's output folder: what the run is doing now, for people and for ``sweep status``.

Rank 0 (or the single process) rewrites it atomically at each change of state:

* ``running``: training started or resumed (host, pid, SLURM job/array ids, start time);
* ``stopped``: stopped on a signal after a checkpoint (resume with ``--resume auto``);
* ``failed``: ended by an error (its one-line summary);
* ``finished``: every output written.

A run killed outright (``kill -9``, node failure) cannot say so: its file still says ``running``;
:func:`is_alive` tells a live run from such a one where that can be known (same host: the pid;
under SLURM: the job id, checked by the caller with ``squeue``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from pathlib import Path
from typing import Any

from parallel_dqn import outputs
from parallel_dqn.errors import UserError
from parallel_dqn.files import write_atomically

STATUS_FILE = outputs.STATUS
STATES = ("running", "stopped", "failed", "finished")


def write_status(output: Path, state: str, **fields: Any) -> None:
    """Record ``state`` (one of :data:`STATES`) with this process's identity and ``fields``."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}")
    record = {
        "state": state,
        "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array": _array_id(),
        **fields,
    }
    write_atomically(output / STATUS_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=1, default=str)))


def read_status(output: Path) -> dict[str, Any] | None:
    """The run's status record, or None if it has none (never started, or not readable)."""
    try:
        record = json.loads((output / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_alive(record: dict[str, Any]) -> bool | None:
    """Whether the process that wrote a ``running`` record still runs: None when this host cannot tell."""
    if record.get("host") != socket.gethostname():
        return None
    pid = int(record.get("pid") or 0)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"parallel_dqn" in cmdline or b"parallel-dqn" in cmdline


def _array_id() -> str | None:
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else None


class StatusFile:
    """A run observer that keeps ``status.json`` up to date (training runs only; an evaluation has none)."""

    def __init__(self, output: Path) -> None:
        self.output = output

    def on_start(self, run: Any) -> None:
        write_status(self.output, "running", mode=run.mode, workers=run.workers, episodes=run.episodes,
                     resumed_from=str(run.resumed_from) if run.resumed_from else None)

    def on_finish(self, result: dict[str, Any]) -> None:
        agent = result.get("eval") or {}
        write_status(self.output, "finished", eval_sharpe=agent.get("sharpe"), wall_seconds=result.get("wall_seconds"))

    def on_stop(self, reason: str, checkpoint: str | Path | None) -> None:
        write_status(self.output, "stopped", reason=reason, checkpoint=str(checkpoint) if checkpoint else None)

    def on_failure(self, error: BaseException) -> None:
        write_status(self.output, "failed", message=error_summary(error))


def error_summary(exc: BaseException) -> str:
    """One line: a UserError's own line; otherwise the exception type and message, no traceback."""
    if isinstance(exc, UserError):
        return exc.line()
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
