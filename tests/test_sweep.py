"""Hyperparameter sweeps through the real CLI (``python -m parallel_dqn sweep ...`` as subprocesses, no mocks).

* planning: grid x points, deduplication of identical resolved configurations, names, extending a sweep
  folder (indices kept, nothing deleted), refusing a folder that is not a sweep's;
* every mistake in a sweep file: one line naming the file and the key, exit 2;
* ``sweep config``, ``sweep status`` over every state, ``sweep submit --dry-run`` (the sbatch command);
* a real local ``sweep run`` of two tiny combinations, one of them stopped before (resumable), then
  ``sweep status`` and ``report`` over the sweep folder.

SLURM itself is not needed here (``submit --dry-run`` runs no sbatch).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from parallel_dqn.evaluation.significance import probabilistic_sharpe_ratio
from parallel_dqn.sweep import deflated_sharpe_ratios
from parallel_dqn.telemetry.status import write_status
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
ERROR_LINE = re.compile(r"^parallel-dqn(?: [a-z-]+)*: error: \S")
SAFE_NAME = re.compile(r"^c\d{3}(-[A-Za-z0-9._+=-]+)?$")

#: the base of the planning tests: small settings, no data needed to plan
BASE = """
[base_settings.data]
stocks = ["LEAD", "FOLW", "MOMO"]
[base_settings.dqn]
episodes = 4
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def one_error_line(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    """Check ``proc`` failed as a user error with one error line on stderr naming ``names``; return it."""
    out = f"\n--- exit {proc.returncode}\n--- stderr:\n{proc.stderr}\n--- stdout:\n{proc.stdout}"
    assert proc.returncode == 2, f"expected exit 2{out}"
    assert "Traceback" not in proc.stderr + proc.stdout, out
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]), f"expected one error line{out}"
    missing = [n for n in names if n not in lines[0]]
    assert not missing, f"the error line does not name {missing}: {lines[0]!r}"
    return lines[0]


def sweep_json(folder: Path) -> dict:
    return json.loads((folder / "sweep.json").read_text())


def names(folder: Path) -> list[str]:
    return [c["name"] for c in sweep_json(folder)["combinations"]]


def status_rows(stdout: str) -> dict[str, list[str]]:
    """``sweep status`` table -> name: the cells after it (split on runs of two or more spaces)."""
    rows = {}
    for line in stdout.splitlines():
        if re.match(r"^c\d{3}", line):
            cells = re.split(r"\s{2,}", line.strip())
            rows[cells[0]] = cells[1:]
    return rows


