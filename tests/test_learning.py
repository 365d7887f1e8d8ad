"""Learning is real: on a market with a planted signal the agent beats every baseline out of sample,
and the lagged follower is captured through cross-stock attention (the ablation loses it).

A short version of `bench/learning.py` (which has the full table in the README).
"""

from __future__ import annotations

import datetime as dt

import pytest

from parallel_dqn.config import Config
from parallel_dqn.data.synthetic import generate_market, write_market
from parallel_dqn.run.single import train

STOCKS = ["LEAD", "FOLW", "MOMO"]


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    out = tmp_path_factory.mktemp("signal")
    write_market(generate_market(STOCKS, dt.date(2024, 1, 2), 6, seed=3), out)
    return out


def run(market, output, attention: bool) -> dict:
    cfg = Config()
    for key, value in {
        "data.data": str(market),
        "data.stocks": STOCKS,
        "data.start_date": "2024-01-02",
        "data.end_date": "2024-01-05",
        "data.eval_start": "2024-01-08",
        "data.eval_end": "2024-01-09",
        "dqn.episodes": 3,
        "market.cost_bps": 1.0,
        "model.cross_attention": attention,
        "run.output": str(output),
        "run.progress": False,
    }.items():
        cfg.set(key, value)
    return train(cfg)


@pytest.mark.slow
def test_agent_beats_baselines_and_attention_captures_the_follower(market, tmp_path):
    full = run(market, tmp_path / "attention", attention=True)
    best_baseline = max(m["sharpe"] for m in full["baselines"].values())
    assert full["eval"]["sharpe"] > best_baseline + 10.0
    assert full["eval"]["sharpe"] > 0.4 * full["oracle"]["sharpe"]
    ablated = run(market, tmp_path / "no_attention", attention=False)
    follower_with = full["per_stock"]["FOLW"]["sharpe"]
    follower_without = ablated["per_stock"]["FOLW"]["sharpe"]
    assert follower_with > 30.0 and follower_with > follower_without + 30.0
    syms = full["symbols"]
    attention = full["attention"][syms.index("FOLW")]
    assert attention[syms.index("LEAD")] == max(attention)  # the follower attends most to its leader
