"""Numbers as a quant reads them, by kind: one place for the report, the CLI's results table and the sweep table.

* ratios (Sharpe, Sortino, Calmar, beta, information ratio): 2 decimals, ``1.23``;
* returns, drawdowns, volatility, turnover, costs, exposure, weights, hit rate: percent, ``12.34%``;
* money (values of a stake): thousands separators and 2 decimals, ``12,345.68``;
* counts (bars, steps, episodes, stocks): thousands separators, ``98,280``;
* probabilities (p-values, PSR, deflated Sharpe): 3 decimals, ``0.042``;
* anything else: 4 significant digits (a learning rate ``0.0001``, a loss ``0.0123``).

:func:`kind_of` tells the kind from a metric's key or a column's heading (``total_return``, ``max drawdown``,
``eval Sharpe``), so a table of metrics formats itself. ``None`` and non-finite numbers are shown as ``-``.
"""

from __future__ import annotations

import math
import re
from typing import Any

RATIO, PERCENT, MONEY, COUNT, PROBABILITY, PLAIN = "ratio", "percent", "money", "count", "probability", "plain"
MISSING = "-"

#: words of a heading or key, checked in this order: the first rule that matches gives the kind
_RULES: tuple[tuple[str, str], ...] = (
    (r"\brank\b|duration|holding period|\(bars\)|\(days\)", COUNT),
    (r"p-?value|\bpsr\b|probability|deflated|confidence", PROBABILITY),
    (r"sharpe|sortino|calmar|\bbeta\b|information ratio|\bratio\b|skew|kurtosis", RATIO),
    (r"return|drawdown|volatility|turnover|\bcosts?\b|exposure|weight|hit rate|\balpha\b|tracking error"
     r"|\bbest\b|\bworst\b", PERCENT),
    (r"\bvalue of\b|\bmoney\b|\bstake\b", MONEY),
    (r"episode|\bsteps?\b|\bbars?\b|\bcount\b|\bstocks?\b|\bdays?\b|\bfolds?\b|\bn\b|gradients|transitions"
     r"|duration", COUNT),
)


def kind_of(name: str) -> str:
    """The kind of the metric named ``name`` (a key such as ``max_drawdown`` or a heading such as ``eval Sharpe``)."""
    text = str(name).lower().replace("_", " ")
    for pattern, kind in _RULES:
        if re.search(pattern, text):
            return kind
    return PLAIN


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            import numpy as np  # numpy scalars
        except ImportError:  # pragma: no cover
            return None
        if not isinstance(value, np.number):
            return None
    x = float(value)
    return x if math.isfinite(x) else None


def ratio(value: Any) -> str:
    """``1.23``: 2 decimals."""
    x = _finite(value)
    return MISSING if x is None else f"{x:,.2f}"


def percent(value: Any, decimals: int = 2) -> str:
    """``12.34%`` from the fraction 0.1234."""
    x = _finite(value)
    return MISSING if x is None else f"{100.0 * x:,.{decimals}f}%"


def money(value: Any) -> str:
    """``12,345.68``: thousands separators, 2 decimals (the run has no currency: a value of a stake)."""
    x = _finite(value)
    return MISSING if x is None else f"{x:,.2f}"


def count(value: Any) -> str:
    """``98,280``; a count that is not whole keeps one decimal (``2.5`` bars)."""
    x = _finite(value)
    if x is None:
        return MISSING
    return f"{x:,.0f}" if x == round(x) else f"{x:,.1f}"


def probability(value: Any) -> str:
    """``0.042``: 3 decimals."""
    x = _finite(value)
    return MISSING if x is None else f"{x:.3f}"


def plain(value: Any) -> str:
    """4 significant digits for a float, the text itself for anything else."""
    if value is None:
        return MISSING
    x = _finite(value)
    if x is None:
        return MISSING if isinstance(value, float) else str(value)
    if isinstance(value, int) or (not isinstance(value, float) and x == round(x)):
        return f"{int(x):,}" if abs(x) >= 10_000 else str(int(x))
    return f"{x:.4g}"


_FORMATTERS = {RATIO: ratio, PERCENT: percent, MONEY: money, COUNT: count, PROBABILITY: probability, PLAIN: plain}


def format_value(value: Any, kind: str) -> str:
    """``value`` in the format of ``kind``; text (a name, ``yes``) and ``None`` (``-``) as they are."""
    if value is None:
        return MISSING
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if _finite(value) is None and not isinstance(value, float):
        return str(value)
    return _FORMATTERS[kind](value)


def format_metric(name: str, value: Any) -> str:
    """``value`` formatted by the kind of the metric ``name`` (:func:`kind_of`)."""
    return format_value(value, kind_of(name))
