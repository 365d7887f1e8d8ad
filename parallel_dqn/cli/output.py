"""What the CLI prints: the results table of a run (numbers by kind: :mod:`parallel_dqn.evaluation.formats`)."""

from __future__ import annotations

from typing import Any

from parallel_dqn import outputs
from parallel_dqn.evaluation import formats


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
                f"{name:28s} {formats.percent(m['total_return']):>12s} {formats.ratio(m['sharpe']):>8s} "
                f"{formats.ratio(m['sortino']):>8s} {formats.percent(m['max_drawdown']):>8s} "
                f"{formats.percent(m.get('turnover', 0.0)):>9s}"
            )
    out = output.rstrip("/")  # a folder or an object-store URL (s3://...: not a Path, which would drop a slash)
    print(f"\nresults: {out}/{outputs.METRICS}  model: {out}/{outputs.MODEL}")
    print(f"plots:   {out}/{outputs.EQUITY_PLOT}  {out}/{outputs.ATTENTION_PLOT}")
