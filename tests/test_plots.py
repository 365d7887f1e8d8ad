"""Report plots are written as valid, non-trivial PNG files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from parallel_dqn.evaluation import plots
from parallel_dqn.evaluation.portfolio import equity_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5000


def _curves(n: int = 120) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    curves = {name: equity_curve(rng.normal(1e-4, 2e-3, n - 1)) for name in ("agent", "buy_and_hold", "momentum")}
    timestamps = np.datetime64("2024-01-02T14:30", "ns") + np.arange(n) * np.timedelta64(1, "m")
    return curves, timestamps


def test_equity_and_drawdown_plots(tmp_path):
    curves, ts = _curves()
    _assert_png(plots.plot_equity(curves, ts, tmp_path / "equity.png"))
    _assert_png(plots.plot_drawdown(curves, ts, tmp_path / "sub" / "drawdown.png"))
    _assert_png(plots.plot_equity(curves, None, tmp_path / "equity_index.png"))


def test_curve_length_mismatch_is_rejected(tmp_path):
    curves, ts = _curves()
    with pytest.raises(ValueError):
        plots.plot_equity(curves, ts[:-1], tmp_path / "x.png")
    curves["short"] = curves["agent"][:-3]
    with pytest.raises(ValueError):
        plots.plot_drawdown(curves, ts, tmp_path / "y.png")


def test_attention_plot(tmp_path):
    m = np.random.default_rng(1).dirichlet(np.ones(4), size=4)
    path = plots.plot_attention(m, ["AAPL", "MSFT", "NVDA", "AMZN"], tmp_path / "attn.png", title="ep 3")
    _assert_png(path)
    with pytest.raises(ValueError):
        plots.plot_attention(m, ["AAPL"], tmp_path / "bad.png")


def test_the_attention_plot_of_500_stocks_ranks_the_strongest_links(tmp_path):
    """Past a few dozen stocks the S x S heatmap says nothing: the strongest links are drawn, ranked, instead, and
    the picture stays small (the heatmap's canvas once grew to gigabytes at 150 stocks)."""
    S = 500
    m = np.random.default_rng(2).dirichlet(np.ones(S), size=S)
    path = plots.plot_attention(m, [f"S{i:03d}" for i in range(S)], tmp_path / "attn500.png")
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the PNG header's IHDR
    assert width == 800 and height == 100 * (1.0 + 0.28 * plots.STRONGEST_LINKS)  # the ranked bars, not a heatmap
    small = plots.plot_attention(m[:5, :5], [f"S{i}" for i in range(5)], tmp_path / "attn5.png")
    assert struct.unpack(">II", small.read_bytes()[16:24]) == (int(100 * (2 + 0.6 * 5 + 1.5)), 100 * (2 + 3))


def test_intraday_curves_get_a_session_time_axis_and_daily_ones_a_calendar_axis():
    day = np.datetime64("2024-01-02T14:30", "ns") + np.arange(78) * np.timedelta64(5, "m")
    week = np.concatenate([day + np.timedelta64(d, "D") for d in (0, 1, 2, 3, 6)])  # Tue..Fri, then Monday
    curves = {"agent": np.linspace(1, 1.1, len(week)), "buy_and_hold": np.ones(len(week))}
    ax = plots._plot_curves(curves, week, "agent", "value", "t").axes[0]
    assert ax.lines[0].get_xdata().tolist() == list(range(len(week)))  # the bar index: nights take no width
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2024-01-02", "2024-01-03", "2024-01-04",
                                                            "2024-01-05", "2024-01-08"]
    gaps = [line.get_xdata()[0] for line in ax.lines[2:]]
    assert gaps == [77.5, 155.5, 233.5, 311.5] and "4 gaps" in ax.get_xlabel()  # 3 nights and a weekend
    daily = np.datetime64("2024-01-02", "ns") + np.arange(30) * np.timedelta64(1, "D")
    ax = plots._plot_curves({"agent": np.ones(30)}, daily, "agent", "value", "t").axes[0]
    assert ax.lines[0].get_xdata()[0] == daily[0]  # the calendar


def test_training_curve_plot(tmp_path):
    records = [{"episode": i, "reward": float(i) ** 0.5, "loss": 1 / (i + 1), "epsilon": max(0.05, 1 - i / 10)}
               for i in range(15)]
    records[4].pop("loss")  # a missing value leaves a gap
    _assert_png(plots.plot_training_curve(records, ["reward", "loss", "epsilon"], tmp_path / "train.png"))
