"""Hyperparameter sweeps: a sweep file, the sweep folder it plans, and the state of every combination.

A **sweep file** (TOML) names a base configuration and the settings to vary::

    base = "base.toml"                 # optional: a config file, relative to this sweep file
    [base_settings.dqn]                # optional: settings over that (sections as in a --config file)
    episodes = 4
    [grid]                             # optional: the cartesian product of these lists
    "dqn.lr" = [1e-3, 5e-4]
    [[points]]                         # optional: explicit combinations
    "dqn.lr" = 1e-3
    "dqn.target_update" = 100

The combinations are every grid product, then every point, each applied over the base (neither:
the base alone). A combination is identified by a hash of its whole resolved configuration
(``run.output`` aside), so identical combinations are planned, run and submitted once.

A **sweep folder** holds ``sweep.json`` (the sweep file's path and text, and every combination:
index, name, id, swept settings), one run folder per combination with its ``config.toml``
(``run.output`` = that folder), and, once submitted to SLURM, ``submissions.json`` and ``logs/``.
Planning into a folder again keeps every planned combination's index, name and folder, adds new
ones at the next indices and never deletes anything.

Everything here is logic: the CLI (``parallel_dqn.cli.sweep``) parses and prints.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from parallel_dqn import outputs
from parallel_dqn.config import Config, flatten_settings, read_toml
from parallel_dqn.errors import UserError
from parallel_dqn.files import write_atomically
from parallel_dqn.telemetry.status import is_alive, read_status

SWEEP_FILE = "sweep.json"
SUBMISSIONS_FILE = "submissions.json"
CONFIG_FILE = outputs.CONFIG
METRICS_FILE = outputs.METRICS
CURVE_FILE = outputs.CURVE
CONSOLE_LOG = "console.log"
LOGS_DIR = "logs"
RUN_LOCK = ".sweep-run.lock"  # held by the one `sweep run` working on the folder
FORMAT = 1  # version of sweep.json

#: the top-level keys of a sweep file
SWEEP_KEYS = ("base", "base_settings", "grid", "points")
#: settings a sweep may not vary, and why
UNSWEPT = MappingProxyType({
    "run.output": "each combination's output is its folder in the sweep folder",
    "dist.mode": "the launch sets it: single for sweep run, parallel for sweep run --ranks and sweep submit",
})
#: a combination's states, in the order the summary lists them
STATES = ("finished", "running", "queued", "stopped", "interrupted", "failed", "not started")
#: states of a combination that still has to be run (locally or on SLURM)
TO_RUN = ("not started", "stopped", "interrupted", "failed")
#: squeue states (%T) of a job that waits for its turn; any other listed state counts as running
QUEUED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
#: the repository root: the parent of the ``parallel_dqn`` package folder
ROOT = Path(__file__).resolve().parents[2]
SWEEP_SBATCH = ROOT / "launchers" / "slurm" / "sweep.sbatch"
#: longest combination name (a folder name; the index prefix keeps names unique when cut)
MAX_NAME = 120
#: seconds a local run may take to checkpoint and exit after it is asked to stop
STOP_GRACE = 120.0


# ---- the sweep file ------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One combination of a sweep file: its swept settings (resolved values) and whole configuration."""

    settings: dict[str, Any]
    config: Config
    id: str


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, validated sweep file: its distinct combinations in file order."""

    path: Path
    text: str
    candidates: list[Candidate]
    duplicates: int  # combinations dropped because an earlier one resolves to the same configuration
    swept_keys: list[str]  # every setting the file varies, in file order


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; every mistake is a one-line UserError naming the file and the key."""
    p = Path(path)
    text, tree = read_toml(p, "sweep file", "give a sweep file (TOML) or a sweep folder")
    for key in tree:
        if key not in SWEEP_KEYS:
            raise UserError(f"{p}: unknown key '{key}'",
                            'a sweep file has base = "FILE.toml", [base_settings.SECTION], [grid] and [[points]]')
    base = _base_config(p, tree)
    grid = _grid(p, tree.get("grid", {}))
    points = _points(p, tree.get("points", []))
    swept = list(dict.fromkeys([*grid, *(k for point in points for k in point)]))
    for key in swept:
        if key in UNSWEPT:
            raise UserError(f"{p}: '{key}' may not be swept", f"remove it: {UNSWEPT[key]}")
    combos: list[tuple[dict[str, Any], str]] = []
    if grid:
        combos += [(dict(zip(grid, values)), f"{p} [grid]") for values in itertools.product(*grid.values())]
    combos += [(point, f"{p} [[points]] #{i + 1}") for i, point in enumerate(points)]
    if not combos:
        combos = [({}, str(p))]
    candidates: list[Candidate] = []
    seen: set[str] = set()
    for settings, source in combos:
        candidate = _resolve(base, settings, source)
        if candidate.id not in seen:
            seen.add(candidate.id)
            candidates.append(candidate)
    return SweepSpec(p, text, candidates, len(combos) - len(candidates), swept)


