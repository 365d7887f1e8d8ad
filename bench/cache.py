"""Cross-section cache benchmark: time to the first clock step, cold against cached, and memory per node under MPI.

Each run is a fresh ``parallel-dqn train`` process on one generated market (``--stocks`` x ``--days`` files of
``--bar_minutes`` bars), side by side and alternating, ``--rounds`` times:

* **off**: ``data.cache = off``, the cross-section built from the files (load, validate, align, features, graph);
* **cold**: an empty cache folder: built as with off, then written to the cache and mapped from it;
* **cached**: the same command again: the entry is mapped, nothing is read but the files' sizes and times.

"Time to first step" runs from just before the process is started to the ``first clock step`` line of its log
(every worker's, under MPI), so it includes the interpreter's and torch's start-up; the process is then ended.
The bar files are in the page cache for every run (the market was read before), so "cold" means no
cross-section cache, not a cold disk.

``--ranks N`` runs under ``mpiexec -n N`` (N-1 workers on this node) and samples, at the first step, each
rank's RSS and PSS from /proc/PID/smaps_rollup, and the part of them mapped from the cache entry (from
/proc/PID/smaps): PSS counts a page shared by k processes as 1/k to each, so the ranks' PSS add up to what
the node holds.

Usage:  python bench/cache.py [--stocks 50] [--days 10] [--bar_minutes 1] [--rounds 3] [--ranks 0]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from parallel_dqn import outputs
from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market

START = dt.date(2020, 1, 2)
MARK = "first clock step"
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
MB = 1024  # smaps figures are in kB


def first_step(logs: list[Path], proc: subprocess.Popen, timeout: float) -> float | None:
    """Epoch seconds of the latest ``first clock step`` line of ``logs``, once every log has one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stamps = []
        for log in logs:
            text = log.read_text() if log.exists() else ""
            line = next((ln for ln in text.splitlines() if ln.endswith(f": {MARK}")), None)
            if line is None:
                break
            stamps.append(dt.datetime.strptime(STAMP.match(line)[1], "%Y-%m-%d %H:%M:%S,%f").timestamp())
        else:
            return max(stamps)
        if proc.poll() is not None:
            raise RuntimeError(f"the run ended before its first step (exit {proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.01)
    return None


def ranks_of(output: Path) -> list[int]:
    """PIDs of the Python processes whose command line names ``output`` (the run's ranks), sorted."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(output).encode() in cmd and b"parallel_dqn" in cmd and Path(cmd[0].decode()).name.startswith("python"):
            pids.append(int(entry.name))
    return sorted(pids)


def memory(pid: int, entry_root: Path) -> dict[str, float]:
    """RSS, PSS (MB) of ``pid``, and the part of each mapped from files under ``entry_root``."""
    out = {"rss": 0.0, "pss": 0.0, "entry_rss": 0.0, "entry_pss": 0.0}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Rss", "Pss"):
            out[key.lower()] = int(value.split()[0]) / MB
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = len(fields) >= 6 and fields[5].startswith(str(entry_root))
        elif inside and fields[0] in ("Rss:", "Pss:"):
            out[f"entry_{fields[0][:-1].lower()}"] += int(fields[1]) / MB
    return out


def run(
    market: Path, work: Path, cache: Path, use_cache: bool, ranks: int, timeout: float
) -> tuple[float, list[dict[str, float]]]:
    """One ``train`` to its first step: seconds from start, and each rank's memory then."""
    output = work / "run"
    shutil.rmtree(output, ignore_errors=True)
    args = [sys.executable, "-m", "parallel_dqn", "train", "--data", str(market), "--episodes", "1",
            "--output", str(output), "--no-progress", "--set", f"data.cache={cache if use_cache else 'off'}"]
    if ranks:
        args = [MPIEXEC, "-n", str(ranks), *args, "--mode", "parallel"]
        logs = [output / outputs.worker_log(r) for r in range(1, ranks)]
    else:
        logs = [output / outputs.LOG]
    started = time.time()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stamp = first_step(logs, proc, timeout)
        if stamp is None:
            raise RuntimeError(f"no first step within {timeout} s")
        pids = ranks_of(output)
        return stamp - started, [memory(pid, cache) for pid in pids]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        shutil.rmtree(output, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, default=50)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--bar_minutes", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=0, help="0: single-process mode; N: mpiexec -n N (N-1 workers)")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--out", type=Path, default=Path("bench/out/cache"))
    args = ap.parse_args()
    out = args.out.resolve()
    market = out / f"market-{args.stocks}x{args.days}x{args.bar_minutes}m"
    if not (market / "stocks_intraday").exists():
        names = [f"S{i:03d}" for i in range(args.stocks)]
        spec = SyntheticSpec(bar_minutes=args.bar_minutes)
        write_market(generate_market(names, START, args.days, seed=3, spec=spec), market)
    cache = out / "entries"
    times: dict[str, list[float]] = {"off": [], "cold": [], "cached": []}
    mems: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for name in times:
            if name == "cold":
                shutil.rmtree(cache, ignore_errors=True)
            seconds, mems[name] = run(market, out, cache, name != "off", args.ranks, args.timeout)
            times[name].append(seconds)
            print(f"  {name}: {seconds:.2f} s", file=sys.stderr, flush=True)
    mode = f"mpiexec -n {args.ranks} ({args.ranks - 1} workers)" if args.ranks else "single process"
    print(f"{args.stocks} stocks x {args.days} days of {args.bar_minutes}-minute bars, {mode}, "
          f"median of {args.rounds} rounds\n")
    print("| run | time to first step (s) | / cached |")
    print("|---|---|---|")
    cached = statistics.median(times["cached"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} (min {min(values):.2f}) | {median / cached:.1f}x |")
    entry = sum(f.stat().st_size for f in cache.rglob("*.npy")) / 2**20 if cache.exists() else 0.0
    print(f"\ncache entry: {entry:.1f} MB")
    print("\n| run | ranks' RSS (MB) | ranks' PSS (MB) | one rank's RSS | entry: RSS summed | entry: PSS summed |")
    print("|---|---|---|---|---|---|")
    for name, per_rank in mems.items():
        rss, pss = sum(m["rss"] for m in per_rank), sum(m["pss"] for m in per_rank)
        one = max(m["rss"] for m in per_rank) if per_rank else 0.0
        e_rss, e_pss = sum(m["entry_rss"] for m in per_rank), sum(m["entry_pss"] for m in per_rank)
        print(f"| {name} | {rss:,.0f} | {pss:,.0f} | {one:,.0f} | {e_rss:,.1f} | {e_pss:,.1f} |")


if __name__ == "__main__":
    main()
