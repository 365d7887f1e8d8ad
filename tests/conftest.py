"""Shared test helpers: run the real CLI as a subprocess, and one tiny synthetic market per session.

* :func:`run_cli` (the session fixture ``cli`` returns it) runs ``python -m parallel_dqn ARGS...`` with this
  interpreter and returns the :class:`subprocess.CompletedProcess` (text stdout/stderr captured).
* ``tiny_market`` (session): a 3 stocks x 3 days market of 5-minute bars (AAA, BBB, CCC from
  2024-01-02), written once with ``parallel-dqn data generate``. Treat it as read-only.
* ``tiny_market_copy``: a fresh copy of it in the test's ``tmp_path``, free to corrupt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
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
