"""A worker's learning step under issue 12's settings: replay ratio, gradient accumulation, mixed precision.

* the cadence of a replay ratio: fractions average out exactly, the default is one gradient per ``train_freq``;
* a gradient over ``grad_accum`` micro-batches equals the gradient of their concatenation (uniform and prioritized);
* bf16 autocast really runs in bf16 and gives finite gradients close to fp32's; fp16 is refused on a CPU in one
  line; the loss scaler halves and skips on an overflow and grows after enough good steps. The fp16 CUDA path
  itself cannot run here (no GPU in CI): it is code-reviewed only.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from parallel_dqn.comm.inprocess import InProcessTransport
from parallel_dqn.data.store import open_store
from parallel_dqn.errors import UserError
from parallel_dqn.model.precision import LossScaler, check_precision
from parallel_dqn.rl.replay import ReplaySample
from parallel_dqn.rl.schedules import GradientCadence
from parallel_dqn.training.driver import LocalShard, build_cross_section
from parallel_dqn.training.plan import plan_training
from parallel_dqn.training.worker import ActingValues, Worker
from tests.helpers import make_market, run_cli, tiny_config, user_error


# ---- replay ratio ------------------------------------------------------------------------------------
def test_the_default_cadence_is_one_gradient_per_opportunity():
    cadence = GradientCadence(0.0, batch_size=32, train_freq=8)
    assert [cadence.pushes(k) for k in range(1, 50)] == [1] * 49
    assert GradientCadence(4.0, 32, 8).per_opportunity == 1  # ratio 4 = 32 / 8: the same


@pytest.mark.parametrize("ratio, accum", [(1.3, 1), (0.7, 3), (6.0, 1), (2.5, 2), (0.0, 4)])
def test_a_ratio_averages_out_exactly_in_samples_per_transition(ratio, accum):
    batch, freq = 16, 8
    cadence = GradientCadence(ratio, batch, freq, accum)
    pushes = np.array([cadence.pushes(k) for k in range(1, 2001)])
    assert pushes.min() >= 0 and pushes.max() - pushes.min() <= math.ceil(cadence.per_opportunity)
    want = Fraction(repr(ratio)) if ratio else Fraction(batch, freq)
    for k in (10, 37, 400, 2000):  # samples per transition after k opportunities, never more than a push behind
        samples = int(pushes[:k].sum()) * accum * batch
        assert want * k * freq - accum * batch < samples <= want * k * freq


# ---- a worker ----------------------------------------------------------------------------------------
class Capture:
    """A transport that keeps the pushed gradients."""

    def __init__(self) -> None:
        self.pushed = []

    def push_gradient(self, msg) -> None:
        self.pushed.append(msg)

    def send_decisions(self, block) -> None:
        """Acting's records: not needed here."""


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("step_market"))


def make_worker(market: Path, tmp: Path, **settings) -> Worker:
    cfg = tiny_config(market, tmp / "out", **{"data.cache": "off", "model.neighbors": 2, "dist.workers": 0, **settings})
    store = open_store(str(market))
    plan = plan_training(cfg, store)
    shards = [LocalShard(i, s) for i, s in enumerate(plan.shards)]
    xs, _ = build_cross_section(shards, plan, store, InProcessTransport(endpoint=None), cfg)  # type: ignore[arg-type]
    torch.manual_seed(0)
    w = Worker(0, shards[0].stocks, cfg, xs, Capture(), reward_scale=100.0, total_train_steps=1000)  # type: ignore[arg-type]
    # stand-in parameters (a pull would bring the server's): random, and a target that differs from the online net
    w._online.copy_(0.1 * torch.randn_like(w._online))
    w._target.copy_(w._online + 0.05 * torch.randn_like(w._online))
    w.begin_episode(1, "train", (0, 150))
    rng = np.random.default_rng(1)
    for t in range(10, 140):  # a replay of real transitions: random positions, the market's rewards
        q = rng.normal(size=(len(xs.symbols), 3, 3))
        w.act(t, ActingValues(q, np.zeros((len(xs.symbols), 1), dtype=np.int64), None))
    w._records.clear()
    return w


def scripted(w: Worker, samples: list[ReplaySample]) -> None:
    """Make ``w``'s replay hand out ``samples`` in turn."""
    it = iter(samples)
    w.replay.sample = lambda *args, **kwargs: next(it)  # type: ignore[method-assign]


def concatenated(samples: list[ReplaySample]) -> ReplaySample:
    return ReplaySample(*(np.concatenate(f) for f in zip(*samples)))


