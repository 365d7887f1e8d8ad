"""Rank 0's work at the end of a training episode, as the episode grows: time and peak memory.

When every worker has finished a training episode, rank 0 turns the episode's decision records into the
meta-policy's inputs (``decision_features``), prices the episode's portfolio with the meta-policy's weights
and fits the meta-policy on it (``MetaPolicy.fit``: ``meta.epochs`` full-batch steps); every worker waits for
rank 0's word on the next episode meanwhile. All three grow with bars x stocks: a year of the S&P 500 at one
minute is 98,280 x 500 = 49 M decisions.

This times those three steps on random records of S stocks x D days of 1-minute bars, each in a child process
of its own (peak RSS = the child's VmHWM, less the same child's RSS before the records were made), two ways
side by side: in blocks (the default: ``BLOCK_DECISIONS`` decisions, ``BLOCK_ACTIVATIONS`` hidden activations
per block) and in one pass over the whole episode (the code before the blocks: both limits set past the
episode). Sizes that would not fit the machine in one pass are skipped there (``--one_pass_max_days``).

Usage:  python bench/episode_end.py [--stocks 500] [--days 3 10 30] [--one_pass_max_days 10] [--out bench/out/episode_end]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BARS_PER_DAY = 390


def child(stocks: int, days: int, one_pass: bool) -> dict[str, float]:
    """Run in the child: make the records, then time the three steps; report seconds and memory."""
    import numpy as np
    import torch

    from parallel_dqn.config import MetaConfig
    from parallel_dqn.model import meta_policy
    from parallel_dqn.model.meta_policy import MetaPolicy, decision_features

    torch.set_num_threads(1)
    if one_pass:
        meta_policy.BLOCK_DECISIONS = meta_policy.BLOCK_ACTIVATIONS = 1 << 62
    T, S = days * BARS_PER_DAY, stocks
    rng = np.random.default_rng(0)
    q = rng.normal(size=(T, S, 3)).astype(np.float32)  # as an EpisodeBook holds them
    actions = rng.integers(0, 3, (T, S))
    log_returns = rng.normal(0, 1e-3, (T, S))
    before = _rss_mb()
    started = time.perf_counter()
    feats = decision_features(q, actions, log_returns, 390, 1e-3)
    t_features = time.perf_counter()
    torch.manual_seed(0)  # the same initial weights both ways
    meta = MetaPolicy(S, MetaConfig())
    meta.weights(feats, actions)
    t_weights = time.perf_counter()
    sharpe = meta.fit(feats, actions, log_returns, cost_bps=1.0)
    t_fit = time.perf_counter()
    return {"features_s": t_features - started, "weights_s": t_weights - t_features, "fit_s": t_fit - t_weights,
            "total_s": t_fit - started, "peak_mb": _peak_mb() - before, "sharpe": sharpe}


def _rss_mb() -> float:
    return _status("VmRSS")


def _peak_mb() -> float:
    return _status("VmHWM")


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(stocks: int, days: int, one_pass: bool) -> dict[str, float] | None:
    """One child process's figures (None when it failed: out of memory, say)."""
    done = subprocess.run([sys.executable, __file__, "--child", str(stocks), str(days), str(int(one_pass))],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(f"  {stocks} stocks x {days} days, {'one pass' if one_pass else 'blocks'}: failed "
              f"(exit {done.returncode}) {done.stderr.strip().splitlines()[-1:] }", flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, default=500)
    ap.add_argument("--days", type=int, nargs="+", default=[3, 10, 30])
    ap.add_argument("--one_pass_max_days", type=int, default=10, help="skip the one-pass run past this many days")
    ap.add_argument("--out", type=Path, default=Path("bench/out/episode_end"))
    ap.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], bool(args.child[2]))))
        return
    rows = []
    for days in args.days:
        blocks = measure(args.stocks, days, one_pass=False)
        one = measure(args.stocks, days, one_pass=True) if days <= args.one_pass_max_days else None
        rows.append({"days": days, "decisions": days * BARS_PER_DAY * args.stocks, "blocks": blocks, "one_pass": one})
        print(f"{days} days: blocks {blocks}\n{' ' * len(str(days))}       one pass {one}", flush=True)
    table = ["| stocks x days | decisions | blocks: s (features / weights / fit) | blocks: peak MB | one pass: s | "
             "one pass: peak MB | time, blocks / one pass | memory, blocks / one pass | Sharpe equal |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, o = r["blocks"], r["one_pass"]
        cells = [f"{args.stocks} x {r['days']}", f"{r['decisions']:,}"]
        cells += [f"{b['total_s']:.1f} ({b['features_s']:.1f} / {b['weights_s']:.1f} / {b['fit_s']:.1f})",
                  f"{b['peak_mb']:,.0f}"] if b else ["failed", "-"]
        if o and b:
            same = abs(b["sharpe"] - o["sharpe"]) <= 1e-4 * max(1.0, abs(o["sharpe"]))
            cells += [f"{o['total_s']:.1f}", f"{o['peak_mb']:,.0f}", f"{b['total_s'] / o['total_s']:.2f}",
                      f"{b['peak_mb'] / o['peak_mb']:.2f}", "yes" if same else f"no ({b['sharpe']:.6f} / {o['sharpe']:.6f})"]
        else:
            cells += ["-"] * 5
        table.append("| " + " | ".join(cells) + " |")
    text = "\n".join(table) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "episode_end.md").write_text(text)
    (args.out / "episode_end.json").write_text(json.dumps({"stocks": args.stocks, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
