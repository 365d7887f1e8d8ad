"""Portfolio meta-policy: per-stock decisions at t -> capital weights at t.

The per-stock agents each choose a position; the meta-policy decides how much
capital each position gets, so the portfolio is built from the decisions that
have been paying off and the agents' actions do not simply add up. It sees, per
stock and bar, only what is known at that bar:

* the agent's chosen position and how much better its Q-value is than flat;
* trailing performance of that stock's decisions (exponentially weighted mean,
  risk-adjusted mean and hit rate of ``position[t-1] * r[t]``), reset at the
  start of every episode.

Magnitudes are ``max_weight * sigmoid(score)``, scaled down together when they
sum above 1: gross exposure <= 1 and |weight| <= max_weight always hold. The
signed weight is magnitude x position. It is trained on realised portfolio
outcomes after each training episode: gradient ascent on the Sharpe ratio of
the net-of-cost portfolio returns of that episode.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from parallel_dqn.config import MetaConfig
from parallel_dqn.market.step import FLAT, POSITIONS
from parallel_dqn.model.adamw import FlatAdamW

N_META_FEATURES = 5
#: decisions (bars x stocks) per block of :func:`decision_features`: its float64 temporaries are 16 MB each
BLOCK_DECISIONS = 1 << 21
#: hidden activations (bars x stocks x hidden) per block of the meta-policy's passes over an episode: rank 0's
#: memory at an episode's end stays about 64 MB per activation tensor whatever the episode's length (a year of
#: 500 stocks of minute bars is 49 M decisions: 6 GB per tensor in one pass)
BLOCK_ACTIVATIONS = 1 << 24


def decision_features(
    q_values: np.ndarray, actions: np.ndarray, log_returns: np.ndarray, halflife: float, return_std: float
) -> np.ndarray:
    """Causal meta-policy inputs ``[T, S, 5]`` for one episode.

    Args:
        q_values: ``[T, S, 3]`` the agents' Q-values at each decision.
        actions: ``[T, S]`` chosen action indices (the position held from t to t+1).
        log_returns: ``[T, S]`` with ``log_returns[t]`` the return *into* bar t.
        halflife: bars of the exponential weighting of past performance.
        return_std: typical 1-bar return size from the training period (a fixed scale).

    A stock's features depend on its own column only, so they are computed a block of stocks at a time
    (:data:`BLOCK_DECISIONS` decisions): the float64 temporaries stay small however long the episode.
    """
    T, S = actions.shape
    feats = np.empty((T, S, N_META_FEATURES), dtype=np.float32)
    step = max(1, BLOCK_DECISIONS // max(T, 1))
    for a in range(0, S, step):
        cols = slice(a, a + step)
        feats[:, cols] = _stock_features(q_values[:, cols], actions[:, cols], log_returns[:, cols], halflife, return_std)
    return feats


def _stock_features(
    q_values: np.ndarray, actions: np.ndarray, log_returns: np.ndarray, halflife: float, return_std: float
) -> np.ndarray:
    """:func:`decision_features` of a block of stocks (columns)."""
    T, S = actions.shape
    pos = POSITIONS[actions]
    chosen = np.take_along_axis(q_values, actions[:, :, None], axis=2)[:, :, 0]
    edge = chosen - q_values[:, :, FLAT]
    realised = np.zeros((T, S))
    realised[1:] = pos[:-1] * log_returns[1:]  # known at t: yesterday's decision times today's return
    hit = np.where(pos[:-1] != 0, (realised[1:] > 0).astype(float), 0.5)
    hit = np.vstack([np.full((1, S), 0.5), hit])
    alpha = 1.0 - 0.5 ** (1.0 / max(halflife, 1.0))
    m1, m2, mh = _ema(realised, alpha), _ema(realised**2, alpha), _ema(hit, alpha, start=0.5)
    scale = np.sqrt(np.maximum(m2, 1e-12))
    sd = max(return_std, 1e-12)
    feats = np.stack([np.abs(pos), np.tanh(edge), m1 / sd, m1 / scale, (mh - 0.5) * 4.0], axis=-1)
    return feats.astype(np.float32)


def _ema(x: np.ndarray, alpha: float, start: float = 0.0) -> np.ndarray:
    out = np.empty_like(x, dtype=float)
    acc = np.full(x.shape[1:], start, dtype=float)
    for t in range(x.shape[0]):
        acc = (1 - alpha) * acc + alpha * x[t]
        out[t] = acc
    return out


class MetaPolicy(nn.Module):
    """Shared per-stock scorer plus a learned per-stock bias -> capped capital weights."""

    def __init__(self, n_stocks: int, cfg: MetaConfig, hidden: int = 32) -> None:
        super().__init__()
        self.cfg = cfg
        self.hidden = hidden
        self.scorer = nn.Sequential(nn.Linear(N_META_FEATURES, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        # Start near equal capital: max_weight * sigmoid(b) = 1 / n_stocks.
        p = min(max(1.0 / (n_stocks * cfg.max_weight), 1e-3), 1 - 1e-3)
        self.stock_bias = nn.Parameter(torch.full((n_stocks,), float(np.log(p / (1 - p)))))

    def forward(self, feats: torch.Tensor, positions: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        """Signed weights ``[T, S]`` from features ``[T, S, 5]`` and positions in {-1, 0, 1}; ``sizes`` ``[T, S]``
        in [0, 1] scale them down after the caps (an ensemble's agreement: the caps still hold)."""
        score = self.scorer(feats)[..., 0] + self.stock_bias
        mag = self.cfg.max_weight * torch.sigmoid(score) * positions.abs()
        gross = mag.sum(dim=-1, keepdim=True)
        mag = mag / torch.clamp(gross, min=1.0)
        return mag * positions if sizes is None else mag * positions * sizes

    @torch.no_grad()
    def weights(self, feats: np.ndarray, actions: np.ndarray, sizes: np.ndarray | None = None) -> np.ndarray:
        """Numpy convenience: signed weights ``[T, S]`` (a block of bars at a time: each row is computed alone)."""
        out = np.empty(actions.shape, dtype=np.float64)
        for rows in self._blocks(*actions.shape):
            size = None if sizes is None else torch.from_numpy(np.asarray(sizes[rows], dtype=np.float32))
            w = self(torch.from_numpy(feats[rows]), torch.from_numpy(POSITIONS[actions[rows]]).float(), size)
            out[rows] = w.numpy()
        return out

    def _blocks(self, T: int, S: int, first: int = 0) -> list[slice]:
        """Row blocks ``[a, b)`` covering ``[first, T)`` of at most :data:`BLOCK_ACTIVATIONS` hidden activations."""
        rows = max(2, BLOCK_ACTIVATIONS // (S * self.hidden))
        return [slice(a, min(a + rows, T)) for a in range(first, T, rows)]

    def fit(
        self, feats: np.ndarray, actions: np.ndarray, log_returns: np.ndarray, cost_bps: float,
        sizes: np.ndarray | None = None,
    ) -> float:
        """Train on one episode's realised outcomes (weights scaled by ``sizes`` as :meth:`forward`); returns the
        final in-sample Sharpe (per step).

        Each epoch is one full-batch step on the episode's Sharpe ratio. An episode longer than one block
        (:data:`BLOCK_ACTIVATIONS`) is passed over in blocks of bars, twice per epoch: the returns first,
        without a graph; then each block again with one, its returns backpropagated with their share of
        the Sharpe ratio's gradient. The sum over blocks is the full-batch gradient, and memory is one block's.
        """
        x = torch.from_numpy(feats)
        size = None if sizes is None else torch.from_numpy(np.asarray(sizes, dtype=np.float32))
        pos = torch.from_numpy(POSITIONS[actions]).float()
        growth = torch.from_numpy(np.expm1(log_returns[1:])).float()  # simple return of step t -> t+1
        params = list(self.parameters())
        # Adam, one per tensor (FlatAdamW without decay is torch's Adam bit for bit, without torch.optim's
        # import of torch._dynamo); fresh for every episode, as before.
        opts = [FlatAdamW(p.data, lr=self.cfg.lr) for p in params]
        T, S = actions.shape
        blocks = self._blocks(T - 1, S)  # blocks of the T - 1 step returns
        sharpe = 0.0
        for _ in range(self.cfg.epochs):
            self.zero_grad(set_to_none=True)
            if len(blocks) == 1:  # one pass with its graph
                ret = portfolio_step_returns(self(x, pos, size), growth, cost_bps)
                objective = ret.mean() / (ret.std() + 1e-8)
                (-objective).backward()
            else:
                objective = self._blocked_backward(blocks, x, pos, size, growth, cost_bps)
            for p, opt in zip(params, opts):
                if p.grad is not None:
                    opt.step(p.grad)
            sharpe = float(objective.detach())
        return sharpe

    def _blocked_backward(
        self, blocks: list[slice], x: torch.Tensor, pos: torch.Tensor, size: torch.Tensor | None,
        growth: torch.Tensor, cost_bps: float,
    ) -> torch.Tensor:
        """The Sharpe ratio of the step returns and its gradient in the parameters' ``.grad``, one block of
        bars at a time. A step's return needs the weights of its bar and of the bar before (the trade's cost),
        so each block's pass starts one bar early."""

        def block_returns(rows: slice) -> torch.Tensor:
            lo = max(rows.start - 1, 0)  # the bar before the block's first: its weights price the first trade
            w = self(x[lo : rows.stop], pos[lo : rows.stop], None if size is None else size[lo : rows.stop])
            held, before = (w[1:], w[:-1]) if rows.start > 0 else (w, torch.cat([torch.zeros_like(w[:1]), w[:-1]]))
            return step_returns(held, before, growth[rows], cost_bps)

        # Pass 1: every step's return, no graph; the Sharpe ratio's gradient in each of them.
        with torch.no_grad():
            ret = torch.cat([block_returns(rows) for rows in blocks])
        ret.requires_grad_(True)
        objective = ret.mean() / (ret.std() + 1e-8)
        (-objective).backward()
        # Pass 2: each block again with its graph, its returns backpropagated with their share of that gradient.
        for rows in blocks:
            block_returns(rows).backward(ret.grad[rows])
        return objective


def portfolio_step_returns(weights: torch.Tensor, growth: torch.Tensor, cost_bps: float) -> torch.Tensor:
    """Net simple returns of the steps t -> t+1 (``T-1`` of them), differentiable.

    ``growth[t] = exp(r[t+1]) - 1``; the cost is charged on the change of target
    weights at t. A training objective: the accounting of record,
    :func:`parallel_dqn.evaluation.portfolio.portfolio_returns`, charges the trade
    against the drifted holding, which differs from this by second-order terms.
    """
    return step_returns(weights[:-1], torch.cat([torch.zeros_like(weights[:1]), weights[:-2]], dim=0), growth, cost_bps)


def step_returns(held: torch.Tensor, before: torch.Tensor, growth: torch.Tensor, cost_bps: float) -> torch.Tensor:
    """Net simple returns of steps with weights ``held [n, S]`` (the step's) and ``before [n, S]`` (the step
    before's: what the trade changes) and their ``growth [n, S]``: :func:`portfolio_step_returns`' rule."""
    return (held * growth).sum(-1) - cost_bps * 1e-4 * (held - before).abs().sum(-1)