# ---- planning --------------------------------------------------------------------------------
def test_plan_grid_then_points_deduplicated_and_named(tmp_path):
    sweep = write(tmp_path / "sweep.toml", BASE + """
[grid]
"dqn.lr" = [1e-3, 5e-4]
"dqn.gamma" = [0.5, 0.9]

[[points]]
"dqn.lr" = 1e-3
"dqn.target_update" = 100

[[points]]   # resolves to the first grid combination (batch_size 128 is the default): not planned again
"dqn.lr" = 0.001
"dqn.gamma" = 0.5
"dqn.batch_size" = 128
""")
    out = tmp_path / "sw"
    proc = run_cli("sweep", "plan", sweep, "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert "1 duplicate" in proc.stdout
    expected = ["c000-lr=0.001-gamma=0.5", "c001-lr=0.001-gamma=0.9", "c002-lr=0.0005-gamma=0.5",
                "c003-lr=0.0005-gamma=0.9", "c004-lr=0.001-target_update=100"]
    tree = sweep_json(out)
    assert [c["name"] for c in tree["combinations"]] == expected
    assert [c["index"] for c in tree["combinations"]] == [0, 1, 2, 3, 4]
    assert len({c["id"] for c in tree["combinations"]}) == 5
    assert tree["combinations"][4]["settings"] == {"dqn.lr": 0.001, "dqn.target_update": 100}
    assert tree["sweep_text"] == sweep.read_text() and Path(tree["sweep_file"]) == sweep.resolve()
    for c in tree["combinations"]:
        cfg = tomllib.loads((out / c["name"] / "config.toml").read_text())
        assert cfg["run"]["output"] == str((out / c["name"]).resolve())
        assert cfg["data"]["stocks"] == ["LEAD", "FOLW", "MOMO"] and cfg["dqn"]["episodes"] == 4
        for key, value in c["settings"].items():
            section, _, name = key.partition(".")
            assert cfg[section][name] == value, (c["name"], key)
    assert tomllib.loads((out / expected[4] / "config.toml").read_text())["dqn"]["gamma"] == 0.5  # the default


def test_plan_base_file_only_and_ambiguous_names(tmp_path):
    write(tmp_path / "conf" / "base.toml", '[dqn]\nepisodes = 7\n[data]\nstocks = ["AAA", "BBB"]\n')
    only = write(tmp_path / "conf" / "only_base.toml", 'base = "base.toml"\n')
    out = tmp_path / "base_only"
    assert run_cli("sweep", "plan", only, "--output", out).returncode == 0
    assert names(out) == ["c000"]
    assert tomllib.loads((out / "c000" / "config.toml").read_text())["dqn"]["episodes"] == 7

    sweep = write(tmp_path / "conf" / "ambiguous.toml", """
base = "base.toml"
[grid]
dqn.lr = [0.001]               # unquoted dotted keys work too
"meta.lr" = [0.01]
"data.stocks" = [["AAA", "BBB"]]
"data.data" = ["my data/x:y*z"]
""")
    out = tmp_path / "ambiguous"
    proc = run_cli("sweep", "plan", sweep, "--output", out)
    assert proc.returncode == 0, proc.stderr
    (name,) = names(out)
    assert name == "c000-dqn.lr=0.001-meta.lr=0.01-stocks=AAA+BBB-data=my_data_x_y_z"
    assert SAFE_NAME.match(name) and (out / name / "config.toml").is_file()


def test_plan_again_is_idempotent_and_extends_keeping_indices(tmp_path):
    sweep = write(tmp_path / "sweep.toml", BASE + '[grid]\n"dqn.lr" = [0.1, 0.2]\n')
    out = tmp_path / "sw"
    assert run_cli("sweep", "plan", sweep, "--output", out).returncode == 0
    first = (out / "sweep.json").read_bytes()
    (out / "c001-lr=0.2" / "marker").write_text("results of a run")
    assert run_cli("sweep", "plan", sweep, "--output", out).returncode == 0
    assert (out / "sweep.json").read_bytes() == first

    write(sweep, BASE + '[grid]\n"dqn.lr" = [0.2, 0.3]\n[[points]]\n"run.seed" = 5\n')
    proc = run_cli("sweep", "plan", sweep, "--output", out)
    assert proc.returncode == 0, proc.stderr
    tree = sweep_json(out)
    assert [(c["index"], c["name"], c["in_sweep"]) for c in tree["combinations"]] == [
        (0, "c000-lr=0.1", False), (1, "c001-lr=0.2", True), (2, "c002-lr=0.3", True), (3, "c003-seed=5", True),
    ]
    assert "c000-lr=0.1" in proc.stdout.splitlines()[-1] and "kept 1" in proc.stdout  # reported, not deleted
    assert (out / "c000-lr=0.1" / "config.toml").is_file()
    assert (out / "c001-lr=0.2" / "marker").read_text() == "results of a run"
    # a combination no longer in the file is neither submitted nor run again
    proc = run_cli("sweep", "submit", out, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "--array=1,2,3 " in proc.stdout


def test_plan_refuses_a_folder_that_is_not_a_sweep(tmp_path):
    sweep = write(tmp_path / "sweep.toml", BASE)
    other = tmp_path / "results"
    write(other / "notes.txt", "mine")
    line = one_error_line(run_cli("sweep", "plan", sweep, "--output", other), str(other), "sweep.json")
    assert "not a sweep folder" in line
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


# ---- every mistake: one line, exit 2 ----------------------------------------------------------------
#: case -> (sweep file text or None for a missing file, what the error line must name besides the file)
BAD_SWEEPS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "missing_file": (None, ("cannot read",)),
    "toml_error": ('[grid\n"dqn.lr" = [1]\n', ("not valid TOML", "line 1")),
    "unknown_top_key": ('[grids]\n"dqn.lr" = [1]\n', ("'grids'",)),
    "unknown_setting": ('[grid]\n"dqn.learning_rate" = [0.1]\n', ("[grid]", "dqn.learning_rate")),
    "unknown_section": ('[[points]]\n"optim.lr" = 0.1\n', ("[[points]] #1", "optim.lr")),
    "unknown_base_setting": ("[base_settings.dqn]\nlrate = 1\n", ("[base_settings]", "dqn.lrate")),
    "grid_not_a_list": ('[grid]\n"dqn.lr" = 0.001\n', ("[grid]", "dqn.lr", "list")),
    "grid_empty_list": ('[grid]\n"dqn.gamma" = []\n', ("[grid]", "dqn.gamma", "empty")),
    "invalid_type": ('[grid]\n"dqn.batch_size" = [16, "many"]\n', ("[grid]", "dqn.batch_size", "many")),
    "invalid_value": ('[grid]\n"dqn.gamma" = [0.5, 1.5]\n', ("[grid]", "dqn.gamma", "[0, 1)")),
    "invalid_point": ('[[points]]\n"dqn.episodes" = 1\n[[points]]\n"dqn.episodes" = 0\n', ("#2", "episodes")),
    "swept_output": ('[grid]\n"run.output" = ["a", "b"]\n', ("run.output", "may not be swept")),
    "swept_mode": ('[[points]]\n"dist.mode" = "parallel"\n', ("dist.mode", "may not be swept")),
    "missing_base": ('base = "nowhere.toml"\n', ("base", "nowhere.toml")),
    "points_not_tables": ('points = [1, 2]\n', ("points", "[[points]]")),
}


@pytest.fixture(scope="module")
def bad_sweep_results(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """Plan every bad sweep file at once (a thread pool of real CLI processes)."""
    base = tmp_path_factory.mktemp("bad_sweeps")
    jobs = {}
    for case, (text, _) in BAD_SWEEPS.items():
        path = base / f"{case}.toml"
        if text is not None:
            path.write_text(text)
        jobs[case] = (path, ["sweep", "plan", path, "--output", base / f"out_{case}"])
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case: pool.submit(run_cli, *args) for case, (_, args) in jobs.items()}
        return {case: (jobs[case][0], f.result()) for case, f in futures.items()}


@pytest.mark.slow  # bad_sweep_results: 15 CLI processes (~15 s)
@pytest.mark.parametrize("case", sorted(BAD_SWEEPS))
def test_bad_sweep_file_is_one_line(case, bad_sweep_results):
    path, proc = bad_sweep_results[case]
    one_error_line(proc, path.name, *BAD_SWEEPS[case][1])
    assert not (path.parent / f"out_{case}").exists()  # nothing planned


@pytest.mark.slow  # three CLI runs
def test_run_and_submit_need_a_sweep_folder_or_a_file_with_output(tmp_path):
    sweep = write(tmp_path / "sweep.toml", BASE)
    one_error_line(run_cli("sweep", "run", sweep), "--output")
    one_error_line(run_cli("sweep", "submit", sweep, "--dry-run"), "--output")
    one_error_line(run_cli("sweep", "status", tmp_path), "not a sweep folder")


# ---- sweep config, status, submit --dry-run ------------------------------------------------------
@pytest.mark.slow  # four CLI runs
def test_sweep_config_prints_the_absolute_config_path(tmp_path):
    sweep = write(tmp_path / "sweep.toml", BASE + '[grid]\n"dqn.lr" = [0.1, 0.2]\n')
    out = tmp_path / "sw"
    assert run_cli("sweep", "plan", sweep, "--output", out).returncode == 0
    proc = run_cli("sweep", "config", out, "1", cwd=tmp_path.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{(out / 'c001-lr=0.2' / 'config.toml').resolve()}\n" and proc.stderr == ""
    one_error_line(run_cli("sweep", "config", out, "2"), "no combination 2", "0..1")
    one_error_line(run_cli("sweep", "config", tmp_path, "0"), "not a sweep folder")


@pytest.fixture
def states_sweep(tmp_path):
    """A planned 6-combination sweep whose run folders say: finished, stopped, failed, gone, running, nothing."""
    sweep = write(tmp_path / "sweep.toml", BASE + '[grid]\n"run.seed" = [0, 1, 2, 3, 4, 5]\n')
    out = tmp_path / "sw"
    assert run_cli("sweep", "plan", sweep, "--output", out).returncode == 0
    folders = [out / name for name in names(out)]
    write(folders[0] / "metrics.json", json.dumps({"eval": {"sharpe": 1.234567}}))
    write(folders[0] / "metrics.jsonl", "".join(json.dumps({"phase": p, "episode": e}) + "\n"
                                                 for p, e in (("train", 1), ("train", 2), ("eval", 0))))
    write(folders[1] / "metrics.jsonl", json.dumps({"phase": "train", "episode": 1}) + "\n")
    write_status(folders[1], "stopped", reason="SIGTERM", checkpoint=str(folders[1] / "checkpoints" / "ckpt-000001"))
    write_status(folders[2], "failed", message="BBB_2024-01-03.parquet row 7: high < low")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_status(folders[3], "running", pid=gone.pid)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "parallel_dqn"])
    write_status(folders[4], "running", pid=alive.pid)
    yield out, folders
    alive.kill()
    alive.wait()


