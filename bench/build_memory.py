"""Memory of building the cross-section on a cold cache, against starting from the cache; under MPI, one build per
node against every worker building.

Side by side in one invocation, on one generated market (``--stocks`` x ``--days`` days of 1-minute bars, trained on
all days but the last), four runs, each stopped (SIGTERM) once every worker has logged its first clock step:

* **single, cold**: ``--mode single`` with an empty cache folder: it builds the cross-section, writes the entry and
  trains on the entry it wrote;
* **single, cached**: the same command again: it maps the entry;
* **mpi, cold**: ``mpiexec -n WORKERS+1`` with an empty cache folder: the node's first worker builds the entry alone,
  the others wait and map it;
* **mpi, no cache**: the same with ``data.cache=off``: every worker builds the whole cross-section (each loads its
  own stocks, the rows are exchanged), the shape every cold MPI build had before one build per node.

Each process is watched from outside (bench/_procstat.py, a sample every 0.2 s): its peak RSS up to the stop (the
build's peak, as the run is stopped right after its first step) and its RSS at the stop (what it carries into
training); what it does after the SIGTERM (its checkpoint) is not counted.

Usage:  python bench/build_memory.py [--stocks 100] [--days 253] [--workers 4] [--out bench/out/build_memory]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _procstat import code_version, tree, watch  # noqa: E402

from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market  # noqa: E402

BIN = Path(sys.executable).parent
FIRST_STEP = re.compile(r"parallel_dqn\.training\.driver: first clock step")
START = dt.date(2024, 1, 2)


def make_market(out: Path, stocks: int, days: int) -> tuple[Path, list[str]]:
    """The market (kept under ``out`` and reused) and its days."""
    market = out / f"market-{stocks}x{days}"
    if not (market / "stocks_intraday").exists():
        write_market(generate_market([f"S{i:03d}" for i in range(stocks)], START, days, seed=7, spec=SyntheticSpec()),
                     market)
    files = sorted((market / "stocks_intraday" / "S000").rglob("*.parquet"))
    return market, [f.stem.split("_")[1] for f in files]


def stop_at_first_step(output: Path, workers: int, done: threading.Event, stopped: list[bool]) -> None:
    """SIGTERM the run's processes once ``workers`` of its logs say "first clock step" (``stopped`` then holds when)."""
    while not done.is_set():
        logs = [output / "run.log", *sorted((output / "logs").glob("rank*.log"))]
        stepped = sum(1 for p in logs if p.exists() and FIRST_STEP.search(p.read_text(errors="replace")))
        if stepped >= workers:
            break
        done.wait(0.2)
    if done.is_set():
        return
    time.sleep(1.0)  # a sample or more past the first step
    stopped.append(time.time())
    for pid in tree(os.getpid()):
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def run(name: str, market: Path, days: list[str], out: Path, cache: str, workers: int, timeout: float) -> dict[str, Any]:
    output = out / f"run-{name}"
    shutil.rmtree(output, ignore_errors=True)
    args = ["-m", "parallel_dqn", "train", "--data", str(market), "--end_date", days[-2], "--eval_start", days[-1],
            "--episodes", "1", "--output", str(output), "--overwrite", "--no_progress", "--set", "run.threads=1",
            "--set", f"data.cache={cache}"]
    if name.startswith("single"):
        cmd, waiting = [sys.executable, *args, "--mode", "single"], 1
    else:
        cmd, waiting = [str(BIN / "mpiexec"), "-n", str(workers + 1), sys.executable, *args, "--mode", "parallel"], workers
    done, stopped = threading.Event(), []
    stopper = threading.Thread(target=stop_at_first_step, args=(output, waiting, done, stopped), daemon=True)
    stopper.start()
    w = watch(cmd, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    done.set()
    stopper.join()
    procs = w.ranks()
    shutil.rmtree(output, ignore_errors=True)
    until = stopped[0] if stopped else w.ended  # what the process did after the SIGTERM (its checkpoint) not counted

    def upto(p: Any) -> list[int]:
        return [v for t, v in zip(p.times, p.rss_kb) if t <= until]

    return {"run": name, "outcome": "stopped at the first step" if stopped else w.outcome,
            "wall_s": round(w.ended - w.started, 1),
            "per_process": [{"rank": p.rank, "peak_mb": round(max(upto(p), default=0) / 1024),
                             "at_stop_mb": round(upto(p)[-1] / 1024) if upto(p) else None}
                            for p in procs if p.rank != 0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, default=100)
    ap.add_argument("--days", type=int, default=253)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--out", type=Path, default=Path("bench/out/build_memory"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    market, days = make_market(args.out, args.stocks, args.days)
    cache = args.out / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    results = [run("single, cold", market, days, args.out, str(cache), args.workers, args.timeout),
               run("single, cached", market, days, args.out, str(cache), args.workers, args.timeout)]
    shutil.rmtree(cache, ignore_errors=True)
    results += [run("mpi, cold", market, days, args.out, str(cache), args.workers, args.timeout),
                run("mpi, no cache", market, days, args.out, "off", args.workers, args.timeout)]
    shutil.rmtree(cache, ignore_errors=True)
    lines = [f"{dt.date.today()}, code {code_version()}, {args.stocks} stocks x {args.days} days of 1-minute bars, "
             f"{args.workers} worker ranks under MPI; MB per worker process (rank 0 left out: it builds nothing)", "",
             "| run | outcome | peak RSS (the build) | RSS at the first step | peak RSS, all workers summed |",
             "|---|---|---|---|---|"]
    for r in results:
        peaks = [p["peak_mb"] for p in r["per_process"]]
        at_stop = [p["at_stop_mb"] for p in r["per_process"]]
        lines.append(f"| {r['run']} | {r['outcome']} | {' / '.join(f'{v:,}' for v in peaks)} | "
                     f"{' / '.join(f'{v:,}' for v in at_stop if v is not None)} | {sum(peaks):,} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (args.out / "build_memory.md").write_text(text)
    (args.out / "build_memory.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
