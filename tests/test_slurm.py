"""The SLURM launchers against a real SLURM cluster (``launchers/slurm/local_cluster.sh start``: slurmctld and two
slurmd "nodes", n1 and n2, on this machine; ``.ci/run`` starts it).

* ``launchers/slurm/train.sbatch`` trains across 2 nodes (4 ranks through ``srun --mpi=pmi2``) to completion;
* a job told to stop (``scancel --signal=USR1``, what ``--signal=USR1@120`` does before the time limit)
  checkpoints, exits 75, requeues itself, resumes and completes, with exactly the weights of a run that was
  never stopped (``--sync``);
* ``parallel-dqn sweep submit`` runs a sweep as one job array, ``sweep status`` shows every combination
  finished, a second submit submits nothing, and ``parallel-dqn report`` consolidates it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import (
    assert_same_run,
    idle_slurm_cluster,
    job_info,
    make_market,
    mpiexec,
    sbatch,
    submit_until_it_runs,
    tiny_config,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.usefixtures("slurm"), pytest.mark.slow]  # every test runs training jobs


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("slurm_market"))


def run_config(market: Path, out: Path, path: Path, **overrides) -> Path:
    """tiny_config as a config file for parallel runs: the workers are the job's worker ranks."""
    tiny_config(market, out, **{"dist.workers": 0, **overrides}).write(path)
    return path


def test_training_job_across_two_nodes_completes(market, tmp_path):
    out = tmp_path / "run"
    config = run_config(market, out, tmp_path / "run.toml")
    job = submit_until_it_runs(
        ["--nodes=2", "--ntasks=4", f"--output={tmp_path}/slurm-%j.out", "launchers/slurm/train.sbatch",
         "--config", str(config)],
        out / "run.log", tmp_path / "slurm-%j.out",
    )
    info = wait_for(job, console=tmp_path / f"slurm-{job}.out")
    console = (tmp_path / f"slurm-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", console
    nodes = {re.search(r"node (\w+)\)", (out / "logs" / f"rank{r}.log").read_text())[1] for r in (1, 2, 3)}
    nodes.add(re.search(r"rank 0 on (\w+)\)", (out / "run.log").read_text())[1])
    assert nodes == {"n1", "n2"}, nodes
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "parallel" and metrics["ranks"] == 4 and metrics["eval"]["sharpe"] is not None
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished" and status["slurm_job_id"] == job
    assert "agent (DQN + meta-policy)" in console


def test_a_job_told_to_stop_checkpoints_requeues_resumes_and_matches_an_uninterrupted_run(market, tmp_path):
    out = tmp_path / "preempted"
    settings = {"dist.sync": True, "dqn.episodes": 6}
    config = run_config(market, out, tmp_path / "run.toml", **settings)
    first = out / "checkpoints" / "ckpt-000001"
    job = submit_until_it_runs(
        ["--nodes=2", "--ntasks=4", f"--output={tmp_path}/slurm-%j.out", "launchers/slurm/train.sbatch",
         "--config", str(config)],
        first, tmp_path / "slurm-%j.out",
    )
    subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=30)
    info = wait_for(job, console=tmp_path / f"slurm-{job}.out")
    console = (tmp_path / f"slurm-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", console
    assert "parallel-dqn: stopped by SIGUSR1: checkpoint" in console and "requeueing job" in console
    assert f"job {job} start 1:" in console and "resuming from" in (out / "run.log").read_text()
    assert re.search(r"checkpoint \d+ written \(SIGUSR1\)", (out / "run.log").read_text())
    reference = tmp_path / "reference"
    config = run_config(market, reference, tmp_path / "reference.toml", **settings)
    proc = mpiexec(4, "-m", "parallel_dqn", "train", "--mode", "parallel", "--config", str(config), "--no-progress",
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert_same_run(reference, out)


def test_a_sweep_runs_as_one_job_array_and_the_report_consolidates_it(market, tmp_path):
    sweep_file = tmp_path / "sweep.toml"
    base = run_config(market, tmp_path / "unused", tmp_path / "base.toml", **{"dqn.episodes": 1})
    sweep_file.write_text(f'base = "{base.name}"\n[grid]\n"dqn.lr" = [0.001, 0.0005]\n"dqn.gamma" = [0.5, 0.9]\n'
                          '[[points]]\n"dqn.lr" = 0.001\n"dqn.gamma" = 0.5\n')  # the point repeats a grid combination
    folder = tmp_path / "sweep"
    submit = cli("sweep", "submit", str(sweep_file), "--output", str(folder), "--ranks", "2")
    assert submit.returncode == 0, submit.stderr
    job = re.search(r"submitted job (\d+): 4 combination\(s\), indices 0,1,2,3", submit.stdout)
    assert job, submit.stdout
    for index in range(4):
        info = wait_for(f"{job[1]}_{index}")
        assert info["JobState"] == "COMPLETED", (folder / "logs" / f"slurm-{job[1]}_{index}.out").read_text()
    status = cli("sweep", "status", str(folder))
    assert status.returncode == 0 and "4 combination(s): 4 finished" in status.stdout, status.stdout
    for run in sorted(folder.glob("c00*")):
        record = json.loads((run / "status.json").read_text())
        assert record["state"] == "finished" and record["slurm_array"].startswith(f"{job[1]}_")
        assert json.loads((run / "metrics.json").read_text())["ranks"] == 2
    again = cli("sweep", "submit", str(folder))
    assert again.returncode == 0 and "nothing to submit" in again.stderr
    report = cli("report", str(folder))
    assert report.returncode == 0, report.stderr
    html = (folder / "report.html").read_text()
    assert all(run.name in html for run in folder.glob("c00*"))
    sharpes = {run.name: json.loads((run / "metrics.json").read_text())["eval"]["sharpe"] for run in folder.glob("c00*")}
    table = html[html.index('<table id="comparison">'):]
    order = sorted(sharpes, key=lambda name: table.index(name))
    assert order == sorted(sharpes, key=sharpes.get, reverse=True)  # the comparison table: best Sharpe first


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parallel_dqn", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_a_test_waits_until_the_job_before_it_has_released_the_nodes(tmp_path):
    """A test that started while an earlier job still held both nodes failed at once ("no idle SLURM nodes (sinfo:
    allocated)", seen with two pytest-xdist workers); the ``slurm`` fixture now waits for them."""
    job = sbatch("--nodes=2", f"--output={tmp_path}/hold-%j.out", "--wrap", "sleep 4")
    deadline = time.monotonic() + 60
    while job_info(job).get("JobState") != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job_info(job).get("JobState") == "RUNNING", job_info(job)
    assert idle_slurm_cluster(timeout=0) is not None  # what the fixture saw before: no idle node
    assert idle_slurm_cluster(timeout=60) is None
    assert job_info(job)["JobState"] == "COMPLETED"
