"""Scale benchmark (issue 10): throughput, memory and loading at S = 5, 50, 500 generated stocks of 1-minute bars.

For each S, on one generated market (S stocks x ``--days`` days of 1-minute bars, all days trained on, no held-out
evaluation), with the same settings for every S except the stock list (defaults, ``dist.workers`` default: one worker
per stock in single mode, one shard per worker rank under MPI; ``run.threads = 1``, ``--episodes``):

* **loading**: ``bench/loading.py`` on the same files (it makes the market: its file layout, seed and dates), its
  medians: pyarrow's raw dataset read, ``load_bars``, end to end (+ align, features, graph), files/s;
* **single mode** (``parallel-dqn train``), **MPI** (``mpiexec -n --ranks``: rank 0 + ranks-1 workers) and
  **mpi1** (``mpiexec -n 2``: one worker rank, the base of "N worker ranks / one rank" in memory), each a
  watched child (bench/_procstat.py): peak RSS (VmHWM) and peak PSS of every rank, the totals over ranks
  (simultaneous sums, sampled every 0.2 s from /proc), CPU seconds per rank;
* from the run's own outputs: training seconds = ``elapsed_s`` of the last training episode in metrics.jsonl
  (from the moment rank 0 has the market, so loading is excluded; it includes rank 0's meta-policy fit at the
  episode's end), transitions/s = clock steps x S / training seconds, gradient samples/s = batch_size x stocks
  per worker x gradients applied / training seconds; launch to the first clock step (the logs' "first clock
  step" line) is start-up and
  loading's share (the cross-section cache, data.cache = auto in the bench's own folder, is built by the first run
  of each S and mapped by the next ones);
* a run killed by the timeout: its checkpoints' log lines ("after N gradient applies", every 1,000 applies) say how
  far it got and how fast it learned; its episode's time is estimated as the time to its last checkpoint plus the
  applies left (workers x one per train_freq steps after learning_starts) at the rate between its checkpoints,
  marked "est.";
* the run's own loading: the workers' "cross-section built in X s" line (files -> cross-section), files/s.

With the mpi and mpi1 modes it also measures the **floor** of the summed-RSS ratio: the RSS of a rank that has
only started (``mpiexec -n 2``, each rank importing what a rank of a run imports, then read from
/proc/self/smaps_rollup), so that N worker ranks hold at least N x that plus the one rank's own data, even if they
shared every other byte: ``(N x bare + (one rank - bare)) / one rank``. RSS counts a page mapped by k ranks whole in
each of them, so sharing lowers the sum of PSS, not the sum of RSS; the floor says how far below the measured ratio
any layout could go.

A run that passes ``--timeout`` or the memory cap (``--mem_cap_mb``: the sum of the tree's PSS, and RLIMIT_AS of
every process) is killed and reported as such; the others go on. Runs of one S and mode that failed once are not
repeated. Repeats go round-robin over (S, mode); the figures are medians.

Usage:  python bench/scale.py [--stocks 5,50,500] [--days 3] [--episodes 1] [--modes single,mpi,mpi1] [--ranks 5]
                              [--repeats 3] [--timeout 900] [--mem_cap_mb 8000] [--json FILE] [--out bench/out/scale]
Prints markdown (the README's Scale tables) and writes --json (default OUT/scale.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from _procstat import ProcSeries, Watched, code_version, terminate_on_sigterm, watch

from parallel_dqn import outputs
from parallel_dqn.config import Config
from parallel_dqn.data.store import open_store

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
EPISODE_LINE = re.compile(r"parallel_dqn\.evaluation\.results: episode (\d+):")
RANK_DONE = re.compile(r"parallel_dqn\.run\.mpi: rank (\d+): done")
FIRST_STEP = re.compile(r"parallel_dqn\.training\.driver: first clock step")
CHECKPOINT = re.compile(r"checkpoint \d+ written \(after (\d+) gradient applies\)")
BUILT = re.compile(r"cross-section (built|from the cache) in ([\d.]+) s")
MODES = {"single": "single mode, one worker for all the stocks (the default)", "mpi": "mpiexec -n RANKS: RANKS-1 worker ranks",
         "mpi1": "mpiexec -n 2: one worker rank (the 'one rank' of the memory ratio)"}
TARGETS = {"throughput_500_vs_5": 0.5, "single_peak_rss_500_mb": 2000.0, "workers_vs_one_rank_500": 1.5}


# ---- the market and its loading -------------------------------------------------------------------------------
def make_market(out: Path, stocks: int, days: int, rounds: int, timeout: float, cap_mb: float,
                measure: bool = True) -> dict[str, Any]:
    """Run bench/loading.py on S stocks x ``days`` days of 1-minute bars: it writes the market (if not there) and
    measures it; returns its figures and the market's folder, stocks and days (``measure=False``: only make the
    market if it is not there)."""
    market = out / f"market-{stocks}x{days}x1m"  # bench/loading.py's name for it
    if not measure and (market / "stocks_intraday").exists():
        store = open_store(str(market))
        symbols = store.list_symbols()
        return {"market": str(market), "symbols": symbols,
                "days": sorted({d for s in symbols for d in store.list_days(s)})}
    cmd = [sys.executable, str(HERE / "loading.py"), "--stocks", str(stocks), "--days", str(days),
           "--bar_minutes", "1", "--rounds", str(rounds), "--out", str(out)]
    cache = out / "cache-loading"  # its end to end maps the cache after its first round: a private one, emptied
    shutil.rmtree(cache, ignore_errors=True)
    w = watch(cmd, timeout=timeout, cap_mb=cap_mb, as_limit_mb=cap_mb + 4000,
              env={**os.environ, "PARALLEL_DQN_CACHE": str(cache)})
    shutil.rmtree(cache, ignore_errors=True)
    result: dict[str, Any] = {"outcome": w.outcome, "market": str(market), "seconds": round(w.ended - w.started, 1)}
    rows = {}
    for line in w.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].replace(",", "").isdigit():
            rows[cells[0]] = float(cells[1].replace(",", ""))
        elif m := re.match(r"(\d+) files", line):
            result["files"] = int(m.group(1))
    pick = {"pyarrow": "pyarrow dataset read", "load_bars": "load_bars", "file_by_file": "file by file",
            "end_to_end": "end to end"}
    result["files_per_s"] = {k: next((v for name, v in rows.items() if name.startswith(p)), None) for k, p in pick.items()}
    if w.outcome != "ok" and not (market / "stocks_intraday").exists():
        raise SystemExit(f"bench/loading.py could not make the market for {stocks} stocks ({w.outcome}):\n{w.stderr}")
    store = open_store(str(market))
    result["symbols"] = store.list_symbols()
    result["days"] = sorted({d for s in result["symbols"] for d in store.list_days(s)})
    return result


# ---- one run --------------------------------------------------------------------------------------------------
def train_command(mode: str, market: str, symbols: list[str], last_day: dt.date, episodes: int, output: Path,
                  ranks: int, extra: list[str] | None = None) -> list[str]:
    """The command line of one training run: every setting the same for every S but the stock list."""
    args = ["-m", "parallel_dqn", "train", "--data", market, "--stocks", *symbols, "--end_date", str(last_day),
            "--episodes", str(episodes), "--output", str(output), "--overwrite", "--no_progress",
            "--set", "run.threads=1", *(extra or [])]
    if mode == "single":
        return [sys.executable, *args, "--mode", "single"]
    n = 2 if mode == "mpi1" else ranks
    return [str(BIN / "mpiexec"), "-n", str(n), sys.executable, *args, "--mode", "parallel"]


BARE_RANK = """
from mpi4py import MPI
import parallel_dqn.run.mpi, parallel_dqn.run.single, parallel_dqn.training.driver
import parallel_dqn.training.server, parallel_dqn.training.worker
kb = {l.split(':')[0]: int(l.split()[1]) for l in open('/proc/self/smaps_rollup') if l.split()[-1] == 'kB'}
MPI.COMM_WORLD.Barrier()
print('BARE', MPI.COMM_WORLD.rank, kb['Rss'], kb['Pss'], flush=True)
"""


def bare_rank_mb() -> dict[str, float]:
    """RSS and PSS (MB, the mean of two ranks) of an MPI rank that has imported what a rank of a run imports and
    holds nothing else: what every rank carries before any data."""
    out = subprocess.run([str(BIN / "mpiexec"), "-n", "2", sys.executable, "-c", BARE_RANK], capture_output=True,
                         text=True, check=True, timeout=300).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("BARE")]
    return {"rss_mb": statistics.mean(int(r[2]) for r in rows) / 1024,
            "pss_mb": statistics.mean(int(r[3]) for r in rows) / 1024}


def _log_times(path: Path, pattern: re.Pattern[str]) -> list[tuple[float, re.Match[str]]]:
    """(wall time, match) of every line of a log that matches ``pattern``."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text(errors="replace").splitlines():
        m, t = pattern.search(line), LOG_TIME.match(line)
        if m and t:
            found.append((dt.datetime.strptime(t.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), m))
    return found


