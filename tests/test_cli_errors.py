"""Bad input through the real CLI: one clear error line, exit 2, no traceback, nothing written lost.

Every test runs ``python -m parallel_dqn ...`` as a subprocess on the tiny market of
``conftest.py`` (3 stocks x 3 days of 5-minute bars), corrupting a private copy where needed.
The error line must name the offending thing (file and row, flag, symbol, dates).

Every error must be the only line on stderr, whether it is found before a run starts (flags,
config, stocks, dates, output folder) or while the workers load the bars.

Commands that import torch take ~2.5 s to start, so each table of such cases is prepared and
launched at once by a module fixture (a thread pool of subprocesses); each parametrized test then
checks its own case's result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import hash_tree, user_error

#: the bar file the data tests corrupt: a training day of the second stock (AAA loads fine first)
BAD_KEY = "stocks_intraday/BBB/2024/01/BBB_2024-01-03.parquet"
#: a file of the evaluation day (the tiny market's last day, held out by default)
EVAL_KEY = "stocks_intraday/BBB/2024/01/BBB_2024-01-04.parquet"
RUN_FILES = ("trained_model.pth", "metrics.json", "metrics.jsonl", "portfolio_ep1.csv")
LOGS = ("run.log", "status.json")  # what every attempt writes: its log, and its state (here: failed)
NO_AZURE_ENV = {k: v for k, v in os.environ.items() if not k.upper().startswith("AZURE")}


# ---- helpers -------------------------------------------------------------------------------------
def train_args(data: Path | str, output: Path, *extra: str) -> list[str]:
    """A tiny single-process training command line."""
    return ["train", "--mode", "single", "--data", str(data), "--episodes", "1",
            "--output", str(output), "--no-progress", *extra]


def eval_args(model: Path, data: Path, output: Path, *extra: str) -> list[str]:
    """Evaluate ``model`` on the tiny market's last day."""
    return ["evaluate", "--model", str(model), "--data", str(data), "--eval_start", "2024-01-04",
            "--eval_end", "2024-01-04", "--output", str(output), "--no-progress", *extra]


def rewrite(path: Path, edit: Callable[[pa.Table], pa.Table]) -> None:
    """Replace a parquet file by ``edit`` of its table."""
    pq.write_table(edit(pq.read_table(path)), path)


def set_values(column: str, rows: dict[int, object]) -> Callable[[pa.Table], pa.Table]:
    """An edit setting ``column[row] = value`` for each item of ``rows`` (None: null), keeping the type."""

    def edit(table: pa.Table) -> pa.Table:
        values = table.column(column).to_pylist()
        for row, value in rows.items():
            values[row] = value
        i = table.schema.get_field_index(column)
        return table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type))

    return edit


def swap_rows(column: str, a: int, b: int) -> Callable[[pa.Table], pa.Table]:
    def edit(table: pa.Table) -> pa.Table:
        values = table.column(column).to_pylist()
        return set_values(column, {a: values[b], b: values[a]})(table)

    return edit


def copy_value(column: str, src: int, dst: int) -> Callable[[pa.Table], pa.Table]:
    def edit(table: pa.Table) -> pa.Table:
        return set_values(column, {dst: table.column(column).to_pylist()[src]})(table)

    return edit


def high_below_low(row: int) -> Callable[[pa.Table], pa.Table]:
    def edit(table: pa.Table) -> pa.Table:
        high = table.column("high").to_pylist()[row]
        return set_values("low", {row: high + 1.0})(table)

    return edit


def write_garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(2048))


@dataclass
class Launched:
    """A CLI command running in the background, with what its test checks afterwards."""

    future: Future
    words: list[str]  # the error line must contain each
    refused_at_start: bool = True  # stopped before the run began (False: while loading the bars)
    tmp: Path = Path()  # the case's private folder
    before: dict[str, str] = field(default_factory=dict)  # hashes of the folder that must not change
    log_before: bytes = b""

    def proc(self) -> subprocess.CompletedProcess[str]:
        return self.future.result(timeout=300)


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 1))) as ex:
        yield ex


