"""Rank 0's protocol: every message a worker can send, handled once, whatever carries it.

:class:`ServerEndpoint` takes one message at a time from worker ``w`` and returns the replies
it causes, as ``(worker, message)`` pairs. It never touches a transport: the MPI pump
(:mod:`parallel_dqn.comm.mpi.server_pump`) receives, calls :meth:`ServerEndpoint.handle` and
sends what it returns; the in-process transport (:mod:`parallel_dqn.comm.inprocess`) calls it
directly and hands the replies to the workers it hosts. The rules therefore hold in both modes:

* **Early messages.** Gradients, decision records, episode ends and checkpoint reports that
  arrive before worker 0's :class:`SetupInfo` (a resumed worker can be quicker than worker 0)
  are held back and handled, in order, right after the set-up.
* **Pulls** are answered as soon as the server's version allows (under ``--sync``: once the
  round is applied). While a checkpoint is being taken, a pull that would wait is answered
  with :class:`CheckpointFirst`, so its worker takes the checkpoint instead of waiting.
* **Checkpoints.** When the coordinator says one is due, every worker gets the
  :class:`CheckpointRequest`; once every worker has reported its part, every worker gets
  :class:`CheckpointEnd` (``go_on`` False after a stop signal: then :attr:`stopped_by` holds the
  checkpoint, and the caller ends the run with
  :class:`~parallel_dqn.errors.StoppedAfterCheckpoint` after sending the replies). A checkpoint
  still pending when a worker finishes is given up, and the workers waiting for it go on.
* **Directives.** A :class:`DirectiveRequest` (a worker about to start a training episode, when a
  setting needs rank 0's word: :mod:`parallel_dqn.training.directive`) is answered with the server's
  :class:`EpisodeDirective` once it has the outcome of the entry the worker finished; while a checkpoint
  is being taken, one that would wait is answered with :class:`CheckpointFirst`, as a pull is.
* **The end.** :attr:`finished` once every worker has sent :class:`WorkerStopped`.
"""

from __future__ import annotations

import logging
from typing import Any

from parallel_dqn.checkpoint.coordinator import CheckpointCoordinator
from parallel_dqn.checkpoint.format import Checkpoint
from parallel_dqn.comm.messages import (
    CheckpointDone,
    CheckpointEnd,
    CheckpointFirst,
    DecisionBlock,
    DirectiveRequest,
    EpisodeDone,
    GradientMessage,
    Pull,
    SetupInfo,
    StopRequest,
    ToServer,
    ToWorker,
    WorkerStopped,
)
from parallel_dqn.training.server import ParameterServer

log = logging.getLogger(__name__)

Reply = tuple[int, ToWorker]

#: messages the server can handle only once it knows the market (worker 0's set-up)
#: (a directive request too: a resumed server's past decisions are restored at the set-up)
NEEDS_SETUP = (GradientMessage, DecisionBlock, EpisodeDone, CheckpointDone, DirectiveRequest)


