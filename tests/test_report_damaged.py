"""``parallel-dqn report`` on damaged run files, through the real CLI.

A required file that cannot be used (``metrics.json`` that is not JSON, not a JSON object or not UTF-8
text; a ``config.toml`` that is not TOML or not text) is one line naming the file and what is wrong,
exit 2, nothing written. A damaged optional part (a plot that is not a PNG, a garbled
``portfolio_eval.csv``, a truncated ``metrics.jsonl``, a malformed section of ``metrics.json``) is
left out with a note in the report, and the rest of the report is still made. The run's own files
are never changed.

One short run of the tiny market is trained once for the module; each test damages a copy.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import hash_tree, run_cli, user_error

GARBAGE = bytes(range(256))


@pytest.fixture(scope="module")
def trained_run(tiny_market, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report_damaged") / "run"
    proc = run_cli(
        "train", "--data", tiny_market, "--stocks", "AAA", "BBB", "--start_date", "2024-01-02",
        "--end_date", "2024-01-03", "--eval_start", "2024-01-04", "--eval_end", "2024-01-04", "--episodes", "1",
        "--output", out, "--set", "dqn.learning_starts=40", "--set", "market.graph_window=40", "--no_progress",
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("metrics.json", "metrics.jsonl", "config.toml", "portfolio_eval.csv", "equity_eval.png"):
        assert (out / name).is_file(), name
    return out


@pytest.fixture
def run(trained_run, tmp_path) -> Path:
    """A private copy of the trained run (without its checkpoints and event files: the report reads neither)."""
    return Path(shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints", "tensorboard")))


def report_ok(run: Path) -> str:
    proc = run_cli("report", run)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, f"exit {proc.returncode}\n{proc.stderr}"
    assert f"report: {run / 'report.html'}" in proc.stdout, proc.stdout
    return (run / "report.html").read_text(encoding="utf-8")


def write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = run / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return damage


def edit_metrics(**changes) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        metrics = json.loads((run / "metrics.json").read_text())
        metrics.update(changes)
        (run / "metrics.json").write_text(json.dumps(metrics))

    return damage


def truncate_jsonl(run: Path) -> None:
    path = run / "metrics.jsonl"
    text = path.read_text()
    assert text.count("\n") >= 2  # a training line and an evaluation line at least
    path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 20])  # the last line cut short


# ---- a required file that cannot be used: one line, exit 2, nothing written ------------------------
ERRORS = {
    "metrics.json not JSON": (write("metrics.json", '{"eval": {"sharpe": 1.0'), ("metrics.json", "not valid JSON")),
    "metrics.json empty": (write("metrics.json", ""), ("metrics.json", "not valid JSON")),
    "metrics.json a list": (write("metrics.json", "[1, 2, 3]"), ("metrics.json", "JSON object")),
    "metrics.json a number": (write("metrics.json", "42"), ("metrics.json", "JSON object")),
    "metrics.json not UTF-8": (write("metrics.json", GARBAGE), ("metrics.json", "UTF-8")),
    "config.toml not TOML": (write("config.toml", "[dqn\nlr = "), ("config.toml", "TOML")),
    "config.toml not UTF-8": (write("config.toml", GARBAGE), ("config.toml", "UTF-8")),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_a_damaged_required_file_is_one_line(run, case):
    damage, names = ERRORS[case]
    damage(run)
    before = hash_tree(run)
    user_error(run_cli("report", run), str(run), *names)
    assert hash_tree(run) == before and not (run / "report.html").exists()


def test_a_damaged_run_among_several_is_one_line_and_no_report_is_written(run, trained_run, tmp_path):
    write("metrics.json", "[]")(run)
    out = tmp_path / "both.html"
    user_error(run_cli("report", trained_run, run, "--output", out), str(run / "metrics.json"))
    assert not out.exists()


# ---- a damaged optional part: left out with a note -------------------------------------------------
NOTES = {
    "equity plot not a PNG": (write("equity_eval.png", b"this is not a png"), ("equity_eval.png", "not a PNG")),
    "attention plot empty": (write("attention.png", b""), ("attention.png", "not a PNG")),
    "portfolio csv binary": (write("portfolio_eval.csv", GARBAGE), ("portfolio_eval.csv",)),
    "portfolio csv ragged": (write("portfolio_eval.csv", "a,b\n1\n2,3,4,5\n\"x"), ("portfolio_eval.csv",)),
    "portfolio csv empty": (write("portfolio_eval.csv", ""), ("portfolio_eval.csv",)),
    "portfolio weights not numbers": (
        write("portfolio_eval.csv", "timestamp,weight_AAA,weight_BBB\n2024-01-04 14:30,x,y\n2024-01-04 14:35,1,2\n"),
        ("portfolio_eval.csv",)),
    "portfolio timestamps not times": (
        write("portfolio_eval.csv", "timestamp,weight_AAA\nsoon,0.5\nlater,0.25\n"), ("portfolio_eval.csv",)),
    "metrics.jsonl truncated": (truncate_jsonl, ("metrics.jsonl", "line 2")),
    "metrics.jsonl not UTF-8": (write("metrics.jsonl", GARBAGE), ("metrics.jsonl", "UTF-8")),
    "metrics.jsonl line not an object": (write("metrics.jsonl", '[1, 2]\n"x"\n'), ("metrics.jsonl", "line 1")),
    "metrics.json sections of the wrong type": (
        edit_metrics(eval="good", baselines=[1, 2], oracle=3, per_stock={"AAA": 1}, attention="x", symbols=5,
                     period=7, run=[], wall_seconds="long"),
        ("metrics.json", "eval")),
    "metrics.json numbers that are not numbers": (
        edit_metrics(eval={"sharpe": "high", "total_return": [1]}, per_stock={"AAA": {"sharpe": {}}, "BBB": []},
                     attention=[[1, "a"], 5]),
        ("metrics.json",)),
    "run.json not JSON (metrics without a run record)": (
        lambda run: (edit_metrics(run=None)(run), write("run.json", "{oops")(run)), ("run.json", "not valid JSON")),
}


@pytest.mark.parametrize("case", list(NOTES))
def test_a_damaged_optional_part_is_left_out_with_a_note(run, case):
    damage, names = NOTES[case]
    damage(run)
    before = hash_tree(run)
    page = report_ok(run)
    notes = [line for line in page.splitlines() if 'class="note"' in line]
    assert any(all(n in line for n in names) for line in notes), (names, notes)
    assert "<h3>Run record</h3>" in page  # the rest of the report is still there
    assert hash_tree(run, exclude=("report.html",)) == before


def test_a_plot_that_is_not_a_png_is_not_embedded(run):
    write("equity_eval.png", b"<svg onload=alert(1)>")(run)
    page = report_ok(run)
    assert 'alt="equity_eval"' not in page and "onload" not in page
    assert 'alt="drawdown_eval"' in page  # the intact plots still are


def test_an_undamaged_run_has_no_notes(run):
    page = report_ok(run)
    assert 'class="note"' not in page
    assert 'alt="equity_eval"' in page and 'alt="weights"' in page and "<h3>Training curve</h3>" in page


def test_two_runs_one_with_damaged_numbers_are_compared(run, trained_run, tmp_path):
    edit_metrics(eval={"sharpe": "high"}, wall_seconds={"a": 1})(run)
    out = tmp_path / "both.html"
    proc = run_cli("report", trained_run, run, "--output", out)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "<h2>Comparison</h2>" in out.read_text(encoding="utf-8")