# ---- 1-7: a bad bar file names the file (and the row) -----------------------------------------------
BAD_FILES = {
    # id: (corrupt(path), words the error line must hold besides the file path)
    "unreadable": (write_garbage, ["cannot read"]),
    "missing-column": (lambda p: rewrite(p, lambda t: t.drop(["volume"])), ["missing column", "volume"]),
    "nan-close": (lambda p: rewrite(p, set_values("close", {5: float("nan")})), ["row 5", "close", "NaN"]),
    "null-close": (lambda p: rewrite(p, set_values("close", {6: None})), ["row 6", "close"]),
    "non-positive-price": (lambda p: rewrite(p, set_values("open", {7: -1.0})), ["row 7", "open", "positive"]),
    "high-below-low": (lambda p: rewrite(p, high_below_low(4)), ["row 4", "high", "low"]),
    "unsorted-timestamps": (lambda p: rewrite(p, swap_rows("timestamp", 10, 11)), ["row 11", "timestamp", "earlier"]),
    "duplicate-timestamps": (lambda p: rewrite(p, copy_value("timestamp", 11, 12)), ["row 12", "duplicate"]),
}


@pytest.fixture(scope="module")
def bad_file_runs(cli, pool, tiny_market, tmp_path_factory) -> dict[str, Launched]:
    """Each BAD_FILES case: a market copy with BAD_KEY corrupted, trained on in the background."""
    runs = {}
    for case, (corrupt, words) in BAD_FILES.items():
        tmp = tmp_path_factory.mktemp(case)
        bad = Path(shutil.copytree(tiny_market, tmp / "market")) / BAD_KEY
        corrupt(bad)
        future = pool.submit(cli, *train_args(tmp / "market", tmp / "out"))
        runs[case] = Launched(future, [str(bad), *words], refused_at_start=False, tmp=tmp)
    return runs


@pytest.mark.slow  # each case trains (until the bad file) in a subprocess
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_bar_file(case, bad_file_runs):
    run = bad_file_runs[case]
    line = user_error(run.proc(), *run.words)
    assert "regenerate" in line or "data validate" in line, f"no fix in {line!r}"


# ---- 8, 9, 11, 12: stocks, dates, data folders and models that are not there ------------------
def _garbage_model(tmp: Path) -> Path:
    write_garbage(tmp / "trained_model.pth")
    return tmp / "trained_model.pth"


def _foreign_model(tmp: Path) -> Path:
    import torch

    torch.save({"hello": 1}, tmp / "trained_model.pth")
    return tmp / "trained_model.pth"


NOT_THERE: dict[str, Callable[[Path, Path], tuple[list[str], list[str]]]] = {
    # id: f(market, tmp) -> (command line, words the error line must hold); output goes to tmp/out
    "unknown-stock": lambda m, t: (train_args(m, t / "out", "--stocks", "AAA", "ZZZ"), ["ZZZ", "AAA, BBB, CCC"]),
    "empty-date-range": lambda m, t: (
        train_args(m, t / "out", "--start_date", "2030-01-01", "--end_date", "2030-01-05"),
        ["no data", "2030-01-01", "2030-01-05", "2024-01-02", "2024-01-04"],
    ),
    "empty-eval-range": lambda m, t: (
        train_args(m, t / "out", "--eval_start", "2030-01-01", "--eval_end", "2030-01-05"),
        ["no data", "--eval_start 2030-01-01", "2024-01-02", "2024-01-04"],
    ),
    "missing-data-folder": lambda m, t: (
        train_args(t / "nonexistent", t / "out"), [str(t / "nonexistent"), "data generate"],
    ),
    "not-a-market": lambda m, t: (train_args(t, t / "out"), [str(t), "stocks_intraday", "data generate"]),
    "azure-without-credentials": lambda m, t: (train_args("azure://nosuchcontainer", t / "out"), ["nosuchcontainer"]),
    "too-many-workers": lambda m, t: (train_args(m, t / "out", "--workers", "9"), ["--workers 9", "3 stocks"]),
    "missing-model": lambda m, t: (eval_args(t / "none.pth", m, t / "out"), [str(t / "none.pth"), "does not exist"]),
    "garbage-model": lambda m, t: (eval_args(_garbage_model(t), m, t / "out"), [str(t / "trained_model.pth")]),
    "foreign-model": lambda m, t: (eval_args(_foreign_model(t), m, t / "out"), [str(t / "trained_model.pth")]),
}


