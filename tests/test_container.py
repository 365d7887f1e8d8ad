"""The container image (``launchers/container/``: built by ``build.sh`` with no network inside the build, from a
locally made base; ``.ci/run`` builds it) runs what the host runs, as its non-root user:

* the quick-start demo (``launchers/quickstart.sh``, the same script, shipped in the image) trains and evaluates;
* a ``--sync`` run under ``mpiexec`` inside one container (rank 0 + 2 workers, the market mounted read-only at
  /data, outputs in the mounted /runs) ends with exactly the weights, curve and metrics of the same run on the host;
* under SLURM, the image converted for Charliecloud (``ch-convert``) trains across both nodes of the local cluster,
  every rank started by ``srun --mpi=pmi2 ... ch-run IMAGE -- parallel-dqn train`` (``launchers/slurm/train.sbatch``
  with ``PARALLEL_DQN_CH_IMAGE``).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ContainerImage
from tests.helpers import assert_same_run, make_market, mpiexec, submit_until_it_runs, tiny_config, train_args, wait_for

pytestmark = pytest.mark.slow  # every test trains, in a container


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    """The tiny market, readable by the image's non-root user (pytest makes its folders 0700)."""
    folder = make_market(tmp_path_factory.mktemp("container_market"))
    folder.chmod(0o755)
    return folder


def runs_folder(path: Path, image: ContainerImage) -> Path:
    """A host folder for the container's /runs, owned by the image's non-root user (as a site would chown it)."""
    path.mkdir(parents=True)
    uid, gid = image.user.split(":")
    os.chown(path, int(uid), int(gid))
    return path


def owners(folder: Path) -> set[str]:
    return {f"{p.stat().st_uid}:{p.stat().st_gid}" for p in folder.rglob("*")}


def test_quickstart_demo_runs_in_the_container(container, tmp_path):
    assert container.user != "0:0", "the image must run as a non-root user"
    runs = runs_folder(tmp_path / "runs", container)
    proc = container.run("-v", f"{runs}:/runs", "--entrypoint", "bash", container.image,
                         "/opt/parallel-dqn/quickstart.sh", "--episodes", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((runs / "runs" / "quickstart" / "metrics.json").read_text())
    assert metrics["eval"]["sharpe"] is not None
    assert (runs / "data" / "demo_market" / "stocks_intraday").is_dir()
    assert "agent (DQN + meta-policy)" in proc.stdout
    assert owners(runs) == {container.user}


def test_sync_run_under_mpiexec_in_the_container_equals_the_host_run(container, market, tmp_path):
    host = tmp_path / "host"
    proc = mpiexec(3, *train_args(market, host, "--sync"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = runs_folder(tmp_path / "runs", container)
    # the same flags with the container's paths: python -m parallel_dqn ... under the image's own mpiexec
    args = train_args(Path("/data"), Path("/runs/sync"), "--sync")
    proc = container.run("-v", f"{market}:/data:ro", "-v", f"{runs}:/runs", "--shm-size=256m",
                         "--entrypoint", "mpiexec", container.image, "-n", "3", "python", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((runs / "sync" / "metrics.json").read_text())["ranks"] == 3
    assert_same_run(host, runs / "sync")
    assert owners(runs) == {container.user}


# ---- HPC: the same image through Charliecloud under SLURM --------------------------------------------------------
@pytest.fixture(scope="module")
def charliecloud_image(container, tmp_path_factory) -> Iterator[Path]:
    """The docker image as a Charliecloud directory image (``ch-convert -i docker``, ~1.5 min here), made once
    and removed after the module (1.6 GB); or the one ``PARALLEL_DQN_TEST_CH_IMAGE`` names (converted already,
    to save that time when iterating)."""
    if shutil.which("ch-convert") is None or shutil.which("ch-run") is None:
        pytest.fail("Charliecloud is not installed (apt-get install charliecloud); .ci/run installs it", pytrace=False)
    if os.environ.get("PARALLEL_DQN_TEST_CH_IMAGE"):
        yield Path(os.environ["PARALLEL_DQN_TEST_CH_IMAGE"])
        return
    target = tmp_path_factory.mktemp("charliecloud") / "parallel-dqn"
    # ch-convert finds docker on PATH: Debian's client first (the one that talks to Debian's daemon)
    env = {**os.environ, "PATH": f"{Path(container.docker).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["ch-convert", "-i", "docker", container.image, str(target)], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    yield target
    shutil.rmtree(target, ignore_errors=True)


def test_a_two_node_slurm_job_trains_through_charliecloud(slurm, charliecloud_image, market, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    # paths as the ranks see them: the market bound at /data, the runs folder at /runs
    tiny_config(Path("/data"), Path("/runs/run"), **{"dist.workers": 0}).write(runs / "run.toml")
    # sbatch hands its environment to the job: the image, and the host folders bound at /data and /runs
    monkeypatch.setenv("USER", os.environ.get("USER") or getpass.getuser())  # ch-run needs it
    monkeypatch.setenv("PARALLEL_DQN_CH_IMAGE", str(charliecloud_image))
    monkeypatch.setenv("PARALLEL_DQN_CH_ARGS", f"-b {market}:/data -b {runs}:/runs")
    out = runs / "run"
    job = submit_until_it_runs(["--nodes=2", "--ntasks=4", f"--output={tmp_path}/slurm-%j.out",
                                "launchers/slurm/train.sbatch", "--config", "/runs/run.toml"],
                               out / "run.log", tmp_path / "slurm-%j.out")
    info = wait_for(job, console=tmp_path / f"slurm-{job}.out")
    console = (tmp_path / f"slurm-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", console
    assert f"ranks in a container: ch-run --set-env -b {market}:/data" in console, console
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "parallel" and metrics["ranks"] == 4 and metrics["eval"]["sharpe"] is not None
    nodes = {re.search(r"node (\w+)\)", (out / "logs" / f"rank{r}.log").read_text())[1] for r in (1, 2, 3)}
    nodes.add(re.search(r"rank 0 on (\w+)\)", (out / "run.log").read_text())[1])
    assert nodes == {"n1", "n2"}, nodes
    # the ranks ran the image's Python (Debian's 3.11.2 here; the host's venv has its own)
    image_python = subprocess.run(["ch-run", str(charliecloud_image), "--", "/opt/venv/bin/python", "-c",
                                   "import platform; print(platform.python_version())"],
                                  capture_output=True, text=True, timeout=120)
    assert image_python.returncode == 0, image_python.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["versions"]["python"] == image_python.stdout.strip(), (record["versions"], sys.version)
