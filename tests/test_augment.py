"""Training-only augmentation of replayed samples (parallel_dqn.rl.augment, the worker's learning hook).

* each transform's own logic: noise at the set fraction of each feature's spread, the dropout rate, a time warp
  that reads only the window's rows (never one after its bar), a scenario factor applied to the return-scale
  features and to the reward alike; the two halves of a batch (s and s') get one draw per unit;
* off draws nothing and builds nothing: the worker's default path and checkpoint are those of before;
* a single-mode run with every augmentation on trains differently from one without, and resuming any of its
  checkpoints reproduces it exactly; ``--sync`` under real ``mpiexec`` equals single mode with it on (each
  worker draws from its own stream, seeded by the run's seed and its id, wherever it runs), and resumes exactly
  from a mid-run checkpoint there too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from parallel_dqn.checkpoint.format import CheckpointStore
from parallel_dqn.cli import main
from parallel_dqn.comm.inprocess import InProcessTransport
from parallel_dqn.config import AugmentConfig
from parallel_dqn.data.features import FEATURE_NAMES, N_FEATURES, FeatureStats
from parallel_dqn.data.store import open_store
from parallel_dqn.rl.augment import FLAGS, RETURN_SCALE, SCENARIO_RANGE, Augmenter, FeatureScales, augmenting
from parallel_dqn.rl.replay import ReplaySample
from parallel_dqn.run.single import train
from parallel_dqn.training.driver import LocalShard, _rows, build_cross_section
from parallel_dqn.training.plan import plan_training
from parallel_dqn.training.worker import Worker
from tests.helpers import assert_same_run, make_market, mpiexec, tiny_config, train_args, weights

F = N_FEATURES
MEASURED = [j for j in range(F) if j not in FLAGS]
ALL_ON = {"augment.noise": 0.2, "augment.feature_dropout": 0.1, "augment.time_warp": 0.5, "augment.scenarios": 0.5}


def scales(S: int, seed: int = 0) -> FeatureScales:
    rng = np.random.default_rng(seed)
    spread = rng.uniform(0.5, 2.0, (S, F))
    spread[:, list(FLAGS)] = 0.0
    offset = np.zeros((S, F))
    offset[:, list(RETURN_SCALE)] = rng.uniform(-1.0, 3.0, (S, len(RETURN_SCALE)))
    return FeatureScales(spread, offset)


#: every augmentation off (the defaults switch some on): each test turns on only what it checks
OFF = {"noise": 0.0, "feature_dropout": 0.0, "time_warp": 0.0, "scenarios": 0.0}


def augmenter(S: int = 5, seed: int = 0, **settings: float) -> Augmenter:
    return Augmenter(AugmentConfig(**{**OFF, **settings}), scales(S), seed=seed, worker=1)


# ---- each transform ------------------------------------------------------------------------------------------------
def test_noise_has_the_set_fraction_of_each_features_spread_and_is_the_same_for_s_and_s_next():
    S, N, K, W = 5, 4000, 3, 4
    aug = augmenter(S, noise=0.3)
    stocks = torch.from_numpy(np.random.default_rng(1).integers(0, S, (N, K))).repeat(2, 1)
    windows = torch.zeros(2 * N, K, W, F)
    out, factor = aug(windows, stocks)
    assert factor is None  # no scenarios: the rewards are left alone
    assert torch.equal(out[:N], out[N:])  # one draw per sample, for s and s' alike
    relative = out[:N] / torch.as_tensor(aug.spread)[stocks[:N]][:, :, None, :].clamp(min=1e-12)
    std = relative[..., MEASURED].std(dim=(0, 1, 2))
    assert torch.allclose(std, torch.full_like(std, 0.3), rtol=0.03), std
    assert (out[..., list(FLAGS)] == 0).all()  # flags are facts: no noise


def test_feature_dropout_zeroes_whole_features_of_a_window_at_the_set_rate():
    N, K, W = 3000, 2, 5
    aug = augmenter(feature_dropout=0.25)
    out, _ = aug(torch.ones(2 * N, K, W, F), torch.zeros(2 * N, K, dtype=torch.long))
    dropped = out == 0
    assert torch.equal(dropped.all(dim=2), dropped.any(dim=2))  # a feature is dropped over all W rows or none
    rate = dropped[..., MEASURED].float().mean()
    assert abs(float(rate) - 0.25) < 0.01, rate
    assert not dropped[..., list(FLAGS)].any()
    assert torch.equal(out[:N], out[N:])


def test_a_time_warp_reads_only_rows_of_the_window_never_one_after_its_bar():
    N, K, W = 500, 2, 8
    t = torch.randint(W, 1000, (2 * N,))
    rows = (t[:, None] - W + 1 + torch.arange(W)).float()  # each row's value is its clock row
    windows = rows[:, None, :, None].expand(2 * N, K, W, F).clone()
    out, _ = augmenter(time_warp=0.5)(windows, torch.zeros(2 * N, K, dtype=torch.long))
    assert (out <= t[:, None, None, None]).all() and (out >= (t - W + 1)[:, None, None, None]).all()
    assert torch.equal(out[..., -1, :], windows[..., -1, :])  # the decision bar itself stays the last row
    assert (out.diff(dim=2) >= 0).all()  # monotone: time is not reversed
    warped = (out != windows).flatten(1).any(dim=1)
    assert torch.equal(warped[:N], warped[N:])  # a sample's s and s' warped alike
    assert abs(float(warped[:N].float().mean()) - 0.5) < 0.08  # the share set


def test_a_scenario_rescales_raw_return_scale_features_and_reports_its_factor_for_the_reward():
    S, N, K, W = 4, 2000, 3, 2
    aug = augmenter(S, scenarios=0.4)
    stocks = torch.randint(0, S, (N, K)).repeat(2, 1)
    windows = torch.empty(2 * N, K, W, F).uniform_(-1.5, 1.5)
    out, factor = aug(windows, stocks)
    assert factor.shape == (N,)
    changed = factor != 1
    assert abs(float(changed.float().mean()) - 0.4) < 0.04
    assert factor.min() >= 1 / SCENARIO_RANGE and factor.max() <= SCENARIO_RANGE
    c = factor.repeat(2)[:, None, None, None]
    offset = aug.offset[stocks][:, :, None, :]
    # z = (raw - mean) / std: a scenario multiplies the raw value, raw' = c * raw, so z' = c z + (c - 1) mean / std
    expected = (c * windows + (c - 1) * offset).clamp(-5, 5)
    rs = list(RETURN_SCALE)
    assert torch.allclose(out[..., rs], expected[..., rs], atol=1e-6)
    others = [j for j in range(F) if j not in RETURN_SCALE]
    assert torch.equal(out[..., others], windows[..., others])
    assert torch.equal(out[~changed.repeat(2)], windows[~changed.repeat(2)])  # no scenario: untouched
    assert {FEATURE_NAMES[j] for j in RETURN_SCALE} == {"ret_1", "ret_5", "ret_15", "ret_60", "vol_15", "vol_60", "range"}


def test_the_spread_and_offsets_come_from_the_training_rows_only():
    rng = np.random.default_rng(2)
    T, S = 300, 3
    features = rng.normal(size=(T, S, F)).astype(np.float32)
    features[200:] *= 50  # "evaluation" rows, wildly different
    stats = FeatureStats(rng.uniform(0.1, 1, (S, 8)), rng.uniform(0.5, 2, (S, 8)), 23400.0)
    fitted = FeatureScales.fit(features, (20, 200), stats)
    assert np.allclose(fitted.spread[:, MEASURED], features[20:200].std(axis=0)[:, MEASURED], rtol=1e-5)
    assert (fitted.spread[:, list(FLAGS)] == 0).all()
    assert np.allclose(fitted.offset[:, 4], stats.mean[:, 4] / stats.std[:, 4]) and (fitted.offset[:, 7:] == 0).all()


def test_the_spread_of_a_block_of_stocks_is_that_of_the_whole_market(monkeypatch):
    """FeatureScales.fit reads the features a bounded block of stocks at a time (a year of minute bars must
    not be copied to float64 whole): every block size gives the same spreads, bit for bit."""
    from parallel_dqn.rl import augment

    rng = np.random.default_rng(5)
    T, S = 400, 7
    features = rng.normal(size=(T, S, F)).astype(np.float32)
    stats = FeatureStats(rng.uniform(0.1, 1, (S, 8)), rng.uniform(0.5, 2, (S, 8)), 23400.0)
    whole = FeatureScales.fit(features, (10, 390), stats)
    monkeypatch.setattr(augment, "FIT_BLOCK", 380 * F * 2)  # two stocks per block, the last alone
    blocked = FeatureScales.fit(features, (10, 390), stats)
    np.testing.assert_array_equal(blocked.spread, whole.spread)
    np.testing.assert_array_equal(blocked.offset, whole.offset)


def test_inputs_appended_after_the_features_are_never_noised_dropped_or_rescaled():
    """Regime probabilities (parallel_dqn.data.regimes) come after data.features' columns: left as they are."""
    rng = np.random.default_rng(4)
    T, S, extra = 200, 3, 2
    features = rng.normal(size=(T, S, F + extra)).astype(np.float32)
    stats = FeatureStats(rng.uniform(0.1, 1, (S, 8)), rng.uniform(0.5, 2, (S, 8)), 23400.0)
    fitted = FeatureScales.fit(features, (0, T), stats)
    assert (fitted.spread[:, F:] == 0).all() and (fitted.offset[:, F:] == 0).all()
    aug = Augmenter(AugmentConfig(**{**OFF, "noise": 0.5, "feature_dropout": 0.5, "scenarios": 1.0}), fitted, 0, 0)
    windows = torch.from_numpy(features[None, 150:158].transpose(0, 2, 1, 3).copy()).repeat(400, 1, 1, 1)  # [N, S, W, F+2]
    out, _ = aug(windows, None)
    assert torch.equal(out[..., F:], windows[..., F:])
    assert not torch.equal(out[..., :F], windows[..., :F])  # the features themselves were augmented


