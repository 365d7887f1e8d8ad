"""Rank 0's episode directive under real ``mpiexec`` (the MPICH wheel), 2 worker ranks.

* with a curriculum, ``--sync`` under MPI gives the weights, evaluation and stages of ``--mode single --sync``;
* a stop requested on rank 0 after episode 1 makes every worker rank skip to the evaluation;
* the whole job killed with SIGKILL mid-run, then ``--resume auto``, ends exactly as a run never interrupted,
  stages included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from parallel_dqn.checkpoint.format import CheckpointStore
from parallel_dqn.run.single import train
from tests.helpers import MPIEXEC, ROOT, assert_same_run, curve, make_market, mpiexec, tiny_config, train_args, weights

pytestmark = [pytest.mark.mpi, pytest.mark.slow]  # every test starts mpiexec

#: a curriculum of 3 stages over 3 training days (1 held out for validation) that passes every validation
CURRICULUM = {"curriculum.enabled": True, "curriculum.stages": 3, "curriculum.threshold": -1e9, "validation.days": 1}


def sets(settings: dict) -> list[str]:
    return [x for key, value in settings.items() for x in ("--set", f"{key}={str(value).lower()}")]


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("directive_mpi_market"))


def test_sync_parallel_with_a_curriculum_equals_single_process(market, tmp_path):
    extra = ["--sync", "--seed", "3", "--episodes", "3", *sets(CURRICULUM)]
    proc = mpiexec(3, *train_args(market, tmp_path / "parallel", *extra))
    assert proc.returncode == 0, proc.stderr
    settings = {"dist.sync": True, "dist.workers": 2, "run.seed": 3, "dqn.episodes": 3, **CURRICULUM}
    single = train(tiny_config(market, tmp_path / "single", **settings))
    parallel = json.loads((tmp_path / "parallel" / "metrics.json").read_text())
    wp, ws = weights(tmp_path / "parallel"), weights(tmp_path / "single")
    for name in ws:
        assert torch.allclose(wp[name], ws[name], rtol=0, atol=1e-6), name
    assert parallel["eval"] == pytest.approx(single["eval"], rel=1e-9)
    stages = [[x.get("stage") for x in curve(tmp_path / d) if x["phase"] == "train"] for d in ("parallel", "single")]
    assert stages[0] == stages[1] == [1, 2, 3]


def test_a_stop_on_rank_0_sends_every_worker_rank_to_the_evaluation(market, tmp_path):
    out = tmp_path / "stopped"
    settings = {"validation.days": 1, "monitor.enabled": True, "monitor.on_plateau": "stop",
                "monitor.on_diverge": "warn", "monitor.patience": 100}
    args = train_args(market, out, "--sync", "--episodes", "3", *sets(settings))[2:]  # without "-m parallel_dqn"
    proc = mpiexec(3, "tests/mpi_scripts/early_stop.py", *args)
    assert proc.returncode == 0, proc.stderr
    assert [(x["phase"], x["episode"]) for x in curve(out)] == [("train", 1), ("valid", 1), ("eval", 0)]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["early_stop"] == {"after_episode": 1, "reason": "scripted: stop after episode 1"}
    for rank in (1, 2):
        assert "stops training before episode 2" in (out / "logs" / f"rank{rank}.log").read_text()


def test_kill_9_with_a_curriculum_then_resume_auto_finishes_the_same_run(market, tmp_path):
    out = tmp_path / "killed"
    store = CheckpointStore(out / "checkpoints")
    args = train_args(market, out, "--sync", "--episodes", "3", "--set", "checkpoint.every_applies=25",
                      "--resume", "auto", *sets(CURRICULUM))
    job = subprocess.Popen([MPIEXEC, "-n", "3", sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(store.committed()) < 3:  # past episode 1's end: a later stage is decided before the kill
        assert job.poll() is None, f"the job ended early: {job.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "no checkpoints within the timeout"
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    job.stderr.close()
    assert not (out / "metrics.json").exists(), "the run finished before it could be killed: make it longer"
    final = mpiexec(3, *args, timeout=300)
    assert final.returncode == 0, final.stderr
    assert "resuming from" in (out / "run.log").read_text()
    reference = mpiexec(3, *train_args(market, tmp_path / "reference", "--sync", "--episodes", "3",
                                       *sets(CURRICULUM)), timeout=300)
    assert reference.returncode == 0, reference.stderr
    assert_same_run(tmp_path / "reference", out)
    assert [x.get("stage") for x in curve(out) if x["phase"] == "train"] == [1, 2, 3]
