"""``parallel-dqn report`` on a walk-forward folder: its section comes first (verdict, folds, the joined
out-of-sample table, significance, joined equity curve with the fold boundaries).

The fast tests build the folder by hand (sweep.json, fake fold runs with metrics.json and returns_eval.csv)
and join it with the real :func:`parallel_dqn.walkforward.join`, so walk_forward.json is the real thing
without any training; one end-to-end test reports on a walk-forward the CLI trained.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from parallel_dqn import walkforward as wf
from parallel_dqn.cli.workflow import report
from parallel_dqn.data.synthetic import generate_market, write_market
from parallel_dqn.errors import UserError
from parallel_dqn.evaluation.metrics import performance_metrics
from parallel_dqn.evaluation.plots import fold_equity_figure
from parallel_dqn.evaluation.report import WalkForward, write_report
from parallel_dqn.sweep import open_sweep
from tests.helpers import run_cli

BARS = 60  # test bars per fold
BARS_PER_YEAR = 98280.0
STRATEGIES = ("agent", "buy_and_hold", "equal_weight", "random", "oracle")
#: fold -> (training days, test day)
FOLDS = {
    "fold-000": (("2024-01-02", "2024-01-05"), "2024-01-08"),
    "fold-001": (("2024-01-03", "2024-01-08"), "2024-01-09"),
    "fold-002": (("2024-01-04", "2024-01-09"), "2024-01-10"),
}
IMG = re.compile(r'<img alt="walk_forward_equity" src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def fake_fold(folder: Path, test_day: str, seed: int) -> pd.DataFrame:
    """A finished fold's run folder: returns_eval.csv (agent with a drift, baselines noise) and metrics.json."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(f"{test_day} 14:30", tz="UTC")
    table = pd.DataFrame({"timestamp": [start + pd.Timedelta(minutes=i) for i in range(BARS)]})
    for name in STRATEGIES:
        drift = {"agent": 4e-4, "oracle": 8e-4}.get(name, 0.0)
        table[name] = drift + 1e-3 * rng.standard_normal(BARS)
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "returns_eval.csv", index=False)
    metrics = {name: performance_metrics(table[name].to_numpy(), BARS_PER_YEAR) for name in STRATEGIES}
    (folder / "metrics.json").write_text(json.dumps({
        "eval": metrics.pop("agent"), "oracle": metrics.pop("oracle"), "baselines": metrics,
        "period": [str(table["timestamp"].iloc[0]), str(table["timestamp"].iloc[-1])],
        "annualisation": {"bars_per_day": 390.0, "bars_per_year": BARS_PER_YEAR},
    }))
    return table


def fake_walk_forward(out: Path) -> Path:
    """A walk-forward folder as `parallel-dqn walk-forward` leaves it, its folds faked: sweep.json, folds, joined."""
    combinations = []
    for i, (name, (train, test)) in enumerate(FOLDS.items()):
        settings = dict(zip(wf.FOLD_KEYS, (*train, test, test)))
        combinations.append({"index": i, "name": name, "id": f"id{i}", "settings": settings, "planned": "",
                             "in_sweep": True})
        fake_fold(out / name, test, seed=i)
    text = f"{wf.SPEC_KIND} " + json.dumps({"spec": {"train_days": 4, "test_days": 1}})
    (out / "sweep.json").write_text(json.dumps({"format": 1, "sweep_file": str(out / "walk_forward.json"),
                                                "sweep_text": text, "combinations": combinations}))
    wf.join(open_sweep(out), n_boot=200)
    return out


@pytest.fixture(scope="module")
def walk_forward(tmp_path_factory) -> Path:
    return fake_walk_forward(tmp_path_factory.mktemp("report") / "wf")


def report_of(*dirs: Path, output: Path | None = None) -> None:
    """``parallel-dqn report DIRS`` in this process (its UserErrors raised)."""
    report(argparse.Namespace(run_dirs=[str(d) for d in dirs], output=str(output) if output else None))


def cell(value: float) -> str:
    """A ratio as the report's tables write it (2 decimals)."""
    return f"{value:,.2f}"


