"""Node memory benchmark: does a node hold one copy of the cross-section, however many worker ranks it runs?

The issue's acceptance item: "under mpiexec with 4 worker ranks on one node and 500 stocks, the ranks' total RSS
<= 1.5x one rank's". Side by side in one invocation, on one generated market (``--stocks`` x ``--days`` days of
1-minute bars, trained on all days but the last, evaluated on the last), two parallel-mode runs that map the
same kind of cross-section cache entry (``data.cache`` = this bench's folder; cache hits, the entries are built
first): ``mpiexec -n WORKERS+1`` (rank 0 + WORKERS worker ranks) and ``mpiexec -n 2`` (rank 0 + one worker rank).

Each run is watched from outside (bench/_procstat.py: every 0.2 s, RSS from /proc/PID/status and PSS from
/proc/PID/smaps_rollup of every rank) and stopped ``--hold`` seconds after every worker rank logged "first clock
step" (SIGTERM to the ranks: they checkpoint and exit 75; the samples after the SIGTERM are not counted). Its
figures: each rank's peak RSS and PSS up to the stop, the peak over time of their sums (all ranks; worker ranks
only), and, read from /proc/PID/smaps just before the stop, how much of the cache entry's mapped files each rank
has resident (RSS) and its share of them (PSS).

Why PSS: a page of the mapped entry that k ranks have touched is counted whole in the RSS of each of them, so a
sum of RSS counts the one copy k times, however many copies the node really holds. PSS counts a page shared by k
processes 1/k in each; the sum of PSS over the ranks is the memory they hold together. "One copy per node"
therefore shows in PSS (the entry's PSS summed over the ranks = its resident size, once) and not in RSS.

Two phases (``--phases``):

* **start**: the runs as a user starts them. At the first clock step a worker has read only what the set-up
  reads whole (the training log returns, for the reward scale; worker 0 also sends close, log returns and
  tradeable to rank 0) and the rows its first acting pass gathers (``market.window`` rows of every stock): the
  mapped features are mostly not yet resident, in any rank;
* **touched**: each rank is started through this script (``--_rank``), which wraps
  ``parallel_dqn.training.driver.build_cross_section`` to read one byte of every page of every array of the
  cross-section right after it is mapped: the state every worker reaches within a training episode (its acting
  reads every row of every stock), measured without training a whole year.

The cache entries are built before the runs, one per number of worker ranks (the key holds the shards), in one
process (``--_build``: ``build_cross_section`` with the same plan and settings as the runs, so the runs find the
entry): an MPI build would hold the float64 feature rows once per worker rank.

The market (kept under ``--out`` and reused): ``--days`` days of 500 stocks. 100 days of 1-minute bars (T =
39,000 bars) is a 1.5 GB cross-section; a year (250 days) would be 3.8 GB, but building it in one process peaks
near 8 bytes x 15 row fields x ~5 copies per bar and stock (~30 GB), more than the 24 GiB machine it was written
on; pass ``--days 250`` where there is the memory.

Usage:  python bench/node_memory.py [--stocks 500] [--days 100] [--workers 4] [--phases start,touched] [--hold 10]
                                    [--timeout 1200] [--mem_cap_mb 18000] [--out bench/out/node_memory]
Prints a markdown table and writes it to OUT/node_memory.md (and the figures to OUT/node_memory.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _procstat import ProcSeries, Watched, code_version, terminate_on_sigterm, tree, watch

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
START = dt.date(2020, 1, 2)
FIRST_STEP = re.compile(r"parallel_dqn\.training\.driver: first clock step")
FROM_CACHE = re.compile(r"cross-section from the cache in ([\d.]+) s")
BUILT = re.compile(r"cross-section built in ([\d.]+) s")
PHASES = {"start": "as started: stopped after the first clock step",
          "touched": "every page of the cross-section read once by each worker (as within an episode)"}


# ---- inside a rank or a build process ---------------------------------------------------------------------
def rank_main(argv: list[str]) -> int:
    """``--_rank parallel_dqn ARGS``: parallel-dqn ARGS, every worker reading every page of its cross-section."""
    import numpy as np

    from parallel_dqn import cli
    from parallel_dqn.training import driver

    build = driver.build_cross_section

    def touched(*args: Any, **kwargs: Any) -> Any:
        xs, stats = build(*args, **kwargs)
        for value in vars(xs).values():
            if isinstance(value, np.ndarray) and value.size:
                flat = np.ascontiguousarray(value).reshape(-1).view(np.uint8)  # a view of a contiguous map
                int(flat[::4096].sum())  # one byte of every page
        return xs, stats

    driver.build_cross_section = touched  # run_workers looks it up when it is called
    assert argv and argv[0] == "parallel_dqn", argv
    return cli.main(argv[1:])


def build_main(argv: list[str]) -> int:
    """``--_build MARKET CACHE END EVAL WORKERS``: the cache entry of a parallel run with WORKERS worker ranks."""
    from parallel_dqn.comm.inprocess import InProcessTransport
    from parallel_dqn.config import Config
    from parallel_dqn.data.cache import cache_key, open_cache, source_digest
    from parallel_dqn.data.store import open_store
    from parallel_dqn.training.driver import BuildRecipe, LocalShard, build_cross_section
    from parallel_dqn.training.plan import plan_training

    market, cache, end, eval_start, workers = argv
    cfg = Config()
    for key, value in {"data.data": market, "data.end_date": end, "data.eval_start": eval_start,
                       "data.cache": cache, "dist.mode": "parallel", "dist.workers": int(workers)}.items():
        cfg.set(key, value)
    store = open_store(market)
    plan = plan_training(cfg, store)
    started = time.perf_counter()
    cached = open_cache(cache)
    assert cached is not None
    sources = [source_digest(store, [plan.symbols[i] for i in s], plan.load_start, plan.load_end) for s in plan.shards]
    key = cache_key(BuildRecipe.of(plan, cfg), sources)
    held = cached.holds(key)
    shards = [LocalShard(i, s) for i, s in enumerate(plan.shards)]
    build_cross_section(shards, plan, store, InProcessTransport(endpoint=None), cfg)  # type: ignore[arg-type]
    entry = cached.entry(key)
    size = sum(f.stat().st_size for f in entry.glob("*.npy"))
    print(json.dumps({"entry": str(entry), "cached_before": held, "seconds": round(time.perf_counter() - started, 1),
                      "bytes": size}))
    return 0


# ---- the market ----------------------------------------------------------------------------------------------
def make_market(out: Path, stocks: int, days: int) -> dict[str, Any]:
    """The market's folder (made if not there: structure.json, written last, marks it complete) and its days."""
    from parallel_dqn.data.store import open_store
    from parallel_dqn.data.synthetic import STRUCTURE_FILE, SyntheticSpec, generate_market, write_market

    market = out / f"market-{stocks}x{days}x1m"
    made = out / f"market-{stocks}x{days}x1m.json"  # how long it took when it was made
    if not (market / STRUCTURE_FILE).exists():
        shutil.rmtree(market, ignore_errors=True)
        print(f"[node_memory] writing {stocks} stocks x {days} days of 1-minute bars ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        names = [f"S{i:03d}" for i in range(stocks)]
        generated = generate_market(names, START, days, seed=3, spec=SyntheticSpec(bar_minutes=1))
        seconds_generate = time.perf_counter() - started
        files = write_market(generated, market)
        del generated
        made.write_text(json.dumps({"generate_s": round(seconds_generate, 1),
                                    "write_s": round(time.perf_counter() - started - seconds_generate, 1),
                                    "files": len(files), "made": str(dt.datetime.now())}))
    store = open_store(str(market))
    symbols = store.list_symbols()
    all_days = sorted({d for s in symbols for d in store.list_days(s)})
    about = json.loads(made.read_text()) if made.exists() else {}
    return {"market": str(market), "stocks": len(symbols), "days": [str(d) for d in all_days], **about}


def build_entry(market: dict[str, Any], cache: Path, workers: int, timeout: float, cap_mb: float) -> dict[str, Any]:
    """The cache entry of runs with ``workers`` worker ranks, built in one watched process if not there."""
    days = market["days"]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_build", market["market"], str(cache), days[-2], days[-1],
           str(workers)]
    w = watch(cmd, timeout=timeout, cap_mb=cap_mb, as_limit_mb=cap_mb + 8000,
              env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    if w.outcome != "ok":
        raise SystemExit(f"building the cache entry for {workers} worker ranks: {w.outcome}\n{w.stderr[-3000:]}")
    result = json.loads(w.stdout.strip().splitlines()[-1])
    proc = max(w.procs.values(), key=lambda p: p.peak_rss_mb(), default=None)
    result.update(workers=workers, wall_s=round(w.ended - w.started, 1), peak_rss_mb=round(proc.peak_rss_mb()) if proc else None)
    return result


# ---- one run -------------------------------------------------------------------------------------------------
def _pmi_rank(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((int(e.split(b"=", 1)[1]) for e in env if e.startswith(b"PMI_RANK=")), None)


def _mapped(pid: int, folder: str) -> tuple[int, int]:
    """(Rss, Pss) in kB of ``pid``'s mappings of files under ``folder``."""
    rss = pss = 0
    inside = False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(None, 5)
                if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line
                    inside = len(head) == 6 and head[5].strip().startswith(folder)
                elif inside and head[0] == "Rss:":
                    rss += int(head[1])
                elif inside and head[0] == "Pss:":
                    pss += int(head[1])
    except OSError:
        pass
    return rss, pss


class Stopper:
    """Watches a run's worker logs; ``hold`` s after every worker logged its first clock step it reads each rank's
    resident share of the cache entry, then sends the ranks SIGTERM (and SIGKILL ``grace`` s later)."""

    def __init__(self, output: Path, workers: int, hold: float, cache: Path, grace: float = 120.0) -> None:
        self.output, self.workers, self.hold, self.cache, self.grace = output, workers, hold, str(cache.resolve()), grace
        self.first_step: float | None = None
        self.stopped: float | None = None
        self.mapped: dict[int, tuple[int, int]] = {}  # rank -> (Rss kB, Pss kB) of the entry's files
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _stepped(self) -> int:
        logs = sorted((self.output / "logs").glob("rank*.log"))
        return sum(1 for p in logs if FIRST_STEP.search(p.read_text(errors="replace")))

    def _ranks(self) -> dict[int, int]:
        return {r: pid for pid in tree(os.getpid()) if pid != os.getpid() and (r := _pmi_rank(pid)) is not None}

    def _run(self) -> None:
        while not self.done.is_set() and self._stepped() < self.workers:
            self.done.wait(0.5)
        if self.done.is_set():
            return
        self.first_step = time.time()
        if self.done.wait(self.hold):
            return
        ranks = self._ranks()
        self.mapped = {r: _mapped(pid, self.cache) for r, pid in ranks.items()}
        self.stopped = time.time()
        for pid in ranks.values():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self.done.wait(self.grace):
            return
        for pid in self._ranks().values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _peak(procs: list[ProcSeries], attr: str, until: float) -> float:
    """MB: the peak over samples up to ``until`` of the sum of ``attr`` over ``procs`` (sampled at one time stamp)."""
    sums: dict[float, int] = {}
    for p in procs:
        for t, v in zip(p.times, getattr(p, attr)):
            if t <= until:
                sums[t] = sums.get(t, 0) + v
    return max(sums.values(), default=0) / 1024


def run_once(phase: str, ranks: int, market: dict[str, Any], cache: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    output = out / f"run-{phase}-n{ranks}"
    shutil.rmtree(output, ignore_errors=True)
    days = market["days"]
    launch = ([sys.executable, "-m", "parallel_dqn"] if phase == "start"
              else [sys.executable, str(Path(__file__).resolve()), "--_rank", "parallel_dqn"])
    cmd = [str(BIN / "mpiexec"), "-n", str(ranks), *launch, "train", "--mode", "parallel", "--data", market["market"],
           "--end_date", days[-2], "--eval_start", days[-1], "--episodes", "1", "--output", str(output), "--overwrite",
           "--no_progress", "--set", "run.threads=1", "--set", f"data.cache={cache}"]
    stopper = Stopper(output, ranks - 1, args.hold, cache)
    stopper.thread.start()
    w: Watched = watch(cmd, timeout=args.timeout, cap_mb=args.mem_cap_mb, as_limit_mb=args.mem_cap_mb + 8000,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    stopper.done.set()
    stopper.thread.join()
    logs = "\n".join(p.read_text(errors="replace") for p in sorted((output / "logs").glob("rank*.log")))
    shutil.rmtree(output / "checkpoints", ignore_errors=True)
    until = stopper.stopped or w.ended
    procs = [p for p in w.ranks() if p.rank is not None]
    workers = [p for p in procs if p.rank]
    r: dict[str, Any] = {
        "phase": phase, "ranks": ranks, "workers": ranks - 1, "outcome": w.outcome, "returncode": w.returncode,
        "stopped_by_bench": stopper.stopped is not None, "wall_s": round(w.ended - w.started, 1),
        "first_step_s": round(stopper.first_step - w.started, 1) if stopper.first_step else None,
        "cache_hits": len(FROM_CACHE.findall(logs)), "cache_builds": len(BUILT.findall(logs)),
        "per_rank": {p.rank: {"peak_rss_mb": round(max([0, *(v for t, v in zip(p.times, p.rss_kb) if t <= until)]) / 1024),
                              "peak_pss_mb": round(max([0, *(v for t, v in zip(p.times, p.pss_kb) if t <= until)]) / 1024)}
                     for p in procs},
        "total_rss_mb": round(_peak(procs, "rss_kb", until)), "total_pss_mb": round(_peak(procs, "pss_kb", until)),
        "workers_rss_mb": round(_peak(workers, "rss_kb", until)), "workers_pss_mb": round(_peak(workers, "pss_kb", until)),
        "entry_resident": {k: {"rss_mb": round(a / 1024), "pss_mb": round(b / 1024)}
                           for k, (a, b) in sorted(stopper.mapped.items())},
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    if stopper.stopped is None:
        r["error_tail"] = (w.stderr or "").strip().splitlines()[-5:]
    return r


# ---- the table -----------------------------------------------------------------------------------------------
def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def markdown(result: dict[str, Any]) -> str:
    m, runs, entries = result["market"], result["runs"], result["entries"]
    size_mb = max((e["bytes"] for e in entries.values()), default=0) / 2**20
    bars = 390 * len(m["days"])
    made = (f"generated in {m['generate_s']} s and written ({m['files']:,} files) in {m['write_s']} s"
            if "write_s" in m else "made before")
    lines = [f"{dt.date.today()}, code {result['code']}, {os.cpu_count()} cores, load average at the end "
             f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}. Market: {m['stocks']} stocks x {len(m['days'])} days of "
             f"1-minute bars ({made}); train on all days but the last, evaluate on the last; run.threads = 1. "
             f"Cache entries (built in one process): "
             + "; ".join(f"{w} worker rank(s): {'there already' if e['cached_before'] else 'built'} in {e['seconds']} s"
                         f" (peak RSS {e['peak_rss_mb']:,} MB)"
                         + (f", after a first build in {e['first_build_s']} s whose code changed before the runs"
                            if "first_build_s" in e else "") for w, e in sorted(entries.items())) + ".",
             "Each run is stopped (SIGTERM) " f"{result['hold']:.0f} s after every worker rank's first clock step; "
             "peaks are of the 0.2 s samples up to then. MB = 2^20 bytes.", ""]
    lines += ["| phase | stocks | days | bars T | cross-section MB | ranks | outcome | launch to first step s "
              "| peak RSS per rank, 0 / 1 / ... (MB) | peak RSS, sum (MB) | workers' RSS sum (MB) "
              "| peak PSS per rank (MB) | peak PSS, sum (MB) | workers' PSS sum (MB) "
              "| entry resident per rank, RSS / PSS (MB) |", "|" + "---|" * 15]
    for r in runs:
        per = r["per_rank"]
        rss = " / ".join(f"{per[k]['peak_rss_mb']:,}" for k in sorted(per))
        pss = " / ".join(f"{per[k]['peak_pss_mb']:,}" for k in sorted(per))
        entry = " / ".join(f"{v['rss_mb']}/{v['pss_mb']}" for k, v in sorted(r["entry_resident"].items()) if int(k))
        outcome = "stopped by the bench" if r["stopped_by_bench"] else r["outcome"]
        if not r["cache_hits"] or r["cache_builds"]:
            outcome += f" (cache: {r['cache_hits']} hits, {r['cache_builds']} builds)"
        lines.append(f"| {r['phase']} | {m['stocks']} | {len(m['days'])} | {bars:,} | {size_mb:,.0f} | {r['ranks']} "
                     f"| {outcome} | {r['first_step_s'] or '-'} | {rss} | {r['total_rss_mb']:,} | {r['workers_rss_mb']:,} "
                     f"| {pss} | {r['total_pss_mb']:,} | {r['workers_pss_mb']:,} | {entry or '-'} |")
    lines += ["", "| phase | ratio, WORKERS worker ranks / 1 worker rank | peak RSS sum | peak PSS sum |", "|---|---|---|---|"]
    for phase in result["phases"]:
        base = next((r for r in runs if r["phase"] == phase and r["workers"] == 1), None)
        many = next((r for r in runs if r["phase"] == phase and r["workers"] > 1), None)
        if not (base and many):
            continue
        n = many["workers"]
        lines.append(f"| {phase} | all ranks ({n + 1} / 2) | {_ratio(many['total_rss_mb'], base['total_rss_mb'])} "
                     f"| {_ratio(many['total_pss_mb'], base['total_pss_mb'])} |")
        lines.append(f"| {phase} | worker ranks only ({n} / 1) | {_ratio(many['workers_rss_mb'], base['workers_rss_mb'])} "
                     f"| {_ratio(many['workers_pss_mb'], base['workers_pss_mb'])} |")
    return "\n".join(lines).replace("WORKERS", str(result["workers"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, default=500)
    ap.add_argument("--days", type=int, default=100, help="days of 1-minute bars (the last one evaluated)")
    ap.add_argument("--workers", type=int, default=4, help="worker ranks of the run compared with one worker rank")
    ap.add_argument("--phases", default="start,touched", help=", ".join(f"{k}: {v}" for k, v in PHASES.items()))
    ap.add_argument("--hold", type=float, default=10.0, help="seconds after every worker's first clock step")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per run and per cache build")
    ap.add_argument("--mem_cap_mb", type=float, default=18000.0, help="per run and build: the sum of its processes' PSS")
    ap.add_argument("--out", type=Path, default=Path("bench/out/node_memory"))
    args = ap.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    if set(phases) - set(PHASES) or args.days < 2 or args.workers < 2:
        raise SystemExit("--phases: start and/or touched; --days >= 2; --workers >= 2")
    terminate_on_sigterm()
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    cache = out / "cache"
    started = time.perf_counter()
    market = make_market(out, args.stocks, args.days)
    entries = {}
    for workers in (1, args.workers):
        print(f"[node_memory] cache entry for {workers} worker rank(s) ...", file=sys.stderr, flush=True)
        entries[workers] = build_entry(market, cache, workers, args.timeout, args.mem_cap_mb)
        print(f"[node_memory]   {entries[workers]}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {"market": market, "entries": entries, "runs": [], "phases": phases, "hold": args.hold,
                              "workers": args.workers, "code": code_version()}
    for phase in phases:
        for ranks in (args.workers + 1, 2):
            # the key holds a digest of the build's code: others editing it meanwhile would make the MPI run build
            # (every worker rank at once); a check in one process first, which rebuilds the entry if so
            again = build_entry(market, cache, ranks - 1, args.timeout, args.mem_cap_mb)
            if not again["cached_before"]:
                print(f"[node_memory]   the entry was rebuilt (the code changed?): {again}", file=sys.stderr, flush=True)
                entries[ranks - 1] = {**again, "first_build_s": entries[ranks - 1]["seconds"]}
            print(f"[node_memory] {phase}: mpiexec -n {ranks} ...", file=sys.stderr, flush=True)
            r = run_once(phase, ranks, market, cache, out, args)
            result["runs"].append(r)
            print(f"[node_memory]   {r['outcome']} in {r['wall_s']} s, peak RSS sum {r['total_rss_mb']:,} MB, "
                  f"PSS sum {r['total_pss_mb']:,} MB", file=sys.stderr, flush=True)
    result["bench_s"] = round(time.perf_counter() - started, 1)
    text = markdown(result)
    (out / "node_memory.md").write_text(text + "\n")
    (out / "node_memory.json").write_text(json.dumps(result, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_rank":
        sys.exit(rank_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "--_build":
        sys.exit(build_main(sys.argv[2:]))
    main()