def _base_config(path: Path, tree: dict[str, Any]) -> Config:
    """The defaults, then the ``base`` file, then ``[base_settings]``."""
    cfg = Config()
    if "base" in tree:
        base = tree["base"]
        if not isinstance(base, str) or not base:
            raise UserError(f"{path}: base must be a file name", 'e.g. base = "base.toml" (relative to the sweep file)')
        base_path = path.parent / base
        if not base_path.is_file():
            raise UserError(f"{path}: base = '{base}': no such file {base_path}",
                            "base is a config file, relative to the sweep file")
        cfg = Config.load(base_path)
    if "base_settings" in tree:
        settings = tree["base_settings"]
        if not isinstance(settings, dict):
            raise UserError(f"{path}: base_settings must be tables of settings", "e.g. [base_settings.dqn] then episodes = 4")
        cfg = Config.from_dict(settings, source=f"{path} [base_settings]", base=cfg)
    return cfg


def _grid(path: Path, table: Any) -> dict[str, list[Any]]:
    """``[grid]``: dotted setting -> its non-empty list of values."""
    if not isinstance(table, dict):
        raise UserError(f"{path}: grid must be a table", '[grid] then "dqn.lr" = [0.001, 0.0005]')
    grid = flatten_settings(table)
    for key, values in grid.items():
        if not isinstance(values, list):
            raise UserError(f"{path} [grid]: '{key}' must be a list of values", f'e.g. "{key}" = [{_toml_value(values)}]')
        if not values:
            raise UserError(f"{path} [grid]: '{key}' is an empty list", "give it at least one value, or remove it")
    return grid


def _points(path: Path, points: Any) -> list[dict[str, Any]]:
    """``[[points]]``: each a table of dotted settings."""
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise UserError(f"{path}: points must be an array of tables", 'write each point as [[points]] then "dqn.lr" = 0.001')
    return [flatten_settings(point) for point in points]


def _resolve(base: Config, settings: dict[str, Any], source: str) -> Candidate:
    """Apply ``settings`` over ``base``, validate, and read back the resolved values of the swept keys."""
    cfg = copy.deepcopy(base)
    try:
        for key, value in settings.items():
            cfg.set(key, value, source=source)
    except UserError as exc:
        raise UserError(exc.what, exc.fix or "change that value in the sweep file") from None
    try:
        cfg.validate()
    except UserError as exc:
        what = describe(settings) or "the base configuration"
        raise UserError(f"{source}: {what}: {exc.what}", exc.fix or "change that value in the sweep file") from None
    resolved = {key: _get(cfg, key) for key in settings}
    return Candidate(resolved, cfg, combination_id(cfg))


def combination_id(cfg: Config) -> str:
    """A stable hash of the whole resolved configuration except ``run.output``."""
    flat = flatten_settings(cfg.to_dict())
    flat.pop("run.output", None)
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]


def describe(settings: dict[str, Any]) -> str:
    """``dqn.lr=0.001 dqn.gamma=0.5``: swept settings as one short text."""
    return " ".join(f"{key}={_text(value)}" for key, value in settings.items())


