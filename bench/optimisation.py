"""Ablation of the training-optimisation components: each alone and all together, against all of them off.

Two kinds of market, every row run the same way, side by side in this one process tree:

* **planted** (``bench/learning.py``'s markets: leader, lagged follower, momentum, mean reversion, random walk;
  1-minute bars; 9 training days, 3 held out), ``--seeds`` market seeds: out-of-sample Sharpe (annualised, cost
  1 bp), agent / oracle, how many of the five baselines it beats, the episodes it took to reach 90% of its final
  validation Sharpe, wall time;
* **real** (``--real``: backtesting.py's EURUSD hourly bars, imported by ``bench/real_data.sh``): walk-forward
  (60 training days, 20 test days, 1 day of embargo, 1 bp), the joined out-of-sample Sharpe, its block-bootstrap
  95% interval and the paired test's p-value against buy-and-hold, wall time.

Every row holds out the last 2 training days for validation (``validation.days = 2``: the schedules, the monitor
and the curriculum need it, and it is what "episodes to 90%" is measured on), so the base row is every component
off plus that hold-out ("all off": what a run did before them); a row "all off, no hold-out" shows what holding out
costs. The defaults now switch augmentation on (the ablation's choice), so every row states what it turns off. A component
"helps" here only when its mean gain over the base row exceeds the seed-to-seed spread (the larger of the two
rows' standard deviations).

Usage:  python bench/optimisation.py [--seeds 1 2 3] [--episodes 6] [--jobs 2] [--rows NAME ...] [--real]
                                     [--out bench/out/optimisation]
        python bench/optimisation.py --paired OUT [OUT ...]   # pools finished runs of several OUT folders (a later
                                     folder's run of a row and seed replaces an earlier one's): each row's gain over
                                     all off on the same market, seed by seed
Prints markdown tables (pasted into the README) and writes them to OUT/optimisation.md, every run's figures to
OUT/optimisation.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

STOCKS = ["LEAD", "FOLW", "MOMO", "MREV", "RWLK"]
BASELINES = ["buy_and_hold", "equal_weight", "momentum", "mean_reversion", "random"]
HOLD_OUT = ["validation.days=2"]
#: every component off: what a run did before them (the base every gain is measured against)
OFF = ["optim.lr_schedule=constant", "optim.warmup_applies=0", "augment.noise=0", "augment.feature_dropout=0",
       "augment.time_warp=0", "augment.scenarios=0"]
AUGMENT = ["augment.noise=0.1", "augment.feature_dropout=0.05", "augment.time_warp=0.2", "augment.scenarios=0.2"]
COSINE = ["optim.lr_schedule=cosine", "optim.warmup_applies=50", "optim.cosine_period=300"]
#: row name -> settings over the defaults (every row but the first also gets HOLD_OUT); later settings win
ROWS: dict[str, list[str]] = {
    "all off, no hold-out": OFF,
    "all off": OFF,
    "warm-up + cosine restarts": [*OFF, *COSINE],
    "reduce on plateau": [*OFF, "optim.lr_schedule=plateau"],
    "convergence monitor": [*OFF, "monitor.enabled=true", "monitor.on_plateau=reduce_lr", "monitor.on_diverge=restore_best"],
    "curriculum": [*OFF, "curriculum.enabled=true"],
    "priority: td": [*OFF, "replay.prioritized=true", "replay.priority=td"],
    "priority: pnl": [*OFF, "replay.prioritized=true", "replay.priority=pnl"],
    "priority: rare": [*OFF, "replay.prioritized=true", "replay.priority=rare"],
    "priority: td + rare": [*OFF, "replay.prioritized=true", "replay.priority=td:0.5,rare:0.5"],
    "augmentation": [*OFF, *AUGMENT],
    "gradient accumulation x2": [*OFF, "optim.grad_accum=2"],
    "bf16": [*OFF, "optim.precision=bf16"],
}
ALL = [
    "optim.lr_schedule=plateau", "optim.warmup_applies=50", "monitor.enabled=true", "monitor.on_plateau=reduce_lr",
    "monitor.on_diverge=restore_best", "curriculum.enabled=true", "replay.prioritized=true",
    "replay.priority=td:0.5,rare:0.5", *AUGMENT, "optim.grad_accum=2", "optim.precision=bf16",
]
ROWS["all together"] = ALL
BASE = "all off"


def settings_of(row: str) -> list[str]:
    return ROWS[row] if row == "all off, no hold-out" else [*HOLD_OUT, *ROWS[row]]


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "parallel_dqn", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def sets(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


def episodes_to_90(curve: list[dict]) -> int | None:
    """The first training episode whose validation Sharpe is within 10% of the last one's (None: no validation)."""
    valid = [line for line in curve if line.get("phase") == "valid"]
    if not valid:
        return None
    final = valid[-1]["sharpe"]
    return next(line["episode"] for line in valid if line["sharpe"] >= final - 0.1 * abs(final))


