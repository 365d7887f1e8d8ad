"""A worker rank's end of the MPI transport: non-blocking sends to rank 0, bounded waits for its answers."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from mpi4py import MPI

from parallel_dqn.comm.messages import (
    CheckpointDone,
    CheckpointRequest,
    DecisionBlock,
    DirectiveRequest,
    EpisodeDirective,
    EpisodeDone,
    GradientMessage,
    ParamsMessage,
    SetupInfo,
    StopRequest,
    WorkerStopped,
)
from parallel_dqn.comm.mpi.node import NodeRanks
from parallel_dqn.comm.mpi.wire import (
    PICKLED_TAGS,
    SERVER,
    Tag,
    pack_decisions,
    pack_gradient,
    unpack_params,
    wait_until,
)


class MPIWorkerTransport:
    """One worker per rank: ``comm`` reaches rank 0, ``workers`` (the workers-only communicator) the peers,
    ``node`` the workers on this node (None: this rank alone)."""

    def __init__(
        self, comm: MPI.Comm, workers: MPI.Comm, timeout: float, max_in_flight: int = 16, node: NodeRanks | None = None
    ) -> None:
        self.comm = comm
        self.workers = workers
        self.node = node
        self.worker = comm.Get_rank() - 1
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self._in_flight: deque[tuple[MPI.Request, Any]] = deque()
        self._params_buf: np.ndarray | None = None
        self._deferred: CheckpointRequest | None = None  # asked for instead of the parameters
        self.bytes_sent = 0

    def allgather(self, parts: Sequence[Any]) -> list[Any]:
        (mine,) = parts
        return self.workers.allgather(mine)

    def allgather_rows(self, parts: Sequence[np.ndarray], block_rows: int = 4096) -> list[np.ndarray]:
        """Every worker's ``[T, k_i, W]`` rows, exchanged with Allgatherv in blocks of time."""
        (mine,) = parts
        T, _, W = mine.shape
        widths = self.workers.allgather(mine.shape[1])
        out = [np.empty((T, k, W)) for k in widths]
        for lo in range(0, T, block_rows):
            hi = min(T, lo + block_rows)
            counts = [(hi - lo) * k * W for k in widths]
            recv = np.empty(sum(counts))
            send = np.ascontiguousarray(mine[lo:hi]).reshape(-1)
            self.workers.Allgatherv(send, [recv, counts, MPI.DOUBLE])
            offset = 0
            for i, k in enumerate(widths):
                out[i][lo:hi] = recv[offset : offset + counts[i]].reshape(hi - lo, k, W)
                offset += counts[i]
        return out

    # ---- to rank 0 ----------------------------------------------------------------------------
    def send_setup(self, info: SetupInfo) -> None:
        self._send_object(info)

    def push_gradient(self, msg: GradientMessage) -> None:
        self._isend(pack_gradient(msg), MPI.FLOAT, Tag.GRADIENT)

    def send_decisions(self, block: DecisionBlock) -> None:
        self._isend(pack_decisions(block), MPI.DOUBLE, Tag.DECISIONS)

    def episode_done(self, msg: EpisodeDone) -> None:
        self._send_object(msg)

    def request_stop(self, reason: str) -> None:
        self._send_object(StopRequest(self.worker, reason))

    def close(self, sent: Mapping[int, int]) -> None:
        """Tell rank 0 this worker is finished (with how many gradients it sent); wait until everything has left."""
        self._send_object(WorkerStopped(self.worker, int(sent[self.worker])))
        self._drain()

    # ---- with an answer -----------------------------------------------------------------------
    def pull_params(self, worker: int, min_version: int) -> ParamsMessage | None:
        request = np.array([worker, min_version], dtype=np.int64)
        self.comm.Send([request, MPI.INT64_T], dest=SERVER, tag=Tag.PULL)
        status = MPI.Status()
        wait_until(
            lambda: self.comm.Iprobe(source=SERVER, tag=Tag.PARAMS, status=status), self.timeout, "pulling parameters"
        )
        n = status.Get_count(MPI.FLOAT)
        if self._params_buf is None or self._params_buf.size != n:
            self._params_buf = np.empty(n, dtype=np.float32)
        self.comm.Recv([self._params_buf, MPI.FLOAT], source=SERVER, tag=Tag.PARAMS)
        answer = unpack_params(self._params_buf.copy())
        if isinstance(answer, int):  # checkpoint `answer` first
            self._deferred = self._receive_request(block=True)
            return None
        return answer

    def episode_directive(self, worker: int, episode: int, after: tuple[int, str] | None) -> EpisodeDirective | None:
        self._send_object(DirectiveRequest(worker, episode, after))
        wait_until(
            lambda: self.comm.Iprobe(source=SERVER, tag=Tag.DIRECTIVE), self.timeout,
            f"waiting for rank 0's word on training episode {episode}",
        )
        answer = np.empty(3, dtype=np.int64)
        self.comm.Recv([answer, MPI.INT64_T], source=SERVER, tag=Tag.DIRECTIVE)
        if int(answer[0]) == -1:  # checkpoint `answer[1]` first
            self._deferred = self._receive_request(block=True)
            return None
        return EpisodeDirective(int(answer[0]), int(answer[1]), bool(answer[2]))

    def poll_checkpoint(self, wait: bool = False) -> CheckpointRequest | None:
        if self._deferred is not None:
            request, self._deferred = self._deferred, None
            return request
        return self._receive_request(block=wait)

    def checkpoint_done(self, request: CheckpointRequest, files: dict[int, dict[str, dict[str, Any]]]) -> bool:
        ((worker, written),) = files.items()
        self._send_object(CheckpointDone(request.seq, worker, written))
        wait_until(lambda: self.comm.Iprobe(source=SERVER, tag=Tag.CKPT_END), self.timeout, "waiting for the checkpoint")
        answer = np.empty(2, dtype=np.int64)
        self.comm.Recv([answer, MPI.INT64_T], source=SERVER, tag=Tag.CKPT_END)
        if int(answer[0]) != request.seq:
            raise RuntimeError(f"rank 0 ended checkpoint {int(answer[0])}, this worker took {request.seq}")
        go_on = bool(answer[1])
        if not go_on:
            self._drain()
        return go_on

    def _receive_request(self, block: bool) -> CheckpointRequest | None:
        if not block and not self.comm.Iprobe(source=SERVER, tag=Tag.CKPT_REQUEST):
            return None
        wait_until(
            lambda: self.comm.Iprobe(source=SERVER, tag=Tag.CKPT_REQUEST), self.timeout, "waiting for a checkpoint request"
        )
        buf = np.empty(3, dtype=np.int64)
        self.comm.Recv([buf, MPI.INT64_T], source=SERVER, tag=Tag.CKPT_REQUEST)
        return CheckpointRequest(int(buf[0]), stop=bool(buf[1]), episode=int(buf[2]))

    # ---- sends in flight ----------------------------------------------------------------------
    def _send_object(self, msg: Any) -> None:
        self._track(self.comm.isend(msg, dest=SERVER, tag=PICKLED_TAGS[type(msg)]), None)

    def _isend(self, buf: np.ndarray, mpi_type: MPI.Datatype, tag: Tag) -> None:
        self.bytes_sent += buf.nbytes
        self._track(self.comm.Isend([buf, mpi_type], dest=SERVER, tag=tag), buf)

    def _track(self, request: MPI.Request, buf: Any) -> None:
        """Keep the buffer alive until its send completes; bound the sends in flight."""
        self._in_flight.append((request, buf))
        while self._in_flight and self._in_flight[0][0].Test():
            self._in_flight.popleft()
        while len(self._in_flight) > self.max_in_flight:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        request, _ = self._in_flight[0]
        wait_until(request.Test, self.timeout, "sending to rank 0")
        self._in_flight.popleft()

    def _drain(self) -> None:
        """Wait until every message sent has left."""
        while self._in_flight:
            self._wait_oldest()
