"""Issue 12's learning options end to end: a mixture of priorities, a replay ratio, gradient accumulation and bf16.

* a single-mode run with all of them completes, learns (finite losses) and pushes what the ratio asks;
* resuming any of its checkpoints (``--sync``) ends with exactly the run's weights, evaluation and curve;
* ``--sync`` under real ``mpiexec`` equals ``--mode single --workers 3 --sync`` with them on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from parallel_dqn.checkpoint.format import CheckpointStore
from parallel_dqn.cli import main
from parallel_dqn.rl.schedules import GradientCadence
from parallel_dqn.run.single import train
from tests.helpers import assert_same_run, curve, make_market, mpiexec, tiny_config, train_args, weights

OPTIONS = {"replay.prioritized": True, "replay.priority": "td:0.5,pnl:0.25,rare:0.25", "replay.ratio": 1.0,
           "optim.grad_accum": 2, "optim.precision": "bf16"}


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("options_market"))


def test_a_run_with_every_learning_option_completes_learns_and_keeps_the_ratio(market, tmp_path):
    cfg = tiny_config(market, tmp_path / "run", **OPTIONS)
    train(cfg)
    losses = [line["loss"] for line in curve(tmp_path / "run") if line["phase"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses)
    assert losses[-1] < losses[0] * 2  # no blow-up
    # every worker learns at opportunities k = 5 .. 77 (learning_starts 40, 2 x 311 steps, every 8): ratio 1 with
    # batches of 16 is a micro-batch every 2nd opportunity, a push every 4th (vs one per opportunity by default)
    q = cfg.dqn
    first, last = math.ceil(q.learning_starts / q.train_freq), 2 * 311 // q.train_freq
    cadence = GradientCadence(1.0, q.batch_size, q.train_freq, 2)
    per_worker = sum(cadence.pushes(k) for k in range(first, last + 1))
    counters = json.loads((tmp_path / "run" / "metrics.json").read_text())["counters"]
    assert per_worker == 18 and {w["applied"] for w in counters["per_worker"].values()} == {per_worker}


def test_resuming_any_checkpoint_with_the_options_on_reproduces_the_run(market, tmp_path):
    settings = {**OPTIONS, "replay.ratio": 2.5, "dist.sync": True, "checkpoint.every_applies": 30,
                "checkpoint.keep": 20}
    train(tiny_config(market, tmp_path / "full", **settings))
    checkpoints = CheckpointStore(tmp_path / "full" / "checkpoints").committed()
    assert len(checkpoints) >= 3
    for ckpt in checkpoints[1::2]:  # every second one: mid-episode and episode ends
        out = tmp_path / f"from_{ckpt.name}"
        assert main(["train", "--resume", str(ckpt), "--output", str(out), "--no-progress"]) == 0
        assert_same_run(tmp_path / "full", out)


def test_sync_under_mpiexec_equals_single_mode_with_the_options_on(market, tmp_path):
    sets = [x for key, value in {**OPTIONS, "replay.ratio": 1.5}.items() for x in ("--set", f"{key}={value}")]
    proc = mpiexec(4, *train_args(market, tmp_path / "parallel", "--sync", "--seed", "3", *sets))
    assert proc.returncode == 0, proc.stderr
    single = tiny_config(market, tmp_path / "single", **{**OPTIONS, "replay.ratio": 1.5, "dist.sync": True,
                                                          "dist.workers": 3, "run.seed": 3})
    train(single)
    wp, ws = weights(tmp_path / "parallel"), weights(tmp_path / "single")
    for name in ws:
        assert torch.allclose(wp[name], ws[name], rtol=0, atol=1e-6), name
    parallel = json.loads((tmp_path / "parallel" / "metrics.json").read_text())
    alone = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert parallel["counters"]["gradients_applied"] == alone["counters"]["gradients_applied"] > 0
