"""AdamW for the parameter server's one flat weight vector.

The server keeps every weight in one flat vector (:func:`parallel_dqn.model.flat.flatten_parameters`),
so its optimizer is a handful of element-wise operations on three vectors. This is the same arithmetic,
operation for operation, as ``torch.optim.AdamW``'s single-tensor path (the one it takes on the CPU), so
the two give bit-identical weights (``tests/test_adamw.py``); it exists because building a
``torch.optim`` optimizer imports ``torch._dynamo`` (seconds, on every start, before rank 0 can answer
the workers' first pull), and a run needs none of it.
"""

from __future__ import annotations

from typing import Any

import torch


class FlatAdamW:
    """Decoupled-weight-decay Adam (Loshchilov & Hutter) over one parameter vector, updated in place."""

    def __init__(
        self, param: torch.Tensor, lr: float, weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
    ) -> None:
        self.param = param
        self.lr, self.weight_decay, self.betas, self.eps = float(lr), float(weight_decay), betas, float(eps)
        self.step_count = 0
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        """One update of ``param`` with ``grad`` (same shape, same device)."""
        beta1, beta2 = self.betas
        self.step_count += 1
        # Decoupled weight decay shrinks the weights before the Adam step, independent of the gradient.
        if self.weight_decay != 0:
            self.param.mul_(1 - self.lr * self.weight_decay)
        # Running means of the gradient and of its square.
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        # Bias-corrected step: early steps are not shrunk towards the zero the moments started from.
        step = float(self.step_count)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = self.lr / bias_correction1
        denom = (self.exp_avg_sq.sqrt() / bias_correction2**0.5).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-step_size)

    def state_dict(self) -> dict[str, Any]:
        """The moments and the step count (tensors and numbers only: a checkpoint holds it as is)."""
        return {"step": self.step_count, "exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s snapshot, or from ``torch.optim.AdamW.state_dict()`` of the one
        flat parameter (checkpoints written before this class)."""
        if "state" in state:  # torch.optim's layout: {"state": {0: {...}}, "param_groups": [...]}
            state = state["state"].get(0, {"step": 0, "exp_avg": torch.zeros_like(self.param),
                                           "exp_avg_sq": torch.zeros_like(self.param)})
        self.step_count = int(state["step"])
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
