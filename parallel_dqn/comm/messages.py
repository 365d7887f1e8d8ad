"""What the parameter server and the workers say to each other.

Plain dataclasses: the in-process transport hands them over as they are, the MPI
transport packs the hot ones (gradients, parameters, decision records) into one
flat numeric buffer per message (:mod:`parallel_dqn.comm.mpi.wire`).

From a worker to rank 0: :class:`SetupInfo` (worker 0, once), :class:`GradientMessage`,
:class:`Pull`, :class:`DecisionBlock`, :class:`EpisodeDone`, :class:`CheckpointDone`,
:class:`StopRequest`, :class:`WorkerStopped`, :class:`DirectiveRequest`. From rank 0 to a worker:
:class:`ParamsMessage`, :class:`CheckpointFirst`, :class:`CheckpointRequest`, :class:`CheckpointEnd`,
:class:`EpisodeDirective`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class GradientMessage:
    """A worker's flat gradient, computed on parameters of ``version``."""

    worker: int
    version: int
    grad: np.ndarray  # float32 [P]
    loss: float
    q_mean: float
    lr_scale: float = 1.0  # the learning rate's factor for this gradient ([regime] lr_scale at the worker's bar)


@dataclass
class ParamsMessage:
    """Online and target parameters at a server version."""

    version: int
    target_version: int
    online: np.ndarray  # float32 [P]
    target: np.ndarray  # float32 [P]


@dataclass
class DecisionBlock:
    """Per-step decisions of one worker's stocks over a block of clock steps."""

    worker: int
    episode: int
    phase: str  # "train", "valid" or "eval"
    t: np.ndarray  # int64 [n]
    stock: np.ndarray  # int64 [n]
    q: np.ndarray  # float32 [n, 3]
    action: np.ndarray  # int64 [n]
    reward: np.ndarray  # float64 [n], raw (unscaled) reward
    epsilon: float = 0.0
    # float32 [n, E] with an ensemble (parallel_dqn.model.ensemble.record_columns): the members' agreement, and in
    # the evaluation each member's own action, reward and Q-values; None without one
    ensemble: np.ndarray | None = None


@dataclass
class EpisodeDone:
    """A worker finished an episode; carries its summaries."""

    worker: int
    episode: int
    phase: str
    steps: int
    attention: np.ndarray | None = None  # [k, S] mean attention of its stocks (eval only)
    stocks: np.ndarray | None = None  # its stock indices, rows of ``attention``
    diversity: np.ndarray | None = None  # an ensemble's DiversityStats sums over the episode (None without one)


@dataclass
class SetupInfo:
    """What rank 0 needs to know about the market before the first episode."""

    symbols: tuple[str, ...]
    timestamps: np.ndarray  # datetime64[ns]
    close: np.ndarray
    log_returns: np.ndarray
    tradeable: np.ndarray
    train_rows: tuple[int, int]  # [start, stop) clock rows of the training period
    eval_rows: tuple[int, int]
    bars_per_day: float
    reward_scale: float
    return_std: float
    n_features: int
    feature_stats: dict[str, Any]
    shards: list[list[int]]
    episodes: int
    structure: dict[str, Any] | None = None  # planted structure of a synthetic market, for the oracle
    extra: dict[str, Any] = field(default_factory=dict)
    valid_rows: tuple[int, int] = (0, 0)  # the validation period's rows, held out of training (empty: none)


@dataclass(frozen=True)
class Pull:
    """A worker asks for the parameters, once the server's version is at least ``min_version``."""

    worker: int
    min_version: int


@dataclass(frozen=True)
class CheckpointRequest:
    """Checkpoint ``seq`` is being taken; ``stop``: every rank exits after it.

    ``episode`` > 0: it is the checkpoint at the end of that training episode, which the workers
    wait for at the episode boundary (so it holds exactly the state between the two episodes).
    """

    seq: int
    stop: bool
    reason: str = ""
    episode: int = 0


@dataclass(frozen=True)
class CheckpointFirst:
    """The answer to a pull (``directive``: a :class:`DirectiveRequest`) that would wait: take checkpoint ``seq``
    first, then ask again."""

    seq: int
    directive: bool = False


@dataclass
class CheckpointDone:
    """Worker ``worker`` wrote its part of checkpoint ``seq``: ``files`` maps file name -> digest."""

    seq: int
    worker: int
    files: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class CheckpointEnd:
    """Checkpoint ``seq`` is committed (or given up); ``go_on`` False: every rank stops now."""

    seq: int
    go_on: bool


@dataclass(frozen=True)
class StopRequest:
    """A stop signal (SIGTERM, SIGUSR1) reached a worker's process: checkpoint, then stop."""

    worker: int
    reason: str


@dataclass(frozen=True)
class WorkerStopped:
    """A worker has finished the run; ``gradients_sent`` counts every gradient it pushed."""

    worker: int
    gradients_sent: int


@dataclass(frozen=True)
class DirectiveRequest:
    """Worker ``worker`` is about to start training episode ``episode``: what does rank 0 direct?

    ``after``: the schedule entry it finished last, ``(episode, phase)`` (None: none); rank 0 answers once it
    has that entry's outcome, so its decision rests on every worker's complete records of it.
    """

    worker: int
    episode: int
    after: tuple[int, str] | None


@dataclass(frozen=True)
class EpisodeDirective:
    """Rank 0's word for training episode ``episode``, the same to every worker: its curriculum ``stage``
    (1 without a curriculum), or ``stop``: train no more, go to the evaluation."""

    episode: int
    stage: int = 1
    stop: bool = False


#: what a worker may send to rank 0
ToServer = (
    SetupInfo | GradientMessage | Pull | DecisionBlock | EpisodeDone | CheckpointDone | StopRequest | WorkerStopped
    | DirectiveRequest
)
#: what rank 0 may send to a worker
ToWorker = ParamsMessage | CheckpointFirst | CheckpointRequest | CheckpointEnd | EpisodeDirective
