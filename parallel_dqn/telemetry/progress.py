"""The run's progress bar (rank 0 only): episode, clock steps/s, transitions/s, gradient applies/s,
mean staleness, dropped gradients, epsilon, loss.

A thin wrapper over tqdm, registered as one of the run's observers (``on_market``,
``on_decisions``, ``on_episode``, ``close``), so nothing else knows about terminals; it is
silent when ``run.progress`` is off, and in single-process mode when stderr is not a terminal
(under mpirun, rank 0's stderr is always a pipe to the launcher, which forwards it to the
user's terminal, so there it draws).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from tqdm import tqdm


class Progress:
    """One bar over all clock steps of the run (training episodes, then the evaluation)."""

    def __init__(self, total_steps: int, enabled: bool = True, without_terminal: bool = False) -> None:
        """``without_terminal``: draw even when stderr is a pipe (under mpirun, whose launcher forwards it)."""
        self.bar = tqdm(
            total=total_steps,
            unit="step",
            disable=not (enabled and (without_terminal or sys.stderr.isatty())),
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 2.0,
            smoothing=0.1,
        )
        self.episode = "1"
        self.episodes = 0
        self.loss = math.nan
        self.monitor = ""  # the convergence monitor's latest state and learning rate (empty: off)
        self.transitions = 0
        self.started = time.monotonic()

    def set_total(self, total_steps: int, episodes: int) -> None:
        self.episodes = episodes
        self.bar.reset(total=total_steps)

    # ---- as a run observer ----------------------------------------------------------------------
    def on_market(self, info: Any) -> None:
        """The market is known: the bar's length is every clock step of every episode."""
        train, evaluation = info.train_rows, info.eval_rows
        valid = getattr(info, "valid_rows", (0, 0))
        per_episode = max(train[1] - train[0] - 1, 0) + max(valid[1] - valid[0] - 1, 0)
        self.set_total(info.episodes * per_episode + max(evaluation[1] - evaluation[0] - 1, 0), info.episodes)

    def on_decisions(self, block: Any, counters: Any, loss: float) -> None:
        """A block of decisions arrived: worker 0's advance the clock (every worker steps the same clock)."""
        self.advance(
            clock_steps=len(set(block.t.tolist())) if block.worker == 0 else 0,
            transitions=len(block.t),
            epsilon=block.epsilon,
            loss=loss,
            applied=counters.applied,
            dropped=counters.dropped_stale,
            staleness=counters.staleness_sum / max(counters.received, 1),
        )

    def on_episode(self, report: Any) -> None:
        self.episode_finished(report.line)

    def advance(
        self,
        clock_steps: int,
        transitions: int,
        epsilon: float,
        loss: float,
        applied: int,
        dropped: int,
        staleness: float,
    ) -> None:
        """Worker 0 acted ``clock_steps`` more steps; all workers ``transitions`` more decisions."""
        if not math.isnan(loss):
            self.loss = loss
        self.transitions += transitions
        now = time.monotonic()
        elapsed = max(now - self.started, 1e-9)
        self.bar.set_postfix(
            ep=self.episode,
            eps=f"{epsilon:.3f}",
            loss=f"{self.loss:.4f}",
            trans_s=f"{self.transitions / elapsed:.0f}",
            applies_s=f"{applied / elapsed:.1f}",
            stale=f"{staleness:.1f}",
            dropped=dropped,
            **({"monitor": self.monitor} if self.monitor else {}),
            refresh=False,
        )
        self.bar.update(clock_steps)

    def episode_finished(self, line: dict[str, Any]) -> None:
        if "monitor" in line:
            self.monitor = line["monitor"] + (f" lr {line['lr']:.3g}" if "lr" in line else "")
        nxt = line["episode"] + 1
        if line["phase"] != "valid":  # a validation comes between training episodes: the next is known already
            self.episode = str(nxt) if line["phase"] == "train" and nxt <= self.episodes else "eval"
        if self.bar.disable:
            return
        stage = f" (curriculum stage {line['stage']})" if "stage" in line else ""
        self.bar.write(
            f"{line['phase']} episode {line['episode']}{stage}: reward {line['total_reward']:.4f} "
            f"return {line['total_return']:.4f} sharpe {line['sharpe']:.2f}"
            + (f" [{line['monitor_message']}]" if "monitor_message" in line else "")
        )

    def close(self) -> None:
        self.bar.close()
