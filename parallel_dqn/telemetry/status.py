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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parallel_dqn.files import write_atomically

STATUS_FILE = "status.json"
STATES = ("running", "stopped", "failed", "finished")


def write_status(output: Path, state: str, **fields: Any) -> None:
    """Record ``state`` (one of :data:`STATES`) with this process's identity and ``fields``."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}")
    record = {
        "state": state,
        "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
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


class RunEvents:
    """A training run's changes of state, told to ``status.json`` and to the notifier (rank 0 only)."""

    def __init__(self, output: Path, notifier: Any, record: bool = True) -> None:
        """``notifier``: a :class:`~parallel_dqn.telemetry.notify.Notifier`; ``record``: write status.json."""
        self.output = output
        self.notifier = notifier
        self.record = record

    def started(self, mode: str, symbols: Sequence[str], workers: int, episodes: int,
                resumed_from: Path | None = None) -> None:
        if self.record:
            write_status(self.output, "running", mode=mode, workers=workers, episodes=episodes,
                         resumed_from=str(resumed_from) if resumed_from else None)
        self.notifier.start(mode, symbols, workers, episodes, self.output, resumed_from=resumed_from)

    def finished(self, result: dict[str, Any]) -> None:
        if self.record:
            agent = result.get("eval") or {}
            write_status(self.output, "finished", eval_sharpe=agent.get("sharpe"), wall_seconds=result.get("wall_seconds"))
        self.notifier.complete(result)

    def stopped(self, reason: str, checkpoint: str | Path | None) -> None:
        if self.record:
            write_status(self.output, "stopped", reason=reason, checkpoint=str(checkpoint) if checkpoint else None)
        self.notifier.stopped(reason, checkpoint)

    def failed(self, exc: BaseException) -> None:
        from parallel_dqn.telemetry.notify import error_summary

        if self.record:
            write_status(self.output, "failed", message=error_summary(exc))
        self.notifier.error(exc)