@pytest.mark.parametrize("prioritized", [False, True])
def test_accumulated_micro_batches_give_the_gradient_of_their_concatenation(market, tmp_path, prioritized):
    settings = {"replay.prioritized": prioritized, "dqn.grad_clip": 1e9}
    w = make_worker(market, tmp_path, **settings)
    if prioritized:  # priorities that differ, so that importance weights do
        w.replay.update_priorities(np.arange(len(w.replay)), np.random.default_rng(2).exponential(size=len(w.replay)))
    draw = w.replay.sample
    samples = [draw(w.batch_size, group=len(w.stocks)) for _ in range(3)]
    if prioritized:
        assert len({float(x) for s in samples for x in s.weights}) > 1  # real importance weights
    w.cfg.optim.grad_accum = 3
    scripted(w, samples)
    w._push_gradient()
    w.cfg.optim.grad_accum = 1
    scripted(w, [concatenated(samples)])
    w._push_gradient()
    accumulated, whole = w.transport.pushed
    assert np.abs(whole.grad).max() > 1e-4  # a real gradient
    np.testing.assert_allclose(accumulated.grad, whole.grad, rtol=1e-4, atol=1e-6 * np.abs(whole.grad).max())
    assert accumulated.loss == pytest.approx(whole.loss, rel=1e-5)
    assert accumulated.q_mean == pytest.approx(whole.q_mean, rel=1e-5)
    assert w.grad_steps == 2  # one push each
    # and the accumulation differs from any one micro-batch alone (the test can fail)
    scripted(w, samples[:1])
    w._push_gradient()
    assert not np.allclose(w.transport.pushed[-1].grad, whole.grad, rtol=1e-3)


def test_a_worker_pushes_what_the_ratio_and_accumulation_ask(market, tmp_path):
    w = make_worker(market, tmp_path, **{"replay.ratio": 1.0, "optim.grad_accum": 2, "dqn.learning_starts": 0})
    cadence = GradientCadence(1.0, w.cfg.dqn.batch_size, w.cfg.dqn.train_freq, 2)
    draws = []
    sample = w.replay.sample
    w.replay.sample = lambda *a, **k: draws.append(1) or sample(*a, **k)  # type: ignore[method-assign]
    pushed = 0
    for step in range(8, 8 * 40 + 1, 8):
        w.train_steps = step
        w.learn()
        pushed += cadence.pushes(step // 8)
    assert len(w.transport.pushed) == w.grad_steps == pushed > 0
    assert len(draws) == 2 * pushed  # two micro-batches per push
    # ratio 1: a micro-batch of batch_size per stock every batch_size steps
    assert len(draws) * w.cfg.dqn.batch_size == 8 * 40 * 1.0


# ---- mixed precision ----------------------------------------------------------------------------------
def test_bf16_runs_the_forward_in_bf16_and_gives_a_finite_gradient_close_to_fp32(market, tmp_path):
    w = make_worker(market, tmp_path, **{"replay.prioritized": True})
    sample = w.replay.sample(w.batch_size)
    grads = {}
    for precision in ("fp32", "bf16"):
        w.cfg.optim.precision = precision
        scripted(w, [sample])
        w._push_gradient()
        grads[precision] = w.transport.pushed[-1]
    a, b = grads["fp32"].grad, grads["bf16"].grad
    assert np.isfinite(b).all() and np.isfinite(grads["bf16"].loss)
    assert not np.array_equal(a, b)  # autocast was on: bf16 rounds differently...
    cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos > 0.98, cos  # ...to nearly the same direction
    assert grads["bf16"].loss == pytest.approx(grads["fp32"].loss, rel=0.05)


def test_fp16_is_refused_on_a_cpu_in_one_line(tmp_path):
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        check_precision("fp16", torch.device("cpu"))  # run.device = auto on a machine without a GPU
    check_precision("bf16", torch.device("cpu"))
    check_precision("fp32", torch.device("cpu"))
    proc = run_cli("train", "--data", str(tmp_path), "--output", str(tmp_path / "out"), "--set",
                   "optim.precision=fp16")
    user_error(proc, "optim.precision = fp16", "CUDA")
    assert not (tmp_path / "out").exists()


def test_the_loss_scaler_skips_and_halves_on_overflow_and_grows_after_good_steps():
    scaler = LossScaler(scale=8.0, growth_interval=3)
    grad = torch.tensor([16.0, -8.0])
    assert scaler.unscale_(grad) and grad.tolist() == [2.0, -1.0]  # divided by the scale
    scaler.update(True)
    scaler.update(True)
    assert scaler.scale == 8.0
    scaler.update(True)  # the third good step in a row
    assert scaler.scale == 16.0 and scaler.good_steps == 0
    assert not scaler.unscale_(torch.tensor([1.0, float("inf")]))
    scaler.update(False)
    assert scaler.scale == 8.0 and scaler.skipped == 1
    resumed = LossScaler()
    resumed.load(scaler.state())
    assert (resumed.scale, resumed.good_steps, resumed.skipped) == (8.0, 0, 1)
