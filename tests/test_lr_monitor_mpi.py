"""Under real ``mpiexec`` (4 ranks, --sync): a run with a validation period, a cosine schedule after a warm-up and
the convergence monitor (reducing the rate on a plateau), killed with SIGKILL at a random moment after a
checkpoint, continues with ``--resume auto`` to exactly the weights, curve and evaluation of an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from parallel_dqn.checkpoint.format import CheckpointStore
from tests.helpers import assert_same_run, curve, make_market, mpiexec, start_job, train_args, wait_for_checkpoint_after

pytestmark = [pytest.mark.mpi, pytest.mark.slow]

SETTINGS = ("validation.days=1", "optim.lr_schedule=cosine", "optim.warmup_applies=10", "optim.cosine_period=40",
            "monitor.enabled=true", "monitor.patience=1", "monitor.on_plateau=reduce_lr")


def test_kill_9_then_resume_auto_with_validation_schedule_and_monitor_finishes_the_same_run(tmp_path):
    market = make_market(tmp_path / "market")
    sets = [x for s in SETTINGS for x in ("--set", s)]
    seed = int(time.time() * 1000) % 100_000
    print(f"kill moment drawn with random seed {seed}")
    out = tmp_path / "killed"
    args = train_args(market, out, "--sync", "--episodes", "4", "--set", "checkpoint.every_applies=40", *sets,
                      "--resume", "auto")
    job = start_job(args)
    wait_for_checkpoint_after(CheckpointStore(out / "checkpoints"), 0, job)
    time.sleep(random.Random(seed).uniform(0.0, 1.5))
    assert job.poll() is None, "the run finished before it could be killed: make it longer"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    job.stdout.close(), job.stderr.close()
    final = mpiexec(4, *args, timeout=300)
    assert final.returncode == 0, final.stderr
    reference = mpiexec(4, *train_args(market, tmp_path / "reference", "--sync", "--episodes", "4", *sets), timeout=300)
    assert reference.returncode == 0, reference.stderr
    assert_same_run(tmp_path / "reference", out)
    lines = curve(out)
    assert [x["phase"] for x in lines[:2]] == ["train", "valid"] and "monitor" in lines[1] and "lr" in lines[0]