def read_run(output: Path, w: Watched) -> dict[str, Any]:
    """The figures of one watched run: from its outputs where it wrote them, from /proc for memory and CPU."""
    r: dict[str, Any] = {"outcome": w.outcome, "wall_s": round(w.ended - w.started, 2),
                         "load_avg": [round(x, 2) for x in os.getloadavg()]}
    ranks = w.ranks()
    r["ranks"] = [{"rank": p.rank, "pid": p.pid, "peak_rss_mb": round(p.peak_rss_mb(), 1),
                   "peak_pss_mb": round(p.peak_pss_mb(), 1)} for p in ranks]
    r["peak_rss_total_mb"] = round(w.peak_total_rss_mb(), 1)  # simultaneous sum over the run's processes
    r["peak_pss_total_mb"] = round(w.peak_total_pss_mb(), 1)
    r["peak_rss_max_rank_mb"] = round(max((p.peak_rss_mb() for p in ranks), default=0), 1)
    workers = [p for p in ranks if p.rank]  # MPI ranks 1..N
    if workers:
        r["workers_peak_rss_sum_mb"] = round(sum(p.peak_rss_mb() for p in workers), 1)
        r["workers_peak_pss_total_mb"] = round(_peak_sum(workers, "pss_kb") / 1024, 1)
        r["worker_peak_rss_mean_mb"] = round(statistics.mean(p.peak_rss_mb() for p in workers), 1)
        r["worker_peak_pss_mean_mb"] = round(statistics.mean(p.peak_pss_mb() for p in workers), 1)
    logs = [output / outputs.LOG, *sorted((output / outputs.WORKER_LOGS).glob("rank*.log"))]
    first_step = min((t for path in logs for t, _ in _log_times(path, FIRST_STEP)), default=None)
    if first_step is not None:
        r["first_step_s"] = round(first_step - w.started, 2)  # launch -> first clock step (parallel_dqn's own line)
    built = [(m.group(1), float(m.group(2))) for path in logs for _, m in _log_times(path, BUILT)]
    if built:  # the run's own loading: files -> cross-section (every worker process logs it; the slowest counts)
        r["cross_section"] = {"cached": built[0][0] != "built", "seconds": max(x for _, x in built)}
    if w.outcome != "ok" or not (output / outputs.METRICS).exists():
        r["error_tail"] = (w.stderr or "").strip().splitlines()[-3:]
        checkpoints = _log_times(output / outputs.LOG, CHECKPOINT)
        if len(checkpoints) >= 2 and first_step is not None:  # how far and how fast: its checkpoints' lines
            (t0, m0), (t1, m1) = checkpoints[0], checkpoints[-1]
            r["progress"] = {"applies": int(m1.group(1)), "seconds": t1 - first_step,
                             "applies_between": int(m1.group(1)) - int(m0.group(1)), "seconds_between": t1 - t0}
        return r
    metrics = json.loads((output / outputs.METRICS).read_text())
    curve = [json.loads(x) for x in (output / outputs.CURVE).read_text().splitlines() if x.strip()]
    train = [c for c in curve if c.get("phase") == "train"]
    cfg = tomllib.loads((output / outputs.CONFIG).read_text())
    counters = metrics["counters"]
    stocks = len(metrics["symbols"])
    train_s = train[-1]["elapsed_s"]
    clock_steps = sum(c["n_steps"] for c in train)
    r.update(
        stocks=stocks, workers=len(counters.get("per_worker", {})), train_s=train_s, clock_steps=clock_steps,
        transitions_per_s=clock_steps * stocks / train_s,
        # a gradient samples batch_size transitions per stock of its worker's shard (balanced shards)
        gradient_samples_per_s=cfg["dqn"]["batch_size"] * stocks / max(len(counters.get("per_worker", {})), 1)
        * counters["gradients_applied"] / train_s,
        gradients_sent=counters["gradients_sent"], gradients_applied=counters["gradients_applied"],
        gradients_dropped_stale=counters["gradients_dropped_stale"], mean_staleness=counters["mean_staleness"],
        per_worker=counters.get("per_worker", {}), batch_size=cfg["dqn"]["batch_size"],
    )
    episodes = _log_times(output / outputs.LOG, EPISODE_LINE)
    if len(episodes) >= len(train):
        train_end = episodes[len(train) - 1][0]
        train_start = train_end - train_s
        r["train_window"] = (train_start, train_end)
        r["startup_s"] = round(train_start - w.started, 2)  # launch -> training: imports, MPI start, loading, set-up
        r["cpu_s_in_training"] = {str(p.rank if p.rank is not None else "single"): round(p.cpu_between(train_start, train_end), 2)
                                  for p in ranks}
        done = [t for path in sorted((output / outputs.WORKER_LOGS).glob("rank*.log"))
                for t, _ in _log_times(path, RANK_DONE)]
        if done:  # the workers' own end (rank 0 then fits the meta-policy and writes the outputs)
            r["workers_done_s"] = round(max(done) - train_start, 2)
    return r


