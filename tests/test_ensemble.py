"""Ensembles of Q-heads (issue 13, item 1): combination rules against hand-computed cases, agreement, diversity,
bootstrap masks and their loss, sizing down by disagreement, the settings; end to end in single mode (every
member's result beside the ensemble's, in metrics and the report), --sync under real mpiexec equal to single
mode, and kill -9 under mpiexec --sync then --resume auto finishing the same run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from parallel_dqn.comm.messages import DecisionBlock
from parallel_dqn.comm.mpi.wire import pack_decisions, unpack_decisions
from parallel_dqn.config import Config, MetaConfig, ModelConfig
from parallel_dqn.errors import UserError
from parallel_dqn.evaluation.report import write_report
from parallel_dqn.model.ensemble import DiversityStats, combine, record_columns, split_columns
from parallel_dqn.model.meta_policy import MetaPolicy
from parallel_dqn.model.qnet import QNetwork
from parallel_dqn.rl.bootstrap import bootstrap_masks, masked_td_loss
from parallel_dqn.run.single import train
from tests.helpers import (
    assert_same_run,
    kill_9_then_resume_equals_uninterrupted,
    make_market,
    mpiexec,
    tiny_config,
    train_args,
)

ON = {"ensemble.members": 3, "ensemble.combine": "confidence", "ensemble.bootstrap": 0.5}
FLAGS = [arg for key, value in ON.items() for arg in ("--set", f"{key}={value}")]

# three members at one decision: greedy actions 0, 1, 0
THREE = np.array([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.0, 0.4]]])


# ---- combination rules ----------------------------------------------------------------------
def test_mean_rule_takes_the_argmax_of_the_mean_q():
    c = combine(THREE, "mean")
    np.testing.assert_allclose(c.q, [[0.5, 2 / 3, 0.4 / 3]])
    assert c.action.tolist() == [1]
    np.testing.assert_allclose(c.agreement, [1 / 3])  # only member 1 wanted it


def test_vote_rule_takes_the_majority_and_records_the_mean():
    c = combine(THREE, "vote")
    assert c.action.tolist() == [0]  # two votes for 0, one for 1
    np.testing.assert_allclose(c.q, [[0.5, 2 / 3, 0.4 / 3]])
    np.testing.assert_allclose(c.agreement, [2 / 3])


def test_vote_tie_goes_to_the_tied_action_with_the_higher_mean_q():
    tie = np.array([[[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]], [[0.2, 0.0, 0.0], [0.0, 0.5, 0.0]]])
    assert combine(tie, "vote").action.tolist() == [0, 1]


def test_confidence_rule_weights_members_by_their_camp():
    c = combine(THREE, "confidence")
    # weights 2/3, 1/3, 2/3: (2/3 [1,0,0] + 1/3 [0,2,0] + 2/3 [0.5,0,0.4]) / (5/3)
    np.testing.assert_allclose(c.q, [[0.6, 0.4, 0.16]], rtol=1e-6)
    assert c.action.tolist() == [0]
    np.testing.assert_allclose(c.agreement, [2 / 3])


def test_unanimous_members_agree_fully_under_every_rule():
    q = np.array([[[0.0, 1.0, 0.5], [0.1, 0.9, 0.3]]])
    for rule in ("mean", "vote", "confidence"):
        c = combine(q, rule)
        assert c.action.tolist() == [1] and c.agreement.tolist() == [1.0]


# ---- diversity ------------------------------------------------------------------------------
def test_diversity_of_identical_and_opposite_members():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 1, 3))
    same = DiversityStats(2)
    same.add(np.concatenate([q, q], axis=1))
    s = same.summary()
    assert s["disagreement"] == 0.0
    assert s["q_correlation"] == pytest.approx(1.0) and s["advantage_correlation"] == pytest.approx(1.0)
    opposite = DiversityStats(2)
    opposite.add(np.concatenate([q, -q], axis=1))
    s = opposite.summary()
    assert s["q_correlation"] == pytest.approx(-1.0)
    assert s["disagreement"] == pytest.approx(np.mean(q[:, 0].argmax(-1) != (-q[:, 0]).argmax(-1)))


def test_diversity_sums_merge_like_one_pass():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20, 3, 3)), rng.normal(size=(30, 3, 3))
    whole, part = DiversityStats(3), DiversityStats(3)
    whole.add(np.concatenate([a, b]))
    part.add(a)
    other = DiversityStats(3)
    other.add(b)
    part.merge(other.sums)
    np.testing.assert_allclose(part.sums, whole.sums, atol=1e-12)
    # the correlation against numpy's of the flattened Q-values
    flat = np.concatenate([a, b]).transpose(0, 2, 1).reshape(-1, 3)
    corr = np.corrcoef(flat.T)[~np.eye(3, dtype=bool)].mean()
    assert whole.summary()["q_correlation"] == pytest.approx(corr)


def test_record_columns_round_trip():
    agreement = np.array([1.0, 0.5])
    actions, rewards = np.array([[0, 2], [1, 1]]), np.array([[0.1, -0.2], [0.0, 0.3]])
    q = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    cols = record_columns(agreement, (actions, rewards, q))
    back, members = split_columns(cols, 2)
    np.testing.assert_array_equal(back, agreement)
    np.testing.assert_array_equal(members[0], actions)
    np.testing.assert_allclose(members[1], rewards, rtol=1e-6)
    np.testing.assert_array_equal(members[2], q)
    assert split_columns(record_columns(agreement, None), 2)[1] is None


def test_decision_blocks_carry_the_ensemble_columns_over_the_wire():
    cols = record_columns(np.array([0.5, 1.0]), None)
    block = DecisionBlock(1, 2, "train", np.array([5, 5]), np.array([0, 1]), np.zeros((2, 3), np.float32),
                          np.array([1, 2]), np.array([0.1, 0.2]), 0.5, cols)
    back = unpack_decisions(pack_decisions(block))
    np.testing.assert_array_equal(back.ensemble, cols)
    assert unpack_decisions(pack_decisions(DecisionBlock(1, 2, "train", *[x[:0] for x in (
        block.t, block.stock, block.q, block.action, block.reward)]))).ensemble is None


# ---- bootstrap masks and the members' loss ---------------------------------------------------
def test_bootstrap_masks_are_a_fixed_function_of_slot_and_member():
    slots = np.arange(20_000)
    m = bootstrap_masks(slots, 4, 0.5, seed=3, worker=1)
    assert m.shape == (20_000, 4) and set(np.unique(m)) == {0.0, 1.0}
    assert abs(m.mean() - 0.5) < 0.01
    np.testing.assert_array_equal(m[[7, 3]], bootstrap_masks(np.array([7, 3]), 4, 0.5, seed=3, worker=1))
    assert not np.array_equal(m, bootstrap_masks(slots, 4, 0.5, seed=3, worker=2))
    assert not np.array_equal(m[:, 0], m[:, 1])
    assert abs(bootstrap_masks(slots, 2, 0.8, 0, 0).mean() - 0.8) < 0.01
    assert bootstrap_masks(slots[:5], 3, 1.0, 0, 0).min() == 1.0


def test_masked_loss_counts_only_kept_pairs():
    q = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    targets = torch.tensor([[0.0, 0.0], [0.5, 3.0]])
    masks = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    loss, td = masked_td_loss(q, targets, torch.ones(2), masks, huber_delta=1.0)
    # kept pairs: (0,0) error 1 -> 0.5; (1,0) error 0.5 -> 0.125; (1,1) error 3 -> 2.5; over 3 pairs
    assert float(loss.detach()) == pytest.approx((0.5 + 0.125 + 2.5) / 3)
    np.testing.assert_allclose(td.numpy(), [1.5, -1.75])
    loss.backward()
    assert q.grad[0, 1] == 0.0  # the masked pair teaches nothing


# ---- network, sizing down, settings -----------------------------------------------------------
def test_members_are_heads_on_one_encoder():
    torch.manual_seed(0)
    one = QNetwork(4, 5, 8, ModelConfig())
    torch.manual_seed(0)
    again = QNetwork(4, 5, 8, ModelConfig(), members=1)
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), again.state_dict().values()))
    three = QNetwork(4, 5, 8, ModelConfig(), members=3)
    head = sum(p.numel() for p in one.head.parameters())
    assert sum(p.numel() for p in three.parameters()) == sum(p.numel() for p in one.parameters()) + 2 * head
    own, ctx = torch.randn(2, 4, 32), torch.randn(2, 4, 32)
    q = three.q_every_position(own, ctx)
    assert q.shape == (2, 4, 3, 3, 3)  # bar, stock, position, member, action
    assert not torch.allclose(q[..., 0, :], q[..., 1, :])  # the heads start apart


def test_size_down_scales_the_meta_policy_weights_after_the_caps():
    meta = MetaPolicy(3, MetaConfig())
    feats = np.random.default_rng(0).normal(size=(6, 3, 5)).astype(np.float32)
    actions = np.array([[0, 1, 2]] * 6)
    full = meta.weights(feats, actions)
    np.testing.assert_array_equal(meta.weights(feats, actions, np.ones((6, 3))), full)
    sizes = np.full((6, 3), 0.5)
    np.testing.assert_allclose(meta.weights(feats, actions, sizes), full * 0.5, rtol=1e-6)


@pytest.mark.parametrize("key, value, words", [
    ("ensemble.members", 0, "ensemble.members"),
    ("ensemble.combine", "median", "ensemble.combine"),
    ("ensemble.bootstrap", 0.0, "ensemble.bootstrap"),
])
def test_bad_ensemble_settings_are_one_clear_line(key, value, words):
    cfg = Config()
    cfg.set(key, value)
    with pytest.raises(UserError, match=words):
        cfg.validate()


# ---- end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("ensemble") / "market")


def test_single_mode_ensemble_reports_diversity_and_every_member(market, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(market, out, **{**ON, "dist.sync": True}))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        assert 0.0 <= line["ensemble_disagreement"] <= 1.0 and 0.0 <= line["ensemble_agreement"] <= 1.0
        assert -1.0 <= line["ensemble_q_correlation"] <= 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    members = metrics["ensemble"]["members"]
    assert [m["member"] for m in members] == ["0", "1", "2", "ensemble", "ensemble, full size"]
    assert members[3]["sharpe"] == metrics["eval"]["sharpe"]  # the ensemble's row is the run's evaluation
    assert len({m["sharpe"] for m in members[:3]}) > 1  # the members act differently
    write_report([out], tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert "each member alone vs the ensemble" in html and "Ensemble diversity per episode" in html


@pytest.mark.mpi
@pytest.mark.slow
def test_sync_under_mpiexec_equals_single_mode_with_an_ensemble(market, tmp_path):
    single = tmp_path / "single"
    train(tiny_config(market, single, **{**ON, "dist.sync": True, "dist.workers": 2}))
    proc = mpiexec(3, *train_args(market, tmp_path / "mpi", "--sync", *FLAGS), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(single, tmp_path / "mpi")
    ensemble = [json.loads((d / "metrics.json").read_text())["ensemble"] for d in (single, tmp_path / "mpi")]
    assert ensemble[0] == ensemble[1]


@pytest.mark.mpi
@pytest.mark.slow
def test_kill_9_with_an_ensemble_then_resume_auto_finishes_the_same_run(market, tmp_path):
    out = kill_9_then_resume_equals_uninterrupted(market, tmp_path, *FLAGS)
    ensemble = [json.loads((d / "metrics.json").read_text())["ensemble"] for d in (tmp_path / "reference", out)]
    assert ensemble[0] == ensemble[1]


