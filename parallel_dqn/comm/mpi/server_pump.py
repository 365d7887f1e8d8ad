"""Rank 0's MPI loop: a pump around the server endpoint, like mpi4py's ``nxtval`` demo.

It probes for any message, receives it into the right buffer by its tag, hands it to the
endpoint (:class:`~parallel_dqn.training.endpoint.ServerEndpoint`, which holds every rule of
the protocol) and sends the replies it returns, without blocking. While no message comes it
lets the endpoint do what is due anyway (a checkpoint on a timer or a signal).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import numpy as np
from mpi4py import MPI

from parallel_dqn.comm.messages import (
    CheckpointEnd,
    CheckpointFirst,
    CheckpointRequest,
    EpisodeDirective,
    ParamsMessage,
    Pull,
    ToServer,
    ToWorker,
)
from parallel_dqn.comm.mpi.wire import (
    Tag,
    pack_checkpoint_first,
    pack_params,
    unpack_decisions,
    unpack_gradient,
    wait_until,
)
from parallel_dqn.errors import StoppedAfterCheckpoint


class Endpoint(Protocol):
    """What the pump needs of rank 0's protocol (:class:`parallel_dqn.training.endpoint.ServerEndpoint`)."""

    finished: bool
    stopped_by: Any

    def handle(self, worker: int, msg: ToServer) -> list[tuple[int, ToWorker]]: ...

    def tick(self) -> list[tuple[int, ToWorker]]: ...

    def check_finished(self) -> None: ...


class ServerPump:
    """Receive, hand to the endpoint, send its replies; until every worker has stopped."""

    def __init__(self, endpoint: Endpoint, comm: MPI.Comm, timeout: float) -> None:
        self.endpoint = endpoint
        self.comm = comm
        self.timeout = timeout
        self._sends: deque[tuple[MPI.Request, np.ndarray]] = deque()
        self._params_cache: tuple[int, np.ndarray] | None = None
        self.messages = 0
        self.bytes_received = 0

    def run(self) -> None:
        """Serve until every worker has stopped (or a checkpoint taken for a stop signal is committed)."""
        status = MPI.Status()

        def probe() -> bool:
            if self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
                return True
            self._send(self.endpoint.tick())  # also while no message comes (a signal, a timer)
            return False

        while not self.endpoint.finished:
            waiting = "waiting for the workers"
            wait_until(probe, self.timeout, waiting)
            source = status.Get_source()
            msg = self._receive(source, Tag(status.Get_tag()), status)
            self.messages += 1
            self._send(self.endpoint.handle(source - 1, msg))
            if self.endpoint.stopped_by is not None:
                self._finish_sends()
                checkpoint = self.endpoint.stopped_by
                raise StoppedAfterCheckpoint(str(checkpoint.manifest["reason"]), str(checkpoint.path))
            self._reap_sends()
        self.endpoint.check_finished()
        self._finish_sends()

    # ---- receiving ----------------------------------------------------------------------------
    def _receive(self, source: int, tag: Tag, status: MPI.Status) -> ToServer:
        if tag == Tag.GRADIENT:
            buf = np.empty(status.Get_count(MPI.FLOAT), dtype=np.float32)
            self.comm.Recv([buf, MPI.FLOAT], source=source, tag=tag)
            self.bytes_received += buf.nbytes
            return unpack_gradient(buf)
        if tag == Tag.DECISIONS:
            buf = np.empty(status.Get_count(MPI.DOUBLE), dtype=np.float64)
            self.comm.Recv([buf, MPI.DOUBLE], source=source, tag=tag)
            self.bytes_received += buf.nbytes
            return unpack_decisions(buf)
        if tag == Tag.PULL:
            request = np.empty(2, dtype=np.int64)
            self.comm.Recv([request, MPI.INT64_T], source=source, tag=tag)
            return Pull(int(request[0]), int(request[1]))
        self.bytes_received += status.Get_count(MPI.BYTE)
        return self.comm.recv(source=source, tag=tag)

    # ---- sending ------------------------------------------------------------------------------
    def _send(self, replies: list[tuple[int, ToWorker]]) -> None:
        for worker, msg in replies:
            rank = worker + 1
            if isinstance(msg, ParamsMessage):
                buf, mpi_type, tag = self._params_buffer(msg), MPI.FLOAT, Tag.PARAMS
            elif isinstance(msg, EpisodeDirective):
                buf = np.array([msg.episode, msg.stage, int(msg.stop)], dtype=np.int64)
                mpi_type, tag = MPI.INT64_T, Tag.DIRECTIVE
            elif isinstance(msg, CheckpointFirst) and msg.directive:
                buf, mpi_type, tag = np.array([-1, msg.seq, 0], dtype=np.int64), MPI.INT64_T, Tag.DIRECTIVE
            elif isinstance(msg, CheckpointFirst):
                buf, mpi_type, tag = pack_checkpoint_first(msg.seq), MPI.FLOAT, Tag.PARAMS
            elif isinstance(msg, CheckpointRequest):
                buf = np.array([msg.seq, int(msg.stop), msg.episode], dtype=np.int64)
                mpi_type, tag = MPI.INT64_T, Tag.CKPT_REQUEST
            elif isinstance(msg, CheckpointEnd):
                buf, mpi_type, tag = np.array([msg.seq, int(msg.go_on)], dtype=np.int64), MPI.INT64_T, Tag.CKPT_END
            else:
                raise TypeError(f"rank 0 cannot send {type(msg).__name__}")
            self._sends.append((self.comm.Isend([buf, mpi_type], dest=rank, tag=tag), buf))

    def _params_buffer(self, msg: ParamsMessage) -> np.ndarray:
        """One packed buffer per server version, shared by every worker that pulls it."""
        if self._params_cache is None or self._params_cache[0] != msg.version:
            self._params_cache = (msg.version, pack_params(msg))
        return self._params_cache[1]

    def _reap_sends(self) -> None:
        while self._sends and self._sends[0][0].Test():
            self._sends.popleft()

    def _finish_sends(self) -> None:
        while self._sends:
            wait_until(self._sends[0][0].Test, self.timeout, "sending to the workers")
            self._sends.popleft()
