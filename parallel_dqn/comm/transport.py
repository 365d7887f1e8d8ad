"""The few operations workers use to reach the parameter server and each other.

Two implementations expose the same :class:`Transport` operations:
:class:`~parallel_dqn.comm.inprocess.InProcessTransport` (single-process mode: every worker and
the server in one process, messages handed over as objects) and
:class:`~parallel_dqn.comm.mpi.worker_end.MPIWorkerTransport` (one worker per MPI rank, rank 0
the server). The worker and the driver only ever see this interface; rank 0's side of every
operation is :class:`parallel_dqn.training.endpoint.ServerEndpoint`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from parallel_dqn.comm.messages import (
    CheckpointRequest,
    DecisionBlock,
    EpisodeDirective,
    EpisodeDone,
    GradientMessage,
    ParamsMessage,
    SetupInfo,
)


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

    def close(self, sent: Mapping[int, int]) -> None:
        """No more messages from the workers hosted here; ``sent[w]`` counts the gradients worker w pushed."""

    def episode_directive(self, worker: int, episode: int, after: tuple[int, str] | None) -> EpisodeDirective | None:
        """Rank 0's word on training episode ``episode`` (``after``: the schedule entry ``worker`` finished last),
        once rank 0 has that entry's outcome.

        None when the server asks for a checkpoint first (:meth:`poll_checkpoint` then returns it).
        """

    def poll_checkpoint(self, wait: bool = False) -> CheckpointRequest | None:
        """The checkpoint the server asks for, if any (called between clock steps); ``wait``: until one comes."""

    def checkpoint_done(self, request: CheckpointRequest, files: dict[int, dict[str, dict[str, Any]]]) -> bool:
        """Each hosted worker wrote its ``files[worker]`` (name -> digest) for ``request``; wait until the
        checkpoint is committed. False: every rank stops now."""

    def request_stop(self, reason: str) -> None:
        """A stop signal reached this process: ask the server for a checkpoint, then a stop."""
