"""No look-ahead: changing any bar after t changes no feature, action or weight at t.

The strongest form is end to end: a trained model is evaluated on a market and
on a copy whose bars after t were replaced by different (valid) bars; every
decision, position and meta-policy weight up to t must be identical, and must
differ somewhere after t (so the test can fail).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from parallel_dqn.data.align import align
from parallel_dqn.data.features import correlation_graph, graph_stamps, neighbour_graph, raw_features
from parallel_dqn.data.loader import load_bars
from parallel_dqn.data.store import LocalStore
from parallel_dqn.run.single import evaluate, train
from tests.helpers import STOCKS, make_market, perturb_after, tiny_config

CUT = pd.Timestamp("2024-01-08 17:00", tz="UTC")  # inside the evaluation day


@pytest.fixture(scope="module")
def markets(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("la")
    original = make_market(base / "original")
    perturbed = base / "perturbed"
    perturb_after(original, perturbed, CUT)
    return original, perturbed


def _panel(data: Path):
    frames = load_bars(LocalStore(data), STOCKS, dt.date(2024, 1, 2), dt.date(2024, 1, 8))
    return align(frames, STOCKS)


def test_features_and_graph_up_to_t_are_unchanged(markets):
    a, b = _panel(markets[0]), _panel(markets[1])
    t = int(np.searchsorted(a.timestamps, CUT.to_datetime64(), side="right"))  # rows < t are at or before CUT
    fa, fb = raw_features(a, 23400.0), raw_features(b, 23400.0)
    assert np.array_equal(fa[:t], fb[:t])
    assert not np.allclose(fa[t:], fb[t:])
    stamps = graph_stamps(a.timestamps, 5)
    ga, ia = correlation_graph(a.log_returns, 40, stamps)
    gb, ib = correlation_graph(b.log_returns, 40, stamps)
    assert np.array_equal(ga[ia[:t]], gb[ib[:t]])
    assert not np.array_equal(ga[ia[t:]], gb[ib[t:]])
    # the sparse graph too: which stocks each one attends over, and the edges, up to t
    na, ea, _ = neighbour_graph(a.log_returns, 40, stamps, 2)
    nb, eb, _ = neighbour_graph(b.log_returns, 40, stamps, 2)
    assert np.array_equal(na[ia[:t]], nb[ib[:t]]) and np.array_equal(ea[ia[:t]], eb[ib[:t]])
    assert not np.array_equal(ea[ia[t:]], eb[ib[t:]])


def test_actions_and_weights_up_to_t_are_unchanged(markets, tmp_path):
    original, perturbed = markets
    train(tiny_config(original, tmp_path / "model"))
    model = str(tmp_path / "model" / "trained_model.pth")
    evaluate(tiny_config(original, tmp_path / "ea"), model)
    evaluate(tiny_config(perturbed, tmp_path / "eb"), model)
    a = pd.read_csv(tmp_path / "ea" / "portfolio_eval.csv", parse_dates=["timestamp"])
    b = pd.read_csv(tmp_path / "eb" / "portfolio_eval.csv", parse_dates=["timestamp"])
    assert len(a) == len(b) > 0
    decided = [c for c in a.columns if c.startswith(("weight_", "position_"))] + ["gross_exposure"]
    before = a["timestamp"] <= CUT
    assert before.sum() > 10 and (~before).sum() > 10
    pd.testing.assert_frame_equal(a.loc[before, decided], b.loc[before, decided])
    assert not a.loc[~before, decided].equals(b.loc[~before, decided])
