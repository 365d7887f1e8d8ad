"""Parameters and gradients as one flat float32 vector: the unit every message carries."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def get_flat_params(module: nn.Module) -> np.ndarray:
    """All parameters, concatenated in ``module.parameters()`` order (a copy)."""
    with torch.no_grad():
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).cpu().numpy().astype(np.float32)


def set_flat_params(module: nn.Module, flat: np.ndarray) -> None:
    """Overwrite every parameter from a flat vector made by :func:`get_flat_params`."""
    _scatter(module, torch.from_numpy(np.asarray(flat, dtype=np.float32)), grads=False)


def get_flat_grads(module: nn.Module) -> np.ndarray:
    """All gradients as one flat vector (zeros where a parameter has no gradient)."""
    parts = [
        p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device) for p in module.parameters()
    ]
    return torch.cat(parts).cpu().numpy()  # a new float32 array already (on the CPU, .cpu() copies nothing)


def flatten_parameters(module: nn.Module) -> torch.nn.Parameter:
    """Re-home every parameter of ``module`` in one contiguous float32 vector and return it as a Parameter.

    The module's parameters become views of it (same values, :func:`get_flat_params` order), so an
    optimizer over the one returned vector updates the whole module in a few large operations instead of
    one small operation per tensor, and reading or writing all parameters is one copy.
    """
    params = list(module.parameters())
    flat = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]).to(torch.float32))
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.data = flat.data[offset : offset + n].view_as(p)
            offset += n
    return flat


def flat_gradient_buffer(module: nn.Module) -> torch.Tensor:
    """One zeroed float32 vector whose slices become the parameters' ``.grad`` (:func:`get_flat_params` order).

    Backward accumulates into those slices in place, so after ``buffer.zero_()`` and a backward pass the
    whole gradient is this one vector: clipped with one norm and sent with one copy, no per-tensor loop.
    Zero it with ``buffer.zero_()``, never ``zero_grad(set_to_none=True)`` (that would detach the slices).
    """
    params = list(module.parameters())
    buffer = torch.zeros(sum(p.numel() for p in params), dtype=torch.float32, device=params[0].device)
    offset = 0
    for p in params:
        p.grad = buffer[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return buffer


def clip_by_norm_(flat: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale ``flat`` in place so its 2-norm is at most ``max_norm`` (what ``clip_grad_norm_`` does to all
    gradients together); returns the norm before clipping."""
    norm = torch.linalg.vector_norm(flat)
    flat.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


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
