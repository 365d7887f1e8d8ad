"""An ensemble and market regimes in one run (issue 13's acceptance): under ``mpiexec --sync`` it completes, a
``kill -9`` of the whole job at a random moment then ``--resume auto`` ends exactly as the run that was never
interrupted, and ``--sync`` single mode equals it. Augmentation (on by default) is on too, so the regime
inputs appended after the features go through the augmenter's path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parallel_dqn.run.single import train
from tests.helpers import (
    assert_same_run,
    kill_9_then_resume_equals_uninterrupted,
    make_market,
    mpiexec,
    tiny_config,
    train_args,
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
    return make_market(tmp_path_factory.mktemp("regime_market"), regime_flip=True)


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
    out = kill_9_then_resume_equals_uninterrupted(market, tmp_path, *flags())
    ensembles = [json.loads((d / "metrics.json").read_text())["ensemble"] for d in (tmp_path / "reference", out)]
    assert ensembles[0] == ensembles[1]


