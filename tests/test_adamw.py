"""The server's flat AdamW is torch's AdamW, bit for bit, and checkpoints through its state."""

from __future__ import annotations

import pytest
import torch

from parallel_dqn.model.adamw import FlatAdamW


def _grads(n: int, steps: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(n, generator=g) * (0.1 + i) for i in range(steps)]


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_the_same_weights_as_torch_adamw_bit_for_bit(weight_decay):
    start = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    ours, theirs = start.clone(), torch.nn.Parameter(start.clone())
    opt = FlatAdamW(ours, lr=5e-4, weight_decay=weight_decay)
    ref = torch.optim.AdamW([theirs], lr=5e-4, weight_decay=weight_decay)
    for grad in _grads(1000, 25):
        opt.step(grad)
        theirs.grad = grad.clone()
        ref.step()
        assert torch.equal(ours, theirs.detach())
    assert not torch.equal(ours, start)


def test_state_round_trip_and_a_torch_checkpoint_continue_exactly():
    grads = _grads(50, 10)
    start = torch.randn(50, generator=torch.Generator().manual_seed(2))
    straight = start.clone()
    opt = FlatAdamW(straight, lr=1e-3)
    for g in grads:
        opt.step(g)
    # from our own state after 4 steps
    resumed = start.clone()
    first = FlatAdamW(resumed, lr=1e-3)
    for g in grads[:4]:
        first.step(g)
    second = FlatAdamW(resumed, lr=1e-3)
    second.load_state_dict(first.state_dict())
    for g in grads[4:]:
        second.step(g)
    assert torch.equal(resumed, straight)
    # from torch.optim.AdamW's state after 4 steps (a checkpoint written before FlatAdamW)
    param = torch.nn.Parameter(start.clone())
    ref = torch.optim.AdamW([param], lr=1e-3, weight_decay=0.0)
    for g in grads[:4]:
        param.grad = g.clone()
        ref.step()
    weights = param.detach().clone()
    third = FlatAdamW(weights, lr=1e-3)
    third.load_state_dict(ref.state_dict())
    for g in grads[4:]:
        third.step(g)
    assert torch.equal(weights, straight)
