"""Run a command under watch, from outside: memory and CPU of every process of its tree, a timeout, a memory cap.

The benchmarks measure runs as a user sees them, without hooks in the code: every ``interval`` seconds the
sampler reads, for the launched process and all its descendants,

* ``/proc/PID/status``: VmRSS (resident now) and VmHWM (the kernel's own peak of the resident set);
* ``/proc/PID/smaps_rollup``: Pss (proportional set size: a page shared by k processes counts 1/k in each, so
  the sum over processes is the memory they really hold together; the sum of RSS counts shared pages k times);
* ``/proc/PID/stat``: user + system CPU seconds (a rank's busy time, sampled, so it can be cut to any window);
* ``/proc/PID/environ``: ``PMI_RANK`` (MPICH's rank of an MPI process), read once per process.

Two guards keep a run from taking a shared machine down: ``RLIMIT_AS`` on every process of the tree (set in the
child before it starts; an allocation past it fails with MemoryError) and a watchdog that kills the tree when the
sum of its PSS passes the cap. A run past its timeout is killed too. Each ending is reported, not raised.

Linux only (``/proc``); the module is a helper of bench/scale.py, bench/server_ceiling.py and bench/node_memory.py
(and holds :func:`code_version`, the commit their tables name).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
MEMORY_ERRORS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "DefaultCPUAllocator: can't allocate")


@dataclass
class ProcSeries:
    """What the sampler saw of one process: its identity and one row per sample."""

    pid: int
    name: str  # /proc/PID/comm
    cmdline: str
    rank: int | None  # PMI_RANK, for an MPI process
    start_ticks: int  # the process's start time (stat field 22): with the pid, its identity
    times: list[float] = field(default_factory=list)  # time.time() of each sample
    rss_kb: list[int] = field(default_factory=list)
    pss_kb: list[int] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # cumulative user + system CPU seconds
    hwm_kb: int = 0  # the largest VmHWM read (the kernel's peak, between samples too)

    @property
    def is_run(self) -> bool:
        """A process of the run itself (a parallel-dqn Python process), not a launcher."""
        is_python = self.name.startswith("python") or self.name == "parallel-dqn"
        return is_python and ("parallel_dqn" in self.cmdline or "parallel-dqn" in self.cmdline)

    @property
    def label(self) -> str:
        return f"rank {self.rank}" if self.rank is not None else self.name

    def peak_rss_mb(self) -> float:
        return max([self.hwm_kb, *self.rss_kb], default=0) / 1024

    def peak_pss_mb(self) -> float:
        return max(self.pss_kb, default=0) / 1024

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds spent between two wall times (linear between samples; 0 outside the process's life)."""
        return _interp(self.times, self.cpu_s, end) - _interp(self.times, self.cpu_s, start)


def _interp(xs: list[float], ys: list[float], x: float) -> float:
    """``ys`` at ``x``, linear between samples, held at the ends (0 before the first sample)."""
    if not xs or x < xs[0]:
        return 0.0
    if x >= xs[-1]:
        return ys[-1]
    lo, hi = 0, len(xs) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if xs[mid] <= x else (lo, mid)
    span = xs[hi] - xs[lo]
    return ys[lo] + (ys[hi] - ys[lo]) * ((x - xs[lo]) / span if span > 0 else 0.0)


@dataclass
class Watched:
    """The result of one watched command."""

    outcome: str  # ok | failed (rc N) | timeout | memory cap | out of memory
    returncode: int | None
    started: float  # time.time() at launch
    ended: float
    stdout: str
    stderr: str
    procs: dict[int, ProcSeries]
    total_times: list[float]  # sample times of the totals below
    total_rss_kb: list[int]  # sum over the run's processes at each sample
    total_pss_kb: list[int]

    def ranks(self) -> list[ProcSeries]:
        """The run's own processes, by rank (a single-mode run: its one process)."""
        return sorted((p for p in self.procs.values() if p.is_run), key=lambda p: (p.rank is None, p.rank or 0, p.pid))

    def rank(self, r: int) -> ProcSeries | None:
        return next((p for p in self.ranks() if p.rank == r), None)

    def peak_total_rss_mb(self) -> float:
        return max(self.total_rss_kb, default=0) / 1024

    def peak_total_pss_mb(self) -> float:
        return max(self.total_pss_kb, default=0) / 1024


