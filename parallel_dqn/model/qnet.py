"""The Q-network: stock encoder -> cross-stock attention -> dueling Q head.

For each stock the encoder turns the last ``window`` feature rows into an
embedding; the cross-stock attention module lets each stock attend over every
stock's embedding at the same bar, with a learned bias from the rolling
correlation graph; the dueling head maps (own embedding, attention context, own
position) to Q-values of {short, flat, long}. The weights are shared across
stocks, plus a learned identity vector per stock, so one network serves every
worker whatever its shard.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from parallel_dqn.config import ModelConfig
from parallel_dqn.market.step import N_ACTIONS


class StockEncoder(nn.Module):
    """MLP over a stock's flattened feature window: ``[..., W, F] -> [..., D]``."""

    def __init__(self, window: int, n_features: int, hidden: int, embed_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(start_dim=-2),
            nn.Linear(window * n_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, embed_dim),
            nn.ReLU(),
        )

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.net(windows)


class CrossStockAttention(nn.Module):
    """Multi-head attention of selected stocks over all stocks at one bar.

    The attention logit of stock i over stock j gets an additive bias
    ``sum_c a[h, c] * graph[c, i, j]`` from the correlation graph (channel 0:
    same-bar correlation, channel 1: j's previous return vs i's return), with
    ``a`` learned per head. The weights are returned so they can be saved and
    shown: they say which stocks inform which.
    """

    def __init__(self, embed_dim: int, heads: int, graph_channels: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = embed_dim // heads
        self.query = nn.Linear(embed_dim, embed_dim)
        self.key = nn.Linear(embed_dim, embed_dim)
        self.value = nn.Linear(embed_dim, embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)
        self.graph_bias = nn.Parameter(torch.zeros(heads, graph_channels))

    def forward(
        self, emb: torch.Tensor, graph: torch.Tensor, select: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context for the selected stocks.

        Args:
            emb: ``[B, S, D]`` embeddings of all stocks.
            graph: ``[B, C, S, S]`` correlation graph rows.
            select: ``[B, K]`` indices of the stocks that ask (the queries).
        Returns:
            context ``[B, K, D]`` and attention weights ``[B, H, K, S]``.
        """
        B, S, D = emb.shape
        K = select.shape[1]
        H, hd = self.heads, self.head_dim
        q_in = torch.gather(emb, 1, select[:, :, None].expand(B, K, D))
        q = self.query(q_in).view(B, K, H, hd).transpose(1, 2)  # [B,H,K,hd]
        k = self.key(emb).view(B, S, H, hd).transpose(1, 2)  # [B,H,S,hd]
        v = self.value(emb).view(B, S, H, hd).transpose(1, 2)
        g_rows = torch.gather(graph, 2, select[:, None, :, None].expand(B, graph.shape[1], K, S))  # [B,C,K,S]
        bias = torch.einsum("hc,bcks->bhks", self.graph_bias, g_rows)
        logits = q @ k.transpose(-1, -2) / hd**0.5 + bias
        weights = torch.softmax(logits, dim=-1)
        ctx = (weights @ v).transpose(1, 2).reshape(B, K, D)
        return self.out(ctx), weights


class DuelingHead(nn.Module):
    """``Q = V + A - mean(A)`` from one stock's input vector."""

    def __init__(self, in_dim: int, hidden: int, n_actions: int = N_ACTIONS) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.value = nn.Linear(hidden, 1)
        self.advantage = nn.Linear(hidden, n_actions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        a = self.advantage(h)
        return self.value(h) + a - a.mean(dim=-1, keepdim=True)


class QNetwork(nn.Module):
    """Q-values of the selected stocks given the whole cross-section at a bar."""

    def __init__(self, n_stocks: int, n_features: int, window: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_stocks = n_stocks
        self.encoder = StockEncoder(window, n_features, cfg.hidden, cfg.embed_dim)
        self.stock_embedding = nn.Embedding(n_stocks, cfg.embed_dim) if cfg.stock_embeddings else None
        self.attention = CrossStockAttention(cfg.embed_dim, cfg.heads) if cfg.cross_attention else None
        self.head = DuelingHead(2 * cfg.embed_dim + N_ACTIONS, cfg.hidden)
        self.embed_dim = cfg.embed_dim

    def forward(
        self,
        windows: torch.Tensor,
        graph: torch.Tensor,
        select: torch.Tensor,
        positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Q-values ``[B, K, 3]`` for stocks ``select [B, K]`` holding ``positions [B, K]``.

        ``windows`` is ``[B, S, W, F]`` (every stock's window at the bar), ``graph``
        ``[B, 2, S, S]``; ``positions`` are action indices (0 short, 1 flat, 2 long).
        Also returns the attention weights ``[B, H, K, S]`` (None without attention).
        """
        return self.decide(self.embed(windows), graph, select, positions)

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        """Every stock's embedding ``[B, S, D]`` at the bar: its window encoded, plus its identity vector.

        It does not depend on which stocks ask, so workers holding the same parameters can share it.
        """
        emb = self.encoder(windows)
        if self.stock_embedding is not None:
            emb = emb + self.stock_embedding.weight[None]
        return emb

    def decide(
        self, emb: torch.Tensor, graph: torch.Tensor, select: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Q-values and attention weights of the ``select``ed stocks from every stock's embedding (see forward)."""
        own = torch.gather(emb, 1, select[:, :, None].expand(-1, -1, emb.shape[-1]))
        if self.attention is not None:
            ctx, weights = self.attention(emb, graph, select)
        else:
            ctx, weights = torch.zeros_like(own), None
        pos = F.one_hot(positions.long(), N_ACTIONS).to(own.dtype)
        return self.head(torch.cat([own, ctx, pos], dim=-1)), weights
