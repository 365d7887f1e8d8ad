"""``train --resume``: which checkpoint a run continues from, and whether it may.

* ``--resume auto``: continue the run in ``--output`` from its newest checkpoint that verifies;
  with none, start afresh there. The same command line serves the first start of a job and
  every restart after a preemption (what the SLURM batch script runs).
* ``--resume RUN_DIR``: continue that run from its newest checkpoint that verifies (an error if
  there is none); ``--resume RUN_DIR/checkpoints/ckpt-000007``: from exactly that checkpoint.
  The settings come from the checkpoint; flags may change only how the run is watched
  (:data:`parallel_dqn.config.RESUME_MAY_CHANGE`).

A run whose ``metrics.json`` exists has finished: resuming it does nothing and returns its
results. A corrupt checkpoint is skipped with a warning (newest first), never loaded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parallel_dqn import outputs
from parallel_dqn.checkpoint.format import (
    CHECKPOINTS,
    MANIFEST,
    Checkpoint,
    CheckpointStore,
    CorruptCheckpoint,
    verify,
)
from parallel_dqn.config import Config
from parallel_dqn.errors import UserError

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclass(frozen=True)
class ResumeTarget:
    """Where a ``--resume`` points: the run folder and, optionally, one checkpoint in it."""

    run_dir: Path
    checkpoint_dir: Path | None = None  # a specific checkpoint; None: the newest that verifies
    auto: bool = False


def check_resume_flags(overwrite: bool, resume: str | None) -> None:
    """``--resume`` continues a run, ``--overwrite`` replaces one: never both."""
    if resume is not None and overwrite:
        raise UserError("--resume and --overwrite contradict each other", "drop one of them")


def resume_target(resume: str, output: str) -> ResumeTarget:
    """Interpret the ``--resume`` value (``auto``, a run folder or a checkpoint folder)."""
    if resume == AUTO:
        return ResumeTarget(Path(output), auto=True)
    path = Path(resume)
    if (path / MANIFEST).is_file() and path.parent.name == CHECKPOINTS:
        return ResumeTarget(path.parent.parent, path)
    if not path.is_dir():
        raise UserError(f"--resume {resume}: no such run folder", "give a run's --output folder, or --resume auto")
    return ResumeTarget(path)


def saved_config(target: ResumeTarget) -> Config:
    """The settings of the newest checkpoint whose manifest can be read (the base of an explicit --resume)."""
    candidates = [target.checkpoint_dir] if target.checkpoint_dir else CheckpointStore(_folder(target)).committed()
    for path in candidates:
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            return Config.from_dict(manifest["config"], source=str(path / MANIFEST))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    raise UserError(
        f"--resume {target.run_dir}: no checkpoint in {_folder(target)}",
        "resume a run that wrote checkpoints, or use --resume auto to start one",
    )


def finished_result(output: Path) -> dict[str, Any] | None:
    """The results of a run that finished in ``output`` (its metrics.json), else None."""
    path = output / outputs.METRICS
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def choose_checkpoint(target: ResumeTarget) -> Checkpoint | None:
    """The checkpoint to continue from, verified; None (only for auto) if there is none to use."""
    if target.checkpoint_dir is not None:
        try:
            return verify(target.checkpoint_dir)
        except CorruptCheckpoint as exc:
            raise UserError(
                f"checkpoint {target.checkpoint_dir} is corrupt: {exc}",
                f"resume from an older one in {target.checkpoint_dir.parent}, or from the run folder",
            ) from None
    store = CheckpointStore(_folder(target))
    checkpoint = store.latest()
    if checkpoint is None and not target.auto:
        what = "none of its checkpoints verifies" if store.committed() else "it has no checkpoint"
        raise UserError(f"cannot resume {target.run_dir}: {what}", "start the run again without --resume")
    return checkpoint


def check_compatible(cfg: Config, checkpoint: Checkpoint) -> None:
    """UserError naming the first setting that differs from the checkpoint's in a way that matters."""
    saved = Config.from_dict(checkpoint.manifest["config"], source=str(checkpoint.path / MANIFEST))
    conflicts = cfg.resume_conflicts(saved)
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise UserError(
            f"cannot resume {checkpoint.path}: {conflicts[0]}{more}",
            "resume with the run's own settings, or start a new run with another --output",
        )


def _folder(target: ResumeTarget) -> Path:
    return target.run_dir / CHECKPOINTS
