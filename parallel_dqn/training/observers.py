"""The one typed interface through which a run tells the world what happens: :class:`RunObserver`.

Rank 0 (or the single process) registers its observers on the run: the recorder (files and
figures), TensorBoard, ``status.json``, Telegram notifications, the progress bar. Each
implements the events it cares about; :class:`Observers` tells every registered observer, in
the order of registration, and is also the parameter server's listener: it accounts each
finished episode once (:func:`~parallel_dqn.evaluation.episode.account_episode`) and hands the
same report to every observer. Nothing an observer does can change training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from parallel_dqn.checkpoint.format import Checkpoint
from parallel_dqn.comm.messages import DecisionBlock, SetupInfo
from parallel_dqn.evaluation.episode import EpisodeOutcome, EpisodeReport, account_episode
from parallel_dqn.training.server import GradientCounters

EVENTS = ("on_start", "on_market", "on_decisions", "on_episode", "on_checkpoint", "on_finish", "on_stop",
          "on_failure", "close")


@dataclass(frozen=True)
class RunStarted:
    """A run starts (or resumes)."""

    mode: str  # single or parallel
    symbols: tuple[str, ...]
    workers: int
    episodes: int
    output: Path
    resumed_from: Path | None = None
    training: bool = True  # False: an evaluation of a saved model


class RunObserver(Protocol):
    """Every event of a run; an observer defines the methods of the events it needs (all are optional)."""

    def on_start(self, run: RunStarted) -> None: ...

    def on_market(self, info: SetupInfo) -> None: ...

    def on_decisions(self, block: DecisionBlock, counters: GradientCounters, loss: float) -> None: ...

    def on_episode(self, report: EpisodeReport) -> None: ...

    def on_checkpoint(self, checkpoint: Checkpoint, episodes_done: int, reason: str) -> None: ...

    def on_finish(self, result: dict[str, Any]) -> None: ...

    def on_stop(self, reason: str, checkpoint: Path | None) -> None: ...

    def on_failure(self, error: BaseException) -> None: ...

    def close(self) -> None: ...


class Observers:
    """The registered observers, told of each event in turn; the parameter server's listener."""

    def __init__(self, cost_bps: float) -> None:
        self.cost_bps = cost_bps
        self.info: SetupInfo | None = None
        self._observers: list[Any] = []

    def register(self, observer: Any) -> None:
        """Add an observer (an object with any of the :class:`RunObserver` methods)."""
        if not any(hasattr(observer, event) for event in EVENTS):
            raise TypeError(f"{type(observer).__name__} observes no run event")
        self._observers.append(observer)

    def _tell(self, event: str, *args: Any) -> None:
        for observer in self._observers:
            method = getattr(observer, event, None)
            if method is not None:
                method(*args)

    # ---- the parameter server's listener --------------------------------------------------------
    def on_market(self, info: SetupInfo) -> None:
        self.info = info
        self._tell("on_market", info)

    def on_decisions(self, block: DecisionBlock, counters: GradientCounters, loss: float) -> None:
        self._tell("on_decisions", block, counters, loss)

    def on_episode(self, outcome: EpisodeOutcome) -> None:
        assert self.info is not None
        self._tell("on_episode", account_episode(outcome, self.info, self.cost_bps))

    # ---- the run's lifecycle --------------------------------------------------------------------
    def on_start(self, run: RunStarted) -> None:
        self._tell("on_start", run)

    def on_checkpoint(self, checkpoint: Checkpoint, episodes_done: int, reason: str) -> None:
        self._tell("on_checkpoint", checkpoint, episodes_done, reason)

    def on_finish(self, result: dict[str, Any]) -> None:
        self._tell("on_finish", result)

    def on_stop(self, reason: str, checkpoint: Path | None) -> None:
        self._tell("on_stop", reason, checkpoint)

    def on_failure(self, error: BaseException) -> None:
        self._tell("on_failure", error)

    def close(self) -> None:
        self._tell("close")
