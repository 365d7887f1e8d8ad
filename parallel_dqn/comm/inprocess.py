"""Single-process mode's transport: every worker and rank 0's endpoint in one process.

Each operation is the message a worker would send over MPI, handed straight to the endpoint
(:class:`parallel_dqn.training.endpoint.ServerEndpoint`, the same object the MPI pump feeds),
and the replies come straight back. The driver steps the hosted workers in lock-step, phase by
phase, so an answer a worker waits for is always there at once; one that is not is a bug.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from parallel_dqn.comm.messages import (
    CheckpointDone,
    CheckpointEnd,
    CheckpointFirst,
    CheckpointRequest,
    DecisionBlock,
    DirectiveRequest,
    EpisodeDirective,
    EpisodeDone,
    GradientMessage,
    ParamsMessage,
    Pull,
    SetupInfo,
    StopRequest,
    ToServer,
    ToWorker,
    WorkerStopped,
)


class Endpoint(Protocol):
    """Rank 0's protocol as this transport uses it."""

    def handle(self, worker: int, msg: ToServer) -> list[tuple[int, ToWorker]]: ...

    def tick(self) -> list[tuple[int, ToWorker]]: ...


class InProcessTransport:
    """Messages to the endpoint as objects; its replies routed to the hosted workers."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._requests: list[CheckpointRequest] = []  # checkpoint requests not yet taken by the driver
        self._answers: dict[int, list[ToWorker]] = {}  # per worker: params, checkpoint-first, checkpoint-end

    def allgather(self, parts: Sequence[Any]) -> list[Any]:
        return list(parts)

    def allgather_rows(self, parts: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(parts)

    def send_setup(self, info: SetupInfo) -> None:
        self._send(0, info)

    def push_gradient(self, msg: GradientMessage) -> None:
        self._send(msg.worker, msg)

    def send_decisions(self, block: DecisionBlock) -> None:
        self._send(block.worker, block)

    def episode_done(self, msg: EpisodeDone) -> None:
        self._send(msg.worker, msg)

    def request_stop(self, reason: str) -> None:
        self._send(0, StopRequest(0, reason))

    def close(self, sent: Mapping[int, int]) -> None:
        for worker, count in sorted(sent.items()):
            self._send(worker, WorkerStopped(worker, int(count)))

    def pull_params(self, worker: int, min_version: int) -> ParamsMessage | None:
        self._send(worker, Pull(worker, min_version))
        answer = self._take(worker, (ParamsMessage, CheckpointFirst), f"worker {worker}'s pull of version {min_version}")
        return answer if isinstance(answer, ParamsMessage) else None

    def episode_directive(self, worker: int, episode: int, after: tuple[int, str] | None) -> EpisodeDirective | None:
        self._send(worker, DirectiveRequest(worker, episode, after))
        answer = self._take(worker, (EpisodeDirective, CheckpointFirst), f"worker {worker}'s directive request")
        return answer if isinstance(answer, EpisodeDirective) else None

    def poll_checkpoint(self, wait: bool = False) -> CheckpointRequest | None:
        self._route(self.endpoint.tick())
        if self._requests:
            return self._requests.pop(0)
        if wait:
            raise RuntimeError("a checkpoint was awaited, and none is due")
        return None

    def checkpoint_done(self, request: CheckpointRequest, files: dict[int, dict[str, dict[str, Any]]]) -> bool:
        for worker, written in sorted(files.items()):
            self._send(worker, CheckpointDone(request.seq, worker, written))
        ends = [self._take(w, (CheckpointEnd,), f"the end of checkpoint {request.seq}") for w in sorted(files)]
        return all(end.go_on for end in ends)

    # ---- routing --------------------------------------------------------------------------------
    def _send(self, worker: int, msg: ToServer) -> None:
        self._route(self.endpoint.handle(worker, msg))

    def _route(self, replies: list[tuple[int, ToWorker]]) -> None:
        for worker, msg in replies:
            if isinstance(msg, CheckpointRequest):  # one per checkpoint: the driver takes it for every worker
                if not any(r.seq == msg.seq for r in self._requests):
                    self._requests.append(msg)
            else:
                self._answers.setdefault(worker, []).append(msg)

    def _take(self, worker: int, kinds: tuple[type, ...], what: str) -> Any:
        queue = self._answers.get(worker, [])
        for i, msg in enumerate(queue):
            if isinstance(msg, kinds):
                return queue.pop(i)
        raise RuntimeError(f"no answer to {what}: in one process every answer is due at once")
