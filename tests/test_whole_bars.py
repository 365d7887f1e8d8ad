"""Acting and learning on whole bars give the Q-values a stock would get asked alone.

A worker acts from one forward pass over every stock and the bars of a span (the parameters do not change
in between), and learns from whole bars of its shard: every stock embedded once per bar instead of once per
neighbour of every sample. Both are only faster ways to the same numbers; these tests hold them to that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from parallel_dqn.comm.inprocess import InProcessTransport
from parallel_dqn.data.store import open_store
from parallel_dqn.rl.nstep import Transitions
from parallel_dqn.rl.replay import UniformReplay
from parallel_dqn.training.driver import LocalShard, build_cross_section
from parallel_dqn.training.plan import plan_training
from parallel_dqn.training.worker import Worker
from tests.helpers import STOCKS, make_market, tiny_config

ATOL = 1e-5


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("bars_market"))


def make_worker(market: Path, tmp: Path, shard: list[int], **settings) -> Worker:
    cfg = tiny_config(market, tmp / "out", **{"data.cache": "off", "model.neighbors": 2, **settings})
    store = open_store(str(market))
    plan = plan_training(cfg, store)
    shards = [LocalShard(i, s) for i, s in enumerate(plan.shards)]
    xs, _ = build_cross_section(shards, plan, store, InProcessTransport(endpoint=None), cfg)  # type: ignore[arg-type]
    torch.manual_seed(0)
    return Worker(0, shard, cfg, xs, transport=None, reward_scale=1.0, total_train_steps=1000)  # type: ignore[arg-type]


def test_replay_groups_are_whole_bars_and_every_transition_is_equally_likely():
    S, bars = 3, 50
    replay = UniformReplay(S * 20, seed_or_rng=1)
    for t in range(bars):  # more bars than the capacity: the buffer wraps, groups stay whole
        replay.add(Transitions.from_arrays(
            t=np.full(S, t), stock=np.arange(S), position=np.ones(S, int), action=np.ones(S, int),
            reward=np.zeros(S), next_t=np.full(S, t + 1), next_position=np.ones(S, int), discount=np.ones(S)))
    sample = replay.sample(S * 4000, group=S)
    by_bar = sample.t.reshape(-1, S)
    assert (by_bar == by_bar[:, :1]).all()  # each group is one bar...
    assert (sample.stock.reshape(-1, S) == np.arange(S)).all()  # ...with every stock of the shard
    kept = np.arange(bars - 20, bars)
    assert set(np.unique(by_bar[:, 0])) == set(kept)  # only the bars still in the buffer
    counts = np.bincount(by_bar[:, 0] - kept[0], minlength=len(kept))
    assert counts.min() > 0.7 * counts.mean()  # uniform over the bars kept
    with pytest.raises(ValueError, match="multiples"):
        replay.sample(S * 4 + 1, group=S)


@pytest.mark.parametrize("attention", [True, False])
def test_learning_on_whole_bars_gives_the_per_sample_q_values(market, tmp_path, attention):
    w = make_worker(market, tmp_path, [0, 1, 2], **{"model.cross_attention": attention})
    t = torch.tensor([60, 60, 60, 61, 61, 61, 90, 90, 90])
    stock = torch.tensor([0, 1, 2] * 3)
    pos = torch.tensor([0, 1, 2, 2, 2, 1, 1, 0, 0])
    chosen = w._sample_inputs(t, stock, whole_bars=True)
    # with attention 3 bars x 3 stocks are embedded instead of 9 samples x 2 neighbours; without, 9 windows
    assert ("bars" in chosen) == attention
    assert "bars" not in w._sample_inputs(t, stock, whole_bars=False)  # prioritized replay: scattered samples
    per_bar = {"bars": torch.tensor([60, 61, 90])}
    neighbours, edges = w.obs.neighbours(t, stock)
    if not attention:
        neighbours, edges = stock[:, None], torch.zeros(len(stock), 1, 2)
    per_sample = {"t": t, "neighbours": neighbours, "edges": edges,
                  "own_slot": (neighbours == stock[:, None]).int().argmax(dim=1)}
    a, b = w._q(w.net, per_bar, pos), w._q(w.net, per_sample, pos)
    assert a.shape == (9, 3) and torch.allclose(a, b, atol=ATOL)
    half = slice(3, None)  # the target network's half: only the bars it needs
    assert torch.allclose(w._q(w.net, per_bar, pos, half), b[half], atol=ATOL)
    a.sum().backward()  # the gradient flows through the bars' embeddings
    assert all(p.grad is not None for p in w.net.encoder.parameters())


def test_a_shard_learns_on_its_own_stocks_of_each_bar(market, tmp_path):
    w = make_worker(market, tmp_path, [1, 2], **{"dist.workers": 2})
    t, stock, pos = torch.tensor([70, 70, 80, 80]), torch.tensor([1, 2, 1, 2]), torch.tensor([0, 2, 1, 1])
    per_bar = w._sample_inputs(t, stock, whole_bars=True)
    assert "bars" in per_bar
    q = w._q(w.net, per_bar, pos)
    for i in range(4):
        alone = w.acting_pass(int(t[i]), int(t[i]) + 1).at(int(t[i])).q[int(stock[i]), int(pos[i])]
        assert np.allclose(q[i].detach().numpy(), alone, atol=ATOL)


def test_an_acting_pass_gives_each_bar_what_a_pass_over_that_bar_alone_gives(market, tmp_path):
    w = make_worker(market, tmp_path, list(range(len(STOCKS))))
    span = w.acting_pass(100, 108)
    assert span.q.shape == (8, len(STOCKS), 3, 3)
    for t in (100, 103, 107):
        one = w.acting_pass(t, t + 1).at(t)
        assert np.allclose(span.at(t).q, one.q, atol=ATOL) and np.array_equal(span.at(t).neighbours, one.neighbours)
    # the Q-values a stock holding position p acts on are those of the learning path at p
    positions = torch.tensor([0, 1, 2])
    t = torch.full((3,), 105)
    learned = w._q(w.net, w._sample_inputs(t, torch.arange(3), whole_bars=True), positions).detach().numpy()
    assert np.allclose(span.at(105).q[np.arange(3), positions.numpy()], learned, atol=ATOL)


def test_acting_spans_start_at_the_anchor_so_a_resumed_run_computes_the_same_passes(market, tmp_path):
    w = make_worker(market, tmp_path, list(range(len(STOCKS))))
    w.begin_episode(1, "train", (10, 200))
    assert w.acting_span(10) == (10, 18) and w.acting_span(17) == (10, 18) and w.acting_span(18) == (18, 26)
    w.anchor = 21  # parameters pulled at bar 21: spans count from there
    assert w.acting_span(25) == (21, 29)
    w.begin_episode(0, "eval", (300, 330))  # no pulls in an evaluation: long spans, cut at its last decision
    assert w.acting_span(300) == (300, 329)
