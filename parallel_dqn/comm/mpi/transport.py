"""The MPI transport: rank 0 is the parameter server, ranks 1..N one worker each.

Everything MPI lives here; the server, the worker and the driver never see it.
The communicator is passed in and duplicated, so the framework's traffic cannot
collide with anything else on it, and split into a workers-only communicator
for the cross-section exchange. Hot messages travel as one flat numeric buffer
each, sent without blocking:

======================  ===================================================  =====================
tag                     buffer                                               direction
======================  ===================================================  =====================
``GRADIENT``            float32 ``[worker, version | loss, q_mean, grad...]``  worker -> server
``PULL``                int64 ``[worker, min_version]``                        worker -> server
``PARAMS``              float32 ``[version, target_version | online, target]`` server -> worker
``DECISIONS``           float64 ``[header(5) | t, stock, q(3), action, reward]``  worker -> server
``SETUP``, ``DONE``,    pickled objects (once per run / per episode)         worker -> server
``STOP``
``CKPT_REQUEST``        int64 ``[seq, stop, episode]``                         server -> worker
``CKPT_DONE``           pickled ``(seq, worker, {file: digest})``              worker -> server
``CKPT_END``            int64 ``[seq, go_on]``                                 server -> worker
``STOP_REQUEST``        pickled signal name (SIGTERM / SIGUSR1)              worker -> server
======================  ===================================================  =====================

(``worker, version`` are int32 values stored in the float32 slots' bits; a
``PARAMS`` answer with version -1 means "take checkpoint ``seq`` first, then ask
again".) Rank 0 serves in a loop on ``Iprobe`` + dispatch on the tag, like
mpi4py's ``nxtval`` demo, until every worker has sent ``STOP``; the checkpoint
protocol is described in :mod:`parallel_dqn.checkpoint.coordinator`. Every wait polls with a short sleep
(ranks may outnumber cores, and MPICH's own waits spin) and gives up after
``timeout`` seconds with :class:`CommTimeout`, so a rank that died never leaves
the others waiting forever.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from enum import IntEnum
from typing import Any, Callable, Sequence

import numpy as np
from mpi4py import MPI

from parallel_dqn.checkpoint.coordinator import CheckpointCoordinator, CheckpointRequest
from parallel_dqn.comm.messages import DecisionBlock, EpisodeDone, GradientMessage, ParamsMessage, SetupInfo
from parallel_dqn.training.server import ParameterServer
from parallel_dqn.run.signals import StoppedAfterCheckpoint

log = logging.getLogger(__name__)

SERVER = 0
PHASES = ("train", "eval")
DECISION_HEADER = 5
CHECKPOINT_FIRST = -1  # the version of a PARAMS answer that asks for a checkpoint before the pull


class Tag(IntEnum):
    SETUP = 1
    GRADIENT = 2
    PULL = 3
    PARAMS = 4
    DECISIONS = 5
    DONE = 6
    STOP = 7
    CKPT_REQUEST = 8
    CKPT_DONE = 9
    CKPT_END = 10
    STOP_REQUEST = 11


#: messages the server can only handle once it knows the market (worker 0's SETUP); held back until then
WAIT_FOR_SETUP = frozenset({Tag.GRADIENT, Tag.DECISIONS, Tag.DONE, Tag.CKPT_DONE})


class CommTimeout(RuntimeError):
    """No answer from another rank within the timeout: it probably died."""


def wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``ready()`` until true, yielding the core between polls; CommTimeout after ``timeout`` s."""
    start = time.monotonic()
    polls = 0
    while not ready():
        polls += 1
        if polls > 200:
            time.sleep(min(1e-3, 2e-6 * polls))
        if time.monotonic() - start > timeout:
            raise CommTimeout(f"no answer for {timeout:.0f} s while {what}; another rank probably failed")


# ---- buffer packing ---------------------------------------------------------------------------
def pack_gradient(msg: GradientMessage) -> np.ndarray:
    buf = np.empty(4 + msg.grad.size, dtype=np.float32)
    buf[:2].view(np.int32)[:] = (msg.worker, msg.version)
    buf[2:4] = (msg.loss, msg.q_mean)
    buf[4:] = msg.grad
    return buf


def unpack_gradient(buf: np.ndarray) -> GradientMessage:
    worker, version = (int(x) for x in buf[:2].view(np.int32))
    return GradientMessage(worker, version, buf[4:], float(buf[2]), float(buf[3]))