@pytest.fixture(scope="module")
def not_there_runs(cli, pool, tiny_market, tmp_path_factory) -> dict[str, Launched]:
    """Each NOT_THERE case, run in the background with no AZURE_* variables in the environment."""
    runs = {}
    for case, build in NOT_THERE.items():
        tmp = tmp_path_factory.mktemp(case)
        args, words = build(tiny_market, tmp)
        runs[case] = Launched(pool.submit(cli, *args, env=NO_AZURE_ENV), words, tmp=tmp)
    return runs


@pytest.mark.slow  # each case starts `train`/`evaluate` in a subprocess (torch imported)
@pytest.mark.parametrize("case", list(NOT_THERE))
def test_missing_input(case, not_there_runs):
    run = not_there_runs[case]
    user_error(run.proc(), *run.words)
    assert not (run.tmp / "out").exists(), "a run refused at start created its output folder"
    assert not (run.tmp / "nonexistent").exists()


@pytest.mark.slow
def test_garbage_model_reason_is_plain(not_there_runs):
    line = user_error(not_there_runs["garbage-model"].proc(), "trained_model.pth")
    assert "weights_only" not in line and "PyTorch 2.6" not in line, line


# ---- 10: bad flags and config files (rejected before torch is imported: fast, run in turn) --------
def _config(text: str, name: str) -> Callable[[Path], list[str]]:
    def write(tmp: Path) -> list[str]:
        (tmp / name).write_text(text)
        return ["--config", str(tmp / name)]

    return write


BAD_FLAGS = {
    # id: (extra args, or a function of tmp_path giving them; words the error line must hold)
    "unknown-flag": (["--bogus"], ["--bogus"]),
    "episodes-not-int": (["--episodes", "two"], ["--episodes", "two"]),
    "episodes-zero": (["--episodes", "0"], ["--episodes", ">= 1"]),
    "bad-date": (["--start_date", "2024-13-40"], ["--start_date", "2024-13-40", "YYYY-MM-DD"]),
    "start-after-end": (["--start_date", "2024-01-04", "--end_date", "2024-01-02"], ["--start_date", "--end_date"]),
    "bad-mode": (["--mode", "cluster"], ["--mode", "cluster", "single", "parallel"]),
    "negative-cost": (["--cost_bps", "-1"], ["--cost_bps", ">= 0"]),
    "unknown-setting": (["--set", "dqn.nope=1"], ["dqn.nope"]),
    "unknown-section": (["--set", "nope.lr=1"], ["nope.lr"]),
    "set-without-value": (["--set", "dqn.lr"], ["--set", "dqn.lr", "SECTION.KEY=VALUE"]),
    "set-bad-value": (["--set", "dqn.lr=fast"], ["dqn.lr", "fast"]),
    "missing-config": (["--config", "missing.toml"], ["missing.toml", "--config"]),
    "invalid-toml": (_config("[dqn]\nlr = = 0.1\n", "bad.toml"), ["bad.toml", "TOML", "line 2"]),
    "unknown-toml-key": (_config("[dqn]\nnope = 1\n", "unknown.toml"), ["unknown.toml", "dqn.nope"]),
    "unknown-toml-section": (_config("[nope]\nlr = 1\n", "section.toml"), ["section.toml", "[nope]"]),
}


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_bad_flag(cli, case, tiny_market, tmp_path):
    extra, words = BAD_FLAGS[case]
    extra = extra(tmp_path) if callable(extra) else extra
    proc = cli(*train_args(tiny_market, tmp_path / "out", *extra), cwd=tmp_path)
    user_error(proc, *words)
    assert not (tmp_path / "out").exists(), "a rejected command line created the output folder"


# ---- 13: output safety -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(cli, tiny_market, tmp_path_factory) -> Path:
    """One successful 1-episode training run on the tiny market (read-only; copy before use)."""
    out = tmp_path_factory.mktemp("trained") / "out"
    proc = cli(*train_args(tiny_market, out))
    assert proc.returncode == 0, proc.stderr
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    return out


def _garbage_at(key: str) -> Callable[[Path], None]:
    return lambda market: write_garbage(market / key)