# ---- the sweep folder ----------------------------------------------------------------------
@dataclass(frozen=True)
class Combination:
    """One planned combination of a sweep folder."""

    index: int
    name: str
    id: str
    settings: dict[str, Any]
    planned: str = ""  # UTC time it was first planned
    in_sweep: bool = True  # False: planned earlier, no longer in the sweep file (kept, not run)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Sweep:
    """A sweep folder as ``sweep.json`` describes it."""

    folder: Path
    source: str  # the sweep file it was (last) planned from
    text: str
    combinations: list[Combination]

    def run_dir(self, combination: Combination) -> Path:
        return self.folder / combination.name

    def config_path(self, combination: Combination) -> Path:
        return self.run_dir(combination) / CONFIG_FILE

    def combination(self, index: int) -> Combination:
        """The combination with this index; a UserError naming the known ones otherwise."""
        for c in self.combinations:
            if c.index == index:
                return c
        known = f"0..{max(c.index for c in self.combinations)}" if self.combinations else "none"
        raise UserError(f"sweep {self.folder} has no combination {index}", f"its indices are {known}")


@dataclass(frozen=True)
class PlanResult:
    """What planning a sweep file into a folder did."""

    sweep: Sweep
    new: list[Combination]  # added now
    kept: list[Combination]  # planned before and still in the file
    dropped: list[Combination]  # planned before, no longer in the file (kept, never deleted)
    duplicates: int  # combinations of the file that resolve to an earlier one


def is_sweep_dir(path: Path) -> bool:
    return (path / SWEEP_FILE).is_file()


def open_sweep(folder: str | Path) -> Sweep:
    """Read a sweep folder's ``sweep.json``; a UserError if it is not a sweep folder."""
    path = Path(folder)
    if not is_sweep_dir(path):
        raise UserError(
            f"{path} is not a sweep folder (no {SWEEP_FILE})", "plan one with `parallel-dqn sweep plan SWEEP.toml --output DIR`"
        )
    try:
        tree = json.loads((path / SWEEP_FILE).read_text())
        combinations = [Combination(**c) for c in tree["combinations"]]
        return Sweep(_absolute(path), str(tree["sweep_file"]), str(tree["sweep_text"]), combinations)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path / SWEEP_FILE} cannot be read ({exc})", "plan the sweep again into a new folder") from None


def plan_sweep(
    spec: SweepSpec, folder: str | Path, write: bool = True, name_of: Callable[[int], str] | None = None
) -> PlanResult:
    """Plan ``spec`` into ``folder``: extend its sweep.json and write each new combination's config.toml.

    With ``write=False`` nothing is written (what ``submit --dry-run`` needs to know the indices).
    ``name_of(index)`` names a new combination's folder (default: its index and swept settings).
    """
    out = _absolute(Path(folder))
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out} is a file", "give a folder for the sweep")
    if out.is_dir() and not is_sweep_dir(out) and any(out.iterdir()):
        raise UserError(f"--output {out} holds other files but no {SWEEP_FILE}, so it is not a sweep folder",
                        "plan into a new or empty folder")
    before = open_sweep(out).combinations if is_sweep_dir(out) else []
    by_id = {c.id: c for c in before}
    wanted = {c.id for c in spec.candidates}
    short = _short_keys(spec.swept_keys)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    combinations = [dataclasses.replace(c, in_sweep=c.id in wanted) for c in before]
    new: list[Combination] = []
    next_index = max((c.index for c in before), default=-1) + 1
    for candidate in spec.candidates:
        if candidate.id not in by_id:
            name = name_of(next_index) if name_of else _name(next_index, candidate.settings, short)
            c = Combination(next_index, name, candidate.id, candidate.settings, planned=now)
            new.append(c)
            combinations.append(c)
            next_index += 1
    sweep = Sweep(out, str(_absolute(spec.path)), spec.text, combinations)
    result = PlanResult(
        sweep, new, [c for c in combinations if c.in_sweep and c.id in by_id],
        [c for c in combinations if not c.in_sweep], spec.duplicates,
    )
    if write:
        out.mkdir(parents=True, exist_ok=True)
        tree = {"format": FORMAT, "sweep_file": sweep.source, "sweep_text": sweep.text,
                "combinations": [c.to_json() for c in combinations]}
        write_atomically(out / SWEEP_FILE, lambda tmp: tmp.write_text(json.dumps(tree, indent=1) + "\n"))
        configs = {c.id: c.config for c in spec.candidates}
        for c in combinations:  # new ones, and any planned one whose config.toml went missing
            path = sweep.config_path(c)
            if c.id in configs and not path.is_file():
                cfg = copy.deepcopy(configs[c.id])
                cfg.run.output = str(sweep.run_dir(c))
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(path, cfg.write)
    return result