def test_off_builds_nothing_and_each_setting_at_zero_draws_nothing():
    assert not augmenting(AugmentConfig(**OFF)) and augmenting(AugmentConfig(**{**OFF, "time_warp": 0.1}))
    N, K, W = 7, 3, 4
    aug = augmenter(noise=0.1)
    before = aug.generator.get_state()
    aug(torch.zeros(2 * N, K, W, F), torch.zeros(2 * N, K, dtype=torch.long))
    after = aug.generator.get_state()
    expected = torch.Generator().set_state(before)
    torch.randn((N, K, W, F), generator=expected)  # the noise, and nothing for the three settings at 0
    assert torch.equal(after, expected.get_state())


def test_the_augmenter_resumes_its_stream_and_workers_draw_apart():
    a, b = augmenter(seed=3), augmenter(seed=3, noise=0.5)
    state = b.state_dict()
    first = b(torch.zeros(2, 1, 2, F), torch.zeros(2, 1, dtype=torch.long))[0]
    a.cfg = b.cfg
    a.load_state_dict(json.loads(json.dumps({k: v.tolist() for k, v in state.items()})))
    assert torch.equal(a(torch.zeros(2, 1, 2, F), torch.zeros(2, 1, dtype=torch.long))[0], first)
    other = Augmenter(AugmentConfig(noise=0.5), scales(5), seed=3, worker=2)
    assert not torch.equal(other(torch.zeros(2, 1, 2, F), torch.zeros(2, 1, dtype=torch.long))[0], first)