SAFETY = {
    # id: (damage(market), f(market, out, model) -> command line, error words, found at load time?)
    "train-again-without-overwrite": (
        None, lambda m, o, _: train_args(m, o), ["--output", "already holds a run", "--overwrite"], False,
    ),
    "evaluate-into-run-without-overwrite": (
        None, lambda m, o, model: eval_args(model, m, o), ["--output", "already holds a run", "--overwrite"], False,
    ),
    "overwrite-with-corrupt-file": (
        _garbage_at(BAD_KEY), lambda m, o, _: train_args(m, o, "--overwrite"), [BAD_KEY, "cannot read"], True,
    ),
    "overwrite-with-empty-range": (
        None, lambda m, o, _: train_args(m, o, "--overwrite", "--start_date", "2030-01-01", "--end_date", "2030-01-05"),
        ["no data", "2030-01-01"], False,
    ),
    "overwrite-with-bad-flag": (
        None, lambda m, o, _: train_args(m, o, "--overwrite", "--set", "dqn.nope=1"), ["dqn.nope"], False,
    ),
    "evaluate-overwrite-with-corrupt-file": (
        _garbage_at(EVAL_KEY), lambda m, o, model: eval_args(model, m, o, "--overwrite"),
        [EVAL_KEY, "cannot read"], True,
    ),
}


@pytest.fixture(scope="module")
def safety_runs(cli, pool, trained_run, tiny_market, tmp_path_factory) -> dict[str, Launched]:
    """Each SAFETY case: a copy of ``trained_run`` as --output, hashed, then the failing command."""
    runs = {}
    for case, (damage, build, words, at_load) in SAFETY.items():
        tmp = tmp_path_factory.mktemp(case)
        out = Path(shutil.copytree(trained_run, tmp / "out"))
        model = Path(shutil.copy(trained_run / "trained_model.pth", tmp / "model.pth"))
        market = tiny_market
        if damage is not None:
            market = Path(shutil.copytree(tiny_market, tmp / "market"))
            damage(market)
        before, log_before = hash_tree(out, exclude=LOGS), (out / "run.log").read_bytes()
        future = pool.submit(cli, *build(market, out, model))
        runs[case] = Launched(future, words, not at_load, tmp, before, log_before)
    return runs


@pytest.mark.slow  # a real training run first (trained_run)
@pytest.mark.parametrize("case", list(SAFETY))
def test_failed_run_keeps_earlier_results(case, safety_runs):
    run = safety_runs[case]
    user_error(run.proc(), *run.words)
    out = run.tmp / "out"
    after = hash_tree(out, exclude=LOGS)
    for name in RUN_FILES:
        assert after.get(name) == run.before[name], f"{name} changed or vanished"
    assert after == run.before, "a failed run changed, added or removed files in --output"
    assert any(p.parts[-3:-1] == ("checkpoints", "ckpt-000001") for p in (run.tmp / "out").rglob("*"))
    status = json.loads((out / "status.json").read_text())  # a training attempt that started says it failed
    started_training = not run.refused_at_start and not case.startswith("evaluate")
    assert status["state"] == ("failed" if started_training else "finished"), status
    log = (out / "run.log").read_bytes()
    assert log.startswith(run.log_before), "the earlier run's run.log was lost"
    if run.refused_at_start:  # not even the log is touched
        assert log == run.log_before


# ---- 14: data generate never clobbers a market ------------------------------------------------------
def test_generate_into_existing_market_without_overwrite_changes_nothing(cli, tiny_market_copy):
    before = hash_tree(tiny_market_copy)
    proc = cli("data", "generate", "--output", str(tiny_market_copy), "--stocks", "XXX", "--days", "2")
    user_error(proc, str(tiny_market_copy), "already holds a market", "--overwrite")
    assert hash_tree(tiny_market_copy) == before


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--days", "0"], ["--days", ">= 1"]),
        (["--days", "x"], ["--days", "'x'"]),
        (["--bar_minutes", "7"], ["--bar_minutes 7", "390"]),
        (["--start", "2024-02-30"], ["--start", "2024-02-30", "YYYY-MM-DD"]),
    ],
    ids=["zero-days", "days-not-int", "bad-bar-minutes", "bad-start"],
)
def test_generate_bad_flags(cli, extra, words, tmp_path):
    proc = cli("data", "generate", "--output", str(tmp_path / "m"), "--stocks", "AAA", *extra)
    user_error(proc, *words)
    assert not (tmp_path / "m").exists()
