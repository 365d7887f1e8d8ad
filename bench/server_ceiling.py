"""Rank 0's ceiling against the number of workers: at how many workers does the parameter server saturate?

For S in ``--stocks`` (generated markets of 1-minute bars, made by bench/scale.py's ``make_market``):

* **rank 0 alone**: applies/s of the server's own apply (``ParameterServer._apply``; bench/server_apply.py's
  ``server_apply_rate``), per wall second and per CPU second;
* **real runs** under ``mpiexec -n W+1`` for W in ``--workers`` (2, 4, 8; the machine's cores oversubscribed),
  ``--episodes`` episodes (default 2: the last one is all learning, none of the first ``dqn.learning_starts``
  steps without gradients), every process watched from outside (bench/_procstat.py). Read from the run's
  outputs and /proc, over the last training episode (its start and end from run.log's timestamps, its gradients
  from metrics.jsonl's running counters):

  - gradients applied / dropped as stale (metrics.json ``counters``, whole run; ``per_worker`` for the spread);
  - one worker's gradient rate, wall clock (gradients / W / the episode's seconds; on a shared, oversubscribed
    machine) and **per CPU second** (gradients / the workers' CPU seconds in the episode: the rate of one worker
    with a core of its own, acting included);
  - rank 0's busy fraction: its CPU seconds in the episode / the episode's seconds (an upper bound: its idle
    wait polls a little before it sleeps), and its CPU seconds per gradient (everything it does per gradient:
    apply, pulls, decision records, the meta-policy's fit at the episode's end);

and so the number of workers at which rank 0 saturates, every rate per CPU second (so that a busy, shared machine
changes it little): rank 0's applies per CPU second / one worker's gradients per CPU second (the apply alone), and
1 / (rank 0's CPU seconds per gradient at the margin) / the same (all rank 0 does per gradient: apply, pull,
message handling). The margin is the slope of rank 0's CPU seconds in the episode against the gradients in it over
the runs of one S (2, 4, 8 workers: the same transitions, more gradients); the intercept is what rank 0 spends per
episode whatever the gradients (decision records, the meta-policy's fit, idle polling), given per transition and as
the transitions/s at which that alone fills rank 0's core.

Usage:  python bench/server_ceiling.py [--stocks 5,50,500] [--workers 2,4,8] [--episodes 2] [--timeout 900]
                                       [--out bench/out/scale] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _procstat import Watched, terminate_on_sigterm
from scale import EPISODE_LINE, _fmt, _log_times, make_market, run_once
from server_apply import server_apply_rate

from parallel_dqn import outputs


def last_episode(output: Path, r: dict[str, Any], w: Watched) -> dict[str, Any]:
    """Figures of the last training episode of a finished run: gradients, seconds, CPU of every rank in it."""
    curve = [json.loads(x) for x in (output / outputs.CURVE).read_text().splitlines() if x.strip()]
    train = [c for c in curve if c.get("phase") == "train"]
    stamps = [t for t, _ in _log_times(output / outputs.LOG, EPISODE_LINE)][: len(train)]
    if len(stamps) < len(train):
        return {}
    end = stamps[-1]
    start = stamps[-2] if len(train) > 1 else end - train[-1]["elapsed_s"]
    seconds = train[-1]["elapsed_s"] - (train[-2]["elapsed_s"] if len(train) > 1 else 0.0)
    grads = train[-1]["gradients_received"] - (train[-2]["gradients_received"] if len(train) > 1 else 0)
    ranks = {p.rank: p.cpu_between(start, end) for p in w.ranks() if p.rank is not None}
    workers_cpu = sum(v for k, v in ranks.items() if k)
    n = r["workers"]
    return {
        "episode": train[-1]["episode"], "seconds": seconds, "gradients": grads, "clock_steps": train[-1]["n_steps"],
        "rank0_cpu_s": ranks.get(0, 0.0),
        "worker_grads_per_s_wall": grads / n / seconds if seconds else None,
        "worker_grads_per_cpu_s": grads / workers_cpu if workers_cpu else None,
        "rank0_busy": ranks.get(0, 0.0) / seconds if seconds else None,
        "rank0_cpu_s_per_gradient": ranks.get(0, 0.0) / grads if grads else None,
        "workers_cpu_share": workers_cpu / n / seconds if seconds else None,
        "cpu_s": {str(k): round(v, 2) for k, v in sorted(ranks.items())},
    }


def fit_rank0(rows: list[dict[str, Any]]) -> tuple[float, float] | None:
    """Rank 0's CPU seconds in an episode against the gradients in it, over the runs of one S (2, 4, 8 workers: the
    same transitions, more gradients), least squares: (CPU s per gradient at the margin, CPU s of an episode at no
    gradients: its decision records, the meta-policy's fit, its idle polling)."""
    pts = [(r["gradients"], r["rank0_cpu_s"]) for r in rows if r.get("rank0_cpu_s") is not None and r.get("gradients")]
    if len(pts) < 2:
        return None
    mx, my = statistics.mean(x for x, _ in pts), statistics.mean(y for _, y in pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx <= 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return slope, my - slope * mx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", default="5,50,500")
    ap.add_argument("--workers", default="2,4,8")
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    ap.add_argument("--mem_cap_mb", type=float, default=8000.0)
    ap.add_argument("--applies", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("bench/out/scale"))
    ap.add_argument("--json", type=Path, default=None, help="default: OUT/server_ceiling.json")
    args = ap.parse_args()
    terminate_on_sigterm()
    stocks = [int(x) for x in args.stocks.split(",") if x]
    workers = [int(x) for x in args.workers.split(",") if x]
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    ceilings: dict[int, dict[str, Any]] = {}
    for s in stocks:
        market = make_market(args.out, s, args.days, 1, args.timeout, args.mem_cap_mb, measure=False)
        ceiling = ceilings[s] = server_apply_rate(s, args.applies)
        print(f"[ceiling] {s} stocks: rank 0 alone applies {ceiling['applies_per_s']:,.0f}/s, "
              f"{ceiling['applies_per_cpu_s']:,.0f} per CPU s", file=sys.stderr, flush=True)
        mine = []
        for n in workers:
            if n > s:
                rows.append({"stocks": s, "workers": n, "outcome": "more workers than stocks"})
                continue
            start = time.time()
            output = args.out / f"ceiling-{s}-w{n}"
            r, w = run_once("mpi", market, args.episodes, output, n + 1, args.timeout, args.mem_cap_mb)
            row = {"stocks": s, "workers": n, "outcome": r["outcome"], "train_s": r.get("train_s"),
                   "load_avg": r["load_avg"]}
            if r["outcome"] == "ok":
                sent = r["gradients_sent"]
                applied = [v["applied"] for v in r["per_worker"].values()]
                row.update(sent=sent, applied_fraction=r["gradients_applied"] / sent if sent else None,
                           dropped_fraction=r["gradients_dropped_stale"] / sent if sent else None,
                           applied_per_worker=(min(applied), max(applied)), mean_staleness=r["mean_staleness"],
                           transitions_per_s=r["transitions_per_s"], **last_episode(output, r, w))
                if row.get("worker_grads_per_cpu_s"):
                    row["saturates_at_apply"] = ceiling["applies_per_cpu_s"] / row["worker_grads_per_cpu_s"]
            rows.append(row)
            mine.append(row)
            print(f"[ceiling] {s} stocks, {n} workers: {r['outcome']} in {time.time() - start:.0f} s "
                  f"(load {r['load_avg'][0]})", file=sys.stderr, flush=True)
        rates = [r["worker_grads_per_cpu_s"] for r in mine if r.get("worker_grads_per_cpu_s")]
        if rates:
            ceiling["worker_grads_per_cpu_s"] = statistics.median(rates)
            ceiling["saturates_at_apply"] = ceiling["applies_per_cpu_s"] / ceiling["worker_grads_per_cpu_s"]
        fit = fit_rank0(mine)
        if fit and rates:
            c, fixed = fit
            ceiling["rank0_cpu_s_per_gradient_marginal"], ceiling["rank0_cpu_s_per_episode_at_no_gradients"] = c, fixed
            transitions = statistics.median(r["clock_steps"] for r in mine if r.get("clock_steps")) * s
            ceiling["rank0_us_per_transition"] = 1e6 * fixed / transitions
            if c > 0:
                ceiling["saturates_at_rank0"] = 1 / c / ceiling["worker_grads_per_cpu_s"]
            if fixed > 0:
                ceiling["rank0_transitions_per_s_ceiling"] = transitions / fixed
    text = markdown(rows, ceilings, args)
    print(text)
    path = args.json or args.out / "server_ceiling.json"
    path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "ceilings": ceilings,
                                "runs": rows, "markdown": text}, indent=1, default=str))
    print(f"\n(figures of every run: {path})", file=sys.stderr)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown(rows: list[dict[str, Any]], ceilings: dict[int, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [f"{dt.date.today()}, {os.cpu_count()} cores (oversubscribed), load average at the end "
             f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.days} days of 1-minute bars, "
             f"{args.episodes} episodes, figures of the last one.", ""]
    lines += ["| stocks | workers | applied | dropped stale | applied per worker (fewest / most) | mean staleness "
              "| one worker's gradients/s (wall) | one worker's gradients per CPU s | rank 0 busy (CPU / wall) "
              "| rank 0 CPU ms per gradient (average) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["outcome"] != "ok":
            lines.append(f"| {r['stocks']} | {r['workers']} | {r['outcome']} |" + " |" * 7)
            continue
        lines.append(
            f"| {r['stocks']} | {r['workers']} | {_pct(r['applied_fraction'])} | {_pct(r['dropped_fraction'])} "
            f"| {r['applied_per_worker'][0]} / {r['applied_per_worker'][1]} | {r['mean_staleness']:.1f} "
            f"| {_fmt(r.get('worker_grads_per_s_wall'), 1)} | {_fmt(r.get('worker_grads_per_cpu_s'), 1)} "
            f"| {_pct(r.get('rank0_busy'))} | {_fmt(_ms(r.get('rank0_cpu_s_per_gradient')), 2)} |")
    lines += ["", "| stocks | parameters | rank 0 alone: applies/s (wall) | applies per CPU s "
              "| one worker: gradients per CPU s | workers at saturation: apply alone "
              "| rank 0 in the runs: CPU ms per gradient (marginal) | workers at saturation: all rank 0 does per gradient "
              "| rank 0 CPU per transition (us; records, meta-policy) | rank 0's transitions/s ceiling |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s, c in ceilings.items():
        lines.append(
            f"| {s} | {c['parameters']:,} | {c['applies_per_s']:,.0f} | {c['applies_per_cpu_s']:,.0f} "
            f"| {_fmt(c.get('worker_grads_per_cpu_s'), 1)} | {_fmt(c.get('saturates_at_apply'))} "
            f"| {_fmt(_ms(c.get('rank0_cpu_s_per_gradient_marginal')), 2)} | {_fmt(c.get('saturates_at_rank0'))} "
            f"| {_fmt(c.get('rank0_us_per_transition'), 1)} | {_fmt(c.get('rank0_transitions_per_s_ceiling'))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