def probability(value: float) -> str:
    """A probability (p-value, PSR) as the report's tables write it (3 decimals)."""
    return f"{value:.3f}"


def walk_forward_section(page: str) -> str:
    start = page.index('<section class="walk-forward"')
    return page[start: page.index("</section>", start)]


def check_walk_forward_section(page: str, folder: Path) -> None:
    """The walk-forward section is the first and shows walk_forward.json and every fold's returns as they are."""
    result = json.loads((folder / "walk_forward.json").read_text())
    section = walk_forward_section(page)
    assert page.index('<section class="walk-forward"') < page.index('<section class="run"')
    assert f'<p class="verdict">{html.escape(result["verdict"])}</p>' in section
    folds = re.findall(r"<tr><td>(fold-\d{3})</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>"
                       r"<td>(yes|no)</td>", section)
    assert [f[:3] for f in folds] == [(f["fold"], " .. ".join(f["train"]), " .. ".join(f["test"]))
                                      for f in result["folds"]]
    assert [f[3:] for f in folds] == [
        (cell(f["eval"]["sharpe"]), cell(f["baselines"]["buy_and_hold"]["sharpe"]),
         "yes" if f["beats_buy_and_hold"] else "no") for f in result["folds"]]
    sig = result["significance"]
    assert f"<td>{probability(sig['p_value_vs_buy_and_hold'])}</td>" in section
    assert f"<td>{probability(sig['spa_p_value_vs_buy_and_hold'])}</td>" in section
    assert f"<td>[{cell(sig['sharpe_ci'][0])}, {cell(sig['sharpe_ci'][1])}]</td>" in section
    assert f"<td>{probability(sig['psr'])}</td>" in section
    oos = section[section.index('<table id="out-of-sample">'):]
    names = re.findall(r"<tr(?: class=\"agent\")?><td>([^<]+)</td>", oos[: oos.index("</table>")])
    expected = ["agent (DQN + meta-policy)", *result["baselines"]]
    assert names == expected + (["oracle (planted signal)"] if result["oracle"] else [])
    assert f"<td>{100 * result['oos']['total_return']:,.2f}%</td>" in oos
    # the equity curve: a PNG that loads, its caption naming each fold's first bar of the joined record
    png = base64.b64decode(IMG.search(section).group(1))
    assert imread(io.BytesIO(png), format="png").shape[2] in (3, 4)
    lengths = [len(pd.read_csv(folder / f["fold"] / "returns_eval.csv")) for f in result["folds"]]
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    for start, f in zip(starts, result["folds"]):
        assert f"bar {start} ({f['fold']} {f['test'][0]})" in section
    assert f"Tear sheet: {sum(lengths):,} out-of-sample bars" in section  # the joined record's tear sheet


def tear_sheet_sharpe(section: str) -> str:
    """The agent's Sharpe in the first tear-sheet summary of ``section``."""
    summary = section[section.index('<table id="tearsheet-summary">'):]
    return re.search(r'<tr class="agent"><td>agent</td>(?:<td>[^<]*</td>){3}<td>([^<]*)</td>', summary).group(1)


def test_report_of_a_walk_forward_folder(walk_forward):
    proc = run_cli("report", walk_forward)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"report: {walk_forward / 'report.html'}"
    page = (walk_forward / "report.html").read_text()
    check_walk_forward_section(page, walk_forward)
    assert "<title>parallel-dqn report: wf</title>" in page
    assert 'id="comparison"' not in page  # the folds table stands for it
    assert [m for m in re.findall(r'<section class="run" id="run-([^"]+)"', page)] == list(FOLDS)
    assert 'src="http' not in page and "<script" not in page and "<link" not in page


def test_the_walk_forward_significance_says_how_to_read_each_figure(walk_forward, tmp_path):
    section = walk_forward_section(write_report([], tmp_path / "r.html", [
        WalkForward(walk_forward, json.loads((walk_forward / "walk_forward.json").read_text()),
                    {name: walk_forward / name for name in FOLDS})]).read_text())
    table = section[section.index('<table id="significance">'):]
    rows = re.findall(r"<tr><td>([^<]+)</td><td>[^<]*</td><td class=\"how\">([^<]+)</td>", table)
    assert [name for name, _ in rows] == [
        "95% Sharpe interval", "PSR (Sharpe &gt; 0)", "PSR (Sharpe &gt; buy-and-hold&#x27;s)",
        "p-value vs buy-and-hold (paired block bootstrap)", "SPA p-value vs buy-and-hold (Hansen)"]
    assert all(len(how) > 40 for _, how in rows)


