"""Walk-forward validation: the folds, their runs, the joined out-of-sample record and its significance.

The end-to-end tests run the real CLI: on a market with a planted lead-lag signal the agent beats buy-and-hold
in every fold, significantly; on random walks it does not, and the verdict says so; a walk-forward stopped by a
signal continues where it stopped; a fold's training never sees its test bars.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from parallel_dqn.config import Config
from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market
from parallel_dqn.errors import UserError
from parallel_dqn.walkforward import WalkForwardSpec, join, plan, plan_folds, verdict
from tests.helpers import curve, perturb_after, run_cli, user_error, weights

STOCKS = ["LEAD", "FOLW", "MOMO"]
START = dt.date(2024, 1, 2)
DAYS = [START + dt.timedelta(days=i) for i in range(40) if (START + dt.timedelta(days=i)).weekday() < 5]


# ---- the folds --------------------------------------------------------------------------------------------------
def test_folds_roll_with_embargo_and_never_train_on_their_test_days():
    days = DAYS[:10]
    folds = plan_folds(days, WalkForwardSpec(train_days=4, test_days=2, embargo_days=1))
    assert [(f.train, f.test) for f in folds] == [
        ((days[0], days[3]), (days[5], days[6])),
        ((days[2], days[5]), (days[7], days[8])),
    ]
    for f in folds:
        assert days.index(f.test[0]) - days.index(f.train[1]) == 2  # one embargo day between them
    tests = [d for f in folds for d in days[days.index(f.test[0]) : days.index(f.test[1]) + 1]]
    assert len(tests) == len(set(tests))  # test periods never overlap: each bar counts once out of sample


def test_folds_step_and_cap():
    folds = plan_folds(DAYS[:12], WalkForwardSpec(train_days=3, test_days=1, step_days=2, folds=3))
    assert [f.train[0] for f in folds] == [DAYS[0], DAYS[2], DAYS[4]]
    assert [f.name for f in folds] == ["fold-000", "fold-001", "fold-002"]


@pytest.mark.parametrize("spec, words", [
    (WalkForwardSpec(train_days=8, test_days=3), ["5 trading days", "too few for one fold"]),
    (WalkForwardSpec(train_days=2, test_days=2, step_days=1), ["--step_days 1", "overlap"]),
    (WalkForwardSpec(train_days=0, test_days=1), ["--train_days 0"]),
])
def test_impossible_folds_are_one_line_errors(spec, words):
    with pytest.raises(UserError) as exc:
        plan_folds(DAYS[:5], spec)
    assert all(w in exc.value.line() for w in words)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("planted")
    write_market(generate_market(STOCKS, START, 8, seed=3), out)
    return out


@pytest.fixture(scope="module")
def random_walks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("random_walks")
    spec = SyntheticSpec(follower_beta=0.0, momentum_phi=0.0, reversion_phi=0.0)
    write_market(generate_market(STOCKS, START, 8, seed=3, spec=spec), out)
    return out


def base_config(market: Path) -> Config:
    cfg = Config()
    for key, value in {"data.data": str(market), "dqn.episodes": 3, "run.progress": False}.items():
        cfg.set(key, value)
    return cfg


def test_planning_again_continues_and_another_walk_forward_is_refused(planted, tmp_path):
    spec = WalkForwardSpec(train_days=4, test_days=1)
    sweep, folds = plan(base_config(planted), spec, tmp_path / "wf")
    assert [c.name for c in sweep.combinations] == [f.name for f in folds] == [f"fold-00{i}" for i in range(4)]
    cfg = json.loads((tmp_path / "wf" / "sweep.json").read_text())
    again, _ = plan(base_config(planted), spec, tmp_path / "wf")
    assert again.combinations == sweep.combinations
    assert json.loads((tmp_path / "wf" / "sweep.json").read_text()) == cfg
    with pytest.raises(UserError, match="holds another walk-forward"):
        plan(base_config(planted), WalkForwardSpec(train_days=3, test_days=1), tmp_path / "wf")
    fold = (tmp_path / "wf" / "fold-002" / "config.toml").read_text()
    assert 'start_date = "2024-01-04"' in fold and 'eval_start = "2024-01-10"' in fold


def test_joining_unfinished_folds_names_them(planted, tmp_path):
    sweep, _ = plan(base_config(planted), WalkForwardSpec(train_days=4, test_days=1, folds=2), tmp_path / "wf")
    with pytest.raises(UserError) as exc:
        join(sweep)
    assert "2 of 2 folds have not finished: fold-000 (not started), fold-001 (not started)" in exc.value.line()


@pytest.mark.parametrize("flag", [["--eval_start", "2024-01-08"], ["--resume", "auto"], ["--overwrite"]])
def test_train_flags_a_walk_forward_sets_itself_are_refused(planted, tmp_path, flag):
    proc = run_cli("walk-forward", "--data", planted, "--train_days", "4", "--test_days", "1",
                   "--output", tmp_path / "wf", *flag)
    user_error(proc, flag[0].lstrip("-"))
    assert not (tmp_path / "wf").exists()


def test_verdict_in_plain_words():
    sig = {"p_value_vs_buy_and_hold": 0.003, "sharpe_ci": [1.2, 3.4], "confidence": 0.95}
    assert verdict(sig).startswith("significant skill over buy-and-hold at the 5% level (p = 0.003)")
    assert verdict({**sig, "p_value_vs_buy_and_hold": 0.4}).startswith("no significant skill over buy-and-hold")


# ---- end to end ------------------------------------------------------------------------------------------------
def walk_forward(market: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("walk-forward", "--data", market, "--train_days", "4", "--test_days", "1", "--episodes", "3",
                   "--cost_bps", "1", "--output", out, "--no_progress", *extra, timeout=600)


@pytest.mark.slow  # trains through the walk_forward() helper, which the conftest does not look into
def test_planted_signal_beats_buy_and_hold_in_every_fold_significantly(planted, tmp_path):
    proc = walk_forward(planted, tmp_path / "wf", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "wf" / "walk_forward.json").read_text())
    assert len(result["folds"]) == 4
    for fold in result["folds"]:
        assert fold["eval"]["sharpe"] > fold["baselines"]["buy_and_hold"]["sharpe"], fold["fold"]
    sig = result["significance"]
    assert sig["p_value_vs_buy_and_hold"] < 0.01
    assert sig["sharpe_ci"][0] > 0
    assert result["verdict"].startswith("significant skill")
    assert "significant skill over buy-and-hold" in proc.stdout
    # the joined record is every fold's test bars, end to end
    joined = pd.concat([pd.read_csv(tmp_path / "wf" / f"fold-00{i}" / "returns_eval.csv") for i in range(4)])
    assert result["significance_detail"]["n_bars"] == len(joined)
    assert result["oos"]["total_return"] == pytest.approx(np.prod(1 + joined["agent"]) - 1)
    steps = [f["eval"]["n_steps"] for f in result["folds"]]
    traded = sum(f["eval"]["turnover"] * n for f, n in zip(result["folds"], steps)) / sum(steps)
    assert result["oos"]["turnover"] == pytest.approx(traded) and traded > 0


@pytest.mark.slow  # trains through the walk_forward() helper, which the conftest does not look into
def test_random_walks_show_no_significant_skill(random_walks, tmp_path):
    proc = walk_forward(random_walks, tmp_path / "wf", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "wf" / "walk_forward.json").read_text())
    assert result["significance"]["p_value_vs_buy_and_hold"] > 0.05
    assert result["verdict"].startswith("no significant skill")


def test_a_stopped_walk_forward_continues_where_it_stopped(planted, tmp_path):
    out = tmp_path / "wf"
    command = [sys.executable, "-m", "parallel_dqn", "walk-forward", "--data", str(planted), "--train_days", "4",
               "--test_days", "1", "--episodes", "3", "--folds", "3", "--output", str(out), "--no_progress"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "fold-001" / "console.log").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    first = (out / "fold-000" / "metrics.json").read_bytes()
    proc.send_signal(signal.SIGTERM)  # as SLURM or a spot instance's shutdown would
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err
    assert "run the same command again to continue" in err
    assert not (out / "walk_forward.json").exists()
    again = run_cli(*command[3:], timeout=600)
    assert again.returncode == 0, again.stderr
    assert "fold-000: started" not in again.stderr  # finished folds are not run again
    assert (out / "fold-000" / "metrics.json").read_bytes() == first
    result = json.loads((out / "walk_forward.json").read_text())
    assert [f["fold"] for f in result["folds"]] == ["fold-000", "fold-001", "fold-002"]


@pytest.mark.slow  # trains through the walk_forward() helper, which the conftest does not look into
def test_a_folds_training_never_sees_its_test_bars(planted, tmp_path):
    """Perturbing every bar after a fold's training days (embargo and test days) changes nothing in its training."""
    changed = tmp_path / "changed"
    last_training_day = pd.Timestamp("2024-01-05 23:59", tz="UTC")  # fold-000: trains 01-02 .. 01-05
    perturb_after(planted, changed, last_training_day)
    runs = {}
    for name, market in (("same", planted), ("changed", changed)):
        proc = walk_forward(market, tmp_path / f"wf-{name}", "--folds", "1", "--embargo_days", "1")
        assert proc.returncode == 0, proc.stderr
        runs[name] = tmp_path / f"wf-{name}" / "fold-000"
    a, b = weights(runs["same"]), weights(runs["changed"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    train_lines = [[line for line in curve(r) if line["phase"] == "train"] for r in runs.values()]
    assert train_lines[0] == train_lines[1]
    evals = [json.loads((r / "metrics.json").read_text())["eval"] for r in runs.values()]
    assert evals[0] != evals[1]  # the perturbation did reach the test days


def test_every_fold_runs_under_the_sweep_machinery(planted, tmp_path):
    """`--plan_only`, then `sweep run` on the folder (what `sweep submit` does on SLURM), then the join."""
    out = tmp_path / "wf"
    planned = walk_forward(planted, out, "--folds", "2", "--plan_only")
    assert planned.returncode == 0, planned.stderr
    assert "sweep submit" in planned.stdout and not (out / "fold-000" / "metrics.json").exists()
    ran = run_cli("sweep", "run", out, "--jobs", "2", timeout=600)
    assert ran.returncode == 0, ran.stderr
    joined = walk_forward(planted, out, "--folds", "2")
    assert joined.returncode == 0, joined.stderr
    assert "started" not in joined.stderr
    assert json.loads((out / "walk_forward.json").read_text())["oos"]["folds"] == 2


# ---- warm start ------------------------------------------------------------------------------------------------
def test_warm_started_folds_start_from_the_previous_folds_model(planted, tmp_path):
    sweep, _ = plan(base_config(planted), WalkForwardSpec(train_days=4, test_days=1, folds=3, warm_start=True),
                    tmp_path / "wf")
    starts = [Config.load(sweep.config_path(c)).run.warm_start for c in sweep.combinations]
    assert starts == ["", str(tmp_path / "wf" / "fold-000" / "trained_model.pth"),
                      str(tmp_path / "wf" / "fold-001" / "trained_model.pth")]
    proc = run_cli("walk-forward", "--data", planted, "--train_days", "4", "--test_days", "1", "--warm_start",
                   "--jobs", "2", "--output", tmp_path / "other")
    user_error(proc, "--warm_start", "--jobs 2")


def test_run_warm_start_loads_the_models_weights_and_refuses_another_market(planted, tmp_path):
    """A run with ``run.warm_start`` starts from that model's weights: with a learning rate too small to move
    them, it ends where the model was (a cold start with the same seed ends elsewhere)."""
    first = walk_forward(planted, tmp_path / "wf", "--folds", "1")
    assert first.returncode == 0, first.stderr
    model = tmp_path / "wf" / "fold-000" / "trained_model.pth"
    days = ["--start_date", "2024-01-03", "--end_date", "2024-01-08", "--eval_start", "2024-01-09",
            "--eval_end", "2024-01-09", "--episodes", "1", "--lr", "1e-12", "--no_progress"]
    warm = run_cli("train", "--data", planted, *days, "--output", tmp_path / "warm", "--set", f"run.warm_start={model}")
    cold = run_cli("train", "--data", planted, *days, "--output", tmp_path / "cold")
    assert warm.returncode == 0 and cold.returncode == 0, warm.stderr + cold.stderr
    start, w, c = (torch.load(p, weights_only=True)["q_state"] for p in
                   (model, tmp_path / "warm" / "trained_model.pth", tmp_path / "cold" / "trained_model.pth"))
    assert all(torch.allclose(w[k], start[k], atol=1e-6) for k in start)
    assert not all(torch.allclose(c[k], start[k], atol=1e-3) for k in start)
    other = run_cli("train", "--data", planted, *days, "--stocks", "LEAD", "FOLW", "--output", tmp_path / "x",
                    "--set", f"run.warm_start={model}")
    user_error(other, "run.warm_start", "FOLW LEAD MOMO", "not on LEAD FOLW")