def pack_params(msg: ParamsMessage) -> np.ndarray:
    n = msg.online.size
    buf = np.empty(2 + 2 * n, dtype=np.float32)
    buf[:2].view(np.int32)[:] = (msg.version, msg.target_version)
    buf[2 : 2 + n] = msg.online
    buf[2 + n :] = msg.target
    return buf


def pack_checkpoint_first(seq: int) -> np.ndarray:
    """A PARAMS answer that defers a pull until checkpoint ``seq`` is taken."""
    buf = np.empty(2, dtype=np.float32)
    buf.view(np.int32)[:] = (CHECKPOINT_FIRST, seq)
    return buf


def unpack_params(buf: np.ndarray) -> ParamsMessage:
    version, target_version = (int(x) for x in buf[:2].view(np.int32))
    n = (buf.size - 2) // 2
    return ParamsMessage(version, target_version, buf[2 : 2 + n], buf[2 + n :])


def pack_decisions(b: DecisionBlock) -> np.ndarray:
    n = b.t.size
    header = [b.worker, b.episode, PHASES.index(b.phase), n, b.epsilon]
    return np.concatenate([header, b.t, b.stock, b.q.reshape(-1), b.action, b.reward]).astype(np.float64)


def unpack_decisions(buf: np.ndarray) -> DecisionBlock:
    worker, episode, phase, n = (int(x) for x in buf[:4])
    body = buf[DECISION_HEADER:]
    t, stock = body[:n], body[n : 2 * n]
    q = body[2 * n : 5 * n].reshape(n, 3)
    action, reward = body[5 * n : 6 * n], body[6 * n : 7 * n]
    return DecisionBlock(
        worker, episode, PHASES[phase], t.astype(np.int64), stock.astype(np.int64), q.astype(np.float32),
        action.astype(np.int64), reward.copy(), float(buf[4]),
    )


# ---- worker side ------------------------------------------------------------------------------
class MPIWorkerTransport:
    """A worker rank's end: non-blocking sends to rank 0, blocking (bounded) pulls."""

    def __init__(self, comm: MPI.Comm, workers: MPI.Comm, timeout: float, max_in_flight: int = 16) -> None:
        self.comm = comm
        self.workers = workers
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

    def send_setup(self, info: SetupInfo) -> None:
        self._track(self.comm.isend(info, dest=SERVER, tag=Tag.SETUP), None)

    def push_gradient(self, msg: GradientMessage) -> None:
        self._isend(pack_gradient(msg), MPI.FLOAT, Tag.GRADIENT)

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
        if int(self._params_buf[:1].view(np.int32)[0]) == CHECKPOINT_FIRST:
            self._deferred = self._receive_request(block=True)
            return None
        return unpack_params(self._params_buf.copy())

    def poll_checkpoint(self, wait: bool = False) -> CheckpointRequest | None:
        if self._deferred is not None:
            request, self._deferred = self._deferred, None
            return request
        return self._receive_request(block=wait)

    def _receive_request(self, block: bool) -> CheckpointRequest | None:
        if not block and not self.comm.Iprobe(source=SERVER, tag=Tag.CKPT_REQUEST):
            return None
        wait_until(lambda: self.comm.Iprobe(source=SERVER, tag=Tag.CKPT_REQUEST), self.timeout, "waiting for a checkpoint request")
        buf = np.empty(3, dtype=np.int64)
        self.comm.Recv([buf, MPI.INT64_T], source=SERVER, tag=Tag.CKPT_REQUEST)
        return CheckpointRequest(int(buf[0]), stop=bool(buf[1]), episode=int(buf[2]))

    def checkpoint_done(self, request: CheckpointRequest, files: dict[int, dict[str, dict[str, Any]]]) -> bool:
        ((worker, written),) = files.items()
        self._track(self.comm.isend((request.seq, worker, written), dest=SERVER, tag=Tag.CKPT_DONE), None)
        wait_until(lambda: self.comm.Iprobe(source=SERVER, tag=Tag.CKPT_END), self.timeout, "waiting for the checkpoint")
        answer = np.empty(2, dtype=np.int64)
        self.comm.Recv([answer, MPI.INT64_T], source=SERVER, tag=Tag.CKPT_END)
        if int(answer[0]) != request.seq:
            raise RuntimeError(f"rank 0 ended checkpoint {int(answer[0])}, this worker took {request.seq}")
        go_on = bool(answer[1])
        if not go_on:
            self._drain()
        return go_on

    def request_stop(self, reason: str) -> None:
        self._track(self.comm.isend(reason, dest=SERVER, tag=Tag.STOP_REQUEST), None)

    def send_decisions(self, block: DecisionBlock) -> None:
        self._isend(pack_decisions(block), MPI.DOUBLE, Tag.DECISIONS)

    def episode_done(self, msg: EpisodeDone) -> None:
        self._track(self.comm.isend(msg, dest=SERVER, tag=Tag.DONE), None)

    def close(self, summary: dict[str, int]) -> None:
        """Tell rank 0 this worker is finished (with what it sent), and wait until everything has left."""
        self._track(self.comm.isend(summary, dest=SERVER, tag=Tag.STOP), None)
        self._drain()

    def _drain(self) -> None:
        """Wait until every message sent has left."""
        while self._in_flight:
            self._wait_oldest()

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


