"""Checkpoints and resume under real ``mpiexec`` (4 ranks): kill -9, signals, a corrupt newest checkpoint.

* the whole job killed with SIGKILL at random moments (twice), its newest checkpoint then truncated:
  ``--resume auto`` skips the damaged checkpoint with a warning, completes, and in ``--sync`` mode ends
  with exactly the weights, evaluation and training curve of a run that was never interrupted;
* SIGTERM sent to one worker rank only makes the whole job checkpoint and exit 75; resuming completes
  with every gradient accounted for;
* SIGUSR1 to ``mpiexec`` (it forwards it to every rank) does the same.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from parallel_dqn.checkpoint.format import CheckpointStore
from parallel_dqn.run.signals import EXIT_PREEMPTED
from tests.helpers import assert_same_run, make_market, mpiexec, start_job, train_args, wait_for_checkpoint_after

pytestmark = [pytest.mark.mpi, pytest.mark.slow]  # every test starts mpiexec or a parallel run


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("resume_mpi_market"))


def test_kill_9_at_random_moments_then_resume_auto_finishes_the_same_run(market, tmp_path):
    seed = int(time.time() * 1000) % 100_000
    rng = random.Random(seed)
    print(f"kill moments drawn with random seed {seed}")
    out = tmp_path / "killed"
    store = CheckpointStore(out / "checkpoints")
    args = train_args(market, out, "--sync", "--episodes", "5", "--set", "checkpoint.every_applies=40",
                      "--resume", "auto")
    newest = 0
    for _ in range(2):
        job = start_job(args)
        newest = wait_for_checkpoint_after(store, newest, job)
        time.sleep(rng.uniform(0.0, 1.5))  # a random moment: mid-step, mid-message, or mid-checkpoint
        assert job.poll() is None, "the run finished before it could be killed: make it longer"
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        job.stdout.close(), job.stderr.close()
    assert not (out / "metrics.json").exists()
    damaged = store.committed()[0]
    server_file = damaged / "server.pt"
    server_file.write_bytes(server_file.read_bytes()[: server_file.stat().st_size // 2])
    final = mpiexec(4, *args, timeout=300)
    assert final.returncode == 0, final.stderr
    log = (out / "run.log").read_text()
    assert f"skipping checkpoint {damaged}: server.pt has" in log and "(truncated?)" in log
    assert re.search(r"resuming from .*ckpt-\d+", log)
    reference = mpiexec(4, *train_args(market, tmp_path / "reference", "--sync", "--episodes", "5"), timeout=300)
    assert reference.returncode == 0, reference.stderr
    assert_same_run(tmp_path / "reference", out)


def pid_of_rank(out: Path, rank: int, job: subprocess.Popen[str]) -> int:
    log = out / "logs" / f"rank{rank}.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(rf"rank {rank} \(pid (\d+),", log.read_text()) if log.exists() else None
        if found:
            return int(found[1])
        assert job.poll() is None, job.communicate()[1][-3000:]
        time.sleep(0.05)
    pytest.fail(f"rank {rank} never started")


@pytest.mark.parametrize("target", ["one worker rank, SIGTERM", "mpiexec, SIGUSR1"])
def test_a_signal_checkpoints_the_whole_job_which_exits_75_then_resumes(market, tmp_path, target):
    out = tmp_path / "signalled"
    args = train_args(market, out, "--episodes", "5", "--resume", "auto")
    job = start_job(args)
    victim = pid_of_rank(out, 2, job)
    wait_for_checkpoint_after(CheckpointStore(out / "checkpoints"), 0, job)
    if target.startswith("one worker"):
        os.kill(victim, signal.SIGTERM)
        name = "SIGTERM"
    else:
        job.send_signal(signal.SIGUSR1)
        name = "SIGUSR1"
    stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == EXIT_PREEMPTED, stderr
    said = [line for line in stderr.splitlines() if line.startswith("parallel-dqn:")]
    assert len(said) == 1 and said[0].startswith(f"parallel-dqn: stopped by {name}: checkpoint "), stderr
    assert "Traceback" not in stderr
    manifest = json.loads((CheckpointStore(out / "checkpoints").committed()[0] / "manifest.json").read_text())
    assert manifest["stop"] is True and manifest["reason"] == name
    resumed = mpiexec(4, *args, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    c = json.loads((out / "metrics.json").read_text())["counters"]
    assert c["gradients_sent"] == c["gradients_received"] == c["gradients_applied"] + c["gradients_dropped_stale"] > 0
    curve = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(line["phase"], line["episode"]) for line in curve] == [("train", e) for e in range(1, 6)] + [("eval", 0)]
