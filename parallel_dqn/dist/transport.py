"""The few operations workers use to reach the parameter server and each other.

Two implementations expose the same :class:`Transport` operations:
:class:`InProcessTransport` (single-process mode: every worker and the server in
one process, messages handed over as objects) and ``MPITransport`` (one worker
per MPI rank, rank 0 the server). The algorithm code (server, worker, driver)
only ever sees this interface.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np

from parallel_dqn.dist.messages import DecisionBlock, EpisodeDone, GradientMessage, ParamsMessage, SetupInfo
from parallel_dqn.dist.server import ParameterServer


class Transport(Protocol):
    """What a worker (or the driver hosting workers) may ask for."""

    def allgather(self, parts: Sequence[Any]) -> list[Any]:
        """Contributions of the workers hosted here -> every worker's, in worker order."""

    def allgather_rows(self, parts: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Like :meth:`allgather` for the big ``[T, k, W]`` float64 feature rows (sent in blocks of time)."""

    def send_setup(self, info: SetupInfo) -> None:
        """Worker 0 tells the server about the market (once, before the first episode)."""

    def push_gradient(self, msg: GradientMessage) -> None:
        """Send a gradient; does not wait for it to be applied."""

    def pull_params(self, worker: int, min_version: int) -> ParamsMessage:
        """Current parameters, once the server's version is at least ``min_version``."""

    def send_decisions(self, block: DecisionBlock) -> None:
        """Stream a block of decision records to the server."""

    def episode_done(self, msg: EpisodeDone) -> None:
        """A worker finished an episode."""

    def close(self, summary: dict[str, int]) -> None:
        """No more messages from the workers hosted here; ``summary`` counts what they sent."""


class InProcessTransport:
    """Every worker and the server in one process: calls go straight to the server.

    The driver steps the workers in lock-step, phase by phase, so a pull that
    needs a sync round always finds it applied; anything else is a bug.
    """

    def __init__(self, server: ParameterServer) -> None:
        self.server = server

    def allgather(self, parts: Sequence[Any]) -> list[Any]:
        return list(parts)

    def allgather_rows(self, parts: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(parts)

    def send_setup(self, info: SetupInfo) -> None:
        self.server.setup(info)

    def push_gradient(self, msg: GradientMessage) -> None:
        self.server.on_gradient(msg)

    def pull_params(self, worker: int, min_version: int) -> ParamsMessage:
        if not self.server.params_ready(min_version):
            raise RuntimeError(f"worker {worker} needs version {min_version}, server has {self.server.version}")
        return self.server.params()

    def send_decisions(self, block: DecisionBlock) -> None:
        self.server.on_decisions(block)

    def episode_done(self, msg: EpisodeDone) -> None:
        self.server.on_episode_done(msg)

    def close(self, summary: dict[str, int]) -> None:
        self.server.on_workers_stopped(summary)