class ServerEndpoint:
    """The parameter server and the checkpoint coordinator behind one message-in, replies-out door."""

    def __init__(
        self, server: ParameterServer, n_workers: int, checkpoints: CheckpointCoordinator | None = None
    ) -> None:
        self.server = server
        self.n_workers = n_workers
        self.checkpoints = checkpoints  # None: an evaluation, which writes no checkpoints
        self.stopped_by: Checkpoint | None = None  # a checkpoint taken for a stop signal: the run ends
        self._early: list[tuple[int, Any]] = []
        self._pulls: list[Pull] = []
        self._directive_requests: list[DirectiveRequest] = []
        self._stopped: set[int] = set()

    @property
    def finished(self) -> bool:
        """Every worker has said it is done."""
        return len(self._stopped) == self.n_workers

    def handle(self, worker: int, msg: ToServer) -> list[Reply]:
        """Handle one message from ``worker``; the replies it causes (to it or to any other worker)."""
        replies: list[Reply] = []
        if self.server.info is None and isinstance(msg, NEEDS_SETUP):
            self._early.append((worker, msg))  # worker 0's set-up may come after another worker's first records
            return replies
        self._dispatch(worker, msg, replies)
        if isinstance(msg, SetupInfo):
            early, self._early = self._early, []
            for source, held in early:
                self._dispatch(source, held, replies)
        replies += self.tick()
        return replies

    def tick(self) -> list[Reply]:
        """Work that is due without a message (a checkpoint on a timer or signal); also called after each one."""
        replies: list[Reply] = []
        if self.stopped_by is not None:  # the run ends with that checkpoint: nothing more is started
            return replies
        request = self.checkpoints.due() if self.checkpoints is not None else None
        if request is not None:
            replies += [(w, request) for w in range(self.n_workers)]
        replies += self._answer_pulls()
        replies += self._answer_directive_requests()
        return replies

    def check_finished(self) -> None:
        """At the end of the run: nothing may be left waiting."""
        if self._pulls or self._directive_requests:
            raise RuntimeError(f"workers stopped with requests unanswered: {self._pulls + self._directive_requests}")
        if self._early:
            raise RuntimeError(f"{len(self._early)} messages arrived before the set-up, which never came")

    # ---- one message ------------------------------------------------------------------------------
    def _dispatch(self, worker: int, msg: Any, replies: list[Reply]) -> None:
        server = self.server
        if isinstance(msg, GradientMessage):
            server.on_gradient(msg)
        elif isinstance(msg, Pull):
            self._pulls.append(msg)
        elif isinstance(msg, DirectiveRequest):
            self._directive_requests.append(msg)
        elif isinstance(msg, DecisionBlock):
            server.on_decisions(msg)
        elif isinstance(msg, EpisodeDone):
            server.on_episode_done(msg)
        elif isinstance(msg, SetupInfo):
            server.setup(msg)
        elif isinstance(msg, CheckpointDone):
            replies += self._checkpoint_done(msg)
        elif isinstance(msg, StopRequest):
            if self.checkpoints is not None:
                self.checkpoints.request_stop(msg.reason)
        elif isinstance(msg, WorkerStopped):
            server.on_worker_stopped(msg.worker, msg.gradients_sent)
            self._stopped.add(msg.worker)
            if self.checkpoints is not None:
                seq, waiting = self.checkpoints.workers_finishing()
                replies += [(w, CheckpointEnd(seq, go_on=True)) for w in waiting]
        else:
            raise RuntimeError(f"rank 0 cannot handle {type(msg).__name__} from worker {worker}")

    def _checkpoint_done(self, msg: CheckpointDone) -> list[Reply]:
        if self.checkpoints is None:
            raise RuntimeError(f"worker {msg.worker} reported a checkpoint, and this run takes none")
        checkpoint = self.checkpoints.worker_done(msg.seq, msg.worker, msg.files)
        if msg.seq in self.checkpoints.abandoned:  # given up while this worker wrote: it just goes on
            return [(msg.worker, CheckpointEnd(msg.seq, go_on=True))]
        if checkpoint is None:
            return []
        stop = bool(checkpoint.manifest["stop"])
        if stop:
            self.stopped_by = checkpoint
        return [(w, CheckpointEnd(msg.seq, go_on=not stop)) for w in range(self.n_workers)]

    def _answer_pulls(self) -> list[Reply]:
        """Answer the pulls that can be; while a checkpoint is being taken, send the others to it."""
        pending = self.checkpoints.pending if self.checkpoints is not None else None
        replies: list[Reply] = []
        waiting = []
        for pull in self._pulls:
            if self.server.params_ready(pull.min_version, pull.worker):
                replies.append((pull.worker, self.server.params()))
            elif pending is not None:  # a waiting pull would keep its worker from the checkpoint
                replies.append((pull.worker, CheckpointFirst(pending.seq)))
            else:
                waiting.append(pull)
        self._pulls = waiting
        return replies

    def _answer_directive_requests(self) -> list[Reply]:
        """Answer the directive requests that can be; while a checkpoint is being taken, send the others to it."""
        pending = self.checkpoints.pending if self.checkpoints is not None else None
        replies: list[Reply] = []
        waiting = []
        for request in self._directive_requests:
            directive = self.server.director.directive(request)
            if directive is not None:
                replies.append((request.worker, directive))
            elif pending is not None:  # a waiting worker would keep the checkpoint from completing
                replies.append((request.worker, CheckpointFirst(pending.seq, directive=True)))
            else:
                waiting.append(request)
        self._directive_requests = waiting
        return replies