def sweep_from(source: str | Path, output: str | Path | None, write: bool = True) -> tuple[Sweep, PlanResult | None]:
    """``SWEEP.toml --output DIR`` (planned first) or a sweep folder ``DIR``: the sweep to act on."""
    src = Path(source)
    if src.is_dir():
        if output is not None and _absolute(Path(output)) != _absolute(src):
            raise UserError(f"{src} is a sweep folder and --output {output} another one",
                            "give a sweep folder alone, or a sweep file with --output")
        return open_sweep(src), None
    if not src.exists():
        raise UserError(
            f"{src}: no such sweep file or sweep folder", "give a sweep file (TOML) with --output DIR, or a sweep folder"
        )
    if output is None:
        raise UserError(f"{src}: a sweep file needs --output DIR", "name the sweep folder to plan it into")
    result = plan_sweep(load_sweep(src), output, write=write)
    return result.sweep, result


def expand_run_dirs(dirs: Sequence[Path]) -> list[Path]:
    """Run folders for a report: each sweep folder becomes its finished combinations' run folders."""
    out: list[Path] = []
    for d in dirs:
        if not is_sweep_dir(d):
            out.append(d)
            continue
        sweep = open_sweep(d)
        done = [Path(d) / c.name for c in sweep.combinations if (Path(d) / c.name / METRICS_FILE).is_file()]
        if not done:
            raise UserError(f"sweep {d} has no finished combination yet", f"see `parallel-dqn sweep status {d}`")
        out += done
    return out


# ---- state of every combination -------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One combination's state, for ``sweep status``."""

    combination: Combination
    state: str  # one of STATES
    episodes_done: int
    episodes_total: int | None
    sharpe: float | None  # the agent's evaluation Sharpe (finished runs)
    job: str | None  # SLURM job or array task id, if any
    note: str = ""


def gather_status(sweep: Sweep, queue: dict[str, str] | None = None) -> list[Row]:
    """Every combination's row; ``queue``: squeue's answer (default: :func:`sweep_queue`, one squeue call)."""
    if queue is None:
        queue = sweep_queue(sweep)
    submitted = latest_submissions(sweep)
    return [combination_row(sweep, c, submitted.get(c.index), queue) for c in sweep.combinations]


def sweep_queue(sweep: Sweep) -> dict[str, str] | None:
    """squeue's states of every SLURM job this sweep knows of (submissions, status records); None without squeue."""
    ids = set(latest_submissions(sweep).values())
    for c in sweep.combinations:
        record = read_status(sweep.run_dir(c)) or {}
        ids.update(str(record[k]).partition("_")[0] for k in ("slurm_job_id", "slurm_array") if record.get(k))
    return slurm_queue(sorted(ids))


def combination_row(sweep: Sweep, c: Combination, job: str | None, queue: dict[str, str] | None) -> Row:
    """One combination's state from its run folder, its newest SLURM submission ``job`` and ``queue``."""
    folder = sweep.run_dir(c)
    done, total = episodes_done(folder), episodes_total(sweep.config_path(c))
    task = f"{job}_{c.index}" if job else None
    record = read_status(folder)
    record_job = (record.get("slurm_array") or record.get("slurm_job_id")) if record else None
    finished = (folder / METRICS_FILE).is_file()
    metrics = _read_json(folder / METRICS_FILE) if finished else None
    value = (metrics.get("eval") or {}).get("sharpe") if isinstance(metrics, dict) else None
    sharpe = float(value) if value is not None else None

    def row(state: str, why: str = "", job_id: str | None = None) -> Row:
        text = "; ".join(t for t in (why, "" if c.in_sweep else "no longer in the sweep file") if t)
        return Row(c, state, done, total, sharpe, job_id or record_job or task, text)

    if finished:
        return row("finished")
    if task and queue and task in queue:
        return row("queued" if queue[task] in QUEUED_STATES else "running", job_id=task)
    if record:
        state = record.get("state")
        if state == "running":
            alive = _alive(record, queue)
            if alive is False:
                return row("interrupted", "the run is gone: resumes from its newest checkpoint")
            return row("running", f"on {record.get('host')}: not checked" if alive is None else "")
        if state == "stopped":
            return row("stopped", f"stopped by {record.get('reason')}: resumes from its checkpoint")
        if state == "failed":
            return row("failed", str(record.get("message") or "failed"))
        if state == "finished":
            return row("failed", f"status.json says finished but {METRICS_FILE} is missing")
    if task:
        if queue is None:
            return row("queued", "squeue not available: not checked", job_id=task)
        log = sweep.folder / LOGS_DIR / f"slurm-{task}.out"
        return row("failed", f"SLURM task {task} ended before the run started (see {log})", job_id=task)
    return row("not started")


