"""An ensemble and market regimes in one run (issue 13's acceptance): under ``mpiexec --sync`` it completes, a
``kill -9`` of the whole job at a random moment then ``--resume auto`` ends exactly as the run that was never
interrupted, and ``--sync`` single mode equals it. Augmentation (on by default) is on too, so the regime
inputs appended after the features go through the augmenter's path."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from parallel_dqn.checkpoint.format import CheckpointStore
from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market
from parallel_dqn.run.single import train
from tests.helpers import (
    STOCKS,
    assert_same_run,
    mpiexec,
    start_job,
    tiny_config,
    train_args,
    wait_for_checkpoint_after,
)

pytestmark = [pytest.mark.mpi, pytest.mark.slow]

BOTH = {
    "ensemble.members": 3, "ensemble.combine": "vote", "ensemble.bootstrap": 0.5,
    "regime.enabled": True, "regime.window": 20, "regime.features": True, "regime.adaptive": True,
    "regime.epsilon_scale": [1.0, 3.0], "regime.position_cap": [1.0, 0.5], "regime.lr_scale": [1.0, 0.5],
}


def flags() -> list[str]:
    def text(value: object) -> str:
        return ",".join(map(str, value)) if isinstance(value, list) else str(value).lower()

    return [arg for key, value in BOTH.items() for arg in ("--set", f"{key}={text(value)}")]


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    """The tests' small market with the planted relation flipping with the hidden regime."""
    out = tmp_path_factory.mktemp("regime_market")
    spec = SyntheticSpec(bar_minutes=5, regime_flip=True)
    write_market(generate_market(STOCKS, dt.date(2024, 1, 2), 5, seed=11, spec=spec), out)
    return out


def test_sync_under_mpiexec_equals_single_mode_with_an_ensemble_and_regimes(market, tmp_path):
    single = tmp_path / "single"
    train(tiny_config(market, single, **{**BOTH, "dist.sync": True, "dist.workers": 2}))
    proc = mpiexec(3, *train_args(market, tmp_path / "mpi", "--sync", *flags()), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(single, tmp_path / "mpi")
    metrics = json.loads((tmp_path / "mpi" / "metrics.json").read_text())
    assert metrics["ensemble"]  # both features are really on
    assert "regime" in (tmp_path / "mpi" / "portfolio_eval.csv").read_text().splitlines()[0]


def test_kill_9_with_an_ensemble_and_regimes_then_resume_auto_finishes_the_same_run(market, tmp_path):
    seed = int(time.time() * 1000) % 100_000
    print(f"kill moment drawn with random seed {seed}")
    out = tmp_path / "killed"
    args = train_args(market, out, "--sync", "--episodes", "4", "--set", "checkpoint.every_applies=10",
                      "--resume", "auto", *flags())
    job = start_job(args)
    wait_for_checkpoint_after(CheckpointStore(out / "checkpoints"), 0, job)
    time.sleep(random.Random(seed).uniform(0.0, 1.0))
    assert job.poll() is None, "the run finished before it could be killed: make it longer"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    job.stdout.close(), job.stderr.close()
    assert not (out / "metrics.json").exists()
    final = mpiexec(4, *args, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    reference = mpiexec(4, *train_args(market, tmp_path / "reference", "--sync", "--episodes", "4", *flags()),
                        timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert_same_run(tmp_path / "reference", out)
    ensembles = [json.loads((d / "metrics.json").read_text())["ensemble"] for d in (tmp_path / "reference", out)]
    assert ensembles[0] == ensembles[1]
