"""Rank 0's side of an ensemble: sizing by agreement, diversity per episode, each member's own result.

The workers act by the ensemble's combination rule and send, with every decision, the share of members that
agree with it (and in the evaluation each member's own decisions as if it acted alone, in the same greedy pass:
its own position path per stock); after each episode, their sums of the members' diversity. Here:

* :func:`sizes`: the factor by which the meta-policy's capital weights shrink when members disagree
  (``ensemble.size_down``: the agreement itself, 1 when all agree);
* :func:`episode_line`: the episode's diversity for its ``metrics.jsonl`` line (``ensemble_*``), and in the
  evaluation every member's result beside the ensemble's, each scored by the project's portfolio metrics
  through the same meta-policy (a member alone has no disagreement: full size).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from parallel_dqn.comm.messages import EpisodeDone, SetupInfo
from parallel_dqn.config import Config
from parallel_dqn.evaluation.episode import EpisodeBook, EpisodeOutcome, account_episode
from parallel_dqn.market.step import POSITIONS
from parallel_dqn.model.ensemble import DiversityStats, split_columns
from parallel_dqn.model.meta_policy import MetaPolicy, decision_features

#: the figures of each member (and of the ensemble) in the evaluation's members table
MEMBER_FIGURES = ("sharpe", "total_return", "max_drawdown", "hit_rate", "turnover")


def sizes(book: EpisodeBook, cfg: Config) -> np.ndarray | None:
    """``[n, S]`` multipliers of the capital weights: the members' agreement with each decision (None: full
    size, without an ensemble or with ``ensemble.size_down`` off)."""
    if book.ensemble is None or not cfg.ensemble.size_down:
        return None
    return split_columns(book.ensemble, cfg.ensemble.members)[0].astype(np.float32)


def capital_weights(
    meta: MetaPolicy, feats: np.ndarray, actions: np.ndarray, n_stocks: int, cfg: Config, size: np.ndarray | None
) -> np.ndarray:
    """The meta-policy's weights (equal capital when it is off), scaled by ``size`` when given."""
    if cfg.meta.enabled:
        return meta.weights(feats, actions, size)
    weights = POSITIONS[actions] / n_stocks
    return weights if size is None else weights * size


def episode_line(
    dones: list[EpisodeDone], book: EpisodeBook, info: SetupInfo, meta: MetaPolicy, cfg: Config,
    ensemble_weights: np.ndarray,
) -> dict[str, Any]:
    """What an episode's line adds with an ensemble: ``ensemble_disagreement``, ``ensemble_q_correlation``,
    ``ensemble_advantage_correlation``, ``ensemble_agreement`` (mean); in the evaluation ``ensemble_members``:
    one row per member, then the ensemble's (with ``ensemble_weights``) and, when it sizes down, the ensemble
    at full size."""
    K = cfg.ensemble.members
    stats = DiversityStats(K)
    for done in sorted(dones, key=lambda d: d.worker):  # in worker order: the same sums in every run
        if done.diversity is not None:
            stats.merge(done.diversity)
    line: dict[str, Any] = {f"ensemble_{k}": round(v, 6) for k, v in stats.summary().items()}
    if book.ensemble is None:
        return line
    agreement, members = split_columns(book.ensemble, K)
    line["ensemble_agreement"] = round(float(agreement.mean()), 6) if agreement.size else float("nan")
    if members is not None:
        line["ensemble_members"] = member_table(book, members, info, meta, cfg, ensemble_weights)
    return line


def member_table(
    book: EpisodeBook, members: tuple[np.ndarray, ...], info: SetupInfo, meta: MetaPolicy, cfg: Config,
    ensemble_weights: np.ndarray,
) -> list[dict[str, Any]]:
    """Every member's own decisions scored like the ensemble's, then the ensemble's row(s)."""
    actions, rewards, q = members
    log_returns = info.log_returns[book.start : book.stop]
    S = len(info.symbols)
    rows = []
    for k in range(cfg.ensemble.members):
        alone = EpisodeBook(book.start, book.stop, S)
        alone.q[:], alone.actions[:], alone.rewards[:] = q[:, :, k], actions[:, :, k], rewards[:, :, k]
        feats = decision_features(alone.q, alone.actions, log_returns, cfg.meta.perf_halflife, info.return_std)
        weights = capital_weights(meta, feats, alone.actions, S, cfg, None)
        rows.append({"member": str(k), **_figures(alone, weights, info, cfg)})
    rows.append({"member": "ensemble", **_figures(book, ensemble_weights, info, cfg)})
    size = sizes(book, cfg)
    if size is not None:  # what sizing down by disagreement changed
        feats = decision_features(book.q, book.actions, log_returns, cfg.meta.perf_halflife, info.return_std)
        full = capital_weights(meta, feats, book.actions, S, cfg, None)
        rows.append({"member": "ensemble, full size", **_figures(book, full, info, cfg)})
    return rows


def _figures(book: EpisodeBook, weights: np.ndarray, info: SetupInfo, cfg: Config) -> dict[str, Any]:
    outcome = EpisodeOutcome(0, "eval", book, weights, {}, float("nan"), None, 0.0)
    metrics = account_episode(outcome, info, cfg.market.cost_bps).metrics
    return {k: metrics.get(k) for k in MEMBER_FIGURES}