def _alive(record: dict[str, Any], queue: dict[str, str] | None) -> bool | None:
    """Whether a ``running`` record's run still runs: its pid on this host, else its SLURM job in squeue."""
    alive = is_alive(record)
    if alive is not None:
        return alive
    ids = [str(record[k]) for k in ("slurm_array", "slurm_job_id") if record.get(k)]
    if ids and queue is not None:
        return any(i in queue for i in ids)
    return None


def episodes_done(run_dir: Path) -> int:
    """Training episodes recorded in the run's metrics.jsonl (each counted once, even after a resume)."""
    path = run_dir / CURVE_FILE
    if not path.is_file():
        return 0
    episodes = set()
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if isinstance(item, dict) and item.get("phase") == "train":
            episodes.add(item.get("episode"))
    return len(episodes)


def episodes_total(config_path: Path) -> int | None:
    """``dqn.episodes`` of a combination's config.toml (None if it cannot be read)."""
    try:
        return int(tomllib.loads(config_path.read_text())["dqn"]["episodes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def count_states(rows: Iterable[Row]) -> dict[str, int]:
    """Combinations per state, in :data:`STATES` order, states with none left out."""
    counts = {state: 0 for state in STATES}
    for r in rows:
        counts[r.state] += 1
    return {state: n for state, n in counts.items() if n}


def best(rows: Iterable[Row]) -> Row | None:
    """The finished combination with the highest evaluation Sharpe."""
    done = [r for r in rows if r.state == "finished" and r.sharpe is not None]
    return max(done, key=lambda r: r.sharpe) if done else None


# ---- ranking by deflated Sharpe ---------------------------------------------------------------
def deflated_sharpe_ratios(run_dirs: Sequence[Path]) -> dict[Path, float | None]:
    """Each finished run's deflated Sharpe ratio (DSR), the runs taken together as the trials of one search.

    The best evaluation Sharpe of many combinations is biased upwards by the search itself; the DSR
    (:func:`parallel_dqn.evaluation.significance.deflated_sharpe_ratio`) is the probability that a run's true
    Sharpe exceeds what the best of that many skill-less trials would reach by luck. For each run: its
    returns are the ``agent`` column of its returns_eval.csv, ``n_trials`` is the number of runs given,
    ``trials_sharpe_variance`` the sample variance (ddof=1; 0 for a single run) of their annualised evaluation
    Sharpe ratios (metrics.json ``eval.sharpe``) and ``bars_per_year`` its metrics.json ``annualisation``.

    None for a run without returns_eval.csv (runs from before it was written), with one that cannot be read,
    without ``annualisation``, or whose DSR is undefined (fewer than 30 bars, constant returns).
    """
    metrics = {Path(d): _read_json(Path(d) / METRICS_FILE) for d in run_dirs}
    sharpes = [s for s in map(_eval_sharpe, metrics.values()) if s is not None]
    variance = statistics.variance(sharpes) if len(sharpes) > 1 else 0.0
    return {folder: _deflated_sharpe(folder, m, len(metrics), variance) for folder, m in metrics.items()}


def best_deflated(rows: Iterable[Row], deflated: dict[str, float | None]) -> tuple[Row, float] | None:
    """The finished combination with the highest deflated Sharpe (``deflated``: combination name -> DSR), and it."""
    top: tuple[Row, float] | None = None
    for r in rows:
        value = deflated.get(r.combination.name)
        if r.state == "finished" and value is not None and (top is None or value > top[1]):
            top = (r, value)
    return top


def _eval_sharpe(metrics: Any) -> float | None:
    value = (metrics.get("eval") or {}).get("sharpe") if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _deflated_sharpe(folder: Path, metrics: Any, n_trials: int, variance: float) -> float | None:
    """One run's DSR among ``n_trials`` whose Sharpe ratios have ``variance``; None where it cannot be had."""
    path = folder / outputs.RETURNS_EVAL
    try:
        bars_per_year = float(metrics["annualisation"]["bars_per_year"])
    except (KeyError, TypeError, ValueError):
        return None
    if not path.is_file():
        return None
    import pandas as pd  # only here: `sweep status` of runs without returns_eval.csv stays light

    from parallel_dqn.evaluation.significance import deflated_sharpe_ratio

    try:
        returns = pd.read_csv(path, usecols=["agent"])["agent"].to_numpy(dtype="float64")
        return deflated_sharpe_ratio(returns, n_trials, variance, bars_per_year=bars_per_year)
    except (OSError, ValueError):  # unreadable, no agent column, NaN, a bad bars_per_year
        return None


def slurm_queue(job_ids: Sequence[str]) -> dict[str, str] | None:
    """``squeue`` states of these jobs and their array tasks (``JOB``, ``JOB_TASK`` -> state), None without squeue."""
    if not job_ids:
        return {}
    if shutil.which("squeue") is None:
        return None
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i %A %T"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        # every id unknown (finished long ago): squeue fails with "Invalid job id specified"
        return {} if "invalid job id" in proc.stderr.lower() else None
    queue: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            queue[parts[0]] = queue[parts[1]] = parts[2]
    return queue


# ---- running locally -------------------------------------------------------------------------
def train_command(sweep: Sweep, c: Combination, ranks: int | None) -> list[str]:
    """The command that trains one combination (resuming where it stopped): one process, or ``mpiexec -n R``."""
    return resumable_train_command(sweep.config_path(c), str(sweep.run_dir(c)), ranks)


def resumable_train_command(config: Path, output: str, ranks: int | None) -> list[str]:
    """``parallel-dqn train --config CONFIG --output OUTPUT --resume auto`` here: one process, or ``mpiexec -n R``.

    ``output`` may be a folder or an object-store URL (an AWS Batch array task's combination)."""
    train = ["-m", "parallel_dqn", "train", "--config", str(config), "--output", output,
             "--resume", "auto", "--no-progress"]
    if ranks is None:
        return [sys.executable, *train, "--mode", "single"]
    return [str(mpiexec()), "-n", str(ranks), sys.executable, *train, "--mode", "parallel"]


def mpiexec() -> Path:
    """The ``mpiexec`` of this environment (the mpich wheel puts it beside the interpreter)."""
    path = Path(sys.executable).parent / "mpiexec"
    if not path.is_file():
        raise UserError(f"mpiexec not found beside {sys.executable}",
                        "install the mpich wheel (launchers/setup_env.sh), or run without --ranks")
    return path


def check_ranks(sweep: Sweep, ranks: int, flag: str = "--ranks") -> None:
    """Parallel mode needs rank 0 plus one rank per worker: each combination's dist.workers must agree."""
    if ranks < 2:
        raise UserError(f"{flag} {ranks}: parallel mode needs at least 2 ranks", "rank 0 serves, every other rank is a worker")
    for c in sweep.combinations:
        try:
            workers = int(tomllib.loads(sweep.config_path(c).read_text())["dist"]["workers"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if c.in_sweep and workers not in (0, ranks - 1):
            raise UserError(f"{flag} {ranks} gives {ranks - 1} workers but {c.name} sets dist.workers = {workers}",
                            f"use {flag} {workers + 1}, or set dist.workers = 0 in the sweep")


@dataclass
class LocalOutcome:
    """What ``run_local`` did: exit code per combination started, and those left alone."""

    codes: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> state (running or queued elsewhere)
    stopped_by: str | None = None  # the signal that stopped the sweep, if one did


@dataclass
class _Started:
    combination: Combination
    process: subprocess.Popen[bytes]
    log: IO[str]


def run_local(
    sweep: Sweep,
    jobs: int = 1,
    ranks: int | None = None,
    stop_requested: Callable[[], str | None] = lambda: None,
    on_event: Callable[[str], None] = lambda text: None,
) -> LocalOutcome:
    """Run every combination still to run, at most ``jobs`` at a time, each a subprocess logging to console.log.

    A combination that fails does not stop the others. When ``stop_requested()`` names a signal (or
    on Ctrl-C), no new run starts and every running one is asked to checkpoint and stop (SIGUSR1),
    so ``--resume auto`` continues it next time.
    """
    if jobs < 1:
        raise UserError(f"--jobs {jobs} must be >= 1")
    if ranks is not None:
        check_ranks(sweep, ranks)
        mpiexec()
    with _only_runner(sweep):
        return _run_all(sweep, jobs, ranks, stop_requested, on_event)


@contextlib.contextmanager
def _only_runner(sweep: Sweep) -> Iterator[None]:
    """Hold the sweep folder's run lock: two ``sweep run`` on one folder (one machine) would start runs twice."""
    with open(sweep.folder / RUN_LOCK, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `sweep run` is working on {sweep.folder}", "let it finish, or stop it first") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_all(
    sweep: Sweep, jobs: int, ranks: int | None, stop_requested: Callable[[], str | None], on_event: Callable[[str], None]
) -> LocalOutcome:
    outcome = LocalOutcome()
    queue = sweep_queue(sweep)
    todo = [c for c in sweep.combinations if c.in_sweep]
    submitted = latest_submissions(sweep)
    running: list[_Started] = []
    try:
        while todo or running:
            outcome.stopped_by = outcome.stopped_by or stop_requested()
            if outcome.stopped_by:
                todo.clear()
                on_event(f"{outcome.stopped_by}: asking {len(running)} running combination(s) to checkpoint and stop")
                _stop_all(running, outcome, on_event)
                break
            while todo and len(running) < jobs:
                c = todo.pop(0)
                row = combination_row(sweep, c, submitted.get(c.index), queue)  # now: another runner may have it
                if row.state in ("running", "queued"):
                    outcome.skipped[c.name] = row.state
                    on_event(f"{c.name}: {row.state} already ({row.job or row.note or 'here'}), not started again")
                elif row.state in TO_RUN:
                    running.append(_start(sweep, c, ranks, on_event))
            for item in list(running):
                code = item.process.poll()
                if code is not None:
                    running.remove(item)
                    _ended(item, code, outcome, on_event)
            time.sleep(0.2)
    except KeyboardInterrupt:
        on_event(f"interrupted: asking {len(running)} running combination(s) to checkpoint and stop")
        outcome.stopped_by = "SIGINT"
        _stop_all(running, outcome, on_event)
    return outcome


def _start(sweep: Sweep, c: Combination, ranks: int | None, on_event: Callable[[str], None]) -> _Started:
    command = train_command(sweep, c, ranks)
    path = sweep.run_dir(c) / CONSOLE_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.open("a", encoding="utf-8")
    log.write(f"[{_now()}] sweep run: {' '.join(command)}\n")
    log.flush()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    # its own session: a Ctrl-C in the terminal reaches the sweep, which asks each run to checkpoint first
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    on_event(f"{c.name}: started (log {path})")
    return _Started(c, process, log)


def _ended(item: _Started, code: int, outcome: LocalOutcome, on_event: Callable[[str], None]) -> None:
    item.log.write(f"[{_now()}] sweep run: exit code {code}\n")
    item.log.close()
    outcome.codes[item.combination.name] = code
    on_event(f"{item.combination.name}: {'finished' if code == 0 else f'ended with exit code {code}'}")


def _stop_all(running: list[_Started], outcome: LocalOutcome, on_event: Callable[[str], None]) -> None:
    """SIGUSR1 to every run (checkpoint, exit 75), wait up to STOP_GRACE seconds, then kill what is left."""
    for item in running:
        if item.process.poll() is None:
            item.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + STOP_GRACE
    try:
        for item in running:
            try:
                code = item.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                item.process.kill()
                code = item.process.wait()
            _ended(item, code, outcome, on_event)
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
        for item in running:
            if item.process.poll() is None:
                item.process.kill()
            code = item.process.wait()
            if item.combination.name not in outcome.codes:
                _ended(item, code, outcome, on_event)
    running.clear()


# ---- SLURM -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Submission:
    """One ``sbatch --array`` of a sweep, as recorded in submissions.json."""

    job_id: str
    indices: list[int]
    command: list[str]
    submitted: str


def to_submit(rows: Iterable[Row]) -> list[int]:
    """Indices of the combinations a submission should include: in the sweep, not finished, queued or running."""
    return [r.combination.index for r in rows if r.combination.in_sweep and r.state in TO_RUN]


def sbatch_command(sweep: Sweep, indices: Sequence[int], ranks: int = 2, nodes: int = 1, time_limit: str | None = None,
                   partition: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """``sbatch --parsable --array=...`` of launchers/slurm/sweep.sbatch over ``indices``."""
    if nodes < 1:
        raise UserError(f"--nodes {nodes} must be >= 1")
    check_ranks(sweep, ranks)
    command = ["sbatch", "--parsable", f"--array={','.join(map(str, indices))}", f"--ntasks={ranks}",
               f"--nodes={nodes}", f"--output={sweep.folder / LOGS_DIR / 'slurm-%A_%a.out'}"]
    if time_limit:
        command.append(f"--time={time_limit}")
    if partition:
        command.append(f"--partition={partition}")
    return [*command, *extra, str(SWEEP_SBATCH), str(sweep.folder)]


def submit(sweep: Sweep, command: Sequence[str], indices: Sequence[int]) -> Submission:
    """Run ``command`` (from :func:`sbatch_command`) and record the job in submissions.json."""
    if shutil.which(command[0]) is None:
        raise UserError(f"{command[0]} not found: this machine cannot submit SLURM jobs", "run on a login node, or use `sweep run`")
    (sweep.folder / LOGS_DIR).mkdir(parents=True, exist_ok=True)  # SLURM does not create the log folder
    env = {**os.environ, "PARALLEL_DQN_ROOT": str(ROOT)}
    try:
        proc = subprocess.run(list(command), capture_output=True, text=True, env=env, timeout=120)
    except subprocess.TimeoutExpired:
        raise UserError("sbatch did not answer within 120 s", "check the SLURM controller (sinfo), then submit again") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise UserError(f"sbatch refused the sweep: {why}", "fix the sbatch options and submit again")
    job_id = proc.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise UserError(f"sbatch answered {proc.stdout.strip()!r}, not a job id", "check `squeue` before submitting again")
    entry = Submission(job_id, list(indices), list(command), _now())
    records = submissions(sweep) + [dataclasses.asdict(entry)]
    write_atomically(sweep.folder / SUBMISSIONS_FILE, lambda tmp: tmp.write_text(json.dumps(records, indent=1) + "\n"))
    return entry


def submissions(sweep: Sweep) -> list[dict[str, Any]]:
    """The records of submissions.json, oldest first (none if it is missing)."""
    records = _read_json(sweep.folder / SUBMISSIONS_FILE)
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def latest_submissions(sweep: Sweep) -> dict[int, str]:
    """Combination index -> the job id of the newest submission that included it."""
    latest: dict[int, str] = {}
    for record in submissions(sweep):
        for index in record.get("indices") or []:
            latest[int(index)] = str(record.get("job_id"))
    return latest


# ---- helpers ---------------------------------------------------------------------------------
def _get(cfg: Config, dotted: str) -> Any:
    section, _, key = dotted.partition(".")
    return copy.deepcopy(getattr(getattr(cfg, section), key))


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Setting -> its name in combination names: the last part of the key, the whole key when that is ambiguous."""
    last: dict[str, set[str]] = {}
    for key in keys:
        last.setdefault(key.rpartition(".")[2], set()).add(key)
    return {key: key.rpartition(".")[2] if len(last[key.rpartition(".")[2]]) == 1 else key for key in keys}


def _name(index: int, settings: dict[str, Any], short: dict[str, str]) -> str:
    """``c000-lr=0.001-gamma=0.5``: the index, then each swept setting; only filesystem-safe characters."""
    parts = [f"c{index:03d}"] + [f"{short.get(k, k)}={_text(v)}" for k, v in settings.items()]
    name = re.sub(r"[^A-Za-z0-9._+=-]", "_", "-".join(parts))
    return name[:MAX_NAME]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "+".join(map(str, value))
    return repr(value) if isinstance(value, float) else str(value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, str) else str(value)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