def test_status_tells_every_state(states_sweep):
    out, folders = states_sweep
    proc = run_cli("sweep", "status", out)
    assert proc.returncode == 0, proc.stderr
    rows = status_rows(proc.stdout)
    assert list(rows) == [f.name for f in folders]
    states = [rows[f.name][1] for f in folders]
    assert states == ["finished", "stopped", "failed", "interrupted", "running", "not started"]
    assert rows[folders[0].name][0] == "run.seed=0"
    assert rows[folders[0].name][2:4] == ["2/4", "1.23"] and rows[folders[1].name][2] == "1/4"
    assert "high < low" in rows[folders[2].name][-1] and "SIGTERM" in rows[folders[1].name][-1]
    assert ("6 combination(s): 1 finished, 1 running, 1 stopped, 1 interrupted, 1 failed, 1 not started"
            in proc.stdout)
    assert f"best: {folders[0].name} (eval Sharpe 1.23)" in proc.stdout


def test_submit_dry_run_prints_the_sbatch_command(states_sweep):
    out, _ = states_sweep
    proc = run_cli("sweep", "submit", out, "--dry-run", "--ranks", "3", "--nodes", "2", "--time", "00:05:00",
                   "--partition", "debug", "--sbatch-arg=--overcommit", "--sbatch-arg=--mem=1G")
    assert proc.returncode == 0, proc.stderr
    resolved = out.resolve()
    expected = ["sbatch", "--parsable", "--array=1,2,3,5", "--ntasks=3", "--nodes=2",
                f"--output={resolved}/logs/slurm-%A_%a.out", "--time=00:05:00", "--partition=debug",
                "--overcommit", "--mem=1G", str(ROOT / "launchers" / "slurm" / "sweep.sbatch"), str(resolved)]
    assert proc.stdout.splitlines() == [shlex.join(expected)]  # finished (0) and running (4) left out
    assert not (out / "submissions.json").exists() and not (out / "logs").exists()
    one_error_line(run_cli("sweep", "submit", out, "--dry-run", "--ranks", "1"), "--ranks 1", "2 ranks")