# ---- server side ------------------------------------------------------------------------------
class MPIServerLoop:
    """Rank 0: receive, dispatch on the tag, answer pulls, until every worker sent STOP."""

    def __init__(
        self,
        server: ParameterServer,
        comm: MPI.Comm,
        n_workers: int,
        timeout: float,
        checkpoints: CheckpointCoordinator | None = None,
    ) -> None:
        self.server = server
        self.comm = comm
        self.n_workers = n_workers
        self.timeout = timeout
        self.checkpoints = checkpoints
        self._waiting_pulls: list[tuple[int, int]] = []  # (rank, min_version)
        self._sends: deque[tuple[MPI.Request, np.ndarray]] = deque()
        self._params_cache: tuple[int, np.ndarray] | None = None
        self._early: list[tuple[int, Tag, Any]] = []  # messages that need the set-up, received before it
        self._stopped: set[int] = set()
        self.messages = 0
        self.bytes_received = 0

    def run(self) -> None:
        """Serve until every worker has sent STOP (or a checkpoint for a stop signal is committed)."""
        self._stopped = set()
        status = MPI.Status()
        receive = {
            Tag.GRADIENT: self._receive_gradient,
            Tag.PULL: self._receive_pull,
            Tag.DECISIONS: self._receive_decisions,
        }

        def probe() -> bool:
            if self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
                return True
            self._start_checkpoint_if_due()  # also while no message comes (a signal, a timer)
            return False

        while len(self._stopped) < self.n_workers:
            wait_until(probe, self.timeout, f"waiting for the workers ({self.n_workers - len(self._stopped)} still running)")
            source, tag = status.Get_source(), Tag(status.Get_tag())
            obj = receive.get(tag, self._receive_object)(source, tag, status)
            self.messages += 1
            if self.server.info is None and tag in WAIT_FOR_SETUP:
                self._early.append((source, tag, obj))  # worker 0's SETUP may come after another worker's first records
            else:
                self._dispatch(source, tag, obj)
            if tag == Tag.SETUP:
                for early in self._early:
                    self._dispatch(*early)
                self._early.clear()
            self._start_checkpoint_if_due()
            self._answer_pulls()
            self._reap_sends()
        if self._waiting_pulls:
            raise RuntimeError(f"workers stopped with pulls unanswered: {self._waiting_pulls}")
        self._finish_sends()

    def _dispatch(self, source: int, tag: Tag, obj: Any) -> None:
        """Hand one received message to the server (or the checkpoint coordinator)."""
        if tag == Tag.SETUP:
            self.server.setup(obj)
        elif tag == Tag.GRADIENT:
            self.server.on_gradient(obj)
        elif tag == Tag.PULL:
            self._waiting_pulls.append((source, obj))
        elif tag == Tag.DECISIONS:
            self.server.on_decisions(obj)
        elif tag == Tag.DONE:
            self.server.on_episode_done(obj)
        elif tag == Tag.STOP:
            self.server.on_workers_stopped(obj)
            self._stopped.add(source)
            if self.checkpoints is not None:
                seq, waiting = self.checkpoints.workers_finishing()
                for worker in waiting:
                    self._end_checkpoint(worker + 1, seq, go_on=True)
        elif tag == Tag.STOP_REQUEST:
            if self.checkpoints is not None:
                self.checkpoints.request_stop(obj)
        elif tag == Tag.CKPT_DONE:
            self._on_checkpoint_done(source, *obj)
        else:
            raise RuntimeError(f"rank 0 cannot handle a message tagged {tag.name} from rank {source}")

    # ---- checkpoints --------------------------------------------------------------------------
    def _start_checkpoint_if_due(self) -> None:
        request = self.checkpoints.due() if self.checkpoints is not None else None
        if request is None:
            return
        buf = np.array([request.seq, int(request.stop), request.episode], dtype=np.int64)
        for rank in range(1, self.n_workers + 1):
            self._sends.append((self.comm.Isend([buf, MPI.INT64_T], dest=rank, tag=Tag.CKPT_REQUEST), buf))

    def _on_checkpoint_done(self, source: int, seq: int, worker: int, files: dict[str, Any]) -> None:
        assert self.checkpoints is not None
        checkpoint = self.checkpoints.worker_done(seq, worker, files)
        if seq in self.checkpoints.abandoned:
            self._end_checkpoint(source, seq, go_on=True)
        if checkpoint is None:
            return
        stop = bool(checkpoint.manifest["stop"])
        for rank in range(1, self.n_workers + 1):
            self._end_checkpoint(rank, seq, go_on=not stop)
        if stop:
            self._finish_sends()
            raise StoppedAfterCheckpoint(str(checkpoint.manifest["reason"]), str(checkpoint.path))

    def _end_checkpoint(self, rank: int, seq: int, go_on: bool) -> None:
        buf = np.array([seq, int(go_on)], dtype=np.int64)
        self._sends.append((self.comm.Isend([buf, MPI.INT64_T], dest=rank, tag=Tag.CKPT_END), buf))

    def _finish_sends(self) -> None:
        while self._sends:
            wait_until(self._sends[0][0].Test, self.timeout, "sending to the workers")
            self._sends.popleft()

    def _receive_object(self, source: int, tag: Tag, status: MPI.Status) -> Any:
        self.bytes_received += status.Get_count(MPI.BYTE)
        return self.comm.recv(source=source, tag=tag)

    def _receive_gradient(self, source: int, tag: Tag, status: MPI.Status) -> GradientMessage:
        buf = np.empty(status.Get_count(MPI.FLOAT), dtype=np.float32)
        self.comm.Recv([buf, MPI.FLOAT], source=source, tag=tag)
        self.bytes_received += buf.nbytes
        return unpack_gradient(buf)

    def _receive_pull(self, source: int, tag: Tag, status: MPI.Status) -> int:
        """A pull request; its minimum version."""
        request = np.empty(2, dtype=np.int64)
        self.comm.Recv([request, MPI.INT64_T], source=source, tag=tag)
        return int(request[1])

    def _receive_decisions(self, source: int, tag: Tag, status: MPI.Status) -> DecisionBlock:
        buf = np.empty(status.Get_count(MPI.DOUBLE), dtype=np.float64)
        self.comm.Recv([buf, MPI.DOUBLE], source=source, tag=tag)
        self.bytes_received += buf.nbytes
        return unpack_decisions(buf)

    def _answer_pulls(self) -> None:
        """Answer the pulls that can be; while a checkpoint is being taken, defer the others to it."""
        pending = self.checkpoints.pending if self.checkpoints is not None else None
        still = []
        for rank, min_version in self._waiting_pulls:
            if self.server.params_ready(min_version):
                buf = self._params_buffer()
            elif pending is not None:  # a waiting pull would keep its worker from the checkpoint
                buf = pack_checkpoint_first(pending.seq)
            else:
                still.append((rank, min_version))
                continue
            self._sends.append((self.comm.Isend([buf, MPI.FLOAT], dest=rank, tag=Tag.PARAMS), buf))
        self._waiting_pulls = still

    def _params_buffer(self) -> np.ndarray:
        """One packed buffer per server version, shared by every worker that pulls it."""
        version = self.server.version
        if self._params_cache is None or self._params_cache[0] != version:
            self._params_cache = (version, pack_params(self.server.params()))
        return self._params_cache[1]

    def _reap_sends(self) -> None:
        while self._sends and self._sends[0][0].Test():
            self._sends.popleft()
