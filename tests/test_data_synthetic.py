"""The synthetic market: deterministic, valid files in the layout, measurable planted structure."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from parallel_dqn.data.align import align
from parallel_dqn.data.layout import parse_key
from parallel_dqn.data.loader import load_bars
from parallel_dqn.data.panel import MarketPanel
from parallel_dqn.data.store import open_store
from parallel_dqn.data.synthetic import (
    ROLES,
    SyntheticMarket,
    SyntheticSpec,
    generate_market,
    load_structure,
    oracle_expected_returns,
    write_market,
)
from parallel_dqn.errors import UserError

SYMBOLS = ["LEAD", "FOLL", "MOM", "REV", "RW", "LEAD2", "FOLL2"]
START = date(2024, 3, 4)  # a Monday


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate_market(SYMBOLS, START, days=12, seed=7)  # 4680 one-minute bars


@pytest.fixture(scope="module")
def panel(market: SyntheticMarket) -> MarketPanel:
    return align(market.frames, SYMBOLS)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def lag1(panel: MarketPanel, target: str, source: str) -> float:
    """Correlation of ``target``'s return at t with ``source``'s return at t-1."""
    r = panel.log_returns[1:]  # r[0] is a placeholder 0
    col = {s: j for j, s in enumerate(panel.symbols)}
    return corr(r[1:, col[target]], r[:-1, col[source]])


def test_deterministic_for_a_seed(market: SyntheticMarket) -> None:
    again = generate_market(SYMBOLS, START, days=12, seed=7)
    other = generate_market(SYMBOLS, START, days=12, seed=8)
    for s in SYMBOLS:
        pd.testing.assert_frame_equal(market.frames[s], again.frames[s])
        assert not np.allclose(market.frames[s]["close"], other.frames[s]["close"])
    assert market.structure == again.structure
    json.dumps(market.structure)  # JSON-able


def test_roles_cycle_and_followers_follow_the_nearest_preceding_leader(market: SyntheticMarket) -> None:
    assert [market.structure["roles"][s] for s in SYMBOLS] == [*ROLES, "leader", "follower"]
    assert market.structure["leaders"] == {"FOLL": "LEAD", "FOLL2": "LEAD2"}
    assert market.structure["coefficients"]["MOM"] == {"phi": 0.25}
    assert market.structure["coefficients"]["FOLL"] == {"beta": 0.6, "lag": 1}


def test_bars_are_consistent(market: SyntheticMarket) -> None:
    f = market.frames["MOM"]
    assert len(f) == 12 * 390
    np.testing.assert_allclose(f["open"].to_numpy()[1:], f["close"].to_numpy()[:-1])  # overnight is one step
    assert (f["high"] >= f[["open", "close"]].max(axis=1)).all()
    assert (f["low"] <= f[["open", "close"]].min(axis=1)).all() and (f["low"] > 0).all()
    assert (f["volume"] >= 0).all()
    minute = np.arange(len(f)) % 390
    edges, midday = f["volume"][(minute < 30) | (minute >= 360)], f["volume"][(minute >= 165) & (minute < 225)]
    assert edges.mean() > 1.5 * midday.mean()  # U-shaped intraday volume


def test_session_times_follow_new_york_dst() -> None:
    market = generate_market(["A"], date(2024, 3, 8), days=2, seed=0, spec=SyntheticSpec(bar_minutes=5))
    index = market.frames["A"].index
    assert str(index.tz) == "UTC" and len(index) == 2 * 78
    day1, day2 = index[:78], index[78:]  # Fri 2024-03-08 (EST), Mon 2024-03-11 (EDT)
    assert day1[0] == pd.Timestamp("2024-03-08 14:30", tz="UTC")
    assert day1[-1] == pd.Timestamp("2024-03-08 20:55", tz="UTC")  # bar start times
    assert day2[0] == pd.Timestamp("2024-03-11 13:30", tz="UTC")
    assert day2[-1] == pd.Timestamp("2024-03-11 19:55", tz="UTC")
    autumn = generate_market(["A"], date(2024, 11, 1), days=2, seed=0).frames["A"].index
    assert autumn[0].hour == 13 and autumn[390] == pd.Timestamp("2024-11-04 14:30", tz="UTC")


def test_weekends_are_skipped() -> None:
    index = generate_market(["A"], date(2024, 3, 9), days=6, seed=0).frames["A"].index  # starts on a Saturday
    days = sorted(set(index.date))
    assert days[0] == date(2024, 3, 11) and len(days) == 6
    assert all(d.weekday() < 5 for d in days)


def test_files_are_in_the_layout_and_load_back(market: SyntheticMarket, tmp_path: Path) -> None:
    paths = write_market(market, tmp_path)
    assert len(paths) == len(SYMBOLS) * 12
    assert all(parse_key(p.relative_to(tmp_path).as_posix()) is not None for p in paths)
    loaded = load_bars(open_store(str(tmp_path)), SYMBOLS, START, date(2024, 3, 19))  # validates every file
    for s in SYMBOLS:
        pd.testing.assert_frame_equal(loaded[s], market.frames[s], check_freq=False)
    assert load_structure(tmp_path) == json.loads(json.dumps(market.structure))
    assert load_structure(tmp_path / "stocks_intraday") is None


def test_follower_is_predicted_by_its_leader_only(panel: MarketPanel) -> None:
    assert lag1(panel, "FOLL", "LEAD") > 0.4
    assert abs(lag1(panel, "FOLL", "FOLL")) < 0.06
    assert lag1(panel, "FOLL2", "LEAD2") > 0.4
    assert abs(lag1(panel, "FOLL", "LEAD2")) < 0.06


def test_autocorrelation_of_ar_and_random_walk_stocks(panel: MarketPanel) -> None:
    assert lag1(panel, "MOM", "MOM") > 0.15
    assert lag1(panel, "REV", "REV") < -0.15
    assert abs(lag1(panel, "RW", "RW")) < 0.06
    assert abs(lag1(panel, "LEAD", "LEAD")) < 0.06


def test_oracle_correlates_with_next_returns(panel: MarketPanel, market: SyntheticMarket) -> None:
    r = panel.log_returns
    oracle = oracle_expected_returns(r, SYMBOLS, market.structure)
    assert oracle.shape == r.shape
    for j, s in enumerate(SYMBOLS):
        if market.structure["roles"][s] in ("leader", "random_walk"):
            assert not oracle[:, j].any()
        else:
            assert corr(oracle[1:-1, j], r[2:, j]) > 0.15, s


def test_oracle_with_a_longer_lag_and_an_unselected_leader() -> None:
    spec = SyntheticSpec(follower_lag=3)
    market = generate_market(["L", "F"], START, days=3, seed=1, spec=spec)
    r = align(market.frames, ["L", "F"]).log_returns
    oracle = oracle_expected_returns(r, ["L", "F"], market.structure)
    np.testing.assert_allclose(oracle[2:, 1], 0.6 * r[:-2, 0])  # E[r_F(t+1)] = beta * r_L(t+1-3)
    assert corr(oracle[:-1, 1], r[1:, 1]) > 0.4
    assert not oracle_expected_returns(r[:, 1:], ["F"], market.structure).any()


def test_bar_minutes_scale_volatility() -> None:
    flat = {"regime_multipliers": (1.0, 1.0)}  # no regimes: isolate the bar-length scaling
    one = generate_market(["W"], START, days=10, seed=2, spec=SyntheticSpec(**flat))
    five = generate_market(["W"], START, days=10, seed=2, spec=SyntheticSpec(bar_minutes=5, **flat))
    std = {k: np.log(m.frames["W"]["close"]).diff().std() for k, m in (("one", one), ("five", five))}
    assert std["one"] == pytest.approx(0.0010, rel=0.05)
    assert std["five"] / std["one"] == pytest.approx(np.sqrt(5), rel=0.1)


@pytest.mark.parametrize("kwargs", [{"follower_beta": 1.0}, {"momentum_phi": -1.5}, {"bar_minutes": 0},
                                    {"follower_lag": 0}, {"regime_switch_prob": 2.0}])
def test_invalid_spec_is_a_user_error(kwargs: dict) -> None:
    with pytest.raises(UserError, match="invalid synthetic market spec"):
        SyntheticSpec(**kwargs)