def run_planted(data: Path, out: Path, episodes: int, settings: list[str]) -> dict:
    started = time.perf_counter()
    cli("train", "--mode", "single", "--data", str(data), "--start_date", "2024-01-02", "--end_date", "2024-01-12",
        "--eval_start", "2024-01-15", "--eval_end", "2024-01-17", "--episodes", str(episodes), "--output", str(out),
        "--cost_bps", "1", "--overwrite", "--no_progress", *sets(settings))
    metrics = json.loads((out / "metrics.json").read_text())
    curve = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    sharpe = metrics["eval"]["sharpe"]
    return {
        "sharpe": sharpe,
        "oracle_fraction": sharpe / metrics["oracle"]["sharpe"],
        "beats": sum(sharpe > metrics["baselines"][b]["sharpe"] for b in BASELINES),
        "episodes_to_90": episodes_to_90(curve),
        "seconds": time.perf_counter() - started,
    }


def run_real(data: Path, out: Path, episodes: int, settings: list[str]) -> dict:
    started = time.perf_counter()
    cli("walk-forward", "--data", str(data), "--train_days", "60", "--test_days", "20", "--embargo_days", "1",
        "--episodes", str(episodes), "--cost_bps", "1", "--output", str(out), "--jobs", "1", "--no_progress",
        *sets(settings))
    result = json.loads((out / "walk_forward.json").read_text())
    oos, sig = result["oos"], result["significance"]
    return {
        "sharpe": oos["sharpe"],
        "interval": sig.get("sharpe_ci"),
        "p_vs_bnh": sig.get("p_value_vs_buy_and_hold"),
        "buy_and_hold": result["baselines"]["buy_and_hold"]["sharpe"],
        "seconds": time.perf_counter() - started,
    }


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def planted_table(rows: list[str], seeds: list[int], runs: dict) -> list[str]:
    head = ["row", "OOS Sharpe (mean ± sd)", "agent / oracle", "beats (of 5)", "episodes to 90%", "wall s",
            "gain vs all off / spread", "helps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = [runs[(BASE, s)]["sharpe"] for s in seeds]
    for row in rows:
        rs = [runs[(row, s)] for s in seeds]
        sharpe = [r["sharpe"] for r in rs]
        gain = statistics.mean(sharpe) - statistics.mean(base)
        noise = max(spread(sharpe), spread(base)) or float("nan")
        to90 = [r["episodes_to_90"] for r in rs if r["episodes_to_90"] is not None]
        cells = [
            row, f"{statistics.mean(sharpe):.2f} ± {spread(sharpe):.2f}",
            f"{statistics.mean(r['oracle_fraction'] for r in rs):.2f}", "/".join(str(r["beats"]) for r in rs),
            f"{statistics.mean(to90):.1f}" if to90 else "-", f"{statistics.mean(r['seconds'] for r in rs):.0f}",
            f"{gain:+.2f} / {noise:.2f}", "yes" if row != BASE and gain > noise else "no",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def real_table(rows: list[str], runs: dict) -> list[str]:
    head = ["row", "OOS Sharpe", "95% interval", "p vs buy-and-hold", "buy-and-hold", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        r = runs[row]
        ci = r["interval"]
        interval = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-"
        p = f"{r['p_vs_bnh']:.2f}" if r["p_vs_bnh"] is not None else "-"
        lines.append(f"| {row} | {r['sharpe']:.2f} | {interval} | {p} | {r['buy_and_hold']:.2f} | {r['seconds']:.0f} |")
    return lines


def paired_table(folders: list[Path]) -> list[str]:
    """Each row's out-of-sample Sharpe against the defaults' on the same market seeds, from finished runs."""
    sharpe: dict[tuple[str, int], float] = {}
    for folder in folders:
        for row in ROWS:
            for run in sorted(folder.glob(f"seed*_{_slug(row)}/metrics.json")):
                seed = int(run.parent.name.split("_", 1)[0][4:])
                sharpe[(row, seed)] = json.loads(run.read_text())["eval"]["sharpe"]
    seeds = sorted(s for r, s in sharpe if r == BASE)
    base = [sharpe[(BASE, s)] for s in seeds]
    head = ["row", f"Sharpe, {len(seeds)} seeds (mean ± sd)", "gain vs all off, seed by seed (mean ± sd)",
            "seeds better", "gain / standard error", "gain > spread"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
             f"| {BASE} | {statistics.mean(base):.2f} ± {spread(base):.2f} | - | - | - | - |"]
    for row in ROWS:
        if row == BASE or not all((row, s) in sharpe for s in seeds):
            continue
        values = [sharpe[(row, s)] for s in seeds]
        gains = [v - b for v, b in zip(values, base)]
        error = spread(gains) / len(gains) ** 0.5 or float("nan")
        beyond = statistics.mean(gains) > max(spread(values), spread(base))
        lines.append(f"| {row} | {statistics.mean(values):.2f} ± {spread(values):.2f} | {statistics.mean(gains):+.2f} ± "
                     f"{spread(gains):.2f} | {sum(g > 0 for g in gains)} of {len(gains)} | "
                     f"{statistics.mean(gains) / error:+.2f} | {'yes' if beyond else 'no'} |")
    return lines


def _slug(row: str) -> str:
    return row.replace(" ", "_").replace(",", "").replace(":", "").replace("+", "and").replace("/", "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="ROW")
    ap.add_argument("--real", action="store_true", help="also walk forward on EURUSD (bench/real_data.sh's import)")
    ap.add_argument("--real_data", type=Path, default=Path("bench/out/real/eurusd"))
    ap.add_argument("--out", type=Path, default=Path("bench/out/optimisation"))
    ap.add_argument("--paired", type=Path, nargs="+", metavar="OUT", help="only pool the finished runs of these folders")
    args = ap.parse_args()
    if args.paired:
        print("\n".join(paired_table(args.paired)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [BASE, *[r for r in args.rows if r != BASE]]
    for seed in args.seeds:
        data = args.out / f"market{seed}"
        if not (data / "stocks_intraday").exists():
            cli("data", "generate", "--output", str(data), "--stocks", *STOCKS, "--start", "2024-01-02",
                "--days", "12", "--seed", str(seed))
    jobs = [(row, seed) for seed in args.seeds for row in rows]
    slug = {row: _slug(row) for row in ROWS}

    def planted(job: tuple[str, int]) -> dict:
        row, seed = job
        return run_planted(args.out / f"market{seed}", args.out / f"seed{seed}_{slug[row]}", args.episodes,
                           settings_of(row))

    with ThreadPoolExecutor(args.jobs) as pool:
        runs = dict(zip(jobs, pool.map(planted, jobs)))
    text = ["### Planted markets: out of sample, cost 1 bp, "
            f"seeds {' '.join(map(str, args.seeds))}, {args.episodes} episodes", "", *planted_table(rows, args.seeds, runs)]
    real: dict[str, dict] = {}
    if args.real:
        if not (args.real_data / "stocks_intraday").exists():
            sys.exit(f"no imported EURUSD bars at {args.real_data}: run bash bench/real_data.sh first")
        with ThreadPoolExecutor(args.jobs) as pool:
            real = dict(zip(rows, pool.map(
                lambda row: run_real(args.real_data, args.out / f"wf_{slug[row]}", args.episodes, settings_of(row)),
                rows)))
        text += ["", "### Real data: EURUSD hourly, walk-forward (60 / 20 days, 1 day embargo, 1 bp)", "",
                 *real_table(rows, real)]
    print("\n".join(text))
    (args.out / "optimisation.md").write_text("\n".join(text) + "\n")
    (args.out / "optimisation.json").write_text(json.dumps(
        {"planted": {f"{row} | seed {seed}": r for (row, seed), r in runs.items()}, "real": real}, indent=1))


if __name__ == "__main__":
    main()
