"""SIGTERM and SIGUSR1 during training: checkpoint, then stop with :data:`EXIT_PREEMPTED`.

SLURM sends SIGTERM to every task when it preempts or cancels a job, and SIGUSR1 that many
seconds before the time limit when the job asks for it (``#SBATCH --signal=USR1@120``); a
user can send either with ``kill`` or ``scancel --signal=USR1``. While a run trains, such a
signal is only *noted* (:class:`StopSignals`); the run acts on it at the next clock step:
every rank writes its part of one checkpoint, then every process exits with
:data:`EXIT_PREEMPTED`, so the batch script (or the user) knows to run it again with
``--resume auto``.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

from parallel_dqn.errors import EXIT_PREEMPTED, StoppedAfterCheckpoint  # noqa: F401 - where run code looks for them

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopSignals:
    """While entered, SIGTERM and SIGUSR1 set :attr:`received` (the first signal's name) instead of killing.

    Outside the main thread (where Python cannot install handlers) it installs nothing and
    never reports a signal.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
