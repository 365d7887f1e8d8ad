"""Single-process asynchronous mode is a faithful twin of MPI asynchrony, whatever the number of workers.

With more workers than ``dist.staleness_bound`` (8), every worker's gradients must still be applied:
the in-process driver steps the workers in lock-step, so each step's gradients arrive together, as they
would from MPI ranks acting at the same pace; staleness is bounded in rounds of every worker, and the
order in which the hosted workers push rotates so no worker is always the stalest.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

N_STOCKS = 20


@pytest.fixture(scope="module")
def wide_market(tmp_path_factory):
    out = tmp_path_factory.mktemp("wide") / "market"
    stocks = [f"S{i:02d}" for i in range(N_STOCKS)]
    write_market(generate_market(stocks, dt.date(2024, 1, 2), 3, seed=5, spec=SyntheticSpec(bar_minutes=5)), out)
    return out


def test_every_worker_has_its_gradients_applied_with_more_workers_than_the_staleness_bound(wide_market, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "train", "--data", wide_market, "--start_date", "2024-01-02", "--end_date", "2024-01-03",
        "--eval_start", "2024-01-04", "--eval_end", "2024-01-04", "--episodes", "1", "--output", out,
        "--workers", str(N_STOCKS), "--set", "dqn.learning_starts=40", "--set", "market.graph_window=40", "--no_progress",
    )
    assert proc.returncode == 0, proc.stderr
    counters = json.loads((out / "metrics.json").read_text())["counters"]
    per_worker = counters["per_worker"]
    assert len(per_worker) == N_STOCKS > 8  # one worker per stock, more than the staleness bound
    assert counters["gradients_sent"] == counters["gradients_applied"] + counters["gradients_dropped_stale"]
    assert counters["gradients_dropped_stale"] <= 0.05 * counters["gradients_sent"]
    applied = [row["applied"] for row in per_worker.values()]
    assert min(applied) > 0 and min(applied) == max(applied)  # every worker counts, and counts alike
    for row in per_worker.values():
        assert row["sent"] == row["received"] == row["applied"] + row["dropped_stale"]
