"""Q-network shapes and semantics, flat parameter plumbing, DQN targets, meta-policy constraints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parallel_dqn.config import MetaConfig, ModelConfig
from parallel_dqn.model.flat import (
    clip_by_norm_,
    flat_gradient_buffer,
    get_flat_grads,
    get_flat_params,
    set_flat_grads,
    set_flat_params,
)
from parallel_dqn.model.meta_policy import MetaPolicy, decision_features
from parallel_dqn.model.qnet import QNetwork
from parallel_dqn.rl.dqn import double_dqn_targets, td_loss

S, W, F = 5, 4, 6


def _inputs(B: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, S, W, F, generator=g), torch.rand(B, S, S, 2, generator=g) * 2 - 1


def _ask(net: QNetwork, windows: torch.Tensor, edges: torch.Tensor, select: list[int], positions: list[int]):
    """Q-values and attention of the ``select``ed stocks (dense: every stock is a neighbour) at one bar."""
    everyone = torch.arange(S)[None]
    emb = net.embed(windows, everyone)
    sel = torch.tensor(select)
    index = everyone.expand(len(select), S)[None]
    return net.decide(emb[:, sel], emb, edges[:, sel], torch.tensor([positions]), index=index)


def test_qnet_shapes_and_attention_rows_sum_to_one():
    net = QNetwork(S, F, W, ModelConfig())
    windows, edges = _inputs(1)
    q, att = _ask(net, windows, edges, [0, 2], [1, 1])
    assert q.shape == (1, 2, 3)
    assert att.shape == (1, ModelConfig().heads, 2, S)
    assert torch.allclose(att.sum(-1), torch.ones(1, ModelConfig().heads, 2))


def test_q_of_a_stock_depends_on_its_own_position_only_and_is_computed_row_by_row():
    """Asking for every stock at once gives each stock bit for bit what asking for it alone gives, whatever
    the positions of the others: one acting pass serves every worker (and an MPI rank computes the same)."""
    net = QNetwork(S, F, W, ModelConfig())
    windows, edges = _inputs(1)
    q_all, _ = _ask(net, windows, edges, list(range(S)), [0, 1, 2, 1, 0])
    q_other, _ = _ask(net, windows, edges, list(range(S)), [2, 1, 0, 0, 0])
    assert torch.equal(q_all[0, 1], q_other[0, 1])  # stock 1 holds position 1 in both
    for k, p in enumerate([0, 1, 2, 1, 0]):
        q_one, _ = _ask(net, windows, edges, [k], [p])
        assert torch.allclose(q_all[:, k], q_one[:, 0], atol=1e-6)


def test_the_learning_path_equals_the_acting_path():
    """forward (a sample encodes only its neighbours' windows) gives the Q-values decide gives over every stock."""
    net = QNetwork(S, F, W, ModelConfig())
    windows, edges = _inputs(1)
    q_all, _ = _ask(net, windows, edges, list(range(S)), [1] * S)
    neighbours = torch.tensor([[0, 2, 4]])  # stock 2 attends over 0, 2 and 4 only
    q_sparse, _ = net(windows[:, [0, 2, 4]], neighbours, torch.tensor([1]), edges[:, 2, [0, 2, 4]], torch.tensor([1]))
    q_acting, _ = net.decide(net.embed(windows, torch.arange(S)[None])[:, [2]], net.embed(windows, torch.arange(S)[None]),
                             edges[:, [2]][:, :, [0, 2, 4]], torch.tensor([[1]]), index=neighbours[None])
    assert torch.allclose(q_sparse, q_acting[:, 0], atol=1e-6)
    assert not torch.allclose(q_sparse, q_all[:, 2], atol=1e-6)  # fewer neighbours: another context


def test_without_attention_other_stocks_do_not_matter():
    net = QNetwork(S, F, W, ModelConfig(cross_attention=False))
    windows, edges = _inputs(1)
    q1, att = _ask(net, windows, edges, [2], [1])
    windows2 = windows.clone()
    windows2[:, [0, 1, 3, 4]] += 5.0
    q2, _ = _ask(net, windows2, edges, [2], [1])
    assert att is None and torch.allclose(q1, q2)
    # ...while with attention they do: the ablation really removes the cross-stock path
    net_att = QNetwork(S, F, W, ModelConfig(cross_attention=True))
    a1, _ = _ask(net_att, windows, edges, [2], [1])
    a2, _ = _ask(net_att, windows2, edges, [2], [1])
    assert not torch.allclose(a1, a2)


def test_flat_params_and_grads_round_trip():
    a, b = QNetwork(S, F, W, ModelConfig()), QNetwork(S, F, W, ModelConfig())
    set_flat_params(b, get_flat_params(a))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    windows, edges = _inputs(2)
    everyone = torch.arange(S)[None].expand(2, S)
    q, _ = a(windows, everyone, torch.tensor([0, 1]), edges[:, 0], torch.tensor([1, 2]))
    q.sum().backward()
    flat = get_flat_grads(a)
    set_flat_grads(b, flat)
    assert np.array_equal(get_flat_grads(b), flat)


def test_a_flat_gradient_buffer_holds_what_backward_computes_and_clips_like_torch():
    a, b = QNetwork(S, F, W, ModelConfig()), QNetwork(S, F, W, ModelConfig())
    set_flat_params(b, get_flat_params(a))
    buffer = flat_gradient_buffer(b)
    windows, edges = _inputs(2)
    everyone = torch.arange(S)[None].expand(2, S)
    for step in range(2):  # the second pass proves zero_() resets what the first accumulated
        a.zero_grad(set_to_none=True)
        buffer.zero_()
        for net in (a, b):
            q, _ = net(windows * (step + 1), everyone, torch.tensor([0, 3]), edges[:, 0], torch.tensor([1, 2]))
            (q ** 2).sum().backward()
        assert np.allclose(buffer.numpy(), get_flat_grads(a), atol=1e-6) and buffer.abs().sum() > 0
    norm = torch.nn.utils.clip_grad_norm_(a.parameters(), 0.01)
    assert torch.isclose(clip_by_norm_(buffer, 0.01), norm, rtol=1e-5)
    assert np.allclose(buffer.numpy(), get_flat_grads(a), atol=1e-7)
    assert np.isclose(np.linalg.norm(buffer.numpy()), 0.01, rtol=1e-4)


def test_double_dqn_targets_against_hand_computation():
    q_next_online = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    q_next_target = torch.tensor([[10.0, 20.0, 30.0], [7.0, 8.0, 9.0]])
    rewards = torch.tensor([0.5, -1.0])
    discounts = torch.tensor([0.9, 0.0])
    y = double_dqn_targets(q_next_online, q_next_target, rewards, discounts)
    # online picks action 1 then 2; the target network evaluates them
    assert torch.allclose(y, torch.tensor([0.5 + 0.9 * 20.0, -1.0]))
    loss, td = td_loss(torch.tensor([18.5, 0.0]), y, torch.tensor([1.0, 2.0]), huber_delta=1.0)
    assert torch.allclose(td, torch.tensor([0.0, 1.0]))
    assert torch.isclose(loss, torch.tensor((0.0 + 2.0 * 0.5) / 2))


def test_meta_policy_caps_and_gross_exposure():
    cfg = MetaConfig(max_weight=0.3)
    meta = MetaPolicy(S, cfg)
    with torch.no_grad():
        meta.stock_bias.fill_(10.0)  # wants the full cap everywhere
    rng = np.random.default_rng(0)
    T = 50
    actions = rng.integers(0, 3, (T, S))
    feats = decision_features(rng.normal(size=(T, S, 3)), actions, rng.normal(0, 1e-3, (T, S)), 20, 1e-3)
    w = meta.weights(feats, actions)
    assert np.all(np.abs(w) <= cfg.max_weight + 1e-6)
    assert np.all(np.abs(w).sum(axis=1) <= 1.0 + 1e-6)
    assert np.all(w[actions == 1] == 0.0)  # flat decisions get no capital
    assert np.all(np.sign(w[actions == 2]) >= 0) and np.all(np.sign(w[actions == 0]) <= 0)


def test_meta_policy_learns_to_favour_the_profitable_stock():
    """Stock 0's decisions earn money, stock 1's lose: training shifts capital to stock 0."""
    rng = np.random.default_rng(1)
    T = 400
    r = rng.normal(0, 1e-3, (T, 2))
    actions = np.ones((T, 2), dtype=int)
    actions[:-1, 0] = np.where(r[1:, 0] > 0, 2, 0)  # perfect foresight of stock 0 (the test's premise)
    actions[:-1, 1] = np.where(r[1:, 1] > 0, 0, 2)  # always wrong on stock 1
    meta = MetaPolicy(2, MetaConfig(max_weight=1.0, epochs=60))
    feats = decision_features(np.zeros((T, 2, 3), np.float32), actions, r, 50, 1e-3)
    before = np.abs(meta.weights(feats, actions)).mean(axis=0)
    meta.fit(feats, actions, r, cost_bps=0.0)
    after = np.abs(meta.weights(feats, actions)).mean(axis=0)
    assert after[0] - after[1] > before[0] - before[1] + 0.1


def _episode(T: int, S: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random records of one episode: Q-values, actions, log-returns and an ensemble's sizes."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(T, S, 3)).astype(np.float32), rng.integers(0, 3, (T, S)), rng.normal(0, 1e-3, (T, S)),
            rng.uniform(0.3, 1.0, (T, S)))


@pytest.mark.parametrize("sizes", [False, True])
def test_the_meta_policy_learns_block_by_block_what_it_learns_in_one_pass(monkeypatch, sizes):
    """A long episode is passed over in blocks of bars (rank 0's memory stays one block's): the fit, its
    Sharpe ratio and the weights are those of one pass over the whole episode, to float rounding."""
    from parallel_dqn.model import meta_policy

    T, S = 300, 7
    q, actions, r, size = _episode(T, S, 3)
    size = size if sizes else None
    feats = decision_features(q, actions, r, 20, 1e-3)
    cfg = MetaConfig(max_weight=0.4, epochs=5)
    torch.manual_seed(0)
    whole, blocked = MetaPolicy(S, cfg), MetaPolicy(S, cfg)
    blocked.load_state_dict(whole.state_dict())
    sharpe_whole = whole.fit(feats, actions, r, cost_bps=2.0, sizes=size)
    monkeypatch.setattr(meta_policy, "BLOCK_ACTIVATIONS", 24 * S * 32)  # blocks of 24 steps: 13, the last of 11
    assert len(blocked._blocks(T - 1, S)) == 13
    sharpe_blocked = blocked.fit(feats, actions, r, cost_bps=2.0, sizes=size)
    assert sharpe_blocked == pytest.approx(sharpe_whole, rel=1e-5)
    for a, b in zip(whole.parameters(), blocked.parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert not torch.equal(whole.stock_bias, MetaPolicy(S, cfg).stock_bias)  # it did learn
    np.testing.assert_allclose(blocked.weights(feats, actions, size), whole.weights(feats, actions, size), atol=1e-6)


def test_decision_features_of_a_block_of_stocks_are_those_of_the_whole_market(monkeypatch):
    from parallel_dqn.model import meta_policy

    q, actions, r, _ = _episode(200, 9, 4)
    whole = decision_features(q, actions, r, 20, 1e-3)
    monkeypatch.setattr(meta_policy, "BLOCK_DECISIONS", 200 * 2)  # two stocks per block, the last alone
    np.testing.assert_array_equal(decision_features(q, actions, r, 20, 1e-3), whole)


def test_dense_attention_gives_what_gathering_every_pair_gives():
    """With the dense graph (every stock a neighbour, in index order) attention runs as batched matrix
    products; it must give the context and weights of the gathered path, for every stock or a shard's."""
    from parallel_dqn.model.qnet import CrossStockAttention

    torch.manual_seed(0)
    attention, B = CrossStockAttention(16, 2), 4
    attention.graph_bias.data.normal_()
    emb, edges = torch.randn(B, S, 16), torch.randn(B, S, S, 2)
    for shard in (list(range(S)), [1, 3]):
        own, shard_edges = emb[:, shard], edges[:, shard]
        index = torch.arange(S).expand(B, len(shard), S)
        gathered_ctx, gathered_weights = attention(own, emb, shard_edges, index=index)
        dense_ctx, dense_weights = attention(own, emb, shard_edges)
        assert torch.allclose(dense_ctx, gathered_ctx, atol=1e-6)
        assert torch.allclose(dense_weights, gathered_weights, atol=1e-6)
