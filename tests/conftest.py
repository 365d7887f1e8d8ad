"""Shared test helpers: run the real CLI as a subprocess, and one tiny synthetic market per session.

* :func:`run_cli` (the session fixture ``cli`` returns it) runs ``python -m parallel_dqn ARGS...`` with this
  interpreter and returns the :class:`subprocess.CompletedProcess` (text stdout/stderr captured).
* ``tiny_market`` (session): a 3 stocks x 3 days market of 5-minute bars (AAA, BBB, CCC from
  2024-01-02), written once with ``parallel-dqn data generate``. Treat it as read-only.
* ``tiny_market_copy``: a fresh copy of it in the test's ``tmp_path``, free to corrupt.
* ``azurite`` (session) / ``spare_azurite``: the real Azurite blob emulator (node_modules, from npm) on a free
  port, with ``.connection_string`` for the published dev account; fails, never skips, if it is not installed.
* ``slurm`` (session): a SLURM cluster answering ``sinfo`` (``launchers/slurm/local_cluster.sh start``). Without
  one the SLURM tests are skipped, except where ``PARALLEL_DQN_REQUIRE_SLURM=1`` (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

TINY_STOCKS = ("AAA", "BBB", "CCC")
TINY_START = "2024-01-02"
TINY_DAYS = 3


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


@pytest.fixture(scope="session")
def cli():
    """The :func:`run_cli` function, for tests that prefer a fixture to an import."""
    return run_cli


@pytest.fixture(scope="session")
def tiny_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic market (AAA BBB CCC x 3 days, 5-minute bars), generated once. Read-only."""
    out = tmp_path_factory.mktemp("tiny_market") / "market"
    proc = run_cli(
        "data", "generate", "--output", out, "--stocks", *TINY_STOCKS,
        "--days", str(TINY_DAYS), "--start", TINY_START, "--bar_minutes", "5",
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def tiny_market_copy(tiny_market: Path, tmp_path: Path) -> Path:
    """A private copy of ``tiny_market`` that the test may modify."""
    return Path(shutil.copytree(tiny_market, tmp_path / "market"))


# ---- Azure Blob Storage: the real Azurite emulator (installed from npm by launchers/test.sh) ----------------------
ROOT = Path(__file__).resolve().parents[1]
AZURITE_BLOB = ROOT / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
#: the published development account of the Azure storage emulators (Azurite's docs, its constants.js)
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class Azurite:
    """One Azurite blob service on a free loopback port, in memory; :meth:`stop` ends it and waits."""

    def __init__(self) -> None:
        if not AZURITE_BLOB.is_file():
            pytest.fail(f"Azurite is not installed ({AZURITE_BLOB} missing): run `npm ci` in {ROOT} "
                        "(launchers/test.sh does it); the Azure tests need the real emulator", pytrace=False)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen(
            ["node", str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
             "--inMemoryPersistence", "--silent", "--skipApiVersionCheck", "--disableTelemetry", "--loose"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"Azurite exited at start: {self.process.stderr.read()[-2000:]}", pytrace=False)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"Azurite did not answer on port {self.port} within 30 s", pytrace=False)

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.port}/{DEV_ACCOUNT};")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stderr.close()


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """The Azurite blob emulator for the whole session; FAILS (not skips) when it is not installed."""
    emulator = Azurite()
    yield emulator
    emulator.stop()


@pytest.fixture
def spare_azurite() -> Iterator[Azurite]:
    """A second, private emulator that a test may stop mid-run."""
    emulator = Azurite()
    yield emulator
    emulator.stop()


# ---- SLURM: a real cluster (launchers/slurm/local_cluster.sh start; .ci/run starts one) ------------------------------
@pytest.fixture(scope="session")
def slurm() -> None:
    """A SLURM cluster with idle nodes to submit to; skip without one, unless PARALLEL_DQN_REQUIRE_SLURM=1."""
    problem = None
    if shutil.which("sbatch") is None:
        problem = "sbatch not found"
    else:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0 or "idle" not in proc.stdout:
            problem = f"no idle SLURM nodes (sinfo: {(proc.stdout + proc.stderr).strip()[:200]})"
    if problem is None:
        return
    hint = "start one with: bash launchers/slurm/local_cluster.sh install && bash launchers/slurm/local_cluster.sh start"
    if os.environ.get("PARALLEL_DQN_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM is required here (PARALLEL_DQN_REQUIRE_SLURM=1): {problem}; {hint}", pytrace=False)
    pytest.skip(f"{problem}; {hint}")