# ---- the worker's hook ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("augment_market"))


def make_worker(market: Path, tmp: Path, augment: bool, **settings) -> Worker:
    cfg = tiny_config(market, tmp / "out", **{"data.cache": "off", **(ALL_ON if augment else {}), **settings})
    store = open_store(str(market))
    plan = plan_training(cfg, store)
    shards = [LocalShard(i, s) for i, s in enumerate(plan.shards)]
    xs, stats = build_cross_section(shards, plan, store, InProcessTransport(endpoint=None), cfg)  # type: ignore[arg-type]
    fitted = FeatureScales.fit(xs.features, _rows(xs.timestamps, plan.train_start, plan.train_end), stats)
    torch.manual_seed(0)
    return Worker(0, list(range(len(xs.symbols))), cfg, xs, None, 1.0, 1000, scales=fitted if augment else None)  # type: ignore[arg-type]


@pytest.mark.parametrize("whole_bars", [True, False])
def test_the_hook_rescales_each_samples_reward_by_its_windows_scenario(market, tmp_path, whole_bars):
    w = make_worker(market, tmp_path, True, **{"augment.noise": 0.0, "augment.feature_dropout": 0.0,
                                                "augment.time_warp": 0.0, "augment.scenarios": 0.6})
    S = len(w.stocks)
    bars = np.repeat(np.arange(60, 60 + 5 * 7, 7), S)
    n = len(bars)
    sample = ReplaySample(bars, np.tile(np.arange(S), 5), np.ones(n, np.int8), np.ones(n, np.int8),
                          np.linspace(-1, 1, n).astype(np.float32), bars + 1, np.ones(n, np.int8),
                          np.ones(n, np.float32), np.ones(n, np.float32), np.arange(n))
    t = torch.from_numpy(np.concatenate([sample.t, sample.next_t]))
    stock = torch.from_numpy(np.concatenate([sample.stock, sample.stock]))
    inputs = w._sample_inputs(t, stock, whole_bars=whole_bars)
    assert ("bars" in inputs) == whole_bars
    augmented, with_windows = w._augmented(sample, inputs)
    factor = augmented.reward / np.where(sample.reward == 0, 1, sample.reward)
    factor[sample.reward == 0] = 1.0
    assert (factor != 1).any() and (np.isclose(factor, 1)).any()
    # the sample's own window at s: ret_1 of its last row, raw' = c * raw
    windows = with_windows["windows"]
    if whole_bars:
        own = windows[: len(windows) // 2, :, -1, 0][torch.arange(n) // S, torch.from_numpy(sample.stock.astype(np.int64))]
    else:
        own = windows[:n, :, -1, 0][torch.arange(n), inputs["own_slot"][:n]]
    clean = w.obs.windows(t[:n], stock[:n, None])[:, 0, -1, 0]
    offset = w.augment.offset[stock[:n], 0]
    c = torch.from_numpy(factor)
    assert torch.allclose(own, (c * clean + (c - 1) * offset).clamp(-5, 5), atol=1e-5)
    if whole_bars:  # a bar's samples share its scenario
        assert (factor.reshape(5, S) == factor.reshape(5, S)[:, :1]).all()


def test_off_leaves_the_worker_and_its_checkpoint_as_before(market, tmp_path):
    w = make_worker(market, tmp_path, False, **ALL_ON)  # settings on, but no scales: an evaluation's worker
    assert w.augment is None
    plain = make_worker(market, tmp_path, False)
    assert plain.augment is None and "augment" not in plain.checkpoint_state()
    on = make_worker(market, tmp_path, True)
    assert "augment" in on.checkpoint_state()


# ---- end to end ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sync", [True, False])
def test_a_run_with_every_augmentation_trains_differently_and_resumes_exactly(market, tmp_path, sync):
    settings = {"dist.sync": sync, "checkpoint.every_applies": 60, "checkpoint.keep": 20, "data.cache": "off",
                "replay.prioritized": not sync, "dist.workers": 0 if sync else 3}  # whole bars, then per sample
    train(tiny_config(market, tmp_path / "plain", **settings))
    train(tiny_config(market, tmp_path / "full", **settings, **ALL_ON))
    plain, full = weights(tmp_path / "plain"), weights(tmp_path / "full")
    assert any(not torch.equal(plain[k], full[k]) for k in plain)
    checkpoints = CheckpointStore(tmp_path / "full" / "checkpoints").committed()
    assert len(checkpoints) >= 2
    for ckpt in checkpoints:
        out = tmp_path / f"from_{ckpt.name}"
        assert main(["train", "--resume", str(ckpt), "--output", str(out), "--no-progress"]) == 0
        assert_same_run(tmp_path / "full", out)
    assert math.isfinite(json.loads((tmp_path / "full" / "metrics.json").read_text())["eval"]["sharpe"])


def test_sync_under_mpiexec_equals_single_mode_with_every_augmentation(market, tmp_path):
    sets = [x for key, value in ALL_ON.items() for x in ("--set", f"{key}={value}")]
    proc = mpiexec(4, *train_args(market, tmp_path / "parallel", "--sync", "--seed", "3", *sets))
    assert proc.returncode == 0, proc.stderr
    train(tiny_config(market, tmp_path / "single", **{**ALL_ON, "dist.sync": True, "dist.workers": 3, "run.seed": 3}))
    wp, ws = weights(tmp_path / "parallel"), weights(tmp_path / "single")
    for name in ws:
        assert torch.allclose(wp[name], ws[name], rtol=0, atol=1e-6), name
    parallel = json.loads((tmp_path / "parallel" / "metrics.json").read_text())
    alone = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert parallel["counters"]["gradients_applied"] == alone["counters"]["gradients_applied"] > 0


def test_under_mpiexec_a_run_with_every_augmentation_resumes_exactly(market, tmp_path):
    sets = [x for key, value in ALL_ON.items() for x in ("--set", f"{key}={value}")]
    args = ["--sync", "--set", "checkpoint.every_applies=40", "--set", "checkpoint.keep=20", *sets]
    proc = mpiexec(4, *train_args(market, tmp_path / "full", *args))
    assert proc.returncode == 0, proc.stderr
    checkpoints = CheckpointStore(tmp_path / "full" / "checkpoints").committed()
    reasons = [json.loads((c / "manifest.json").read_text())["reason"] for c in checkpoints]
    middle = checkpoints[len(checkpoints) // 2]
    assert len(checkpoints) >= 3 and any("gradient applies" in r for r in reasons), reasons
    resumed = mpiexec(4, "-m", "parallel_dqn", "train", "--resume", str(middle), "--output", str(tmp_path / "resumed"),
                      "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "full", tmp_path / "resumed")
