"""The curriculum's own logic on scripted days (:mod:`parallel_dqn.training.curriculum`).

* each measure orders days as it says: calm before volatile, a straight trend before a zigzag, a reverting or
  trending day before noise; ``mixed`` ranks by the mean of the three;
* stage k of K holds the easiest ceil(k N / K) days, the last stage all of them, as clock rows;
* progression: one stage up when the validation Sharpe reaches the threshold, never past the last, never on NaN;
* no look-ahead: bars after the training rows (the validation and evaluation periods) change no stage.
"""

from __future__ import annotations

import numpy as np
import pytest

from parallel_dqn.training.curriculum import Curriculum, day_bounds, difficulty, next_stage

BARS = 12  # bars per scripted day


def clock(days: int) -> np.ndarray:
    """``days`` UTC days of ``BARS`` 5-minute bars from 14:30."""
    day0 = np.datetime64("2024-01-02T14:30", "m")
    stamps = [day0 + np.timedelta64(d, "D") + np.timedelta64(5 * i, "m") for d in range(days) for i in range(BARS)]
    return np.array(stamps).astype("datetime64[ns]")


def returns(*days: np.ndarray, stocks: int = 2) -> np.ndarray:
    """Log returns ``[days x BARS, stocks]``: each day's ``BARS`` returns for every stock."""
    return np.concatenate([np.repeat(np.asarray(d, float)[:, None], stocks, axis=1) for d in days])


rng = np.random.default_rng(3)
CALM = rng.normal(0, 1e-4, BARS)
WILD = rng.normal(0, 1e-2, BARS)
MILD = rng.normal(0, 1e-3, BARS)
STRAIGHT = np.full(BARS, 1e-3)  # a clear trend: net move = path length
ZIGZAG = np.tile([1e-3, -1e-3], BARS // 2)  # no net move; perfectly reverting (|autocorrelation| 1)
NOISE = rng.normal(0, 1e-3, BARS)


def test_days_are_the_utc_dates_of_the_clock_within_the_rows():
    assert day_bounds(clock(3), (0, 3 * BARS)) == [(0, BARS), (BARS, 2 * BARS), (2 * BARS, 3 * BARS)]
    assert day_bounds(clock(3), (5, 2 * BARS)) == [(5, BARS), (BARS, 2 * BARS)]
    assert day_bounds(clock(3), (4, 4)) == []


def test_each_measure_orders_the_days_as_it_says():
    bounds = day_bounds(clock(3), (0, 3 * BARS))
    by_volatility = difficulty(returns(WILD, CALM, MILD), bounds, "volatility")
    assert list(np.argsort(by_volatility)) == [1, 2, 0]  # calm, mild, wild
    by_trend = difficulty(returns(ZIGZAG, STRAIGHT, NOISE), bounds, "trend")
    assert by_trend[1] == pytest.approx(0.0) and min(by_trend[0], by_trend[2]) > 0.9  # the straight day is easiest
    by_noise = difficulty(returns(NOISE, ZIGZAG, NOISE * 2), bounds, "noise")
    assert by_noise[1] == pytest.approx(0.0, abs=0.1) and min(by_noise[0], by_noise[2]) > 0.3


def test_mixed_is_the_mean_of_the_three_ranks():
    bounds = day_bounds(clock(4), (0, 4 * BARS))
    r = returns(WILD, STRAIGHT, ZIGZAG, NOISE)
    ranks = [np.argsort(np.argsort(difficulty(r, bounds, by), kind="stable"), kind="stable")
             for by in ("volatility", "trend", "noise")]
    assert np.array_equal(difficulty(r, bounds, "mixed"), np.mean(ranks, axis=0))


def test_the_first_bar_of_a_day_the_gap_into_it_does_not_count():
    calm_after_gap = CALM.copy()
    calm_after_gap[0] = 0.2  # a large overnight gap: not the day's own volatility
    bounds = day_bounds(clock(2), (0, 2 * BARS))
    assert list(np.argsort(difficulty(returns(MILD, calm_after_gap), bounds, "volatility"))) == [1, 0]


def test_stage_k_of_k_holds_the_easiest_share_of_the_days_the_last_all_of_them():
    # days 0..3 by volatility: wild, calm, mild, calm*2 -> easiest first: 1, 3, 2, 0
    r = returns(WILD, CALM, MILD, CALM * 2)
    cur = Curriculum.of(clock(4), r, (0, 4 * BARS), stages=3, by="volatility")
    assert cur.order == (1, 3, 2, 0)
    assert cur.days(1) == [1, 3] and cur.days(2) == [1, 2, 3] and cur.days(3) == [0, 1, 2, 3]  # ceil(4k/3)
    mask = cur.learn_rows(1, 5 * BARS)
    assert mask.shape == (5 * BARS,)
    assert np.flatnonzero(mask).tolist() == [*range(BARS, 2 * BARS), *range(3 * BARS, 4 * BARS)]
    assert cur.learn_rows(3, 5 * BARS)[: 4 * BARS].all() and not cur.learn_rows(3, 5 * BARS)[4 * BARS :].any()
    with pytest.raises(ValueError):
        cur.days(4)


def test_one_stage_up_when_the_validation_reaches_the_threshold():
    assert next_stage(1, 3, 0.5, 0.5) == 2
    assert next_stage(1, 3, 0.49, 0.5) == 1
    assert next_stage(3, 3, 9.0, 0.5) == 3  # the last stage is the last
    assert next_stage(2, 3, None, 0.5) == 2 and next_stage(2, 3, float("nan"), -1.0) == 2


def test_patience_moves_the_stage_up_without_a_passing_validation():
    assert next_stage(1, 3, -9.0, 0.5, episodes_at_stage=1, patience=2) == 1
    assert next_stage(1, 3, -9.0, 0.5, episodes_at_stage=2, patience=2) == 2
    assert next_stage(2, 3, None, 0.5, episodes_at_stage=2, patience=2) == 3  # no score: patience still counts
    assert next_stage(3, 3, -9.0, 0.5, episodes_at_stage=5, patience=2) == 3
    assert next_stage(1, 3, -9.0, 0.5, episodes_at_stage=9, patience=0) == 1  # 0: the threshold only


def test_bars_after_the_training_rows_change_no_stage():
    """The validation and evaluation periods lie after the training rows: perturbing them changes nothing."""
    r = returns(WILD, CALM, MILD, NOISE, STRAIGHT, ZIGZAG)
    train = (0, 4 * BARS)
    later = r.copy()
    later[train[1] :] = rng.normal(0, 5e-2, later[train[1] :].shape)  # every bar from the first held-out one
    for by in ("volatility", "trend", "noise", "mixed"):
        a = Curriculum.of(clock(6), r, train, 3, by)
        b = Curriculum.of(clock(6), later, train, 3, by)
        assert a == b, by
        assert all(np.array_equal(a.learn_rows(k, 6 * BARS), b.learn_rows(k, 6 * BARS)) for k in (1, 2, 3))
    inside = r.copy()
    inside[BARS + 1 : 2 * BARS] *= 1000  # ...while the training days' own bars do move it
    assert Curriculum.of(clock(6), inside, train, 3, "volatility").order != Curriculum.of(clock(6), r, train, 3, "volatility").order
