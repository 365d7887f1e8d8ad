"""The files a run writes into its output folder (``--output``): one list, used by every module that
writes or reads them, and by ``--overwrite`` to know what belongs to a run.

A run folder holds exactly these (plus whatever the user put there, which is never touched).
"""

from __future__ import annotations

import re
from pathlib import Path

MODEL = "trained_model.pth"  # Q-network and meta-policy weights, config, stocks, feature statistics
METRICS = "metrics.json"  # final evaluation, baselines, counters, run record; present only when finished
CURVE = "metrics.jsonl"  # the training curve: one line per episode, then the evaluation
CONFIG = "config.toml"  # the resolved settings
RECORD = "run.json"  # code commit, data fingerprint, versions, host, times
STATUS = "status.json"  # running / stopped / failed / finished
LOG = "run.log"  # rank 0's (or the single process's) log, appended across restarts
WORKER_LOGS = "logs"  # logs/rank{R}.log of the MPI worker ranks
CHECKPOINTS = "checkpoints"  # checkpoints/ckpt-NNNNNN/
TENSORBOARD = "tensorboard"  # TensorBoard event files
PORTFOLIO_EVAL = "portfolio_eval.csv"
RETURNS_EVAL = "returns_eval.csv"  # per evaluation bar: the agent's, each baseline's (and the oracle's) net return
EQUITY_PLOT = "equity_eval.png"
DRAWDOWN_PLOT = "drawdown_eval.png"
ATTENTION_PLOT = "attention.png"
CURVE_PLOT = "training_curve.png"
REPORT = "report.html"  # full-workflow / parallel-dqn report
EVALUATION = "evaluation"  # full-workflow's evaluation of the saved model
LOCK = ".parallel-dqn.lock"  # held by the process that writes the run (single process, or rank 0)

_PORTFOLIO_EPISODE = re.compile(r"portfolio_ep(\d+)\.csv")

#: what marks a folder as holding a run (refused without --overwrite or --resume)
RUN_MARKERS = (MODEL, METRICS, CURVE, CHECKPOINTS)

#: the single files of a run's results, replaced by a new run in the folder
RESULT_FILES = (MODEL, METRICS, CURVE, CONFIG, RECORD, PORTFOLIO_EVAL, RETURNS_EVAL, EQUITY_PLOT, DRAWDOWN_PLOT,
                ATTENTION_PLOT, CURVE_PLOT, REPORT)


def portfolio_episode(episode: int) -> str:
    """``portfolio_ep{N}.csv``: the portfolio of training episode N."""
    return f"portfolio_ep{episode}.csv"


def portfolio_episodes(folder: Path) -> list[Path]:
    """Every ``portfolio_ep{N}.csv`` in ``folder``."""
    return [p for p in folder.glob("portfolio_ep*.csv") if _PORTFOLIO_EPISODE.fullmatch(p.name)]


def worker_log(rank: int) -> str:
    return f"{WORKER_LOGS}/rank{rank}.log"
