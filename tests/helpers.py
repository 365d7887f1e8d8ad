"""Shared test helpers (test modules import these, never each other; tests/test_layout.py checks it).

* markets and configs: :func:`make_market`, :func:`tiny_config`, :func:`perturb_after`, :func:`weights`;
* the real CLI: :func:`run_cli` (``python -m parallel_dqn ...``), :func:`user_error` (its one error line),
  :func:`hash_tree` (to check that a failed command changed nothing);
* MPI: :data:`MPIEXEC`, :func:`mpiexec`, :func:`train_args` (a parallel-mode command line equal to tiny_config),
  :func:`start_job` (mpiexec -n 4, or one process, as one process group, to kill), :func:`wait_for_checkpoint_after`
  (of a local run, or of one in an object store: :class:`StoreCheckpoints`);
* rank 0 alone: :func:`market`, :func:`config`, :func:`endpoint`, :func:`gradient` (scripted messages to it);
* runs: :func:`curve`, :func:`assert_same_run` (two runs ended with the same weights, evaluation and curve);
* :class:`LoopbackJSONServer`: a real HTTP server on 127.0.0.1 standing in for a web API.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from parallel_dqn.checkpoint.coordinator import make_coordinator
from parallel_dqn.checkpoint.format import CheckpointStore
from parallel_dqn.comm.messages import GradientMessage, SetupInfo
from parallel_dqn.config import Config
from parallel_dqn.data.features import N_FEATURES
from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market
from parallel_dqn.evaluation.results import RunRecorder
from parallel_dqn.model.flat import n_params
from parallel_dqn.model.qnet import QNetwork
from parallel_dqn.training.endpoint import ServerEndpoint
from parallel_dqn.training.observers import Observers
from parallel_dqn.training.server import ParameterServer

STOCKS = ["LEAD", "FOLW", "MOMO"]
ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
#: the one line a user error prints on stderr
ERROR_LINE = re.compile(r"^parallel-dqn(?: [a-z-]+)*: error: \S")


def make_market(out: Path, days: int = 5, seed: int = 11, bar_minutes: int = 5, regime_flip: bool = False) -> Path:
    """A synthetic market of STOCKS from 2024-01-02 (5-minute bars: small and fast); ``regime_flip``: the
    follower's relation flips with the hidden volatility regime (the regime tests' market)."""
    spec = SyntheticSpec(bar_minutes=bar_minutes, regime_flip=regime_flip)
    write_market(generate_market(STOCKS, dt.date(2024, 1, 2), days, seed=seed, spec=spec), out)
    return out


#: the training-optimisation components that are on by default (augmentation), switched off: what a run did
#: before them
OPTIMISATION_OFF: dict[str, object] = {
    "augment.noise": 0.0, "augment.feature_dropout": 0.0, "augment.time_warp": 0.0, "augment.scenarios": 0.0,
}


def tiny_config(data: Path, output: Path, **overrides) -> Config:
    cfg = Config()
    settings = {
        "data.data": str(data),
        "data.stocks": STOCKS,
        "data.start_date": "2024-01-02",
        "data.end_date": "2024-01-05",
        "data.eval_start": "2024-01-08",
        "data.eval_end": "2024-01-08",
        "dqn.episodes": 2,
        # one worker per stock: several workers in one process (rotation, staleness, per-worker counters)
        "dist.workers": len(overrides.get("data.stocks", STOCKS)),
        # small, frequent updates: a few days of bars give the defaults' fewer, larger updates little to do
        "dqn.learning_starts": 40,
        "dqn.train_freq": 8,
        "dqn.batch_size": 16,
        "dqn.lr": 5e-4,
        "dqn.target_update": 20,
        "market.graph_window": 40,
        "run.output": str(output),
        "run.progress": False,
        **overrides,
    }
    for key, value in settings.items():
        cfg.set(key, value)
    return cfg


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / "trained_model.pth", weights_only=True)["q_state"]


def perturb_after(src: Path, dst: Path, cut: pd.Timestamp, seed: int = 5) -> None:
    """Copy a market, replacing every bar after ``cut`` with a different valid bar."""
    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    for path in (dst / "stocks_intraday").rglob("*.parquet"):
        df = pd.read_parquet(path)
        late = pd.to_datetime(df["timestamp"], utc=True) > cut
        if not late.any():
            continue
        factor = np.exp(rng.normal(0, 0.02, late.sum()))
        for col in ("open", "high", "low", "close"):
            df.loc[late, col] = df.loc[late, col] * factor
        df.loc[late, "volume"] = rng.integers(1, 10_000, late.sum()).astype(float)
        df.to_parquet(path, index=False)


def curve(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock field."""
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "elapsed_s"} for line in lines]


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "portfolio_eval.csv").read_bytes() == (b / "portfolio_eval.csv").read_bytes()
    assert curve(a) == curve(b)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["eval"] == mb["eval"] and ma["counters"] == mb["counters"]


