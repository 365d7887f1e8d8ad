"""What the CLI prints: the results table of a run."""

from __future__ import annotations

from typing import Any

from parallel_dqn import outputs


def print_results(result: dict[str, Any], output: str) -> None:
    """The results table: agent vs baselines (and the oracle) on the evaluation period; where the files are."""
    rows = []
    if result.get("eval"):
        rows.append(("agent (DQN + meta-policy)", result["eval"]))
    rows += [(name, m) for name, m in (result.get("baselines") or {}).items()]
    if result.get("oracle"):
        rows.append(("oracle (planted signal)", result["oracle"]))
    if rows:
        print(f"\nEvaluation {' .. '.join(result.get('period', []))}")
        print(f"{'strategy':28s} {'total return':>12s} {'sharpe':>8s} {'sortino':>8s} {'max dd':>8s} {'turnover':>9s}")
        for name, m in rows:
            print(
                f"{name:28s} {m['total_return']:12.4f} {m['sharpe']:8.2f} {m['sortino']:8.2f} "
                f"{m['max_drawdown']:8.4f} {m.get('turnover', 0.0):9.4f}"
            )
    out = output.rstrip("/")  # a folder or an object-store URL (s3://...: not a Path, which would drop a slash)
    print(f"\nresults: {out}/{outputs.METRICS}  model: {out}/{outputs.MODEL}")
    print(f"plots:   {out}/{outputs.EQUITY_PLOT}  {out}/{outputs.ATTENTION_PLOT}")
