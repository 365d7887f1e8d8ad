"""Numeric precision of a worker's learning step (``optim.precision``): fp32, bf16 autocast, fp16 with loss scaling.

* ``fp32`` (the default): no autocast, no scaling; the arithmetic of before the setting.
* ``bf16``: the forward passes of a learning step run under ``torch.autocast(device, bfloat16)`` (CPU or CUDA);
  the loss and everything after it are fp32, and the gradient lands in the fp32 parameters' buffer. bf16 has
  fp32's range, so nothing overflows and no scaling is needed.
* ``fp16``: CUDA only (CPU autocast has no fp16 kernels worth having), with :class:`LossScaler`: the loss is
  multiplied by a scale before the backward pass, the gradient divided by it after, and a gradient with an inf
  or nan is not pushed (the step is skipped and counted) while the scale halves; it doubles after
  ``growth_interval`` good steps: ``torch.amp.GradScaler``'s rule, kept on the worker because the optimizer it
  would wrap lives on rank 0, and the gradient goes there unscaled.

Acting stays fp32 in every precision: decisions, and the acting passes shared by the workers of a process, do
not depend on the setting.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from parallel_dqn.errors import UserError


def check_precision(precision: str, device: torch.device) -> None:
    """fp16 where there is no CUDA device is refused in one line (``run.device = auto`` on a machine without one)."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"optim.precision = fp16 needs a CUDA GPU (this run is on {device.type})",
                        "use optim.precision = bf16 on a CPU, or run.device = cuda on a GPU")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the forward passes of a learning step run in (fp32: none at all)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class LossScaler:
    """Dynamic loss scaling with ``torch.amp.GradScaler``'s defaults (scale 2^16, x2 after 2000 good steps,
    x0.5 and a skipped step on an inf or nan)."""

    def __init__(self, scale: float = 2.0**16, growth_interval: int = 2000) -> None:
        self.scale = float(scale)
        self.growth_interval = growth_interval
        self.good_steps = 0  # since the last change of scale
        self.skipped = 0  # steps skipped for an inf or nan, over the run

    def unscale_(self, grad: torch.Tensor) -> bool:
        """Divide ``grad`` by the scale in place; whether every value is finite (the step may be taken)."""
        grad.mul_(1.0 / self.scale)
        return bool(torch.isfinite(grad).all())

    def update(self, finite: bool) -> None:
        """After a step: halve the scale (and count the skip) on an overflow, double it after enough good steps."""
        if not finite:
            self.scale *= 0.5
            self.good_steps = 0
            self.skipped += 1
            return
        self.good_steps += 1
        if self.good_steps == self.growth_interval:
            self.scale *= 2.0
            self.good_steps = 0

    def state(self) -> np.ndarray:
        return np.array([self.scale, self.good_steps, self.skipped], dtype=np.float64)

    def load(self, state: np.ndarray) -> None:
        self.scale, self.good_steps, self.skipped = float(state[0]), int(state[1]), int(state[2])