def _peak_sum(procs: list[ProcSeries], attr: str) -> float:
    """Peak over time of the sum of ``attr`` over ``procs`` (the sampler reads all of them at one time stamp)."""
    sums: dict[float, float] = {}
    for p in procs:
        for t, v in zip(p.times, getattr(p, attr)):
            sums[t] = sums.get(t, 0) + v
    return max(sums.values(), default=0)


def run_once(mode: str, market: dict[str, Any], episodes: int, output: Path, ranks: int, timeout: float,
             cap_mb: float, extra: list[str] | None = None) -> tuple[dict[str, Any], Watched]:
    """One watched training run: its figures, and what the sampler saw (for CPU in any window).

    The output folder is emptied first: run.log is appended across runs, and its timestamps are read."""
    if output.exists():
        shutil.rmtree(output)
    cmd = train_command(mode, market["market"], market["symbols"], market["days"][-1], episodes, output, ranks, extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PARALLEL_DQN_CACHE": str(output.parent / "cache")}  # the cross-section cache: the bench's own
    w = watch(cmd, timeout=timeout, cap_mb=cap_mb, as_limit_mb=cap_mb + 4000, env=env)
    r = read_run(output, w)
    shutil.rmtree(output / outputs.CHECKPOINTS, ignore_errors=True)  # 166 MB each at 500 stocks; read, not needed
    stocks, bars = len(market["symbols"]), 390 * len(market["days"]) - 1
    r.update(mode=mode, stocks=stocks, days=len(market["days"]), code=code_version())
    if r["outcome"] == "timeout":  # nothing written: the most it can have done is every transition in the time it had
        r["transitions_per_s_below"] = episodes * bars * stocks / timeout
    progress = r.get("progress")
    if progress and progress["seconds_between"] > 0 and progress["applies_between"] > 0:
        # the episode's time: what it took to its last checkpoint + the applies left at the rate between checkpoints
        q, p = Config().dqn, progress
        workers = stocks if mode == "single" else 1 if mode == "mpi1" else ranks - 1
        applies = workers * math.ceil((episodes * bars - q.learning_starts) / q.train_freq)  # one per train_freq steps
        seconds = p["seconds"] + max(applies - p["applies"], 0) * p["seconds_between"] / p["applies_between"]
        r.update(train_s_est=seconds, transitions_per_s_est=episodes * bars * stocks / seconds,
                 gradient_samples_per_s_est=q.batch_size * applies / seconds,
                 transitions_per_s_learning=q.train_freq * p["applies_between"] / workers * stocks / p["seconds_between"])
    return r, w


# ---- the summary ----------------------------------------------------------------------------------------------
def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict[str, Any]], bare: dict[str, float] | None = None) -> dict[str, Any]:
    """Medians per (S, mode) and the issue's ratios (``bare``: :func:`bare_rank_mb`, for the floor)."""
    groups: dict[str, dict[str, Any]] = {}
    for r in runs:
        key = f"{r['stocks']}/{r['mode']}"
        g = groups.setdefault(key, {"stocks": r["stocks"], "mode": r["mode"], "runs": [], "outcomes": []})
        g["runs"].append(r)
        g["outcomes"].append(r["outcome"])
    keys = ("train_s", "transitions_per_s", "gradient_samples_per_s", "startup_s", "peak_rss_max_rank_mb",
            "peak_rss_total_mb", "peak_pss_total_mb", "workers_peak_rss_sum_mb", "workers_peak_pss_total_mb",
            "worker_peak_rss_mean_mb", "worker_peak_pss_mean_mb", "transitions_per_s_below", "workers",
            "gradients_applied", "gradients_dropped_stale", "first_step_s", "transitions_per_s_est",
            "gradient_samples_per_s_est", "train_s_est", "transitions_per_s_learning")
    for g in groups.values():
        ok = [r for r in g["runs"] if r["outcome"] == "ok"]
        for k in keys:  # memory of a killed run is still what it reached (a lower bound)
            g[k] = median_of(ok or g["runs"], k)
        g["ok"] = len(ok)
        g["ranks_peak"] = _rank_medians(ok or g["runs"])
        del g["runs"]
    ratios: dict[str, Any] = {}
    big = max((g["stocks"] for g in groups.values()), default=0)
    small = min((g["stocks"] for g in groups.values()), default=0)
    ratios["stocks"] = (small, big)
    for mode in MODES:
        a, b = groups.get(f"{big}/{mode}"), groups.get(f"{small}/{mode}")
        if not (a and b and b.get("transitions_per_s")) or a is b:
            continue
        base = b["transitions_per_s"]
        if a.get("transitions_per_s"):
            ratios[f"throughput_{mode}"] = a["transitions_per_s"] / base
        elif a.get("transitions_per_s_est"):
            ratios[f"throughput_{mode}"] = f"~{a['transitions_per_s_est'] / base:.2f} (est., {a['outcomes'][0]})"
        elif a.get("transitions_per_s_below"):
            ratios[f"throughput_{mode}"] = f"< {a['transitions_per_s_below'] / base:.2f} ({a['outcomes'][0]})"
    single, many, one = groups.get(f"{big}/single"), groups.get(f"{big}/mpi"), groups.get(f"{big}/mpi1")
    if single:
        ratios["single_peak_rss_mb"] = single.get("peak_rss_max_rank_mb")
        ratios["single_outcomes"] = single["outcomes"]
    if many and one and many.get("workers_peak_rss_sum_mb") and one.get("workers_peak_rss_sum_mb"):
        ratios["workers_vs_one_rank_rss"] = many["workers_peak_rss_sum_mb"] / one["workers_peak_rss_sum_mb"]
        ratios["workers_vs_one_rank_pss"] = many["workers_peak_pss_total_mb"] / one["workers_peak_pss_total_mb"]
        ratios["workers"] = many.get("workers")
        if bare:  # N ranks that shared all but what each holds before any data
            one_rss, n = one["workers_peak_rss_sum_mb"], many.get("workers") or 0
            ratios["bare_rank_rss_mb"] = bare["rss_mb"]
            ratios["workers_vs_one_rank_rss_floor"] = (n * bare["rss_mb"] + one_rss - bare["rss_mb"]) / one_rss
    if many and single and single.get("peak_rss_max_rank_mb") and many.get("workers_peak_rss_sum_mb"):
        ratios["workers_rss_vs_single"] = many["workers_peak_rss_sum_mb"] / single["peak_rss_max_rank_mb"]
    builds: dict[str, dict[str, float]] = {}
    for s in sorted({r["stocks"] for r in runs}):
        xs = [r["cross_section"] for r in runs if r["stocks"] == s and r.get("cross_section")]
        built, cached = [x["seconds"] for x in xs if not x["cached"]], [x["seconds"] for x in xs if x["cached"]]
        builds[str(s)] = {"built_s": statistics.median(built) if built else None,
                          "cached_s": statistics.median(cached) if cached else None}
    return {"groups": groups, "ratios": ratios, "targets": TARGETS, "builds": builds}


