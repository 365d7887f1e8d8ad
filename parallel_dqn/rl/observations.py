"""Rebuild network inputs from clock indices: replay stores ``t``, not windows."""

from __future__ import annotations

import numpy as np
import torch

from parallel_dqn.data.crosssection import CrossSection


class Observations:
    """Batched views of the cross-section at given clock steps, as torch tensors."""

    def __init__(self, xs: CrossSection, window: int) -> None:
        T, S, F = xs.features.shape
        padded = np.zeros((T + window - 1, S, F), dtype=np.float32)
        padded[window - 1 :] = xs.features
        self._padded = torch.from_numpy(padded)
        self._offsets = torch.arange(window)
        self._graph = torch.from_numpy(xs.graph)
        self._graph_index = torch.from_numpy(xs.graph_index.astype(np.int64))

    def windows(self, t: torch.Tensor) -> torch.Tensor:
        """``[B, S, W, F]``: every stock's last W feature rows up to and including ``t [B]``."""
        idx = t[:, None] + self._offsets[None, :]  # padded row of t is t + W - 1
        return self._padded[idx].permute(0, 2, 1, 3)

    def graphs(self, t: torch.Tensor) -> torch.Tensor:
        """``[B, 2, S, S]``: the correlation graph in force at ``t [B]``."""
        return self._graph[self._graph_index[t]]
