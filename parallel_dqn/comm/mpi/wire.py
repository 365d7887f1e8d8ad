"""The wire format of parallel-dqn's MPI traffic: tags, flat buffers for the hot messages, bounded waits.

======================  =====================================================  =====================
tag                     buffer                                                 direction
======================  =====================================================  =====================
``GRADIENT``            float32 ``[worker, version | loss, q_mean, lr_scale, grad...]``  worker -> server
``PULL``                int64 ``[worker, min_version]``                          worker -> server
``PARAMS``              float32 ``[version, target_version | online, target]``   server -> worker
``DECISIONS``           float64 ``[header(5) | t, stock, q(3), action, reward | ensemble]``  worker -> server
``SETUP``, ``DONE``,    pickled messages (once per run / per episode)          worker -> server
``STOP``, ``CKPT_DONE``,
``STOP_REQUEST``
``CKPT_REQUEST``        int64 ``[seq, stop, episode]``                           server -> worker
``CKPT_END``            int64 ``[seq, go_on]``                                   server -> worker
``DIRECTIVE_REQUEST``   pickled (once per training episode)                    worker -> server
``DIRECTIVE``           int64 ``[episode, stage, stop]``                         server -> worker
======================  =====================================================  =====================

``worker, version`` are int32 values stored in the float32 slots' bits; a ``PARAMS`` answer with
version -1 is :class:`~parallel_dqn.comm.messages.CheckpointFirst` ("take checkpoint ``seq``
first, then ask again"); a ``DIRECTIVE`` answer ``[-1, seq, 0]`` says the same to a directive request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

import numpy as np

from parallel_dqn.comm.messages import (
    CheckpointDone,
    DecisionBlock,
    DirectiveRequest,
    EpisodeDone,
    GradientMessage,
    ParamsMessage,
    SetupInfo,
    StopRequest,
    WorkerStopped,
)

SERVER = 0  # rank of the parameter server; worker w is rank w + 1
PHASES = ("train", "eval", "valid")
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
    DIRECTIVE_REQUEST = 12
    DIRECTIVE = 13


#: the tag of each pickled message a worker sends
PICKLED_TAGS: dict[type, Tag] = {
    SetupInfo: Tag.SETUP,
    EpisodeDone: Tag.DONE,
    WorkerStopped: Tag.STOP,
    CheckpointDone: Tag.CKPT_DONE,
    StopRequest: Tag.STOP_REQUEST,
    DirectiveRequest: Tag.DIRECTIVE_REQUEST,
}


class CommTimeout(RuntimeError):
    """No answer from another rank within the timeout: it probably died."""


def wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``ready()`` until true, yielding the core between polls; CommTimeout after ``timeout`` s.

    Ranks may outnumber cores, and MPICH's own blocking waits spin, so every wait polls with a
    short sleep instead.
    """
    start = time.monotonic()
    polls = 0
    while not ready():
        polls += 1
        if polls > 200:
            time.sleep(min(1e-3, 2e-6 * polls))
        if time.monotonic() - start > timeout:
            raise CommTimeout(f"no answer for {timeout:.0f} s while {what}; another rank probably failed")


def pack_gradient(msg: GradientMessage) -> np.ndarray:
    buf = np.empty(5 + msg.grad.size, dtype=np.float32)
    buf[:2].view(np.int32)[:] = (msg.worker, msg.version)
    buf[2:5] = (msg.loss, msg.q_mean, msg.lr_scale)
    buf[5:] = msg.grad
    return buf


def unpack_gradient(buf: np.ndarray) -> GradientMessage:
    worker, version = (int(x) for x in buf[:2].view(np.int32))
    return GradientMessage(worker, version, buf[5:], float(buf[2]), float(buf[3]), float(buf[4]))


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


def unpack_params(buf: np.ndarray) -> ParamsMessage | int:
    """The parameters, or the sequence number of the checkpoint to take first."""
    version, second = (int(x) for x in buf[:2].view(np.int32))
    if version == CHECKPOINT_FIRST:
        return second
    n = (buf.size - 2) // 2
    return ParamsMessage(version, second, buf[2 : 2 + n], buf[2 + n :])


def pack_decisions(b: DecisionBlock) -> np.ndarray:
    n = b.t.size
    header = [b.worker, b.episode, PHASES.index(b.phase), n, b.epsilon]
    ensemble = [] if b.ensemble is None else [b.ensemble.reshape(-1)]  # after the fixed columns, if any
    return np.concatenate([header, b.t, b.stock, b.q.reshape(-1), b.action, b.reward, *ensemble]).astype(np.float64)


def unpack_decisions(buf: np.ndarray) -> DecisionBlock:
    worker, episode, phase, n = (int(x) for x in buf[:4])
    body = buf[DECISION_HEADER:]
    t, stock = body[:n], body[n : 2 * n]
    q = body[2 * n : 5 * n].reshape(n, 3)
    action, reward = body[5 * n : 6 * n], body[6 * n : 7 * n]
    extra = body[7 * n :]
    ensemble = extra.reshape(n, -1).astype(np.float32) if extra.size else None
    return DecisionBlock(
        worker, episode, PHASES[phase], t.astype(np.int64), stock.astype(np.int64), q.astype(np.float32),
        action.astype(np.int64), reward.copy(), float(buf[4]), ensemble,
    )
