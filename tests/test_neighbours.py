"""The sparse cross-stock graph (each stock's k most related stocks) and the windows the networks read."""

from __future__ import annotations

import numpy as np
import torch

from parallel_dqn.data.crosssection import CrossSection
from parallel_dqn.data.features import correlation_graph, neighbour_graph
from parallel_dqn.rl.observations import Observations

T, S = 200, 9


def _returns(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    common = rng.normal(0, 1e-3, (T, 1))
    r = rng.normal(0, 1e-3, (T, S)) + common * np.linspace(0, 2, S)  # stocks share a factor to varying degrees
    r[1:, 3] += 0.8 * r[:-1, 5]  # stock 5 leads stock 3
    return r


def test_dense_when_k_covers_every_stock_is_the_correlation_graph_rearranged():
    r, stamps = _returns(), np.arange(0, T, 5)
    graph, index = correlation_graph(r, 40, stamps)
    neighbors, edges, index2 = neighbour_graph(r, 40, stamps, k=S + 3)
    assert neighbors.shape == (len(stamps), S, S) and np.array_equal(index, index2)
    assert np.array_equal(neighbors, np.broadcast_to(np.arange(S), neighbors.shape))
    assert np.array_equal(edges, graph.transpose(0, 2, 3, 1))


def test_each_stock_keeps_itself_and_its_strongest_relations():
    r, stamps = _returns(), np.arange(0, T, 5)
    graph, _ = correlation_graph(r, 40, stamps)
    k = 4
    neighbors, edges, _ = neighbour_graph(r, 40, stamps, k)
    assert neighbors.shape == (len(stamps), S, k) and edges.shape == (len(stamps), S, k, 2)
    assert np.all(np.diff(neighbors, axis=-1) > 0)  # ascending, no stock twice
    for g in range(5, len(stamps)):  # stamps with history
        score = np.maximum(np.abs(graph[g, 0]), np.abs(graph[g, 1]))
        for i in range(S):
            assert i in neighbors[g, i]
            others = [j for j in neighbors[g, i] if j != i]
            rest = [j for j in range(S) if j not in neighbors[g, i]]
            assert min(score[i, others]) >= max(score[i, rest]) - 1e-6
            assert np.array_equal(edges[g, i, :, 0], graph[g, 0, i, neighbors[g, i]])
            assert np.array_equal(edges[g, i, :, 1], graph[g, 1, i, neighbors[g, i]])
    assert 5 in neighbors[-1, 3]  # the leader is among the follower's neighbours


def test_the_graph_at_a_stamp_reads_no_later_bar():
    r, stamps = _returns(), np.arange(0, T, 5)
    later = r.copy()
    later[101:] = np.random.default_rng(9).normal(0, 1e-3, (T - 101, S))
    a = neighbour_graph(r, 40, stamps, 3)
    b = neighbour_graph(later, 40, stamps, 3)
    upto = stamps <= 100
    assert np.array_equal(a[0][upto], b[0][upto]) and np.array_equal(a[1][upto], b[1][upto])
    assert not np.array_equal(a[1][~upto], b[1][~upto])


def _cross_section(k: int) -> CrossSection:
    rng = np.random.default_rng(3)
    r = _returns()
    features = rng.normal(size=(T, S, 4)).astype(np.float32)
    neighbors, edges, index = neighbour_graph(r, 40, np.arange(0, T, 5), k)
    return CrossSection(tuple(f"S{i}" for i in range(S)), np.arange(T).astype("datetime64[m]"), features, r,
                        np.exp(np.cumsum(r, axis=0)), np.ones((T, S), bool), neighbors, edges, index)


def test_windows_are_the_last_rows_up_to_t_with_zeros_before_the_first_bar():
    xs = _cross_section(3)
    obs = Observations(xs, window=6)
    t = torch.tensor([0, 2, 150])
    stocks = torch.tensor([[1, 4], [0, 8], [7, 2]])
    w = obs.windows(t, stocks)
    assert w.shape == (3, 2, 6, 4)
    for b in range(3):
        for n in range(2):
            expected = np.zeros((6, 4), np.float32)
            lo = int(t[b]) - 5
            expected[max(0, -lo):] = xs.features[max(lo, 0): int(t[b]) + 1, int(stocks[b, n])]
            assert np.array_equal(w[b, n].numpy(), expected)
    assert np.shares_memory(obs._features.numpy(), xs.features)  # no copy of the cross-section
    everyone = torch.arange(xs.n_stocks)[None].expand(3, -1)
    assert torch.equal(obs.windows(t), obs.windows(t, everyone))  # whole bars: the same windows, one gather
    assert torch.equal(obs.windows(t[2:]), obs.windows(t[2:], everyone[2:]))  # no bar before the first


def test_neighbours_come_from_the_graph_in_force_at_t():
    xs = _cross_section(3)
    obs = Observations(xs, window=6)
    t, stocks = torch.tensor([12, 199]), torch.tensor([4, 0])
    idx, edges = obs.neighbours(t, stocks)
    for b in range(2):
        g = xs.graph_index[int(t[b])]
        assert np.array_equal(idx[b].numpy(), xs.neighbors[g, int(stocks[b])])
        assert np.array_equal(edges[b].numpy(), xs.edges[g, int(stocks[b])])
    all_idx, all_edges = obs.neighbours_at(t)  # every stock at each bar: what acting asks for
    assert torch.equal(all_idx[1, 0], idx[1]) and torch.equal(all_edges[0, 4], edges[0])
