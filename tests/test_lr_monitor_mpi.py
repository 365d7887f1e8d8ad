"""Under real ``mpiexec`` (4 ranks, --sync): a run with a validation period, a cosine schedule after a warm-up and
the convergence monitor (reducing the rate on a plateau), killed with SIGKILL at a random moment after a
checkpoint, continues with ``--resume auto`` to exactly the weights, curve and evaluation of an uninterrupted run."""

from __future__ import annotations

import pytest

from tests.helpers import curve, kill_9_then_resume_equals_uninterrupted, make_market

pytestmark = [pytest.mark.mpi, pytest.mark.slow]

SETTINGS = ("validation.days=1", "optim.lr_schedule=cosine", "optim.warmup_applies=10", "optim.cosine_period=40",
            "monitor.enabled=true", "monitor.patience=1", "monitor.on_plateau=reduce_lr")


def test_kill_9_then_resume_auto_with_validation_schedule_and_monitor_finishes_the_same_run(tmp_path):
    market = make_market(tmp_path / "market")
    out = kill_9_then_resume_equals_uninterrupted(market, tmp_path, *[x for s in SETTINGS for x in ("--set", s)])
    lines = curve(out)
    assert [x["phase"] for x in lines[:2]] == ["train", "valid"] and "monitor" in lines[1] and "lr" in lines[0]