def _rank_medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        for x in r.get("ranks", []):
            by.setdefault("single" if x["rank"] is None else str(x["rank"]), []).append(x)
    return {k: {m: statistics.median(x[m] for x in v) for m in ("peak_rss_mb", "peak_pss_mb")} for k, v in by.items()}


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def markdown(summary: dict[str, Any], loading: dict[int, dict[str, Any]], args: argparse.Namespace) -> str:
    """The README's tables: runs, ranks of the MPI runs, loading, the issue's figures."""
    lines = [f"{dt.date.today()}, code {code_version()}, {os.cpu_count()} cores, load average at the end "
             f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.days} days of 1-minute bars, "
             f"{args.episodes} episode(s), medians of up to {args.repeats} runs; timeout {args.timeout:.0f} s, "
             f"memory cap {args.mem_cap_mb:,.0f} MB (PSS of the run's processes).", ""]
    lines += ["| stocks | mode (workers) | runs ok | training s | transitions/s | gradient samples/s "
              "| launch to first step s | peak RSS, largest rank (MB) | peak RSS, sum of ranks (MB) "
              "| peak PSS, sum of ranks (MB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    order = list(MODES)
    for g in sorted(summary["groups"].values(), key=lambda g: (order.index(g["mode"]), g["stocks"])):
        ok = f"{g['ok']}/{len(g['outcomes'])}"
        if not g["ok"]:
            ok = f"0/{len(g['outcomes'])} ({', '.join(sorted(set(g['outcomes'])))})"
        rate, samples = _fmt(g["transitions_per_s"]), _fmt(g["gradient_samples_per_s"])
        if not g["transitions_per_s"] and g.get("transitions_per_s_est"):
            rate = f"~{g['transitions_per_s_est']:,.0f} (est.)"
            samples = f"~{g['gradient_samples_per_s_est']:,.0f} (est.)"
        elif not g["transitions_per_s"] and g.get("transitions_per_s_below"):
            rate = f"< {g['transitions_per_s_below']:,.0f}"
        mode = f"{g['mode']} ({_fmt(g['workers'])})" if g["workers"] else g["mode"]
        train_s = _fmt(g["train_s"], 1)
        if not g["train_s"] and g.get("train_s_est"):
            train_s = f"~{g['train_s_est']:,.0f} (est.)"
        lines.append(f"| {g['stocks']} | {mode} | {ok} | {train_s} | {rate} | {samples} "
                     f"| {_fmt(g['first_step_s'], 1)} | {_fmt(g['peak_rss_max_rank_mb'])} "
                     f"| {_fmt(g['peak_rss_total_mb'])} | {_fmt(g['peak_pss_total_mb'])} |")
    mpi = [g for g in summary["groups"].values() if g["mode"] != "single"]
    if mpi:
        lines += ["", "| stocks | mode | MPI rank | peak RSS (MB) | peak PSS (MB) |", "|---|---|---|---|---|"]
        for g in sorted(mpi, key=lambda g: (g["stocks"], g["mode"])):
            for rank, m in sorted(g["ranks_peak"].items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else -1):
                lines.append(f"| {g['stocks']} | {g['mode']} | {rank} | {_fmt(m['peak_rss_mb'])} | {_fmt(m['peak_pss_mb'])} |")
    lines += ["", "| stocks | files | pyarrow read (files/s) | load_bars (files/s) | / pyarrow "
              "| a run's cross-section, built (files/s) | / pyarrow | from the cache (s) |", "|---|---|---|---|---|---|---|---|"]
    for s, x in sorted(loading.items()):
        f = x["files_per_s"]
        base, files = f.get("pyarrow"), x.get("files")
        build = summary["builds"].get(str(s), {})
        built = files / build["built_s"] if files and build.get("built_s") else None
        lines.append(f"| {s} | {files or '-'} | {_fmt(base)} | {_fmt(f.get('load_bars'))} | {_per(f.get('load_bars'), base)} "
                     f"| {_fmt(built)} | {_per(built, base)} | {_fmt(build.get('cached_s'), 2)} |")
    r = summary["ratios"]
    small, big = r.get("stocks", (0, 0))
    lines += ["", "| issue 10 figure | target | today |", "|---|---|---|"]
    for mode in MODES:
        if f"throughput_{mode}" in r:
            lines.append(f"| transitions/s at {big} / at {small}, {mode} | >= 0.5 | {_ratio(r[f'throughput_{mode}'])} |")
    if "single_peak_rss_mb" in r:
        outcome = ", ".join(sorted(set(r["single_outcomes"])))
        lines.append(f"| peak RSS at {big}, single mode | <= 2,000 MB | {_fmt(r['single_peak_rss_mb'])} MB ({outcome}) |")
    if "workers_vs_one_rank_rss" in r:
        n = _fmt(r.get("workers"))
        lines.append(f"| {n} worker ranks / 1 worker rank at {big}, peak RSS | <= 1.5x | {r['workers_vs_one_rank_rss']:.2f}x |")
        lines.append(f"| the same, peak PSS (shared pages counted once) | <= 1.5x | {r['workers_vs_one_rank_pss']:.2f}x |")
        if "workers_vs_one_rank_rss_floor" in r:
            lines.append(f"| floor of the RSS ratio: {n} ranks sharing all but a bare rank's {_fmt(r['bare_rank_rss_mb'])} MB "
                         f"| - | {r['workers_vs_one_rank_rss_floor']:.2f}x |")
    if "workers_rss_vs_single" in r:
        lines.append(f"| worker ranks' peak RSS / the single-mode process at {big} | - | {r['workers_rss_vs_single']:.2f}x |")
    return "\n".join(lines)


def _per(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value and base else "-"


def _ratio(v: Any) -> str:
    return v if isinstance(v, str) else ("-" if v is None else f"{v:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", default="5,50,500", help="comma-separated numbers of stocks")
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=1)
    ap.add_argument("--modes", default="single,mpi,mpi1", help=", ".join(f"{k}: {v}" for k, v in MODES.items()))
    ap.add_argument("--ranks", type=int, default=5, help="MPI ranks (rank 0 + ranks-1 workers)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    ap.add_argument("--mem_cap_mb", type=float, default=8000.0, help="per run: the sum of its processes' PSS")
    ap.add_argument("--load_rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/out/scale"))
    ap.add_argument("--json", type=Path, default=None, help="default: OUT/scale.json")
    args = ap.parse_args()
    terminate_on_sigterm()
    stocks = [int(x) for x in args.stocks.split(",") if x]
    modes = [m for m in args.modes.split(",") if m]
    if set(modes) - set(MODES):
        raise SystemExit(f"--modes: any of {', '.join(MODES)}, not {args.modes}")
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "cache", ignore_errors=True)  # the runs' cross-section cache: the first run of each builds
    loading = {}
    for s in stocks:
        print(f"[scale] market and loading, {s} stocks ...", file=sys.stderr, flush=True)
        loading[s] = make_market(args.out, s, args.days, args.load_rounds, args.timeout, args.mem_cap_mb)
    runs: list[dict[str, Any]] = []
    failed: set[tuple[int, str]] = set()
    path = args.json or args.out / "scale.json"
    bare = bare_rank_mb() if {"mpi", "mpi1"} <= set(modes) else None
    for repeat in range(args.repeats):
        for s in stocks:
            for mode in modes:
                if (s, mode) in failed:
                    continue
                start = time.time()
                r, _ = run_once(mode, loading[s], args.episodes, args.out / f"run-{mode}-{s}", args.ranks, args.timeout,
                                args.mem_cap_mb)
                r["repeat"] = repeat
                runs.append(r)
                print(f"[scale] {s} stocks, {mode}, run {repeat + 1}: {r['outcome']} in {time.time() - start:.0f} s, "
                      f"{_fmt(r.get('transitions_per_s'))} transitions/s, peak RSS {_fmt(r['peak_rss_max_rank_mb'])} MB "
                      f"(load {r['load_avg'][0]})", file=sys.stderr, flush=True)
                if r["outcome"] != "ok":
                    failed.add((s, mode))
                save(path, args, loading, runs, bare)  # after every run: a bench stopped half-way keeps what it measured
    print(save(path, args, loading, runs, bare))
    print(f"\n(figures of every run: {path})", file=sys.stderr)


def save(path: Path, args: argparse.Namespace, loading: dict[int, dict[str, Any]], runs: list[dict[str, Any]],
         bare: dict[str, float] | None = None) -> str:
    """Write the runs so far, their summary and tables to ``path`` (JSON); return the tables."""
    summary = summarise(runs, bare)
    text = markdown(summary, loading, args)
    shown = {s: {**x, "days": [str(d) for d in x["days"]], "symbols": len(x["symbols"])} for s, x in loading.items()}
    path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "loading": shown,
                                "runs": runs, "summary": summary, "markdown": text}, indent=1, default=str))
    return text


if __name__ == "__main__":
    main()
