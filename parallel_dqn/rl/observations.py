"""Rebuild network inputs from clock indices: replay stores ``t``, not windows."""

from __future__ import annotations

import numpy as np
import torch

from parallel_dqn.data.crosssection import CrossSection


class Observations:
    """Batched views of the cross-section at given clock steps, as torch tensors."""

    def __init__(self, xs: CrossSection, window: int, device: torch.device | str = "cpu") -> None:
        """The arrays are moved to ``device`` once (on the CPU they are shared with ``xs``, not copied)."""
        T, S, F = xs.features.shape
        padded = np.zeros((T + window - 1, S, F), dtype=np.float32)
        padded[window - 1 :] = xs.features
        self.device = torch.device(device)
        self._padded = torch.from_numpy(padded).to(self.device)
        self._offsets = torch.arange(window, device=self.device)
        self._graph = torch.from_numpy(xs.graph).to(self.device)
        self._graph_index = torch.from_numpy(xs.graph_index.astype(np.int64)).to(self.device)

    def windows(self, t: torch.Tensor) -> torch.Tensor:
        """``[B, S, W, F]``: every stock's last W feature rows up to and including ``t [B]``."""
        idx = t.to(self.device)[:, None] + self._offsets[None, :]  # padded row of t is t + W - 1
        return self._padded[idx].permute(0, 2, 1, 3)

    def graphs(self, t: torch.Tensor) -> torch.Tensor:
        """``[B, 2, S, S]``: the correlation graph in force at ``t [B]``."""
        return self._graph[self._graph_index[t.to(self.device)]]
