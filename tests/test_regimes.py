"""Market regimes: the regime-change generator, the causal detector, regime features and adaptive settings.

* the detector's probabilities at t are filtered ones (equal to hmmlearn's posterior of the last bar of the prefix
  up to t), unchanged by any change to bars after t, and its fit reads the training rows only;
* the generator's follower loads +beta on its leader in calm regimes and -beta in turbulent ones, the oracle knows it;
* a single-mode run with regime features and adaptive settings logs the regime per bar, keeps the detector in the
  model (evaluate reproduces the evaluation) and resumes exactly from any checkpoint in ``--sync`` mode;
* under real ``mpiexec`` ``--sync`` equals single mode, and a ``kill -9`` then ``--resume auto`` ends as the run.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from parallel_dqn.checkpoint.format import CheckpointStore
from parallel_dqn.cli import main
from parallel_dqn.comm.messages import GradientMessage
from parallel_dqn.comm.mpi.wire import pack_gradient, unpack_gradient
from parallel_dqn.config import Config
from parallel_dqn.data.regimes import RegimeModel, RegimePath, detect, regime_inputs, with_regime_features
from parallel_dqn.data.synthetic import (
    SyntheticSpec,
    generate_market,
    oracle_expected_returns,
    regime_states,
)
from parallel_dqn.errors import UserError
from parallel_dqn.run.single import evaluate, train
from parallel_dqn.training.server import _round_scale
from tests.helpers import (
    assert_same_run,
    kill_9_then_resume_equals_uninterrupted,
    make_market,
    mpiexec,
    tiny_config,
    train_args,
)

REGIME = {"regime.enabled": True, "regime.window": 20, "regime.features": True, "regime.adaptive": True,
          "regime.epsilon_scale": [1.0, 3.0], "regime.position_cap": [1.0, 0.5], "regime.lr_scale": [1.0, 0.5]}
FLAGS = ["--set", "regime.enabled=true", "--set", "regime.window=20", "--set", "regime.epsilon_scale=1,3"]


def regime_market(days: int = 12, seed: int = 4, bar_minutes: int = 1):
    spec = SyntheticSpec(bar_minutes=bar_minutes, regime_flip=True)
    return generate_market(["LEAD", "FOLW", "MOMO", "MREV", "RWLK"], dt.date(2024, 1, 2), days, seed, spec)


def log_returns(market) -> tuple[np.ndarray, np.ndarray]:
    close = np.stack([f["close"].to_numpy() for f in market.frames.values()], axis=1)
    r = np.zeros_like(close)
    r[1:] = np.diff(np.log(close), axis=0)
    return r, next(iter(market.frames.values())).index.tz_localize(None).to_numpy()


@pytest.fixture(scope="module")
def planted():
    return regime_market()


# ---- the generator -------------------------------------------------------------------------------------
def test_the_follower_follows_its_leader_when_calm_and_moves_against_it_when_turbulent(planted):
    r, stamps = log_returns(planted)
    state = regime_states(planted.structure, stamps)
    assert 0.2 < state.mean() < 0.8, "both regimes occur"
    lead, follow = r[:-1, 0], r[1:, 1]
    for s, sign in ((0, 1), (1, -1)):
        rows = state[1:] == s
        corr = np.corrcoef(lead[rows], follow[rows])[0, 1]
        assert sign * corr > 0.4, (s, corr)
    oracle = oracle_expected_returns(r, list(planted.frames), planted.structure, stamps)
    assert np.corrcoef(oracle[:-1, 1], r[1:, 1])[0, 1] > 0.4  # the oracle knows the sign of each regime
    with pytest.raises(ValueError, match="timestamps"):
        oracle_expected_returns(r, list(planted.frames), planted.structure)


def test_the_regime_option_is_off_by_default_and_changes_only_the_follower():
    plain = generate_market(["LEAD", "FOLW", "MOMO"], dt.date(2024, 1, 2), 3, 5)
    flipped = generate_market(["LEAD", "FOLW", "MOMO"], dt.date(2024, 1, 2), 3, 5, SyntheticSpec(regime_flip=True))
    assert "regime_path" not in plain.structure and flipped.structure["regime_flip"]
    for sym in ("LEAD", "MOMO"):
        pd.testing.assert_frame_equal(plain.frames[sym], flipped.frames[sym])
    assert not plain.frames["FOLW"]["close"].equals(flipped.frames["FOLW"]["close"])


def test_a_correlation_regime_shows_in_the_cross_section_only():
    """``regime_by="correlation"``: each stock's volatility is the same in both states (its own bars do not
    reveal the state), the stocks move together in state 1 only, and the follower still flips with the state."""
    spec = SyntheticSpec(regime_flip=True, regime_by="correlation", regime_correlation=0.6, momentum_phi=0.0,
                         reversion_phi=0.0)
    market = generate_market(["LEAD", "FOLW", "RW1", "RW2", "RW3"], dt.date(2024, 1, 2), 12, 4, spec)
    r, stamps = log_returns(market)
    state = regime_states(market.structure, stamps)
    assert 0.2 < state.mean() < 0.8, "both regimes occur"
    r, state = r[1:], state[1:]  # the first bar has no return
    for j in range(r.shape[1]):
        vol0, vol1 = r[state == 0, j].std(), r[state == 1, j].std()
        assert abs(vol1 / vol0 - 1) < 0.08, (j, vol0, vol1)  # volatility: no clue
    walks = [2, 3, 4]  # the random walks: their shocks' correlation is the regime's
    corr = {s: np.corrcoef(r[state == s][:, walks].T)[np.triu_indices(3, 1)].mean() for s in (0, 1)}
    assert abs(corr[0]) < 0.05 and abs(corr[1] - 0.6) < 0.05, corr
    lead, follow = r[:-1, 0], r[1:, 1]
    for s, sign in ((0, 1), (1, -1)):
        rows = state[1:] == s
        assert sign * np.corrcoef(lead[rows], follow[rows])[0, 1] > 0.4


def test_a_volatility_regime_market_is_unchanged_by_the_correlation_option():
    """The option draws its factor only when used: the default markets keep their numbers (and golden figures)."""
    a = generate_market(["LEAD", "FOLW", "MOMO"], dt.date(2024, 1, 2), 2, 5, SyntheticSpec(regime_flip=True))
    b = generate_market(["LEAD", "FOLW", "MOMO"], dt.date(2024, 1, 2), 2, 5,
                        SyntheticSpec(regime_flip=True, regime_by="volatility", regime_correlation=0.3))
    for sym in a.frames:
        pd.testing.assert_frame_equal(a.frames[sym], b.frames[sym])
    with pytest.raises(UserError, match="regime_by"):
        SyntheticSpec(regime_by="trend")


# ---- the detector --------------------------------------------------------------------------------------
def detected_on_held_out_bars(market) -> tuple[RegimeModel, RegimePath, float]:
    """The detector fitted on the first 9 days of 1-minute bars, its path, and the share of the held-out bars
    (after one window) on which its most likely state is the hidden one."""
    r, stamps = log_returns(market)
    train_rows = (0, 9 * 390)
    model, path = detect(r, train_rows, (train_rows[1],), 2, 60, 0)
    truth = regime_states(market.structure, stamps)
    held_out = slice(train_rows[1] + 60, None)
    return model, path, float((path.labels[held_out] == truth[held_out]).mean())


def test_the_detector_finds_a_correlation_regime_no_stock_shows_alone():
    spec = SyntheticSpec(regime_flip=True, regime_by="correlation", momentum_phi=0.0, reversion_phi=0.0)
    market = generate_market(["LEAD", "FOLW", "RW1", "RW2", "RW3"], dt.date(2024, 1, 2), 12, 4, spec)
    assert detected_on_held_out_bars(market)[2] > 0.85


def test_the_detector_finds_the_hidden_regime_with_state_0_the_calm_one(planted):
    model, path, found = detected_on_held_out_bars(planted)
    assert found > 0.85
    assert model.means[0, 0] < model.means[1, 0]  # sorted by volatility
    assert np.allclose(path.probs.sum(axis=1), 1.0, atol=1e-5)


def test_filtered_probabilities_are_the_posterior_of_the_last_bar_seen(planted):
    """Independent check of our forward pass: hmmlearn's posterior of the last bar of a prefix uses no later bar,
    so it is the filtered probability there (its probabilities at earlier bars are smoothed: never used)."""
    from hmmlearn.hmm import GaussianHMM

    r, _ = log_returns(planted)
    model, _ = detect(r, (0, 3000), (), 2, 60, 0)
    inputs = regime_inputs(r[:1200], 60)
    ours = model.filtered(inputs)
    hmm = GaussianHMM(n_components=2, covariance_type="diag")
    hmm.startprob_, hmm.transmat_, hmm.means_ = model.startprob, model.transmat, model.means
    hmm.covars_ = model.variances
    z = model.standardise(inputs)
    for n in (1, 2, 70, 500, 1200):
        np.testing.assert_allclose(ours[n - 1], hmm.predict_proba(z[:n])[-1], atol=1e-6)
    smoothed = hmm.predict_proba(z)
    assert np.abs(smoothed[:-1] - ours[:-1]).max() > 0.05  # the smoothed ones do differ: they look ahead


def test_no_look_ahead_perturbing_bars_after_t_changes_no_regime_probability_up_to_t(planted):
    r, _ = log_returns(planted)
    train_rows, cut = (0, 9 * 390), 10 * 390 + 17
    model, path = detect(r, train_rows, (train_rows[1],), 2, 60, 0)
    later = r.copy()
    later[cut + 1 :] = np.random.default_rng(1).normal(0, 0.01, later[cut + 1 :].shape)  # a different future
    model2, path2 = detect(later, train_rows, (train_rows[1],), 2, 60, 0)
    assert model2.to_dict() == model.to_dict()  # fitted on the training rows only
    np.testing.assert_array_equal(path2.probs[: cut + 1], path.probs[: cut + 1])
    assert not np.array_equal(path2.probs[cut + 1 :], path.probs[cut + 1 :])
    # the inputs alone too, and the features built from them
    np.testing.assert_array_equal(regime_inputs(later, 60)[: cut + 1], regime_inputs(r, 60)[: cut + 1])
    feats = np.zeros((len(r), 5, 2), dtype=np.float32)
    np.testing.assert_array_equal(with_regime_features(feats, path2)[: cut + 1], with_regime_features(feats, path)[: cut + 1])


def test_a_restart_forgets_everything_before_it(planted):
    r, _ = log_returns(planted)
    model, _ = detect(r, (0, 3000), (), 2, 60, 0)
    inputs = regime_inputs(r, 60)
    whole = model.filtered(inputs, restarts=(3500,))
    alone = model.filtered(inputs[3500:])
    np.testing.assert_allclose(whole[3500:], alone, rtol=0, atol=0)


def test_the_detector_round_trips_and_refuses_a_too_short_training_period(planted):
    r, _ = log_returns(planted)
    model, _ = detect(r, (0, 3000), (), 2, 60, 0)
    again = RegimeModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_array_equal(again.filtered(regime_inputs(r, 60)), model.filtered(regime_inputs(r, 60)))
    with pytest.raises(UserError, match="at least 100 training bars"):
        detect(r, (0, 80), (), 2, 60, 0)


def test_a_table_entry_follows_the_most_likely_regime():
    path = RegimePath.of(np.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]]))
    assert path.labels.tolist() == [0, 1, 0]  # a tie goes to the calmer state
    assert [path.scale([1.0, 2.0], t) for t in range(3)] == [1.0, 2.0, 1.0]


# ---- settings and messages -----------------------------------------------------------------------------
def test_regime_settings_parse_tables_and_refuse_bad_ones_in_one_line():
    cfg = Config()
    cfg.set("regime.lr_scale", "1, 0.25")
    assert cfg.regime.lr_scale == [1.0, 0.25] and Config().regime.enabled is False
    for key, value, message in (
        ("regime.lr_scale", "1", "one value per regime state"),
        ("regime.position_cap", "1,1.5", r"position_cap values must lie in \[0, 1\]"),
        ("regime.window", 500, "regime.window must be in"),
        ("regime.states", 1, "regime.states must be in"),
    ):
        bad = Config()
        bad.set("regime.enabled", True)
        bad.set(key, value)
        with pytest.raises(UserError, match=message):
            bad.validate()
    with pytest.raises(UserError, match="is not a valid"):
        Config().set("regime.lr_scale", [True, 1.0])
    both = Config()
    for key, value in (("regime.enabled", True), ("augment.noise", 0.1)):
        both.set(key, value)
    both.validate()  # augmentation leaves the appended regime inputs alone (tests/test_augment.py)


def test_the_learning_rate_factor_travels_with_the_gradient():
    msg = GradientMessage(2, 7, np.arange(4, dtype=np.float32), 0.5, 0.25, 0.5)
    back = unpack_gradient(pack_gradient(msg))
    assert (back.worker, back.version, back.loss, back.q_mean, back.lr_scale) == (2, 7, 0.5, 0.25, 0.5)
    np.testing.assert_array_equal(back.grad, msg.grad)
    assert _round_scale([msg, msg]) == 0.5
    assert GradientMessage(0, 0, msg.grad, 0.0, 0.0).lr_scale == 1.0


# ---- end to end ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_market(tmp_path_factory.mktemp("regime_market"), regime_flip=True)


def test_single_mode_logs_regimes_keeps_the_detector_and_evaluate_reproduces_it(small, tmp_path):
    out = tmp_path / "run"
    trained = train(tiny_config(small, out, **REGIME))
    table = pd.read_csv(out / "portfolio_eval.csv")
    assert {"regime", "regime_p0", "regime_p1"} <= set(table.columns)
    assert (table.regime == (table.regime_p1 > table.regime_p0).astype(int)).all()
    assert "regime" in pd.read_csv(out / "portfolio_ep1.csv").columns
    import torch

    model = torch.load(out / "trained_model.pth", weights_only=True)
    assert model["n_features"] == 12 + 2 and len(model["regime"]["startprob"]) == 2
    evaluated = evaluate(tiny_config(small, tmp_path / "eval", **REGIME), str(out / "trained_model.pth"))
    assert evaluated["eval"] == trained["eval"]
    pd.testing.assert_frame_equal(table, pd.read_csv(tmp_path / "eval" / "portfolio_eval.csv"))
    # the position cap halves the turbulent bars' weights: no turbulent bar holds more than half of a calm cap
    gross = table["gross_exposure"].to_numpy()
    assert gross[table.regime.to_numpy() == 1].max(initial=0) <= 0.5 + 1e-9


def test_regime_settings_change_the_run_and_resume_exactly_from_any_checkpoint(small, tmp_path):
    full = tmp_path / "full"
    settings = {**REGIME, "dist.sync": True, "checkpoint.every_applies": 40, "checkpoint.keep": 20}
    train(tiny_config(small, full, **settings))
    blind = tmp_path / "blind"
    train(tiny_config(small, blind, **{**settings, "regime.enabled": False}))
    assert json.loads((full / "metrics.json").read_text())["eval"] != json.loads((blind / "metrics.json").read_text())["eval"]
    checkpoints = CheckpointStore(full / "checkpoints").committed()
    assert len(checkpoints) >= 3
    for ckpt in checkpoints:
        out = tmp_path / f"from_{ckpt.name}"
        assert main(["train", "--resume", str(ckpt), "--output", str(out), "--no-progress"]) == 0
        assert_same_run(full, out)


@pytest.mark.mpi
@pytest.mark.slow
def test_sync_under_mpiexec_equals_single_mode_with_regimes(small, tmp_path):
    single = tmp_path / "single"
    train(tiny_config(small, single, **{**REGIME, "regime.epsilon_scale": [1.0, 3.0], "dist.sync": True,
                                         "dist.workers": 2}))
    proc = mpiexec(3, *train_args(small, tmp_path / "mpi", "--sync", *FLAGS), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(single, tmp_path / "mpi")


@pytest.mark.mpi
@pytest.mark.slow
def test_kill_9_with_regimes_then_resume_auto_finishes_the_same_run(small, tmp_path):
    kill_9_then_resume_equals_uninterrupted(small, tmp_path, *FLAGS)


