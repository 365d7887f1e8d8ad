"""The HTML report of a 5-stock run and a 500-stock run, opened in real headless Chromium at 1280 px.

The 5-stock run is a real training on a synthetic market (5 days of 5-minute bars); the 500-stock run is a
synthetic run folder (its files as a run writes them, from random returns and weights, and its plots drawn by
:mod:`parallel_dqn.evaluation.plots`): a real 500-stock training is minutes, too slow for a test. The page is
checked, in a copy with a probe script added (the report itself has none), for horizontal overflow and for an
image that did not load; a 1280 px screenshot of each page is saved in the test's tmp folder.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from parallel_dqn.config import Config
from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market
from parallel_dqn.evaluation import plots
from parallel_dqn.evaluation.metrics import performance_metrics
from parallel_dqn.evaluation.report import write_report
from parallel_dqn.run.single import train
from tests.helpers import tiny_config

WIDTH = 1280
FIVE = ["LEAD", "FOLW", "MOMO", "MREV", "RAND"]
PROBE = """<script>
window.addEventListener("load", () => {
  const root = document.documentElement, images = Array.from(document.images);
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({scrollWidth: root.scrollWidth, clientWidth: root.clientWidth,
    images: images.length, broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)});
  document.body.appendChild(probe);
});
</script>"""


@pytest.fixture(scope="module")
def five_stock_run(tmp_path_factory) -> Path:
    """A real training of 5 stocks (2 episodes on 4 days, evaluated on the fifth)."""
    base = tmp_path_factory.mktemp("five")
    write_market(generate_market(FIVE, dt.date(2024, 1, 2), 5, seed=11, spec=SyntheticSpec(bar_minutes=5)),
                 base / "market")
    train(tiny_config(base / "market", base / "run", **{"data.stocks": FIVE}))
    return base / "run"


def synthetic_run(folder: Path, n_stocks: int, days: int = 5, bars_per_day: int = 78, seed: int = 0) -> Path:
    """A finished run's folder as a run writes it (metrics.json, returns_eval.csv, portfolio_eval.csv, config.toml,
    the plots), from random returns, weights and attention over ``days`` sessions of 5-minute bars."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    symbols = [f"S{i:03d}" for i in range(n_stocks)]
    session = pd.date_range("2024-01-02 14:30", periods=bars_per_day, freq="5min", tz="UTC")
    stamps = pd.DatetimeIndex(np.concatenate([(session + pd.offsets.BDay(d)).to_numpy() for d in range(days)]),
                              tz="UTC")
    n, bpy = len(stamps), 252.0 * bars_per_day
    weights = rng.normal(0, 1, (n, n_stocks)) * (rng.random((n, n_stocks)) < 0.3)
    weights /= np.maximum(np.abs(weights).sum(axis=1, keepdims=True), 1.0)
    positions = np.sign(weights).astype(int)
    names = ["agent", "buy_and_hold", "equal_weight", "momentum", "mean_reversion", "random"]
    returns = {name: rng.normal(2e-5, 1e-3, n) for name in names}
    returns["agent"] += 0.3 * returns["buy_and_hold"]
    pd.DataFrame({"timestamp": stamps, **returns}).to_csv(folder / "returns_eval.csv", index=False)
    portfolio = {"timestamp": stamps, "portfolio_value": np.cumprod(1 + returns["agent"]),
                 "portfolio_return": returns["agent"], "gross_exposure": np.abs(weights).sum(axis=1),
                 **{f"weight_{s}": weights[:, i] for i, s in enumerate(symbols)},
                 **{f"position_{s}": positions[:, i] for i, s in enumerate(symbols)}}
    pd.DataFrame(portfolio).to_csv(folder / "portfolio_eval.csv", index=False)
    attention = rng.dirichlet(np.full(n_stocks, 0.05), size=n_stocks)
    per_stock = {s: {"total_return": float(rng.normal(0, 0.01)), "sharpe": float(rng.normal()),
                     "hit_rate": float(rng.random()), "mean_weight": float(np.abs(weights[:, i]).mean())}
                 for i, s in enumerate(symbols)}
    metrics = {
        "eval": performance_metrics(returns["agent"], bpy, np.vstack([weights, np.zeros((1, n_stocks))])),
        "baselines": {k: performance_metrics(v, bpy) for k, v in returns.items() if k != "agent"},
        "per_stock": per_stock, "symbols": symbols, "attention": attention.round(4).tolist(),
        "period": [str(stamps[0]), str(stamps[-1])], "mode": "single", "wall_seconds": 1234.5,
        "annualisation": {"bars_per_day": bars_per_day, "bars_per_year": bpy},
        "run": {"seed": seed, "hostname": "synthetic"},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    cfg = Config()
    for key, value in {"data.stocks": symbols, "market.cost_bps": 1.0, "run.seed": seed, "dist.workers": 16,
                       "run.output": str(folder)}.items():
        cfg.set(key, value)
    cfg.write(folder / "config.toml")
    equity = {k: np.r_[1.0, np.cumprod(1 + v)] for k, v in returns.items()}
    times = np.r_[stamps.tz_convert(None).to_numpy(), (stamps[-1] + pd.Timedelta("5min")).tz_convert(None)
                  .to_datetime64()]
    plots.plot_equity(equity, times, folder / "equity_eval.png")
    plots.plot_drawdown(equity, times, folder / "drawdown_eval.png")
    plots.plot_attention(attention, symbols, folder / "attention.png")
    curve = [{"phase": "train", "episode": e, "total_reward": float(e), "sharpe": 0.1 * e, "loss": 1 / e,
              "epsilon": 1 / e} for e in range(1, 4)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(c) + "\n" for c in curve))
    plots.plot_training_curve(curve, ["total_reward", "sharpe", "loss"], folder / "training_curve.png")
    return folder


