"""The Q-network: stock encoder -> cross-stock attention -> dueling Q head.

For each stock the encoder turns the last ``window`` feature rows into an
embedding; the cross-stock attention module lets each stock attend over its
neighbours' embeddings at the same bar (its k most related stocks in the
trailing correlation graph, itself included), with a learned bias from that
graph's edges; the dueling head maps (own embedding, attention context, own
position) to Q-values of {short, flat, long}. The weights are shared across
stocks, plus a learned identity vector per stock, so one network serves every
worker whatever its shard.
"""

from __future__ import annotations

import torch
from torch import nn

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
    """Multi-head attention of each asking stock over its neighbours at one bar.

    The attention logit of stock i over its neighbour j gets an additive bias
    ``sum_c a[h, c] * edge[i, j, c]`` from the correlation graph (channel 0:
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
        self, own: torch.Tensor, neighbours: torch.Tensor, edges: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context for the asking stocks.

        Args:
            own: ``[B, K, D]`` embeddings of the K asking stocks (the queries).
            neighbours: ``[B, K, k, D]`` each asking stock's k neighbours' embeddings; or, with ``index``,
                ``[B, N, D]`` embeddings that ``index [B, K, k]`` picks them from (keys and values are then
                projected once per stock, not once per pair: acting over every stock at a bar).
            edges: ``[B, K, k, C]`` graph channels of each (asking stock, neighbour) pair.
        Returns:
            context ``[B, K, D]`` and attention weights ``[B, H, K, k]``.
        """
        B, K, D = own.shape
        H, hd = self.heads, self.head_dim
        if index is None and neighbours.dim() == 3:
            return self._dense(own, neighbours, edges)
        keys, values = self.key(neighbours), self.value(neighbours)
        if index is not None:  # [B, N, D] -> [B, K, k, D]
            rows = torch.arange(B, device=index.device)[:, None, None]
            keys, values = keys[rows, index], values[rows, index]
        k = keys.shape[2]
        q = self.query(own).view(B, K, H, hd)
        keys, values = keys.view(B, K, k, H, hd), values.view(B, K, k, H, hd)
        # broadcast products, not einsum: the batches are many and small, where einsum's copies cost the most
        bias = edges @ self.graph_bias.T  # [B, K, k, H]
        logits = (q[:, :, None] * keys).sum(-1) / hd**0.5 + bias  # [B, K, k, H]
        weights = torch.softmax(logits, dim=2)
        ctx = (weights[..., None] * values).sum(2).reshape(B, K, D)
        return self.out(ctx), weights.permute(0, 3, 1, 2)

    def _dense(
        self, own: torch.Tensor, everyone: torch.Tensor, edges: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` where every asking stock attends over every stock ``everyone [B, N, D]`` in their
        order (the dense graph: S <= k): batched matrix products instead of gathering each pair's key."""
        B, K, D = own.shape
        N, H, hd = everyone.shape[1], self.heads, self.head_dim
        q = self.query(own).view(B, K, H, hd).permute(0, 2, 3, 1)  # [B, H, hd, K]
        keys = self.key(everyone).view(B, N, H, hd).transpose(1, 2)  # [B, H, N, hd]
        values = self.value(everyone).view(B, N, H, hd).transpose(1, 2)  # [B, H, N, hd]
        bias = (edges @ self.graph_bias.T).permute(0, 3, 2, 1)  # [B, H, N, K]
        # the logits key-major [B, H, N, K], normalised over the keys (dim -2): torch's softmax over the last
        # dimension is slow when that dimension is a few stocks long (about 3x at 5), over an inner one it is not
        weights = torch.softmax(keys @ q / hd**0.5 + bias, dim=-2).transpose(-1, -2)  # [B, H, K, N]
        ctx = (weights @ values).transpose(1, 2).reshape(B, K, D)
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


class EnsembleHead(nn.Module):
    """K dueling heads on one input vector: ``[..., in] -> [..., K, 3]`` (the members of an ensemble).

    Each head starts from its own random weights and has its own target head (the target network is a copy
    of the whole network), so the members differ by initialisation and by the replay samples they learn from
    (:mod:`parallel_dqn.rl.bootstrap`) while sharing the encoder and the attention.
    """

    def __init__(self, members: int, in_dim: int, hidden: int, n_actions: int = N_ACTIONS) -> None:
        super().__init__()
        self.members = nn.ModuleList(DuelingHead(in_dim, hidden, n_actions) for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(x) for head in self.members], dim=-2)


class QNetwork(nn.Module):
    """Q-values of stocks from their own window and their neighbours' windows at a bar.

    With ``members`` > 1 the dueling head is an :class:`EnsembleHead`: every Q-value output gains a member
    axis before the action axis (``[..., K, 3]``); the encoder and attention run once for all members.
    """

    def __init__(self, n_stocks: int, n_features: int, window: int, cfg: ModelConfig, members: int = 1) -> None:
        super().__init__()
        self.n_stocks = n_stocks
        self.encoder = StockEncoder(window, n_features, cfg.hidden, cfg.embed_dim)
        self.stock_embedding = nn.Embedding(n_stocks, cfg.embed_dim) if cfg.stock_embeddings else None
        self.attention = CrossStockAttention(cfg.embed_dim, cfg.heads) if cfg.cross_attention else None
        in_dim = 2 * cfg.embed_dim + N_ACTIONS
        self.members = members
        self.head = DuelingHead(in_dim, cfg.hidden) if members == 1 else EnsembleHead(members, in_dim, cfg.hidden)
        self.embed_dim = cfg.embed_dim
        # the one-hot code of each position (F.one_hot checks its input's range first: two more calls per pass);
        # not saved: it is the identity
        self.register_buffer("position_codes", torch.eye(N_ACTIONS), persistent=False)

    def forward(
        self,
        windows: torch.Tensor,
        stocks: torch.Tensor,
        own_slot: torch.Tensor,
        edges: torch.Tensor,
        positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Q-values ``[B, 3]`` of one asking stock per sample (learning: a batch of transitions).

        ``windows [B, k, W, F]`` are the windows of the sample's stock and its neighbours ``stocks [B, k]``,
        ``own_slot [B]`` the neighbour slot holding the asking stock itself, ``edges [B, k, C]`` the graph
        channels of the pairs, ``positions [B]`` the action index held (0 short, 1 flat, 2 long). Also returns
        the attention weights ``[B, H, 1, k]`` (None without attention). Only these k windows are encoded.
        """
        return self.from_embeddings(self.embed(windows, stocks), own_slot, edges, positions)

    def from_embeddings(
        self, emb: torch.Tensor, own_slot: torch.Tensor, edges: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`forward` from the neighbours' embeddings ``[B, k, D]`` (:meth:`embed`) instead of their windows:
        learning on whole bars embeds each stock of a bar once for every sample that needs it."""
        own = emb[torch.arange(len(emb), device=emb.device), own_slot][:, None]
        q, weights = self.decide(own, emb[:, None], edges[:, None], positions[:, None])
        return q[:, 0], weights

    def embed(self, windows: torch.Tensor, stocks: torch.Tensor | None) -> torch.Tensor:
        """Embeddings ``[..., D]`` of stocks ``[...]`` from their windows ``[..., W, F]``: the encoded window
        plus the stock's identity vector (``stocks`` None: the windows are every stock's, ``[..., S, W, F]``)."""
        emb = self.encoder(windows)
        if self.stock_embedding is not None:
            emb = emb + (self.stock_embedding.weight if stocks is None else self.stock_embedding(stocks.long()))
        return emb

    def decide(
        self,
        own: torch.Tensor,
        neighbours: torch.Tensor,
        edges: torch.Tensor,
        positions: torch.Tensor,
        index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Q-values ``[B, K, 3]`` of K asking stocks from their embeddings ``own [B, K, D]``, their neighbours'
        (see :meth:`CrossStockAttention.forward` for ``neighbours``, ``edges`` and ``index``) and the positions
        ``[B, K]`` they hold; and the attention weights ``[B, H, K, k]`` (None without attention).

        A stock's Q-values depend on its own position only, and every operation works row by row, so asking
        for all stocks at once gives each stock what asking for it alone would.
        """
        ctx, weights = self.context(own, neighbours, edges, index)
        return self.q_head(own, ctx, positions), weights

    def q_head(self, own: torch.Tensor, ctx: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Q-values ``[..., 3]`` from a stock's embedding and context ``[..., D]`` and the position it holds."""
        pos = self.position_codes[positions.long()].to(own.dtype)  # one-hot rows: a lookup, no range check
        return self.head(torch.cat([own, ctx, pos], dim=-1))

    def q_every_position(self, own: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """Q-values ``[..., 3, 3]`` (position held, action) from a stock's embedding and context ``[..., D]``
        for each position it could hold.

        Acting asks this once for many bars ahead: the position is the only input an action changes, so the
        Q-values of every bar until the parameters change can be computed in one pass and looked up per step.
        """
        positions = torch.arange(N_ACTIONS, device=own.device).expand(*own.shape[:-1], N_ACTIONS)
        expand = (*own.shape[:-1], N_ACTIONS, own.shape[-1])
        return self.q_head(own[..., None, :].expand(expand), ctx[..., None, :].expand(expand), positions)

    def context(
        self, own: torch.Tensor, neighbours: torch.Tensor, edges: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The cross-stock context ``[B, K, D]`` of K asking stocks (zeros without attention) and the
        attention weights ``[B, H, K, k]`` (None without attention)."""
        if self.attention is None:
            return torch.zeros_like(own), None
        return self.attention(own, neighbours, edges, index)
