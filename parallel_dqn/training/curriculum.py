"""The curriculum: the training days ordered by difficulty, in stages of rising difficulty (issue 12, item 3).

Pure functions of the training rows' log returns, the same on every worker (each holds the whole
cross-section) and never of any bar outside those rows, so the evaluation and validation periods cannot
change a stage. Per trading day (UTC date of the market clock) a difficulty:

* ``volatility``: the day's realised volatility, ``sqrt(sum r^2)`` of each stock's intraday log returns,
  averaged across stocks;
* ``trend``: one minus the trend's clarity, ``|sum r| / sum |r|`` per stock (1: a straight line, 0: no net
  move), averaged across stocks;
* ``noise``: one minus ``|lag-1 autocorrelation|`` of each stock's intraday returns (0 when a stock did not
  move), averaged across stocks: returns that neither trend nor revert are noise;
* ``mixed``: the mean of the three measures' ranks.

Only a day's own bars count (its first bar's return, the overnight gap from the day before, does not).
Stage ``k`` of ``K`` holds the easiest ``ceil(k * N / K)`` of the N training days (stage K: all of them);
ties keep the calendar order. A run starts at stage 1 and moves up one stage after a training episode
whose validation Sharpe is at least ``curriculum.threshold`` (:func:`next_stage`, decided on rank 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MEASURES = ("volatility", "trend", "noise")


def day_bounds(timestamps: np.ndarray, rows: tuple[int, int]) -> list[tuple[int, int]]:
    """The clock rows ``[lo, hi)`` of each UTC day within ``rows``, in calendar order."""
    start, stop = rows
    days = np.asarray(timestamps[start:stop]).astype("datetime64[D]")
    if not len(days):
        return []
    cuts = np.flatnonzero(days[1:] != days[:-1]) + 1
    edges = [0, *cuts.tolist(), len(days)]
    return [(start + lo, start + hi) for lo, hi in zip(edges[:-1], edges[1:])]


def day_measures(log_returns: np.ndarray, bounds: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Each measure's difficulty per day ``[N]`` from the days' intraday log returns ``[T, S]``."""
    out = {name: np.zeros(len(bounds)) for name in MEASURES}
    for i, (lo, hi) in enumerate(bounds):
        r = np.asarray(log_returns[lo + 1 : hi], dtype=np.float64)  # the day's own returns, not the gap into it
        if len(r) == 0:
            continue
        out["volatility"][i] = float(np.sqrt((r**2).sum(axis=0)).mean())
        path = np.abs(r).sum(axis=0)
        clarity = np.divide(np.abs(r.sum(axis=0)), path, out=np.zeros_like(path), where=path > 0)
        out["trend"][i] = float(1.0 - clarity.mean())
        out["noise"][i] = float(1.0 - np.abs(_lag1_autocorrelation(r)).mean())
    return out


def _lag1_autocorrelation(r: np.ndarray) -> np.ndarray:
    """Each column's lag-1 autocorrelation (0 where it is undefined: fewer than 3 returns, or no variation)."""
    if len(r) < 3:
        return np.zeros(r.shape[1])
    a, b = r[:-1] - r[:-1].mean(axis=0), r[1:] - r[1:].mean(axis=0)
    denom = np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))
    return np.divide((a * b).sum(axis=0), denom, out=np.zeros(r.shape[1]), where=denom > 0)


def difficulty(log_returns: np.ndarray, bounds: list[tuple[int, int]], by: str) -> np.ndarray:
    """The difficulty of each day ``[N]`` by ``by`` (a measure, or ``mixed``: the mean of their ranks)."""
    measures = day_measures(log_returns, bounds)
    if by != "mixed":
        return measures[by]
    ranks = [np.argsort(np.argsort(measures[name], kind="stable"), kind="stable") for name in MEASURES]
    return np.mean(ranks, axis=0)


@dataclass(frozen=True)
class Curriculum:
    """The training days (their clock rows) in order of difficulty, and the stages over them."""

    rows: tuple[int, int]  # the training rows the days lie in
    bounds: tuple[tuple[int, int], ...]  # each day's rows, in calendar order
    order: tuple[int, ...]  # day indices, easiest first
    stages: int

    @classmethod
    def of(cls, timestamps: np.ndarray, log_returns: np.ndarray, rows: tuple[int, int], stages: int, by: str) -> Curriculum:
        """The curriculum of training rows ``rows``, computed from those rows' bars only."""
        bounds = day_bounds(timestamps, rows)
        score = difficulty(log_returns, bounds, by)
        order = np.argsort(score, kind="stable")  # ties: the earlier day first
        return cls(tuple(rows), tuple(bounds), tuple(int(i) for i in order), stages)

    def days(self, stage: int) -> list[int]:
        """The day indices of stage ``stage`` (1..stages), in calendar order."""
        if not 1 <= stage <= self.stages:
            raise ValueError(f"stage {stage} is not in 1..{self.stages}")
        n = math.ceil(stage * len(self.order) / self.stages)
        return sorted(self.order[:n])

    def learn_rows(self, stage: int, n_rows: int) -> np.ndarray:
        """bool ``[n_rows]`` over the market clock: the rows of stage ``stage``'s days."""
        mask = np.zeros(n_rows, dtype=bool)
        for day in self.days(stage):
            lo, hi = self.bounds[day]
            mask[lo:hi] = True
        return mask

def next_stage(
    stage: int, stages: int, validation_sharpe: float | None, threshold: float, episodes_at_stage: int = 0,
    patience: int = 0,
) -> int:
    """The stage of the next training episode: one up when the last validation passed the threshold, or when the
    run has trained ``patience`` (> 0) episodes at this stage without passing it (so a threshold the validation
    never reaches cannot keep the run on the easiest days to the end).

    No validation score (none was taken, or its Sharpe is undefined): the stage stays, unless patience has run out.
    """
    if stage >= stages:
        return stage
    if patience > 0 and episodes_at_stage >= patience:
        return stage + 1
    if validation_sharpe is None or not math.isfinite(validation_sharpe):
        return stage
    return stage + 1 if validation_sharpe >= threshold else stage
