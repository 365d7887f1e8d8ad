"""``run.device``: cpu by default; auto picks cuda only where torch sees a GPU; cuda without one is one line."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_cli

QUICK = ("--start_date", "2024-01-02", "--end_date", "2024-01-03", "--eval_start", "2024-01-04", "--eval_end",
         "2024-01-04", "--episodes", "1", "--set", "dqn.learning_starts=40", "--set", "market.graph_window=40",
         "--no_progress")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line_before_anything_is_written(tiny_market, tmp_path):
    proc = run_cli("train", "--data", tiny_market, "--output", tmp_path / "out", "--set", "run.device=cuda", *QUICK)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("parallel-dqn: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "run.device = cuda" in errors[0] and "no CUDA GPU" in errors[0]
    assert not (tmp_path / "out").exists()


def test_an_unknown_device_is_refused(tiny_market, tmp_path):
    proc = run_cli("train", "--data", tiny_market, "--output", tmp_path / "out", "--set", "run.device=tpu", *QUICK)
    assert proc.returncode == 2 and "run.device must be cpu, cuda or auto" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto means cuda on this machine")
def test_auto_without_a_gpu_is_the_cpu_run_exactly(tiny_market, tmp_path):
    for name, device in (("cpu", "cpu"), ("auto", "auto")):
        proc = run_cli("train", "--data", tiny_market, "--output", tmp_path / name, "--set", f"run.device={device}",
                       *QUICK)
        assert proc.returncode == 0, proc.stderr
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("cpu", "auto"))
    assert a["eval"] == b["eval"]
    assert (tmp_path / "cpu" / "portfolio_eval.csv").read_bytes() == (tmp_path / "auto" / "portfolio_eval.csv").read_bytes()
