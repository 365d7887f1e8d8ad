"""The run record (run.json), the HTML report and full-workflow, on the helpers' tiny market."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from parallel_dqn.data.store import LocalStore
from parallel_dqn.evaluation.report import write_report
from parallel_dqn.run.single import train
from parallel_dqn.telemetry.record import LIBRARIES, run_record, stock_day_files
from tests.helpers import STOCKS, make_market, tiny_config

BASELINES = ("buy_and_hold", "equal_weight", "momentum", "mean_reversion", "random")
#: the same settings as tests.helpers.tiny_config, as command-line flags
TINY_FLAGS = (
    "--stocks", *STOCKS, "--start_date", "2024-01-02", "--end_date", "2024-01-05",
    "--eval_start", "2024-01-08", "--eval_end", "2024-01-08", "--episodes", "2", "--batch_size", "16",
    "--target_update", "20", "--set", "dqn.learning_starts=40", "--set", "market.graph_window=40", "--no_progress",
)


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("market"))


@pytest.fixture(scope="module")
def runs(market, tmp_path_factory) -> list[Path]:
    """Two finished runs that differ in seed and learning rate."""
    base = tmp_path_factory.mktemp("runs")
    train(tiny_config(market, base / "seed0"))
    train(tiny_config(market, base / "seed1", **{"run.seed": 1, "dqn.lr": 1e-3}))
    return [base / "seed0", base / "seed1"]


def test_run_json_is_written_and_in_metrics(runs):
    out = runs[0]
    record = json.loads((out / "run.json").read_text())
    assert json.loads((out / "metrics.json").read_text())["run"] == record
    assert set(record["code"]) == {"commit", "dirty"}
    assert record["code"]["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", record["code"]["commit"])
    data = record["data"]
    assert data["stocks"] == STOCKS and data["files"] == len(STOCKS) * 5  # 5 days, warm-up and evaluation
    assert re.fullmatch(r"[0-9a-f]{64}", data["sha256"])
    assert data["first_timestamp"].startswith("2024-01-02") and data["last_timestamp"].startswith("2024-01-08")
    assert record["seed"] == 0 and json.loads((runs[1] / "run.json").read_text())["seed"] == 1
    assert {"python", *LIBRARIES} == set(record["versions"]) and record["versions"]["torch"]
    assert record["hostname"] and record["started"] <= record["finished"]
    assert "environ" not in json.dumps(record).lower()


def test_fingerprint_covers_only_the_selected_stocks(market, tmp_path):
    data = Path(shutil.copytree(market, tmp_path / "m"))
    store, selected = LocalStore(data), STOCKS[:2]
    cfg = tiny_config(data, tmp_path / "out")
    days = (pd.Timestamp("2024-01-02").date(), pd.Timestamp("2024-01-08").date())

    def fingerprint() -> str:
        return run_record(cfg, selected, stock_day_files(store, selected, *days))["data"]["sha256"]

    def change(symbol: str) -> None:
        path = store.fetch(symbol, days[0])
        frame = pd.read_parquet(path)
        frame.loc[0, "volume"] += 1
        frame.to_parquet(path, index=False)

    before = fingerprint()
    change(STOCKS[2])  # not selected
    assert fingerprint() == before
    change(selected[0])
    assert fingerprint() != before


def test_report_of_one_run(runs, tmp_path):
    path = write_report([runs[0]], tmp_path / "one.html")
    page = path.read_text()
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert f"<td>{metrics['eval']['sharpe']:.2f}</td>" in page  # ratios: 2 decimals
    assert f"<td>{100 * metrics['eval']['total_return']:.2f}%</td>" in page  # returns: percent
    assert all(name in page for name in BASELINES)
    for alt in ("equity_eval", "drawdown_eval", "attention", "training_curve", "weights"):
        assert re.search(rf'<img alt="{alt}" src="data:image/png;base64,[A-Za-z0-9+/=]{{100,}}"', page), alt
    assert 'src="http' not in page and "href=" not in page and "<script" not in page and "<link" not in page
    assert metrics["run"]["data"]["sha256"] in page
    assert 'id="comparison"' not in page


def test_report_compares_runs_by_sharpe(runs, tmp_path):
    page = write_report(runs, tmp_path / "two.html").read_text()
    table = page[page.index('<table id="comparison">') :]
    table = table[: table.index("</table>")]
    sharpe = {r.name: json.loads((r / "metrics.json").read_text())["eval"]["sharpe"] for r in runs}
    expected = sorted(sharpe, key=sharpe.get, reverse=True)
    assert re.findall(r"<tr><td>(seed\d)</td>", table) == expected
    header = table[: table.index("</tr>")]
    assert "<th>annual return</th>" in header and "dqn.lr" not in header  # metrics only: the settings go below
    settings = page[page.index('<table id="comparison-settings"'):]
    settings = settings[: settings.index("</table>")]
    assert re.findall(r"<tr><td>(seed\d)</td>", settings) == expected  # the same order as the metrics
    assert "<code>dqn.lr = 0.001</code>" in settings and "<code>run.seed = 1</code>" in settings
    assert "run.output" not in settings


def test_report_cli(runs, tmp_path, cli):
    proc = cli("report", runs[0])
    assert proc.returncode == 0, proc.stderr
    assert (runs[0] / "report.html").is_file() and str(runs[0] / "report.html") in proc.stdout
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    proc = cli("report", runs[0], empty, "--output", tmp_path / "r.html")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and str(empty) in lines[0] and "metrics.json" in lines[0]
    assert not (tmp_path / "r.html").exists()


def test_full_workflow_cli(market, tmp_path, cli):
    out = tmp_path / "wf"
    proc = cli("full-workflow", "--data", market, "--output", out, *TINY_FLAGS)
    assert proc.returncode == 0, proc.stderr
    for name in ("trained_model.pth", "evaluation/metrics.json", "report.html", "run.json"):
        assert (out / name).is_file(), name
    assert str(out / "report.html") in proc.stdout and "agent (DQN + meta-policy)" in proc.stdout
    trained = json.loads((out / "metrics.json").read_text())
    evaluated = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert evaluated["eval"] == trained["eval"]


def test_full_workflow_resumes_and_is_idempotent_with_resume_auto(market, tmp_path, cli):
    out = tmp_path / "wf"
    first = cli("full-workflow", "--data", market, "--output", out, "--resume", "auto", *TINY_FLAGS)
    assert first.returncode == 0, first.stderr
    report = (out / "report.html").stat().st_mtime_ns
    again = cli("full-workflow", "--data", market, "--output", out, "--resume", "auto", *TINY_FLAGS)
    assert again.returncode == 0, again.stderr  # training has finished: evaluate and report again, nothing trained
    assert "nothing to resume" in (out / "run.log").read_text()
    assert (out / "report.html").stat().st_mtime_ns > report
    assert json.loads((out / "evaluation" / "metrics.json").read_text())["eval"] == \
        json.loads((out / "metrics.json").read_text())["eval"]