def test_submit_dry_run_of_a_sweep_file_writes_nothing(tmp_path):
    sweep = write(tmp_path / "sweep.toml", BASE + '[grid]\n"dqn.lr" = [0.1, 0.2]\n')
    out = tmp_path / "new"
    proc = run_cli("sweep", "submit", sweep, "--output", out, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "--array=0,1 --ntasks=2 --nodes=1 " in proc.stdout and not out.exists()


# ---- ranking by deflated Sharpe ------------------------------------------------------------------
BARS_PER_YEAR = 98280.0
#: fake finished combinations: name -> (evaluation bars, per-bar Sharpe); c000 has the best Sharpe over few
#: bars, c001 a lower one over many: the deflated Sharpe ranks c001 first
DSR_RUNS = {"c000-seed=0": (40, 0.30), "c001-seed=1": (2000, 0.16), "c002-seed=2": (250, 0.05)}


def fake_returns(bars: int, sharpe_per_bar: float, seed: int) -> np.ndarray:
    """Returns whose per-bar Sharpe (mean / std with ddof=1) is exactly ``sharpe_per_bar``."""
    z = np.random.default_rng(seed).standard_normal(bars)
    return 1e-3 * (sharpe_per_bar + (z - z.mean()) / z.std(ddof=1))


def fake_finished_run(folder: Path, returns: np.ndarray | None, sharpe: float) -> None:
    """What a finished run leaves that status and report read: metrics.json (and returns_eval.csv)."""
    write(folder / "metrics.json", json.dumps({"eval": {"sharpe": sharpe, "total_return": 0.01},
                                               "annualisation": {"bars_per_day": 390.0, "bars_per_year": BARS_PER_YEAR}}))
    if returns is not None:
        stamps = pd.date_range("2024-01-08 14:30", periods=len(returns), freq="min", tz="UTC")
        pd.DataFrame({"timestamp": stamps, "agent": returns, "buy_and_hold": 0.0}).to_csv(
            folder / "returns_eval.csv", index=False)


@pytest.fixture
def dsr_sweep(tmp_path) -> tuple[Path, dict[str, np.ndarray], dict[str, float]]:
    """A sweep folder written by hand: three finished combinations (metrics.json, returns_eval.csv), one not started."""
    out = tmp_path / "sw"
    combos = [*DSR_RUNS, "c003-seed=3"]
    write(out / "sweep.json", json.dumps({"format": 1, "sweep_file": str(tmp_path / "sweep.toml"), "sweep_text": "",
                                          "combinations": [{"index": i, "name": n, "id": f"id{i}", "settings": {
                                              "run.seed": i}, "planned": "", "in_sweep": True}
                                              for i, n in enumerate(combos)]}))
    returns = {name: fake_returns(bars, s, seed) for seed, (name, (bars, s)) in enumerate(DSR_RUNS.items())}
    sharpes = {name: float(r.mean() / r.std(ddof=1) * np.sqrt(BARS_PER_YEAR)) for name, r in returns.items()}
    for name, r in returns.items():
        fake_finished_run(out / name, r, sharpes[name])
    return out, returns, sharpes


def hand_dsr(returns: np.ndarray, sharpes: list[float]) -> float:
    """Bailey and Lopez de Prado (2014), eq. 2, written out: PSR against the expected best of N lucky Sharpes."""
    n_trials, gamma = len(sharpes), 0.5772156649015329
    variance = np.var(sharpes, ddof=1) / BARS_PER_YEAR  # annualised Sharpes -> per bar
    best_by_luck = np.sqrt(variance) * ((1 - gamma) * norm.ppf(1 - 1 / n_trials)
                                        + gamma * norm.ppf(1 - 1 / (n_trials * np.e)))
    sr = returns.mean() / returns.std(ddof=1)
    centred = returns - returns.mean()
    m2 = np.mean(centred**2)
    skewness, kurt = np.mean(centred**3) / m2**1.5, np.mean(centred**4) / m2**2
    return float(norm.cdf((sr - best_by_luck) * np.sqrt(len(returns) - 1)
                          / np.sqrt(1 - skewness * sr + (kurt - 1) / 4 * sr**2)))


def test_status_shows_and_ranks_by_the_deflated_sharpe(dsr_sweep):
    out, returns, sharpes = dsr_sweep
    proc = run_cli("sweep", "status", out)
    assert proc.returncode == 0, proc.stderr
    rows = status_rows(proc.stdout)
    assert "deflated Sharpe" in proc.stdout.splitlines()[0]
    shown = {name: cells[4] for name, cells in rows.items()}  # settings, state, episodes, eval Sharpe, DSR
    assert shown["c003-seed=3"] == "-" and rows["c003-seed=3"][1] == "not started"
    expected = {name: hand_dsr(r, list(sharpes.values())) for name, r in returns.items()}
    assert 0.05 < expected["c002-seed=2"] < 0.95  # a value that 3 decimals show, not a saturated 0 or 1
    for name, value in expected.items():
        assert float(shown[name]) == pytest.approx(value, abs=5e-4), name  # probabilities: 3 decimals
    # the two rankings differ: c000's Sharpe is the highest, c001's deflated Sharpe (2000 bars against 40)
    assert max(sharpes, key=sharpes.get) == "c000-seed=0" and max(expected, key=expected.get) == "c001-seed=1"
    assert f"best: c000-seed=0 (eval Sharpe {sharpes['c000-seed=0']:.2f})" in proc.stdout
    assert (f"best by deflated Sharpe: c001-seed=1 (deflated Sharpe {shown['c001-seed=1']} over 3 finished "
            f"combination(s)): {out.resolve() / 'c001-seed=1'}") in proc.stdout


def test_deflated_sharpe_ratios_is_the_papers_formula(dsr_sweep):
    out, returns, sharpes = dsr_sweep
    dsr = deflated_sharpe_ratios([out / name for name in DSR_RUNS])
    assert dsr == {out / name: pytest.approx(hand_dsr(r, list(sharpes.values())), rel=1e-9)
                   for name, r in returns.items()}
    # one run alone: no search to deflate for, the DSR is the PSR against 0
    (alone,) = deflated_sharpe_ratios([out / "c002-seed=2"]).values()
    assert alone == pytest.approx(probabilistic_sharpe_ratio(returns["c002-seed=2"]), rel=1e-12)


def test_a_run_without_returns_eval_has_no_deflated_sharpe_but_counts_as_a_trial(dsr_sweep):
    out, returns, sharpes = dsr_sweep
    (out / "c000-seed=0" / "returns_eval.csv").unlink()  # a run from before the file existed
    (out / "c002-seed=2" / "returns_eval.csv").write_text("timestamp,not_agent\n")  # one that cannot be used
    dsr = deflated_sharpe_ratios([out / name for name in DSR_RUNS])
    assert dsr[out / "c000-seed=0"] is None and dsr[out / "c002-seed=2"] is None
    assert dsr[out / "c001-seed=1"] == pytest.approx(hand_dsr(returns["c001-seed=1"], list(sharpes.values())))
    rows = status_rows(run_cli("sweep", "status", out).stdout)
    assert [rows[name][4] for name in DSR_RUNS] == ["-", f"{dsr[out / 'c001-seed=1']:.3f}", "-"]


def test_status_of_runs_without_returns_eval_shows_a_dash(states_sweep):
    out, folders = states_sweep
    proc = run_cli("sweep", "status", out)
    assert status_rows(proc.stdout)[folders[0].name][4] == "-"
    assert "best by deflated Sharpe" not in proc.stdout


def test_report_of_a_sweep_ranks_by_sharpe_and_by_deflated_sharpe(dsr_sweep):
    out, returns, sharpes = dsr_sweep
    proc = run_cli("report", out)
    assert proc.returncode == 0, proc.stderr
    page = (out / "report.html").read_text()
    table = page[page.index('<table id="comparison">'):]
    table = table[: table.index("</table>")]
    assert "<th>eval Sharpe</th><th>deflated Sharpe</th><th>rank by deflated Sharpe</th>" in table
    listed = re.findall(r"<tr><td>(c\d{3}[^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>", table)
    assert [name for name, *_ in listed] == sorted(sharpes, key=sharpes.get, reverse=True)  # still by Sharpe
    expected = {name: hand_dsr(r, list(sharpes.values())) for name, r in returns.items()}
    for name, _, dsr, rank in listed:
        assert float(dsr) == pytest.approx(expected[name], abs=5e-4)  # 3 decimals
        assert int(rank) == 1 + sorted(expected.values(), reverse=True).index(expected[name])
    assert "best by evaluation Sharpe: c000-seed=0; best by deflated Sharpe: c001-seed=1" in page


# ---- a real local sweep ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_sweep(tiny_market, tmp_path_factory):
    """Two tiny combinations (grid + point), the second stopped before (status.json, no metrics.json), run together."""
    base = tmp_path_factory.mktemp("local_sweep")
    sweep = write(base / "sweep.toml", f"""
[base_settings.data]
data = "{tiny_market}"
[base_settings.dqn]
episodes = 1
learning_starts = 20
batch_size = 16
[base_settings.market]
graph_window = 40
[grid]
"run.seed" = [0]
[[points]]
"run.seed" = 1
"dqn.lr" = 1e-3
""")
    out = base / "sw"
    planned = run_cli("sweep", "plan", sweep, "--output", out)
    assert planned.returncode == 0, planned.stderr
    stopped = out / names(out)[1]
    write_status(stopped, "stopped", reason="SIGUSR1", checkpoint=None)
    before = run_cli("sweep", "status", out)
    ran = run_cli("sweep", "run", out, "--jobs", "2", timeout=240)
    after = run_cli("sweep", "status", out)
    return out, before, ran, after


@pytest.mark.slow  # local_sweep trains two combinations
def test_local_run_finishes_every_combination(local_sweep):
    out, before, ran, after = local_sweep
    states = {name: cells[1] for name, cells in status_rows(before.stdout).items()}
    assert states == {"c000-seed=0": "not started", "c001-seed=1-lr=0.001": "stopped"}
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for name in names(out):
        folder = out / name
        assert (folder / "metrics.json").is_file() and json.loads((folder / "status.json").read_text())["state"] == "finished"
        log = (folder / "console.log").read_text()
        assert "--resume auto" in log and "--mode single" in log and "exit code 0" in log
    assert after.returncode == 0
    rows = status_rows(after.stdout)
    assert list(rows) == names(out)
    for name, cells in rows.items():
        sharpe = json.loads((out / name / "metrics.json").read_text())["eval"]["sharpe"]
        assert cells[1:4] == ["finished", "1/1", f"{sharpe:.2f}"], (name, cells)  # ratios: 2 decimals
    assert "2 combination(s): 2 finished" in after.stdout


@pytest.mark.slow
def test_local_run_again_runs_nothing(local_sweep):
    out = local_sweep[0]
    stamps = {name: (out / name / "metrics.json").stat().st_mtime_ns for name in names(out)}
    proc = run_cli("sweep", "run", out)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to run" in proc.stderr and "started" not in proc.stderr
    assert stamps == {name: (out / name / "metrics.json").stat().st_mtime_ns for name in names(out)}


@pytest.mark.slow
def test_a_second_local_runner_on_the_same_folder_is_refused(local_sweep):
    import fcntl

    out = local_sweep[0]
    with open(out / ".sweep-run.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a first `sweep run` holds it
        proc = run_cli("sweep", "run", out)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"parallel-dqn: error: another `sweep run` is working on {out} (let it finish, or stop it first)")


@pytest.mark.slow
def test_report_of_a_sweep_folder(local_sweep, tmp_path):
    out = local_sweep[0]
    proc = run_cli("report", out)
    assert proc.returncode == 0, proc.stderr
    assert str(out / "report.html") in proc.stdout
    page = (out / "report.html").read_text()
    table = page[page.index('<table id="comparison">'):]
    table = table[: table.index("</table>")]
    listed = re.findall(r"<tr><td>(c\d{3}[^<]*)</td><td>([^<]*)</td>", table)
    sharpe = {name: json.loads((out / name / "metrics.json").read_text())["eval"]["sharpe"] for name in names(out)}
    assert sorted(name for name, _ in listed) == sorted(sharpe)
    assert listed == sorted(((n, f"{v:.2f}") for n, v in sharpe.items()), key=lambda p: -sharpe[p[0]])  # 2 decimals
    settings = page[page.index('<table id="comparison-settings"'):]
    assert "<code>run.seed = 0</code>" in settings[: settings.index("</table>")]  # the settings: a table below

    # a sweep with nothing finished: one line
    empty = tmp_path / "empty"
    assert run_cli("sweep", "plan", out.parent / "sweep.toml", "--output", empty).returncode == 0
    one_error_line(run_cli("report", empty), str(empty), "no finished combination")
