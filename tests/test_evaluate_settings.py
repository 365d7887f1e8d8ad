"""``evaluate`` takes from the command line only what an evaluation may change, refuses what the model fixes,
and never scores a model on the days it was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tiny_market, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evaluate") / "run"
    proc = run_cli(
        "train", "--data", tiny_market, "--output", out, "--episodes", "1", "--start_date", "2024-01-02",
        "--end_date", "2024-01-03", "--eval_start", "2024-01-04", "--eval_end", "2024-01-04",
        "--set", "dqn.learning_starts=40", "--set", "market.graph_window=40", "--no_progress",
    )
    assert proc.returncode == 0, proc.stderr
    return out / "trained_model.pth"


def evaluate(model: Path, market: Path, out: Path, *extra: str):
    return run_cli("evaluate", "--model", model, "--data", market, "--output", out, "--no_progress", *extra)


def one_error_line(proc, *words: str) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("parallel-dqn: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("days", [("2024-01-03", "2024-01-04"), ("20240103", "20240104"), ("2024-01-02", "2024-01-02")])
def test_evaluation_days_the_model_was_trained_on_are_refused(model, tiny_market, tmp_path, days):
    proc = evaluate(model, tiny_market, tmp_path / "e", "--eval_start", days[0], "--eval_end", days[1])
    one_error_line(proc)
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_stocks_other_than_the_models_are_refused(model, tiny_market, tmp_path):
    proc = evaluate(model, tiny_market, tmp_path / "e", "--eval_start", "2024-01-04", "--eval_end", "2024-01-04",
                    "--stocks", "AAA")
    one_error_line(proc, "--stocks", "AAA BBB CCC")


def test_a_setting_the_model_fixes_is_refused(model, tiny_market, tmp_path):
    proc = evaluate(model, tiny_market, tmp_path / "e", "--eval_start", "2024-01-04", "--eval_end", "2024-01-04",
                    "--set", "model.heads=4")
    one_error_line(proc, "model.heads")


def test_meta_policy_settings_are_applied(model, tiny_market, tmp_path):
    """--set meta.enabled=false evaluates the same decisions with equal capital (1/S per position held)."""
    proc = evaluate(model, tiny_market, tmp_path / "e", "--eval_start", "2024-01-04", "--eval_end", "2024-01-04",
                    "--set", "meta.enabled=false")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "e" / "portfolio_eval.csv")
    weights = table[[c for c in table.columns if c.startswith("weight_")]].to_numpy()
    positions = table[[c for c in table.columns if c.startswith("position_")]].to_numpy()
    held = positions != 0
    assert held.any() and np.allclose(np.abs(weights[held]), 1 / 3)
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved["eval"] is not None
