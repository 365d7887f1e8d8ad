"""Parallel mode under real ``mpiexec`` (the MPICH wheel), several ranks on one machine.

* ``--sync`` under MPI gives the same weights and evaluation as ``--mode single --workers 3 --sync``;
* an asynchronous run completes with every output, and every gradient sent is applied or dropped;
* the cross-section every worker holds is identical, and holds nothing from after t;
* a worker that raises, or a rank killed from outside, ends the job non-zero within a bounded time;
* too few ranks, or more worker ranks than stocks: one clear line, exit 2.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from parallel_dqn.comm.inprocess import InProcessTransport
from parallel_dqn.data.store import open_store
from parallel_dqn.run.single import train
from parallel_dqn.training.driver import LocalShard, build_cross_section
from parallel_dqn.training.endpoint import ServerEndpoint
from parallel_dqn.training.observers import Observers
from parallel_dqn.training.plan import plan_training
from parallel_dqn.training.server import ParameterServer
from tests.helpers import MPIEXEC, ROOT, STOCKS, make_market, mpiexec, perturb_after, tiny_config, train_args, weights

pytestmark = [pytest.mark.mpi, pytest.mark.slow]  # every test starts mpiexec or a parallel run


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("mpi_market"))


def test_sync_parallel_equals_single_process(market, tmp_path):
    proc = mpiexec(4, *train_args(market, tmp_path / "parallel", "--sync", "--seed", "3"))
    assert proc.returncode == 0, proc.stderr
    single = train(tiny_config(market, tmp_path / "single", **{"dist.sync": True, "dist.workers": 3, "run.seed": 3}))
    parallel = json.loads((tmp_path / "parallel" / "metrics.json").read_text())
    wp, ws = weights(tmp_path / "parallel"), weights(tmp_path / "single")
    for name in ws:
        assert torch.allclose(wp[name], ws[name], rtol=0, atol=1e-6), name
    assert parallel["eval"] == pytest.approx(single["eval"], rel=1e-9)
    assert parallel["baselines"] == single["baselines"]
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "parallel" / "portfolio_eval.csv"), pd.read_csv(tmp_path / "single" / "portfolio_eval.csv")
    )
    assert parallel["mode"] == "parallel" and parallel["ranks"] == 4


def test_async_run_completes_and_accounts_for_every_gradient(market, tmp_path):
    out = tmp_path / "async"
    proc = mpiexec(4, *train_args(market, out))
    assert proc.returncode == 0, proc.stderr
    for name in ("trained_model.pth", "metrics.json", "metrics.jsonl", "portfolio_ep1.csv", "portfolio_ep2.csv",
                 "portfolio_eval.csv", "equity_eval.png", "attention.png", "config.toml"):
        assert (out / name).is_file(), name
    c = json.loads((out / "metrics.json").read_text())["counters"]
    assert c["gradients_sent"] == c["gradients_received"] == c["gradients_applied"] + c["gradients_dropped_stale"] > 0
    line = re.search(r"gradients: sent (\d+), received (\d+) = applied (\d+) \+ dropped as stale (\d+)",
                     (out / "run.log").read_text())
    assert line and int(line[1]) == int(line[3]) + int(line[4]) == c["gradients_sent"]
    for rank in (1, 2, 3):
        assert "owns" in (out / "logs" / f"rank{rank}.log").read_text()
    assert "agent (DQN + meta-policy)" in proc.stdout


def test_cross_section_is_identical_on_every_worker_and_causal(market, tmp_path):
    cut = pd.Timestamp("2024-01-08 17:00", tz="UTC")
    perturbed = tmp_path / "perturbed"
    perturb_after(market, perturbed, cut)
    cfg = tiny_config(market, tmp_path / "unused", **{"dist.workers": 3})
    d = cfg.data
    settings = {"data.stocks": STOCKS, "data.start_date": d.start_date, "data.end_date": d.end_date,
                "data.eval_start": d.eval_start, "data.eval_end": d.eval_end,
                "market.graph_window": cfg.market.graph_window}
    proc = mpiexec(4, "tests/mpi_scripts/cross_section.py", str(market), str(perturbed),
                   cut.tz_convert(None).isoformat(), json.dumps(settings))
    assert proc.returncode == 0, proc.stderr
    held = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(held) == 3
    assert len({h["digest"] for h in held}) == 1  # identical on every worker
    assert all(h["same_up_to_cut"] and h["differs_after_cut"] and h["rows_before_cut"] > 0 for h in held)
    # ...and the same as the single-process build of the same cross-section
    store = open_store(str(market))
    plan = plan_training(cfg, store)
    transport = InProcessTransport(ServerEndpoint(ParameterServer(cfg, 3, Observers(cfg.market.cost_bps)), 3))
    xs, _ = build_cross_section([LocalShard(i, s) for i, s in enumerate(plan.shards)], plan, store, transport, cfg)
    sys.path.insert(0, str(ROOT / "tests" / "mpi_scripts"))
    from cross_section import digest

    assert digest(xs.features, xs.log_returns, xs.tradeable, xs.dense_graph[xs.graph_index]) == held[0]["digest"]


@pytest.mark.parametrize("cache", ["off", "node"])
def test_a_worker_that_raises_ends_the_job(market, tmp_path, cache):
    """Without a cache each worker reads its own stocks' files, so the worker of FOLW (rank 2) raises while the
    others wait for it in the build's exchange; with one, the node's first worker (rank 1) reads every file
    and raises while the others wait for its entry. Either way: one line naming the file, and the job ends."""
    bad = tmp_path / "bad"
    perturb_after(market, bad, pd.Timestamp("2030-01-01", tz="UTC"))  # a plain copy
    victim = bad / "stocks_intraday" / "FOLW" / "2024" / "01" / "FOLW_2024-01-03.parquet"
    victim.write_bytes(b"not a parquet file")
    started = time.monotonic()
    setting = "data.cache=off" if cache == "off" else f"data.cache={tmp_path / 'cache'}"
    proc = mpiexec(4, *train_args(bad, tmp_path / "out", "--set", setting), timeout=120)
    assert proc.returncode != 0
    assert time.monotonic() - started < 60
    errors = [line for line in proc.stderr.splitlines() if line.startswith("parallel-dqn: error:")]
    rank = "rank 2" if cache == "off" else "rank 1"
    assert len(errors) == 1 and rank in errors[0] and str(victim) in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_rank_killed_from_outside_does_not_hang_the_job(market, tmp_path):
    out = tmp_path / "killed"
    args = train_args(market, out, "--episodes", "50", "--set", "dist.timeout=10")
    job = subprocess.Popen([MPIEXEC, "-n", "4", sys.executable, *args], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = out / "logs" / "rank2.log"
    deadline = time.monotonic() + 60
    pid = None
    while pid is None and time.monotonic() < deadline:
        found = re.search(r"rank 2 \(pid (\d+),", log.read_text()) if log.exists() else None
        pid = int(found[1]) if found else None
        time.sleep(0.2)
    assert pid is not None, "rank 2 never started"
    time.sleep(2.0)  # let training get going
    os.kill(pid, signal.SIGKILL)
    try:
        job.wait(timeout=90)
    except subprocess.TimeoutExpired:
        job.kill()
        pytest.fail("the job hung after a rank was killed")
    assert job.returncode != 0


def test_too_few_ranks_is_one_clear_line(market, tmp_path):
    proc = subprocess.run([sys.executable, *train_args(market, tmp_path / "o")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "at least 2 MPI ranks" in proc.stderr


def test_more_worker_ranks_than_stocks_is_said_once(market, tmp_path):
    proc = mpiexec(5, *train_args(market, tmp_path / "o"))
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "4 worker ranks but only 3 stocks" in errors[0], proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("sync", [True, False])
def test_messages_that_arrive_before_the_setup_wait_for_it(tmp_path, sync):
    """A worker's records and gradient reaching rank 0 before worker 0's SETUP (as on a resume) are applied."""
    import datetime as dt

    from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market

    market = tmp_path / "m"
    write_market(generate_market(["AAA", "BBB"], dt.date(2024, 1, 2), 2, seed=1, spec=SyntheticSpec(bar_minutes=5)), market)
    proc = mpiexec(3, "tests/mpi_scripts/early_messages.py", str(market), str(int(sync)), timeout=120)
    assert proc.returncode == 0, proc.stderr
    counters = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counters["set_up"] and counters["gradients_received"] == counters["gradients_applied"] == 2
    assert counters["version"] == (1 if sync else 2)  # sync: one round of two; async: two applies