# ---- the real CLI ----------------------------------------------------------------------------------
def run_cli(
    *args: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m parallel_dqn *args``; never raises on a non-zero exit.

    ``env`` replaces the environment (default: this process's); stdin is closed so a
    command that prompts fails instead of hanging.
    """
    return subprocess.run(
        [sys.executable, "-m", "parallel_dqn", *map(str, args)],
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def user_error(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    """Check ``proc`` failed as a user error and return its one error line, which must contain ``names``."""
    out = f"\n--- exit {proc.returncode}\n--- stderr:\n{proc.stderr}\n--- stdout:\n{proc.stdout}"
    assert proc.returncode == 2, f"expected exit 2 (user error){out}"
    assert "Traceback" not in proc.stderr + proc.stdout, f"traceback for a user error{out}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if ERROR_LINE.match(line)]
    assert len(errors) == 1, f"expected exactly one 'parallel-dqn: error:' line{out}"
    line = errors[0]
    assert lines == [line], f"expected stderr to be the error line only{out}"
    missing = [n for n in names if n not in line]
    assert not missing, f"error line does not name {missing}: {line!r}"
    return line


def hash_tree(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``root`` (file names in ``exclude`` skipped)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in exclude
    }


# ---- MPI -------------------------------------------------------------------------------------------
def mpiexec(n: int, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``mpiexec -n N python ARGS...`` (the MPICH of this venv), run from the repository root."""
    return subprocess.run(
        [MPIEXEC, "-n", str(n), sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def train_args(market: Path, out: Path, *extra: str) -> list[str]:
    """The CLI flags equivalent of tiny_config (parallel mode; "-m parallel_dqn" first, for python)."""
    cfg = tiny_config(market, out)
    settings = (("dqn.learning_starts", cfg.dqn.learning_starts), ("dqn.train_freq", cfg.dqn.train_freq),
                ("dqn.batch_size", cfg.dqn.batch_size), ("dqn.lr", cfg.dqn.lr),
                ("dqn.target_update", cfg.dqn.target_update), ("market.graph_window", cfg.market.graph_window))
    sets = [f"{k}={v}" for k, v in settings]
    return [
        "-m", "parallel_dqn", "train", "--mode", "parallel", "--data", str(market), "--stocks", *STOCKS,
        "--start_date", cfg.data.start_date, "--end_date", cfg.data.end_date, "--eval_start", cfg.data.eval_start,
        "--eval_end", cfg.data.eval_end, "--episodes", str(cfg.dqn.episodes), "--output", str(out), "--no-progress",
        *[x for s in sets for x in ("--set", s)], *extra,
    ]


def start_job(args: list[str], ranks: int | None = 4, env: Mapping[str, str] | None = None,
              cwd: Path = ROOT) -> subprocess.Popen[str]:
    """mpiexec -n 4 (``ranks``; None: one plain python process) in its own session, so that the whole job can be
    killed as one process group; ``env`` replaces the environment."""
    launcher = [MPIEXEC, "-n", str(ranks)] if ranks else []
    return subprocess.Popen([*launcher, sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=dict(env) if env is not None else None)


def wait_for_checkpoint_after(store: CheckpointStore, seq: int, job: subprocess.Popen[str], timeout: float = 120) -> int:
    """Wait until a checkpoint numbered above ``seq`` is committed; return the newest number. ``store``: anything
    whose ``committed()`` lists checkpoint folders named ``ckpt-NNNNNN`` newest first (an object store's too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        committed = store.committed()
        if committed and int(committed[0].name.split("-")[1]) > seq:
            return int(committed[0].name.split("-")[1])
        assert job.poll() is None, f"the job ended early: {job.communicate()[1][-3000:]}"
        time.sleep(0.05)
    pytest.fail("no new checkpoint within the timeout")


class StoreCheckpoints:
    """The complete checkpoints (manifest present) of a run in an object store (``fs``: an fsspec filesystem,
    ``root``: BUCKET/PREFIX), newest first: what :func:`wait_for_checkpoint_after` waits on for a cloud --output."""

    def __init__(self, fs, root: str) -> None:
        self.fs, self.root = fs, root

    def committed(self) -> list[Path]:
        self.fs.invalidate_cache()
        manifests = self.fs.glob(f"{self.root}/checkpoints/ckpt-*/manifest.json")
        return sorted((Path(Path(m).parent.name) for m in manifests), reverse=True)


def kill_9_then_resume_equals_uninterrupted(market: Path, tmp_path: Path, *extra: str, episodes: int = 4) -> Path:
    """Under ``mpiexec -n 4 --sync``: kill the whole job with SIGKILL at a random moment after its first
    checkpoint, finish it with ``--resume auto``, and check it ends exactly as a run that was never interrupted
    (``extra``: the settings under test). Returns the resumed run's folder."""
    seed = int(time.time() * 1000) % 100_000
    print(f"kill moment drawn with random seed {seed}")
    out = tmp_path / "killed"
    args = train_args(market, out, "--sync", "--episodes", str(episodes), "--set", "checkpoint.every_applies=10",
                      "--resume", "auto", *extra)
    job = start_job(args)
    wait_for_checkpoint_after(CheckpointStore(out / "checkpoints"), 0, job)
    time.sleep(random.Random(seed).uniform(0.0, 1.0))
    assert job.poll() is None, "the run finished before it could be killed: make it longer"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    job.stdout.close(), job.stderr.close()  # type: ignore[union-attr]
    assert not (out / "metrics.json").exists()
    final = mpiexec(4, *args, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    reference = mpiexec(4, *train_args(market, tmp_path / "reference", "--sync", "--episodes", str(episodes), *extra),
                        timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert_same_run(tmp_path / "reference", out)
    return out


# ---- rank 0 without a transport (scripted messages to its endpoint) ----------------------------------
T, S = 40, 2  # bars and stocks of market()


def market() -> SetupInfo:
    """A 2-stock market of T bars: training rows [0, 30), evaluation [30, 40)."""
    rng = np.random.default_rng(0)
    log_returns = rng.normal(0, 1e-3, (T, S))
    return SetupInfo(
        symbols=("AAA", "BBB"), timestamps=np.arange(T).astype("datetime64[m]").astype("datetime64[ns]"),
        close=100 * np.exp(np.cumsum(log_returns, axis=0)), log_returns=log_returns, tradeable=np.ones((T, S), bool),
        train_rows=(0, 30), eval_rows=(30, 40), bars_per_day=390.0, reward_scale=1.0, return_std=1e-3,
        n_features=N_FEATURES, feature_stats={}, shards=[[0], [1]], episodes=1,
    )


def config(sync: bool = False, **settings) -> Config:
    cfg = Config()
    cfg.set("dist.sync", sync)
    for key, value in settings.items():
        cfg.set(key, value)
    return cfg


def endpoint(cfg: Config, tmp_path: Path | None = None, episodes: list | None = None) -> ServerEndpoint:
    """The endpoint of a 2-worker run; with ``tmp_path``, checkpoints are on (written there)."""
    observers = Observers(cfg.market.cost_bps)
    server = ParameterServer(cfg, 2, observers)
    coordinator = None
    if tmp_path is not None:
        cfg.set("run.output", str(tmp_path))
        recorder = RunRecorder(cfg, tmp_path)
        observers.register(recorder)
        coordinator = make_coordinator(cfg, tmp_path, server, recorder, 2, lambda: None, None, None)
    if episodes is not None:
        observers.register(type("Collect", (), {"on_episode": lambda self, report: episodes.append(report)})())
    return ServerEndpoint(server, 2, coordinator)


def gradient(worker: int, version: int, value: float = 1e-3) -> GradientMessage:
    P = n_params(QNetwork(S, N_FEATURES, Config().market.window, Config().model))
    return GradientMessage(worker, version, np.full(P, value, np.float32), 0.5, 0.1)


# ---- stand-ins for web services --------------------------------------------------------------------
class LoopbackJSONServer:
    """A real HTTP server on 127.0.0.1 (a free port) in a thread, answering JSON.

    Stands in for services that cannot be reached from here (Telegram, Alpha Vantage): the real
    client code talks HTTP to it. ``respond(method, path, body)`` returns ``(status, json)``.
    Use as a context manager; ``url`` is ``http://127.0.0.1:PORT``.
    """

    def __init__(self, respond) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                status, answer = respond(self.command, self.path, body)
                raw = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer  # noqa: N815 - http.server's names

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LoopbackJSONServer:
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- SLURM jobs (tests/test_slurm.py, tests/test_container.py) -----------------------------------------------
#: the file whose lock gives one test at a time the one-machine cluster, across pytest-xdist workers
SLURM_LOCK = Path(tempfile.gettempdir()) / "parallel-dqn-tests-slurm.lock"


@contextlib.contextmanager
def slurm_cluster_lock(path: Path = SLURM_LOCK, timeout: float = 1800) -> Iterator[None]:
    """Hold the cluster for one test: an exclusive lock on ``path`` (released if the process dies). Two SLURM
    tests at once, on two workers, would queue each other's two-node jobs past their waits; the test fails if the
    lock is not free within ``timeout`` seconds."""
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pytest.fail(f"another test held the SLURM cluster ({path}) for over {timeout:.0f} s", pytrace=False)
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def idle_slurm_cluster(timeout: float = 120) -> str | None:
    """Wait until the cluster has an idle node and runs no job of this user (an earlier test's job has ended and
    released its nodes: they stay allocated for a moment after its end); None then, else what is wrong after
    ``timeout`` seconds."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or "root"
    deadline = time.monotonic() + timeout
    while True:
        nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
        jobs = subprocess.run(["squeue", "-h", "-u", user, "-o", "%i %T"], capture_output=True, text=True, timeout=30)
        if nodes.returncode == 0 and "idle" in nodes.stdout.split() and not jobs.stdout.strip():
            return None
        if time.monotonic() >= deadline:
            return (f"no idle SLURM nodes after {timeout:.0f} s (sinfo: {(nodes.stdout + nodes.stderr).strip()[:200]}; "
                    f"jobs of {user}: {jobs.stdout.strip()[:200] or 'none'})")
        time.sleep(0.5)


def sbatch(*args: str) -> str:
    """Submit from the repository root (the scripts' default PARALLEL_DQN_ROOT); the job id."""
    proc = subprocess.run(["sbatch", "--parsable", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def job_info(job: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (finished jobs stay visible for MinJobAge)."""
    proc = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30)
    return dict(re.findall(r"(\w+)=(\S*)", proc.stdout))


def wait_for(job: str, timeout: float = 240, console: Path | None = None) -> dict[str, str]:
    """Wait until ``job`` has ended (after any requeue); its final scontrol record. A job still running after
    ``timeout`` is cancelled and the test fails with the end of its ``console`` output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = job_info(job)
        if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return info
        time.sleep(1.0)
    subprocess.run(["scancel", job], timeout=30)
    text = console.read_text()[-3000:] if console is not None and console.exists() else ""
    pytest.fail(f"job {job} did not end within {timeout} s: {job_info(job)}\n{text}")


#: what MPICH's PMI-2 start-up prints when it breaks under srun before a rank runs any code of ours; seen
#: intermittently on the one-machine cluster under load (upstream: pmodels/mpich#7957, MPICH 5.0.2)
MPI_STARTUP_FAILURE = re.compile(r"mpi/pmi2: (invalid client request|value not properly terminated)")


def submit_until_it_runs(args: list[str], started: Path, console: Path, timeout: float = 120) -> str:
    """Submit ``args``; wait until ``started`` exists. A job whose MPI start-up broke (it never reached the run:
    no ``started``, and the PMI-2 failure in its output) is cancelled and submitted once more; any other job
    that does not get there is cancelled and the test fails."""
    for attempt in (1, 2):
        job = sbatch(*args)
        deadline = time.monotonic() + timeout
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if started.exists():
            return job
        subprocess.run(["scancel", job], timeout=30)
        wait_for(job)
        log = console.with_name(console.name.replace("%j", job))
        text = log.read_text() if log.exists() else ""
        if attempt == 2 or not MPI_STARTUP_FAILURE.search(text):
            pytest.fail(f"job {job} did not get to {started.name} within {timeout:.0f} s:\n{text[-2000:]}")
    raise AssertionError("unreachable")
