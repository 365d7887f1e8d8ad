"""Every training-optimisation component switched on at once (issue 12's acceptance).

* in single mode it completes, every component leaves its trace, and on a planted market it still beats every
  baseline out of sample;
* ``--sync`` under real ``mpiexec`` equals single mode's ``--sync`` with the same workers;
* killed with SIGKILL under ``mpiexec --sync`` at a random moment, ``--resume auto`` finishes exactly the run that
  was never interrupted.

:data:`EVERYTHING_ON` is checked against the configuration itself: a new setting of these sections left at its
default fails :func:`test_everything_on_switches_every_component`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest

from parallel_dqn.config import Config
from parallel_dqn.data.synthetic import generate_market, write_market
from parallel_dqn.run.single import train
from tests.helpers import (
    OPTIMISATION_OFF,
    assert_same_run,
    kill_9_then_resume_equals_uninterrupted,
    make_market,
    mpiexec,
    tiny_config,
    train_args,
)

#: every component on (fp16 is CUDA only: bf16 stands for mixed precision on CPU)
EVERYTHING_ON: dict[str, object] = {
    "validation.days": 1,
    "optim.lr_schedule": "plateau",
    "optim.warmup_applies": 20,
    "optim.cosine_period": 500,
    "optim.cosine_mult": 2,
    "optim.lr_min": 1e-6,
    "optim.plateau_factor": 0.7,
    "optim.plateau_patience": 2,
    "optim.grad_accum": 2,
    "optim.precision": "bf16",
    "monitor.enabled": True,
    "monitor.window": 50,
    "monitor.patience": 1,
    "monitor.on_plateau": "reduce_lr",
    "monitor.on_diverge": "reduce_lr",
    "monitor.explode_norm": 500.0,
    "monitor.vanish_norm": 1e-9,
    "curriculum.enabled": True,
    "curriculum.stages": 2,
    "curriculum.by": "mixed",
    "curriculum.threshold": -1e9,  # every validation passes: the stages move on within a short run
    "curriculum.patience": 1,
    "replay.prioritized": True,
    "replay.priority": "td:0.4,pnl:0.3,rare:0.3",
    "replay.ratio": 3.0,
    "augment.noise": 0.1,
    "augment.feature_dropout": 0.05,
    "augment.time_warp": 0.2,
    "augment.scenarios": 0.2,
}
#: the settings of those sections that stay at their defaults on purpose
LEFT_AT_DEFAULT = {"replay.capacity", "replay.alpha", "replay.beta_start"}
SECTIONS = ("optim", "validation", "monitor", "curriculum", "augment", "replay")


def switched_on(cfg: Config) -> Config:
    for key, value in EVERYTHING_ON.items():
        cfg.set(key, value)
    return cfg


def flags() -> list[str]:
    return [arg for key, value in EVERYTHING_ON.items() for arg in ("--set", f"{key}={str(value).lower()}")]


def test_everything_on_switches_every_component():
    defaults = Config()
    for section in SECTIONS:
        for f in dataclasses.fields(getattr(defaults, section)):
            key = f"{section}.{f.name}"
            if key in LEFT_AT_DEFAULT:
                continue
            assert key in EVERYTHING_ON, f"{key} is not switched on by the all-components tests"
            off = OPTIMISATION_OFF.get(key, getattr(getattr(defaults, section), f.name))
            assert EVERYTHING_ON[key] != off, key
    switched_on(Config()).validate()


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("all_on_market"))


def test_single_mode_completes_with_every_component_leaving_its_trace(market, tmp_path):
    out = tmp_path / "run"
    result = train(switched_on(tiny_config(market, out, **{"dqn.episodes": 3})))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(x["phase"], x["episode"]) for x in lines] == [
        ("train", 1), ("valid", 1), ("train", 2), ("valid", 2), ("train", 3), ("valid", 3), ("eval", 0)]
    train_lines = [x for x in lines if x["phase"] == "train"]
    assert [x["stage"] for x in train_lines] == [1, 2, 2]  # every validation passes the threshold
    assert all("monitor" in x for x in lines if x["phase"] == "valid")
    assert all(0 < x["lr"] <= Config().dqn.lr * (1 + 1e-9) for x in train_lines)  # the schedule's rate is logged per episode
    assert result["validation"] and result["monitor"]
    c = result["counters"]
    assert c["gradients_sent"] == c["gradients_received"] == c["gradients_applied"] > 0


@pytest.mark.slow
def test_every_component_on_still_beats_every_baseline_on_a_planted_market(tmp_path):
    stocks = ["LEAD", "FOLW", "MOMO"]
    data = tmp_path / "signal"
    write_market(generate_market(stocks, dt.date(2024, 1, 2), 6, seed=3), data)
    cfg = Config()
    for key, value in {
        "data.data": str(data), "data.stocks": stocks, "data.start_date": "2024-01-02", "data.end_date": "2024-01-05",
        "data.eval_start": "2024-01-08", "data.eval_end": "2024-01-09", "dqn.episodes": 3, "market.cost_bps": 1.0,
        "run.output": str(tmp_path / "run"), "run.progress": False,
    }.items():
        cfg.set(key, value)
    result = train(switched_on(cfg))
    best_baseline = max(m["sharpe"] for m in result["baselines"].values())
    assert result["eval"]["sharpe"] > best_baseline, (result["eval"]["sharpe"], result["baselines"])


@pytest.mark.mpi
@pytest.mark.slow
def test_sync_under_mpiexec_equals_single_mode_with_every_component_on(market, tmp_path):
    single = tmp_path / "single"
    train(switched_on(tiny_config(market, single, **{"dist.sync": True, "dist.workers": 2})))
    proc = mpiexec(3, *train_args(market, tmp_path / "mpi", "--sync", *flags()), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(single, tmp_path / "mpi")


@pytest.mark.mpi
@pytest.mark.slow
def test_kill_9_with_every_component_on_then_resume_auto_finishes_the_same_run(market, tmp_path):
    kill_9_then_resume_equals_uninterrupted(market, tmp_path, *flags())


