"""Market regimes: regime features and regime-adaptive settings against the regime-blind agent.

* **regime market** (``data generate --regime_change``: the follower follows its leader in calm regimes and moves
  against it in turbulent ones; 5 stocks of 1-minute bars, 9 training days, 3 held out, cost 1 bp), ``--seeds``
  market seeds; with ``--market correlation`` the regimes differ only in how the stocks move together (independent
  shocks, or a shared factor: ``SyntheticSpec(regime_by="correlation")``), no stock's volatility changes, and the
  other three stocks are random walks, so the follower is the only planted signal and no stock's own bars say
  which way it goes: out-of-sample Sharpe, agent / oracle (the oracle knows the hidden regime), wall time. A row
  "helps" only when its mean gain over the regime-blind row exceeds the seed-to-seed spread (the larger of the
  two rows' standard deviations); "helps (paired)" when its gain on each market seed, against the blind run on
  the same market, has a mean above that gain's own standard deviation over the seeds.
* **real** (``--real``: backtesting.py's EURUSD hourly bars, imported by ``bench/real_data.sh``): walk-forward (60
  training days, 20 test days, 1 day of embargo, 1 bp) with and without each use of the regimes: the joined
  out-of-sample Sharpe, its 95% block-bootstrap interval, the p-value against buy-and-hold.

Usage:  python bench/regimes.py [--market volatility|correlation] [--seeds 1 2 3] [--episodes 4] [--jobs 2]
                                [--real_episodes 5] [--real]
                                [--rows ROW ...] [--out bench/out/regimes]

The ensemble rows (``[ensemble]``: 3 heads, each combination rule) also give each run's best single member (a
head acting alone in the same evaluation) beside the ensemble.
Prints markdown tables (pasted into the README) and writes them to OUT/regimes.md, every run's figures to
OUT/regimes.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market

STOCKS = ["LEAD", "FOLW", "MOMO", "MREV", "RWLK"]
CORRELATION_STOCKS = ["LEAD", "FOLW", "RWA", "RWB", "RWC"]  # momentum and reversion at phi = 0: random walks
#: row name -> settings over the defaults
ROWS: dict[str, list[str]] = {
    "regime-blind (defaults)": [],
    "regime features": ["regime.enabled=true", "regime.features=true", "regime.adaptive=false"],
    "adaptive settings": ["regime.enabled=true", "regime.features=false", "regime.adaptive=true"],
    "features + adaptive": ["regime.enabled=true", "regime.features=true", "regime.adaptive=true"],
    "ensemble: 3 heads, mean Q": ["ensemble.members=3", "ensemble.combine=mean"],
    "ensemble: 3 heads, vote": ["ensemble.members=3", "ensemble.combine=vote"],
    "ensemble: 3 heads, confidence": ["ensemble.members=3", "ensemble.combine=confidence"],
}
BLIND = "regime-blind (defaults)"


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "parallel_dqn", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def sets(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


def write_regime_market(data: Path, seed: int, kind: str) -> None:
    """12 days of 1-minute bars: ``data generate --regime_change`` (volatility), or the correlation market."""
    if kind == "volatility":
        cli("data", "generate", "--output", str(data), "--stocks", *STOCKS, "--start", "2024-01-02",
            "--days", "12", "--seed", str(seed), "--regime_change")
        return
    spec = SyntheticSpec(regime_flip=True, regime_by="correlation", momentum_phi=0.0, reversion_phi=0.0)
    write_market(generate_market(CORRELATION_STOCKS, dt.date(2024, 1, 2), 12, seed, spec), data)


def run_market(data: Path, out: Path, episodes: int, settings: list[str]) -> dict:
    started = time.perf_counter()
    cli("train", "--mode", "single", "--data", str(data), "--start_date", "2024-01-02", "--end_date", "2024-01-12",
        "--eval_start", "2024-01-15", "--eval_end", "2024-01-17", "--episodes", str(episodes), "--output", str(out),
        "--cost_bps", "1", "--overwrite", "--no_progress", *sets(settings))
    metrics = json.loads((out / "metrics.json").read_text())
    sharpe = metrics["eval"]["sharpe"]
    members = [m["sharpe"] for m in metrics.get("ensemble", {}).get("members", []) if m["member"].isdigit()]
    return {"sharpe": sharpe, "oracle_fraction": sharpe / metrics["oracle"]["sharpe"],
            "best_member": max(members) if members else None, "seconds": time.perf_counter() - started}


def run_real(data: Path, out: Path, episodes: int, settings: list[str]) -> dict:
    started = time.perf_counter()
    cli("walk-forward", "--data", str(data), "--train_days", "60", "--test_days", "20", "--embargo_days", "1",
        "--episodes", str(episodes), "--cost_bps", "1", "--output", str(out), "--jobs", "1", "--no_progress",
        *sets(settings))
    result = json.loads((out / "walk_forward.json").read_text())
    oos, sig = result["oos"], result["significance"]
    return {"sharpe": oos["sharpe"], "interval": sig.get("sharpe_ci"), "p_vs_bnh": sig.get("p_value_vs_buy_and_hold"),
            "buy_and_hold": result["baselines"]["buy_and_hold"]["sharpe"], "seconds": time.perf_counter() - started}


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def market_table(seeds: list[int], runs: dict, rows: list[str]) -> list[str]:
    head = ["row", *[f"seed {s}" for s in seeds], "mean ± sd", "agent / oracle", "wall s", "gain vs blind / spread",
            "helps", "paired gain, mean ± sd (seeds better)", "helps (paired)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = [runs[(BLIND, s)]["sharpe"] for s in seeds]
    for row in rows:
        rs = [runs[(row, s)] for s in seeds]
        sharpe = [r["sharpe"] for r in rs]
        gain = statistics.mean(sharpe) - statistics.mean(base)
        noise = max(spread(sharpe), spread(base)) or float("nan")
        # the same market seed with and without the row: its gain's own spread from seed to seed
        paired = [x - b for x, b in zip(sharpe, base)]
        cells = [row, *[f"{x:.2f}" for x in sharpe], f"{statistics.mean(sharpe):.2f} ± {spread(sharpe):.2f}",
                 f"{statistics.mean(r['oracle_fraction'] for r in rs):.2f}",
                 f"{statistics.mean(r['seconds'] for r in rs):.0f}", f"{gain:+.2f} / {noise:.2f}",
                 "yes" if row != BLIND and gain > noise else "no",
                 f"{statistics.mean(paired):+.2f} ± {spread(paired):.2f} ({sum(p > 0 for p in paired)} of {len(paired)})",
                 "yes" if row != BLIND and statistics.mean(paired) > spread(paired) else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ensemble_table(seeds: list[int], runs: dict) -> list[str]:
    """Each ensemble row's Sharpe against its best single member's (each head acting alone), seed by seed."""
    head = ["row", *[f"seed {s}: ensemble / best member" for s in seeds], "seeds where ensemble >= best member"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ROWS:
        rs = [runs[(row, s)] for s in seeds if (row, s) in runs]
        if len(rs) < len(seeds) or any(r.get("best_member") is None for r in rs):
            continue
        cells = [row, *[f"{r['sharpe']:.2f} / {r['best_member']:.2f}" for r in rs],
                 f"{sum(r['sharpe'] >= r['best_member'] for r in rs)} of {len(rs)}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def real_table(runs: dict) -> list[str]:
    head = ["row", "OOS Sharpe", "95% interval", "p vs buy-and-hold", "buy-and-hold", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, r in runs.items():
        ci = r["interval"]
        interval = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-"
        p = f"{r['p_vs_bnh']:.2f}" if r["p_vs_bnh"] is not None else "-"
        lines.append(f"| {row} | {r['sharpe']:.2f} | {interval} | {p} | {r['buy_and_hold']:.2f} | {r['seconds']:.0f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--market", choices=["volatility", "correlation"], default="volatility",
                    help="what the hidden regime changes (see the module docstring)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--real_episodes", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--real", action="store_true", help="also walk forward on EURUSD (bench/real_data.sh's import)")
    ap.add_argument("--real_data", type=Path, default=Path("bench/out/real/eurusd"))
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="ROW")
    ap.add_argument("--out", type=Path, default=Path("bench/out/regimes"))
    args = ap.parse_args()
    rows = [BLIND, *[r for r in args.rows if r != BLIND]]
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        data = args.out / f"market{seed}"
        if not (data / "stocks_intraday").exists():
            write_regime_market(data, seed, args.market)
    slug = {row: row.split(" (")[0].replace(" + ", "_and_").replace(" ", "_").replace("-", "_").replace(":", "")
            .replace(",", "") for row in ROWS}
    jobs = [(row, seed) for seed in args.seeds for row in rows]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = dict(zip(jobs, pool.map(
            lambda job: run_market(args.out / f"market{job[1]}", args.out / f"seed{job[1]}_{slug[job[0]]}",
                                   args.episodes, ROWS[job[0]]), jobs)))
    text = [f"### Regime-change market ({args.market}): out of sample, cost 1 bp, seeds {' '.join(map(str, args.seeds))}, "
            f"{args.episodes} episodes", "", *market_table(args.seeds, runs, rows)]
    if any(r.get("best_member") is not None for r in runs.values()):
        text += ["", "### Ensembles against their best single member (each head acting alone, same run)", "",
                 *ensemble_table(args.seeds, runs)]
    real: dict[str, dict] = {}
    if args.real:
        if not (args.real_data / "stocks_intraday").exists():
            sys.exit(f"no imported EURUSD bars at {args.real_data}: run bash bench/real_data.sh first")
        with ThreadPoolExecutor(args.jobs) as pool:
            real = dict(zip(rows, pool.map(
                lambda row: run_real(args.real_data, args.out / f"wf_{slug[row]}", args.real_episodes, ROWS[row]),
                rows)))
        text += ["", f"### Real data: EURUSD hourly, walk-forward (60 / 20 days, 1 day embargo, 1 bp, "
                 f"{args.real_episodes} episodes per fold)", "", *real_table(real)]
    print("\n".join(text))
    (args.out / "regimes.md").write_text("\n".join(text) + "\n")
    (args.out / "regimes.json").write_text(json.dumps(
        {"market": {f"{row} | seed {seed}": r for (row, seed), r in runs.items()}, "real": real}, indent=1))


if __name__ == "__main__":
    main()
