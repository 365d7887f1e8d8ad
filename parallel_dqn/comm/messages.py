"""What the parameter server and the workers say to each other.

Plain dataclasses: the in-process transport hands them over as they are, the MPI
transport packs the hot ones (gradients, parameters, decision records) into one
flat numeric buffer per message.
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
    phase: str  # "train" or "eval"
    t: np.ndarray  # int64 [n]
    stock: np.ndarray  # int64 [n]
    q: np.ndarray  # float32 [n, 3]
    action: np.ndarray  # int64 [n]
    reward: np.ndarray  # float64 [n], raw (unscaled) reward
    epsilon: float = 0.0


@dataclass
class EpisodeDone:
    """A worker finished an episode; carries its summaries."""

    worker: int
    episode: int
    phase: str
    steps: int
    attention: np.ndarray | None = None  # [k, S] mean attention of its stocks (eval only)
    stocks: np.ndarray | None = None  # its stock indices, rows of ``attention``


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
