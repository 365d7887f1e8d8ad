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

from parallel_dqn.checkpoint.coordinator import CheckpointCoordinator, CheckpointRequest
from parallel_dqn.comm.messages import DecisionBlock, EpisodeDone, GradientMessage, ParamsMessage, SetupInfo
from parallel_dqn.training.server import ParameterServer


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

    def pull_params(self, worker: int, min_version: int) -> ParamsMessage | None:
        """Current parameters, once the server's version is at least ``min_version``.

        None when the server asks for a checkpoint first (:meth:`poll_checkpoint` then returns it).
        """

    def send_decisions(self, block: DecisionBlock) -> None:
        """Stream a block of decision records to the server."""

    def episode_done(self, msg: EpisodeDone) -> None:
        """A worker finished an episode."""

    def close(self, summary: dict[str, int]) -> None:
        """No more messages from the workers hosted here; ``summary`` counts what they sent."""

    def poll_checkpoint(self, wait: bool = False) -> CheckpointRequest | None:
        """The checkpoint the server asks for, if any (called between clock steps); ``wait``: until one comes."""

    def checkpoint_done(self, request: CheckpointRequest, files: dict[int, dict[str, dict[str, Any]]]) -> bool:
        """Each hosted worker wrote its ``files[worker]`` (name -> digest) for ``request``; wait until the
        checkpoint is committed. False: every rank stops now."""

    def request_stop(self, reason: str) -> None:
        """A stop signal reached this process: ask the server for a checkpoint, then a stop."""


class InProcessTransport:
    """Every worker and the server in one process: calls go straight to the server.

    The driver steps the workers in lock-step, phase by phase, so a pull that
    needs a sync round always finds it applied; anything else is a bug.
    """

    def __init__(self, server: ParameterServer, checkpoints: CheckpointCoordinator | None = None) -> None:
        self.server = server
        self.checkpoints = checkpoints

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
        if self.checkpoints is not None:
            self.checkpoints.workers_finishing()
        self.server.on_workers_stopped(summary)

    def poll_checkpoint(self, wait: bool = False) -> CheckpointRequest | None:
        request = self.checkpoints.due() if self.checkpoints is not None else None
        if wait and request is None:
            raise RuntimeError("a checkpoint was awaited, and none is due")
        return request

    def checkpoint_done(self, request: CheckpointRequest, files: dict[int, dict[str, dict[str, Any]]]) -> bool:
        assert self.checkpoints is not None
        checkpoint = None
        for worker, written in sorted(files.items()):
            checkpoint = self.checkpoints.worker_done(request.seq, worker, written)
        if checkpoint is None:
            raise RuntimeError(f"checkpoint {request.seq} was not committed: not every worker wrote its part")
        return not request.stop

    def request_stop(self, reason: str) -> None:
        if self.checkpoints is not None:
            self.checkpoints.request_stop(reason)
