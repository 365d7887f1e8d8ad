"""No look-ahead: changing any bar after t changes no feature, action or weight at t.

The strongest form is end to end: a trained model is evaluated on a market and
on a copy whose bars after t were replaced by different (valid) bars; every
decision, position and meta-policy weight up to t must be identical, and must
differ somewhere after t (so the test can fail).

Training-only augmentation (``[augment]``, every transform on) is held to the same rule: no augmented
training sample up to t changes when the bars after t (the evaluation period's among them) do, and a
model trained with it is the same bit for bit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from parallel_dqn.comm.inprocess import InProcessTransport
from parallel_dqn.config import AugmentConfig
from parallel_dqn.data.align import align
from parallel_dqn.data.features import correlation_graph, graph_stamps, neighbour_graph, raw_features
from parallel_dqn.data.loader import load_bars
from parallel_dqn.data.store import LocalStore, open_store
from parallel_dqn.rl.augment import Augmenter, FeatureScales
from parallel_dqn.rl.observations import Observations
from parallel_dqn.run.single import evaluate, train
from parallel_dqn.training.driver import LocalShard, _rows, build_cross_section
from parallel_dqn.training.plan import plan_training
from tests.helpers import STOCKS, make_market, perturb_after, tiny_config, weights

CUT = pd.Timestamp("2024-01-08 17:00", tz="UTC")  # inside the evaluation day


@pytest.fixture(scope="module")
def markets(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("la")
    original = make_market(base / "original")
    perturbed = base / "perturbed"
    perturb_after(original, perturbed, CUT)
    return original, perturbed


def _panel(data: Path):
    frames = load_bars(LocalStore(data), STOCKS, dt.date(2024, 1, 2), dt.date(2024, 1, 8))
    return align(frames, STOCKS)


def test_features_and_graph_up_to_t_are_unchanged(markets):
    a, b = _panel(markets[0]), _panel(markets[1])
    t = int(np.searchsorted(a.timestamps, CUT.to_datetime64(), side="right"))  # rows < t are at or before CUT
    fa, fb = raw_features(a, 23400.0), raw_features(b, 23400.0)
    assert np.array_equal(fa[:t], fb[:t])
    assert not np.allclose(fa[t:], fb[t:])
    stamps = graph_stamps(a.timestamps, 5)
    ga, ia = correlation_graph(a.log_returns, 40, stamps)
    gb, ib = correlation_graph(b.log_returns, 40, stamps)
    assert np.array_equal(ga[ia[:t]], gb[ib[:t]])
    assert not np.array_equal(ga[ia[t:]], gb[ib[t:]])
    # the sparse graph too: which stocks each one attends over, and the edges, up to t
    na, ea, _ = neighbour_graph(a.log_returns, 40, stamps, 2)
    nb, eb, _ = neighbour_graph(b.log_returns, 40, stamps, 2)
    assert np.array_equal(na[ia[:t]], nb[ib[:t]]) and np.array_equal(ea[ia[:t]], eb[ib[:t]])
    assert not np.array_equal(ea[ia[t:]], eb[ib[t:]])


def test_actions_and_weights_up_to_t_are_unchanged(markets, tmp_path):
    original, perturbed = markets
    train(tiny_config(original, tmp_path / "model"))
    model = str(tmp_path / "model" / "trained_model.pth")
    evaluate(tiny_config(original, tmp_path / "ea"), model)
    evaluate(tiny_config(perturbed, tmp_path / "eb"), model)
    a = pd.read_csv(tmp_path / "ea" / "portfolio_eval.csv", parse_dates=["timestamp"])
    b = pd.read_csv(tmp_path / "eb" / "portfolio_eval.csv", parse_dates=["timestamp"])
    assert len(a) == len(b) > 0
    decided = [c for c in a.columns if c.startswith(("weight_", "position_"))] + ["gross_exposure"]
    before = a["timestamp"] <= CUT
    assert before.sum() > 10 and (~before).sum() > 10
    pd.testing.assert_frame_equal(a.loc[before, decided], b.loc[before, decided])
    assert not a.loc[~before, decided].equals(b.loc[~before, decided])


# ---- training-only augmentation ([augment]) ------------------------------------------------------------------------
EVERY_AUGMENTATION = {"noise": 0.2, "feature_dropout": 0.2, "time_warp": 0.5, "scenarios": 0.5}


def _cross_section(data: Path, tmp: Path):
    """The run's cross-section, feature statistics and training rows, as a training run builds them."""
    cfg = tiny_config(data, tmp, **{"data.cache": "off"})
    store = open_store(str(data))
    plan = plan_training(cfg, store)
    shards = [LocalShard(i, s) for i, s in enumerate(plan.shards)]
    xs, stats = build_cross_section(shards, plan, store, InProcessTransport(endpoint=None), cfg)  # type: ignore[arg-type]
    return xs, stats, _rows(xs.timestamps, plan.train_start, plan.train_end)


