"""The training curve as TensorBoard scalars (``OUT/tensorboard``; view with ``tensorboard --logdir runs/``).

Rank 0 logs every number of every ``metrics.jsonl`` line: ``train/<metric>`` at the training
episode (with the learning rate ``lr``, the gradient norm ``grad_norm`` and the convergence monitor's
``monitor_code``: 0 improving, 1 plateau, 2 diverging, when they are on), ``valid/<metric>`` at the
training episode it follows, ``eval/<metric>`` at the number of training episodes. A resumed run starts its event file
with ``purge_step`` = the first episode it will log again, so TensorBoard discards what the
interrupted run logged after its checkpoint and the curve has no duplicate or stale points.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from parallel_dqn import outputs

log = logging.getLogger(__name__)

TENSORBOARD_DIR = outputs.TENSORBOARD


class ScalarLog:
    """Lazily opened TensorBoard writer for one run; does nothing if TensorBoard is not installed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._writer: Any = None
        self._purge_step: int | None = None
        self._unavailable = False
        self._episodes = 0  # training episodes logged so far

    def resume_at(self, episodes_done: int) -> None:
        """The run continues after ``episodes_done`` episodes: TensorBoard drops what was logged after them."""
        self._purge_step = episodes_done + 1
        self._episodes = episodes_done

    def log(self, prefix: str, step: int, values: Mapping[str, Any]) -> None:
        """Write every finite number in ``values`` as ``prefix/name`` at ``step``."""
        writer = self._open()
        if writer is None:
            return
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            writer.add_scalar(f"{prefix}/{name}", float(value), step)
        writer.flush()

    # ---- as a run observer ----------------------------------------------------------------------
    def on_episode(self, report: Any) -> None:
        """``train/<metric>`` at the training episode, ``eval/<metric>`` at the number of training episodes."""
        line = report.line
        if line["phase"] == "train":
            self._episodes = line["episode"]
            self.log("train", line["episode"], line)
        elif line["phase"] == "valid":  # the validation after a training episode: at that episode
            self.log("valid", line["episode"], line)
        else:
            self.log("eval", self._episodes, line)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _open(self) -> Any:
        if self._writer is None and not self._unavailable:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # a declared dependency; only a broken install lacks it
                self._unavailable = True
                log.warning("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
                return None
            self._writer = SummaryWriter(str(self.folder), purge_step=self._purge_step)
        return self._writer