def _read_kb(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process now on the machine (one pass over /proc)."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(root: int) -> list[int]:
    """``root`` and all its descendants now alive."""
    kids, out, todo = _children_map(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except OSError:
        return None


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None


def _identify(pid: int) -> ProcSeries | None:
    start, cmdline = _start_ticks(pid), _cmdline(pid)
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    rank = next((int(e.split(b"=", 1)[1]) for e in env if e.startswith(b"PMI_RANK=")), None)
    return None if start is None or cmdline is None else ProcSeries(pid, name, cmdline, rank, start)


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of stat)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _limit_address_space(limit_bytes: int | None) -> Callable[[], None]:
    def preexec() -> None:
        os.setsid()  # its own session: a terminal's Ctrl-C reaches the benchmark, which kills the tree itself
        if limit_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return preexec


def terminate_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit in the main thread, so that :func:`watch` kills the tree it started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def watch(
    cmd: list[str],
    timeout: float,
    interval: float = 0.2,
    cap_mb: float | None = None,
    as_limit_mb: float | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> Watched:
    """Run ``cmd``, sampling its process tree every ``interval`` s, until it ends, times out or passes ``cap_mb``.

    ``cap_mb``: the tree is killed when the sum of its processes' PSS passes it (the watchdog);
    ``as_limit_mb``: RLIMIT_AS of every process of the tree (the backstop between two samples).
    """
    limit = int(as_limit_mb * 2**20) if as_limit_mb else None
    started = time.time()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
        preexec_fn=_limit_address_space(limit),
    )
    procs: dict[int, ProcSeries] = {}
    totals: tuple[list[float], list[int], list[int]] = ([], [], [])
    state = {"why": ""}
    done = threading.Event()

    def kill_tree() -> None:
        """While the launched process is not reaped (its pid cannot be reused): it and its descendants."""
        for pid in reversed(tree(proc.pid)):  # children first: the launcher cannot restart them
            _kill(pid)

    def kill_leftovers() -> None:
        """Processes of the tree still alive after it ended (orphans of a killed launcher), by pid and start time."""
        for series in procs.values():
            if _start_ticks(series.pid) == series.start_ticks:
                _kill(series.pid)

    def sample() -> None:
        while not done.is_set():
            now, rss_sum, pss_sum = time.time(), 0, 0
            for pid in tree(proc.pid):
                series = procs.get(pid)
                if series is None or _cmdline(pid) not in (None, series.cmdline):  # new, or exec'd since (fork, exec)
                    series = _identify(pid)
                if series is None:
                    continue
                procs[pid] = series
                rss = _read_kb(f"/proc/{pid}/status", "VmRSS:")
                hwm = _read_kb(f"/proc/{pid}/status", "VmHWM:")
                pss = _read_kb(f"/proc/{pid}/smaps_rollup", "Pss:")
                cpu = _cpu_seconds(pid)
                if rss is None or cpu is None:
                    continue  # gone, or a zombie
                series.times.append(now)
                series.rss_kb.append(rss)
                series.pss_kb.append(pss or 0)
                series.cpu_s.append(cpu)
                series.hwm_kb = max(series.hwm_kb, hwm or 0)
                if series.is_run:
                    rss_sum += rss
                    pss_sum += pss or 0
            totals[0].append(now)
            totals[1].append(rss_sum)
            totals[2].append(pss_sum)
            if cap_mb and pss_sum > cap_mb * 1024 and not state["why"] and proc.returncode is None:
                state["why"] = "memory cap"
                kill_tree()
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        state["why"] = state["why"] or "timeout"
        kill_tree()
        out, err = proc.communicate()
    except BaseException:  # Ctrl-C, or SIGTERM made an exit (terminate_on_sigterm): the tree goes with the bench
        kill_tree()
        proc.wait()
        done.set()
        kill_leftovers()
        raise
    done.set()
    sampler.join()
    kill_leftovers()
    rc = proc.returncode
    if state["why"]:
        outcome = state["why"]
    elif rc == 0:
        outcome = "ok"
    elif any(m in err for m in MEMORY_ERRORS):
        outcome = "out of memory"
    elif rc == -signal.SIGKILL:
        outcome = "killed (SIGKILL: the kernel's OOM killer?)"
    else:
        outcome = f"failed (rc {rc})"
    return Watched(outcome, rc, started, time.time(), out, err, procs, *totals)


def code_version() -> str:
    """The commit the benchmarked code came from, ``+dirty`` when the working tree's package differed (others
    may be editing it meanwhile)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "parallel_dqn"],
                               capture_output=True, text=True, cwd=here).stdout
    except OSError:
        return "?"
    return head.strip() + ("+dirty" if dirty.strip() else "")