def test_a_deflated_sharpe_is_shown_when_the_join_has_one(walk_forward, tmp_path):
    result = json.loads((walk_forward / "walk_forward.json").read_text())
    result["significance"]["deflated_sharpe"] = 0.8125
    result["significance_detail"]["n_trials"] = 7
    page = write_report([], tmp_path / "r.html", [WalkForward(walk_forward, result, {})]).read_text()
    assert "<tr><td>deflated Sharpe</td><td>0.812</td>" in page  # probabilities: 3 decimals
    assert "best of 7 skill-less trials" in page
    assert "the equity curve is left out" in page  # no fold folders given


def test_a_fold_without_returns_is_a_note_not_a_failure(walk_forward, tmp_path):
    copy = Path(shutil.copytree(walk_forward, tmp_path / "wf"))
    (copy / "fold-001" / "returns_eval.csv").write_bytes(b"\xff\xfe not a table")
    report_of(copy)
    section = walk_forward_section((copy / "report.html").read_text())
    assert "returns_eval.csv cannot be joined" in section and "the equity curve is left out" in section
    assert "walk_forward_equity" not in section and '<p class="verdict">' in section
    assert "as is the out-of-sample tear sheet" in section and "Tear sheet" not in section


def test_an_unjoined_walk_forward_names_the_folds_not_finished(walk_forward, tmp_path):
    copy = Path(shutil.copytree(walk_forward, tmp_path / "wf", ignore=shutil.ignore_patterns("report.html")))
    (copy / "walk_forward.json").unlink()
    with pytest.raises(UserError) as exc:
        report_of(copy)
    assert "its 3 folds have finished but were not joined" in exc.value.line()
    (copy / "fold-002" / "metrics.json").unlink()
    (copy / "fold-000" / "metrics.json").unlink()
    with pytest.raises(UserError) as exc:
        report_of(copy)
    line = exc.value.line()
    assert "\n" not in line and str(copy) in line
    assert "2 of 3 folds have not finished: fold-000 (not started), fold-002 (not started)" in line
    assert not (copy / "report.html").exists()


def test_the_fold_boundaries_are_drawn():
    curves = {"agent": np.linspace(1.0, 1.1, 31), "buy_and_hold": np.ones(31)}
    fig = fold_equity_figure(curves, [0, 10, 20], ["fold-000", "fold-001", "fold-002"])
    ax = fig.axes[0]
    vertical = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--")
    assert vertical == [0, 10, 20]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fold-000", "fold-001", "fold-002"]
    with pytest.raises(ValueError, match="3 fold boundaries but 2 labels"):
        fold_equity_figure(curves, [0, 10, 20], ["a", "b"])


# ---- end to end ----------------------------------------------------------------------------------------------
@pytest.mark.slow  # trains two folds through the CLI (the conftest spots `train`, not `walk-forward`)
def test_report_of_a_trained_walk_forward(tmp_path):
    market = tmp_path / "planted"
    write_market(generate_market(["LEAD", "FOLW", "MOMO"], dt.date(2024, 1, 2), 6, seed=3), market)
    out = tmp_path / "wf"
    proc = run_cli("walk-forward", "--data", market, "--train_days", "4", "--test_days", "1", "--episodes", "2",
                   "--n_boot", "200", "--output", out, "--jobs", "2", "--no_progress", timeout=600)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("report", out)
    assert proc.returncode == 0, proc.stderr
    page = (out / "report.html").read_text()
    check_walk_forward_section(page, out)
    result = json.loads((out / "walk_forward.json").read_text())
    assert len(result["folds"]) == 2
    # annualised as the folds were: the joined tear sheet's Sharpe is the out-of-sample table's
    assert tear_sheet_sharpe(walk_forward_section(page)) == f"{result['oos']['sharpe']:.2f}"
