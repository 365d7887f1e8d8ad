"""The worker side of a run, the same in single-process and MPI mode.

The driver hosts one or more workers (all of them in single-process mode, one
per rank under MPI) and walks them through the run: load their own stocks'
bars, agree on one market clock, exchange feature rows so each holds the whole
cross-section, then step every episode in lock-step, phase by phase. Only the
transport it is given differs between the modes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from parallel_dqn.config import Config
from parallel_dqn.data.align import align
from parallel_dqn.data.crosssection import CrossSection, local_rows
from parallel_dqn.data.features import FeatureStats, graph_stamps, raw_features, session_length
from parallel_dqn.data.loader import load_bars
from parallel_dqn.data.panel import bars_per_day
from parallel_dqn.data.store import Store
from parallel_dqn.dist.messages import SetupInfo
from parallel_dqn.dist.transport import Transport
from parallel_dqn.dist.worker import Worker
from parallel_dqn.errors import UserError
from parallel_dqn.run_plan import RunPlan

log = logging.getLogger(__name__)


@dataclass
class LocalShard:
    """One hosted worker's id and stocks, before it has a cross-section."""

    worker_id: int
    stocks: list[int]


def build_cross_section(
    shards: list[LocalShard], plan: RunPlan, store: Store, transport: Transport, cfg: Config
) -> tuple[CrossSection, FeatureStats]:
    """Load own stocks, agree on the clock, exchange feature rows; identical result on every worker."""
    frames = {}
    for shard in shards:
        names = [plan.symbols[i] for i in shard.stocks]
        frames[shard.worker_id] = load_bars(store, names, plan.load_start, plan.load_end)
        log.debug("worker %d loads %s", shard.worker_id, " ".join(names))
    local_clocks = [
        np.unique(np.concatenate([f.index.to_numpy("datetime64[ns]") for f in frames[s.worker_id].values()]))
        for s in shards
    ]
    clock = np.unique(np.concatenate(transport.allgather(local_clocks)))
    train_rows = _rows(clock, plan.train_start, plan.train_end)
    if plan.stats is not None:
        session = plan.stats.session_seconds
    else:
        session = session_length(clock[slice(*train_rows)])
    contributions = []
    for shard in shards:
        names = [plan.symbols[i] for i in shard.stocks]
        panel = align(frames[shard.worker_id], names, clock=clock)
        if plan.stats is not None:
            stats = FeatureStats(plan.stats.mean[shard.stocks], plan.stats.std[shard.stocks], session)
        else:
            raw = raw_features(panel, session)
            stats = FeatureStats.fit(raw[slice(*train_rows)], session)
        contributions.append((np.asarray(shard.stocks), stats.mean, stats.std, local_rows(panel, stats)))
    meta = transport.allgather([c[:3] for c in contributions])
    rows = transport.allgather_rows([c[3] for c in contributions])
    stamps = graph_stamps(clock, stride=max(1, cfg.market.graph_window // 8))
    xs = CrossSection.assemble(
        plan.symbols, clock, [(m[0], r) for m, r in zip(meta, rows)], cfg.market.graph_window, stamps
    )
    S = len(plan.symbols)
    mean = np.zeros((S, meta[0][1].shape[1]))
    std = np.ones_like(mean)
    for stocks, m, s in meta:
        mean[stocks], std[stocks] = m, s
    return xs, FeatureStats(mean, std, session)


def _rows(clock: np.ndarray, start, end) -> tuple[int, int]:
    """Clock rows ``[lo, hi)`` whose UTC date lies in ``[start, end]``."""
    if start is None:
        return (0, 0)
    days = clock.astype("datetime64[D]")
    lo = int(np.searchsorted(days, np.datetime64(start, "D"), side="left"))
    hi = int(np.searchsorted(days, np.datetime64(end, "D"), side="right"))
    return lo, hi


def run_workers(
    shards: list[LocalShard], plan: RunPlan, store: Store, transport: Transport, cfg: Config
) -> None:
    """Everything a run asks of the workers hosted in this process."""
    xs, stats = build_cross_section(shards, plan, store, transport, cfg)
    train_rows = _rows(xs.timestamps, plan.train_start, plan.train_end)
    eval_rows = _rows(xs.timestamps, plan.eval_start, plan.eval_end)
    if plan.reward_scale is not None:
        reward_scale, return_std = plan.reward_scale, plan.return_std
    else:
        train_returns = xs.log_returns[train_rows[0] + 1 : train_rows[1]]
        return_std = float(train_returns.std()) or 1.0
        reward_scale = 1.0 / return_std
    _check_period(train_rows, eval_rows, plan, cfg)
    if any(s.worker_id == 0 for s in shards):
        transport.send_setup(
            SetupInfo(
                symbols=plan.symbols,
                timestamps=xs.timestamps,
                close=xs.close,
                log_returns=xs.log_returns,
                tradeable=xs.tradeable,
                train_rows=train_rows,
                eval_rows=eval_rows,
                bars_per_day=plan.bars_per_day or bars_per_day(xs.timestamps),
                reward_scale=reward_scale,
                return_std=return_std,
                n_features=xs.features.shape[2],
                feature_stats=stats.to_dict(),
                shards=plan.shards,
                episodes=plan.episodes,
                structure=plan.structure,
            )
        )
    total_steps = plan.episodes * max(train_rows[1] - train_rows[0] - 1, 1)
    workers = [Worker(s.worker_id, s.stocks, cfg, xs, transport, reward_scale, total_steps) for s in shards]
    for episode in range(1, plan.episodes + 1):
        run_episode(workers, episode, "train", train_rows)
    if eval_rows[1] - eval_rows[0] >= 2:
        run_episode(workers, 0, "eval", eval_rows)
    transport.close({"gradients_sent": sum(w.grad_steps for w in workers)})


def run_episode(workers: list[Worker], episode: int, phase: str, rows: tuple[int, int]) -> None:
    """Step the hosted workers through clock rows ``[start, stop)`` in lock-step."""
    for w in workers:
        w.begin_episode(episode, phase, rows)
    for t in range(rows[0], rows[1] - 1):
        for w in workers:
            w.sync_params()
        for w in workers:
            w.act(t)
        for w in workers:
            w.learn()
    for w in workers:
        w.end_episode()


def _check_period(train_rows: tuple[int, int], eval_rows: tuple[int, int], plan: RunPlan, cfg: Config) -> None:
    if plan.episodes and train_rows[1] - train_rows[0] < max(cfg.dqn.batch_size, 3):
        raise UserError(
            f"the training period {plan.train_start}..{plan.train_end} has only {train_rows[1] - train_rows[0]} bars",
            "choose a longer --start_date/--end_date range",
        )
    if plan.eval_start is not None and eval_rows[1] - eval_rows[0] < 2:
        raise UserError(
            f"the evaluation period {plan.eval_start}..{plan.eval_end} has fewer than 2 bars",
            "choose --eval_start/--eval_end days that have data",
        )