def _augmented_samples(xs, scales: FeatureScales, t: torch.Tensor, whole_bars: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Every augmentation of the samples at bars ``t`` (s) and ``t + 1`` (s'), as the learning step makes them:
    every stock's window per bar, or each sample's neighbours' windows; and the units' scenario factors."""
    aug = Augmenter(AugmentConfig(**EVERY_AUGMENTATION), scales, seed=0, worker=1)
    obs = Observations(xs, window=8)
    bars = torch.cat([t, t + 1])
    if whole_bars:
        return aug(obs.windows(bars), None)
    neighbours, _ = obs.neighbours(bars, torch.zeros_like(bars))
    return aug(obs.windows(bars, neighbours), neighbours)


@pytest.mark.parametrize("whole_bars", [True, False])
def test_augmented_training_samples_up_to_t_are_unchanged(markets, tmp_path, whole_bars):
    (xa, sa, rows), (xb, sb, rows_b) = _cross_section(markets[0], tmp_path / "a"), _cross_section(markets[1], tmp_path / "b")
    assert rows == rows_b
    cut = int(np.searchsorted(xa.timestamps, CUT.to_datetime64(), side="right"))  # rows < cut: at or before CUT
    scales_a, scales_b = FeatureScales.fit(xa.features, rows, sa), FeatureScales.fit(xb.features, rows, sb)
    assert np.array_equal(scales_a.spread, scales_b.spread) and np.array_equal(scales_a.offset, scales_b.offset)
    # every decision time whose s and s' are at or before CUT: the training days and the evaluation day's start
    before = torch.arange(0, cut - 1)
    assert int(before[-1]) >= rows[1]  # evaluation-period bars among them
    a, fa = _augmented_samples(xa, scales_a, before, whole_bars)
    b, fb = _augmented_samples(xb, scales_b, before, whole_bars)
    assert torch.equal(a, b) and torch.equal(fa, fb)
    after = torch.arange(cut, len(xa.timestamps) - 1)
    assert not torch.equal(_augmented_samples(xa, scales_a, after, whole_bars)[0],
                           _augmented_samples(xb, scales_b, after, whole_bars)[0])


def test_augmented_samples_read_no_bar_after_their_decision_time(markets, tmp_path):
    xs, stats, rows = _cross_section(markets[0], tmp_path)
    scales = FeatureScales.fit(xs.features, rows, stats)
    decision = (rows[0] + rows[1]) // 2  # inside the training period
    junk = np.array(xs.features, copy=True)
    junk[decision + 1 :] = np.random.default_rng(0).normal(size=junk[decision + 1 :].shape) * 3
    changed = dataclasses.replace(xs, features=junk)
    for whole_bars in (True, False):
        upto = torch.arange(rows[0], decision)  # s at t, s' at t + 1 <= the decision time
        assert torch.equal(_augmented_samples(xs, scales, upto, whole_bars)[0],
                           _augmented_samples(changed, scales, upto, whole_bars)[0])
        later = torch.arange(decision, rows[1] - 1)
        assert not torch.equal(_augmented_samples(xs, scales, later, whole_bars)[0],
                               _augmented_samples(changed, scales, later, whole_bars)[0])


def test_a_model_trained_with_every_augmentation_ignores_the_evaluation_period(markets, tmp_path):
    settings = {f"augment.{k}": v for k, v in EVERY_AUGMENTATION.items()} | {"data.cache": "off"}
    train(tiny_config(markets[0], tmp_path / "a", **settings))
    train(tiny_config(markets[1], tmp_path / "b", **settings))
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    train(tiny_config(markets[0], tmp_path / "plain", **{"data.cache": "off"}))  # augmentation changed the training
    plain = weights(tmp_path / "plain")
    assert any(not torch.equal(wa[k], plain[k]) for k in wa)
