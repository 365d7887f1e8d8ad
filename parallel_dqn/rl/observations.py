"""Rebuild network inputs from clock indices: replay stores ``t``, not windows."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from parallel_dqn.data.crosssection import CrossSection


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` as a tensor on ``device``; on the CPU it shares the array's memory (a read-only memory map
    included: it is only ever read), elsewhere it is copied there once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(np.asarray(array))
    return tensor.to(device)


class Observations:
    """Batched views of the cross-section at given clock steps, as torch tensors.

    Nothing is copied on the CPU: a window is gathered from the features when it is asked for (rows before
    the first bar are zero), so the process holds the cross-section once, however many workers it hosts.
    """

    def __init__(self, xs: CrossSection, window: int, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.window = window
        self.n_stocks = xs.n_stocks
        self._features = _tensor(xs.features, self.device)  # [T, S, F]
        self._offsets = torch.arange(-window + 1, 1, device=self.device)  # oldest row first
        self._neighbors = _tensor(xs.neighbors, self.device).long()  # [G, S, k]
        self._edges = _tensor(xs.edges, self.device)  # [G, S, k, C]
        self._graph_index = _tensor(xs.graph_index, self.device).long()  # [T]

    def windows(self, t: torch.Tensor, stocks: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, K, W, F]``: stocks ``[B, K]``'s last W feature rows up to and including ``t [B]``
        (``stocks`` None: every stock, K = S)."""
        rows = t.to(self.device)[:, None] + self._offsets[None, :]  # [B, W]
        early = bool((rows < 0).any())
        if stocks is None:  # whole bars: W rows of the features each, one gather
            picked = self._features[rows.clamp(min=0)].permute(0, 2, 1, 3)  # [B, S, W, F]
        else:
            picked = self._features[rows.clamp(min=0)[:, None, :], stocks.to(self.device)[:, :, None]]
        if not early:
            return picked
        before_start = (rows < 0)[:, None, :, None]
        return torch.where(before_start, torch.zeros((), dtype=picked.dtype, device=self.device), picked)

    def neighbours(self, t: torch.Tensor, stocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The graph in force at ``t [B]`` for stocks ``[B]``: neighbour indices ``[B, k]`` and edges ``[B, k, C]``."""
        g = self._graph_index[t.to(self.device)]
        s = stocks.to(self.device)
        return self._neighbors[g, s], self._edges[g, s]

    def neighbours_at(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every stock's neighbour indices ``[B, S, k]`` and edges ``[B, S, k, C]`` at clocks ``t [B]`` (acting)."""
        g = self._graph_index[t.to(self.device)]
        return self._neighbors[g], self._edges[g]
