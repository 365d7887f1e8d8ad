"""A run's output folder: claimed by one run at a time, never mixed with another run, never stripped of what
is not the run's.

* **Claim.** The process that writes a run (the single process, or rank 0) holds an exclusive lock on
  ``OUT/.parallel-dqn.lock`` (``flock``) for the run's whole duration. A second run into the same
  folder is refused in one line naming the holder (pid, host, start); the lock goes with the process,
  so a run killed outright leaves nothing to clean up.
* **Prepare.** A folder that holds a run (:func:`holds_run`) is refused unless the run may replace it
  (``--overwrite``) or continue it (``--resume``). Folders and files of the user's own are never
  touched.
* **Retire.** A fresh start over an earlier run removes that run's files (:mod:`parallel_dqn.outputs`)
  only once its own data have loaded, so a run refused for bad input changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import socket
from pathlib import Path

from parallel_dqn import outputs
from parallel_dqn.checkpoint.format import CheckpointStore
from parallel_dqn.errors import UserError

log = logging.getLogger(__name__)


def holds_run(folder: Path) -> str | None:
    """The first sign that ``folder`` holds a parallel-dqn run (a result file, a checkpoint), else None."""
    for name in (outputs.MODEL, outputs.METRICS, outputs.CURVE):
        if (folder / name).exists():
            return name
    if CheckpointStore(folder / outputs.CHECKPOINTS).committed():
        return outputs.CHECKPOINTS
    return None


class FolderLock:
    """An exclusive lock on a run folder, held until :meth:`release` (or the process ends)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / outputs.LOCK
        self._fd: int | None = None

    def acquire(self, what: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(
                f"--output {self.folder} is in use by another run ({holder})",
                "wait for it to finish, or choose another --output",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "what": what,
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }).encode())
        self._fd = fd

    def release(self) -> None:
        """Let the folder go; the lock file is left empty (it names a holder only while one holds it)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"{holder['what']}, pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its lock file names no holder"


def claim(folder: Path, replace: bool, what: str = "train") -> FolderLock:
    """Lock ``folder`` for this run and make sure it may write there; the lock is held until released.

    ``replace``: the folder may hold an earlier run (``--overwrite``, ``--resume``). Refused in one line:
    a file in the way, a folder that cannot be created or written, another run holding it, or an earlier
    run in it without ``replace``.
    """
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--output {folder} is a file", "give a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(folder)
        lock.acquire(what)
    except PermissionError as exc:
        raise UserError(
            f"cannot write into --output {folder}: {exc.strerror}", "choose a folder you can write to"
        ) from None
    except OSError as exc:
        raise UserError(f"cannot use --output {folder}: {exc.strerror or exc}", "choose another folder") from None
    earlier = holds_run(folder)
    if earlier and not replace:
        lock.release()
        raise UserError(
            f"--output {folder} already holds a run ({earlier})", "choose another --output, or pass --overwrite"
        )
    return lock


def retire_earlier_run(folder: Path) -> None:
    """A fresh run has loaded its data: the earlier run in ``folder`` goes (its files only; the user's stay).

    Its checkpoints, results, per-episode portfolios and TensorBoard events are removed, so nothing of
    it can be resumed, reported or plotted as this run's.
    """
    CheckpointStore(folder / outputs.CHECKPOINTS).clear()
    for name in outputs.RESULT_FILES:
        (folder / name).unlink(missing_ok=True)
    for path in outputs.portfolio_episodes(folder):
        path.unlink()
    events = folder / outputs.TENSORBOARD
    if events.is_dir():
        for path in events.glob("events.out.tfevents.*"):
            path.unlink()
        with contextlib.suppress(OSError):
            events.rmdir()
    evaluation = folder / outputs.EVALUATION
    if (evaluation / outputs.METRICS).is_file():  # full-workflow's evaluation of the earlier model
        shutil.rmtree(evaluation, ignore_errors=True)
    log.debug("removed the earlier run's files from %s", folder)