def open_in_chromium(chromium: str, page: Path, shot: Path) -> dict:
    """The probe's findings for ``page`` opened at 1280 px, and a screenshot of its top into ``shot``."""
    probed = page.with_name(page.stem + "-probed.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={WIDTH},2400",
             "--virtual-time-budget=20000", f"--user-data-dir={page.parent / 'chromium-profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"no probe in chromium's DOM (exit {dom.returncode}): {dom.stderr[-2000:]}"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=180, check=True)
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_reports_of_5_and_500_stocks_fit_1280_px_and_every_image_loads(chromium, five_stock_run, tmp_path):
    big = synthetic_run(tmp_path / "runs" / "s500", 500)
    started = time.perf_counter()
    five_page = write_report([five_stock_run], tmp_path / "five.html")
    five_s = time.perf_counter() - started
    started = time.perf_counter()
    big_page = write_report([big], tmp_path / "s500.html")
    big_s = time.perf_counter() - started
    both = write_report([five_stock_run, big], tmp_path / "both.html")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"report build: 5 stocks {five_s:.2f} s, 500 stocks {big_s:.2f} s; screenshots in {shots}")
    for page in (five_page, big_page, both):
        found = open_in_chromium(chromium, page, shots / f"{page.stem}.png")
        assert found["clientWidth"] == WIDTH and found["scrollWidth"] <= WIDTH, (page.name, found)
        assert found["images"] >= 6 and found["broken"] == [], (page.name, found)
    text = big_page.read_text()
    assert 'alt="attention_links"' in text and 'id="top-informants"' in text  # ranked links, not a heatmap
    assert "<th>informant 1</th>" in text and text.count("<tr><td>S") >= 500
    assert 'alt="attention"' not in text  # the S x S picture is left out at 500 stocks
    five = five_page.read_text()
    assert 'alt="attention"' in five and 'id="top-informants"' not in five  # the heatmap, for a few stocks
    for section in ("tearsheet-summary", "benchmark-relative", "trading", "daily-returns", "extremes"):
        assert f'id="{section}"' in five and f'id="{section}"' in text, section
    summary = five[five.index('id="tearsheet-summary"'):]
    cells = re.findall(r"<td>([^<]*)</td>", summary[: summary.index("</table>")])
    numbers = [c for c in cells if re.fullmatch(r"-?[\d,]+(\.\d+)?%?", c)]
    assert len(numbers) >= 6 * 9 and all(re.fullmatch(r"-?[\d,]+(\.\d\d?)?%?", c) for c in numbers), numbers
    assert sum(c.endswith("%") for c in numbers) >= 6 * 4  # returns, volatility, drawdown: percentages
    comparison = both.read_text()
    assert 'id="comparison-settings"' in comparison and "[500 items: S000, S001, S002, ...]" in comparison


@pytest.mark.slow  # a few seconds of plotting
def test_a_daily_run_gets_monthly_returns_and_a_damaged_file_a_note(tmp_path):
    """No browser: a run of daily bars over half a year gets the monthly table (and a calendar axis); a
    portfolio_eval.csv cut short leaves the tear sheet out with a note, the rest of the report intact."""
    daily = synthetic_run(tmp_path / "daily", 5, days=130, bars_per_day=1)
    page = write_report([daily], tmp_path / "daily.html").read_text()
    assert 'id="monthly-returns"' in page and "<th>Jan</th>" in page and 'id="daily-returns"' not in page
    assert "annualised with 252 bars a year" in page and "the tear sheet cannot be drawn" not in page
    old = synthetic_run(tmp_path / "old", 3, days=3, bars_per_day=78)  # a run from before "annualisation"
    metrics = json.loads((old / "metrics.json").read_text())
    del metrics["annualisation"]
    (old / "metrics.json").write_text(json.dumps(metrics))
    assert "annualised with 19,656 bars a year (78 a day x 252)" in write_report([old], tmp_path / "o.html").read_text()
    lines = (daily / "portfolio_eval.csv").read_text().splitlines()
    (daily / "portfolio_eval.csv").write_text("\n".join(lines[:50]) + "\n")
    page = write_report([daily], tmp_path / "cut.html").read_text()
    assert "the tear sheet cannot be drawn (portfolio_eval.csv has 49 rows for 130 evaluation bars)" in page
    assert 'id="tearsheet-summary"' not in page and "Evaluation: agent vs baselines" in page
