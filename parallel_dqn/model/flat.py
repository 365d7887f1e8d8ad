"""Parameters and gradients as one flat float32 vector: the unit every message carries."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def get_flat_params(module: nn.Module) -> np.ndarray:
    """All parameters, concatenated in ``module.parameters()`` order (a copy)."""
    with torch.no_grad():
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).numpy().astype(np.float32)


def set_flat_params(module: nn.Module, flat: np.ndarray) -> None:
    """Overwrite every parameter from a flat vector made by :func:`get_flat_params`."""
    _scatter(module, torch.from_numpy(np.asarray(flat, dtype=np.float32)), grads=False)


def get_flat_grads(module: nn.Module) -> np.ndarray:
    """All gradients as one flat vector (zeros where a parameter has no gradient)."""
    parts = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in module.parameters()]
    return torch.cat(parts).numpy().astype(np.float32)


def set_flat_grads(module: nn.Module, flat: np.ndarray) -> None:
    """Set every parameter's ``.grad`` from a flat vector (for the server's optimizer)."""
    _scatter(module, torch.from_numpy(np.asarray(flat, dtype=np.float32)), grads=True)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _scatter(module: nn.Module, flat: torch.Tensor, grads: bool) -> None:
    if flat.numel() != n_params(module):
        raise ValueError(f"flat vector has {flat.numel()} values, the module {n_params(module)}")
    offset = 0
    with torch.no_grad():
        for p in module.parameters():
            chunk = flat[offset : offset + p.numel()].view_as(p)
            if grads:
                p.grad = chunk.clone()
            else:
                p.copy_(chunk)
            offset += p.numel()
