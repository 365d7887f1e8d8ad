"""Check every file of a store at once: ``parallel-dqn data validate SOURCE``.

The loader stops at the first bad file; this lists every problem of every file
(the same checks), so a user can fix a whole data set in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from parallel_dqn.data.store import Store, source_name
from parallel_dqn.data.validation import Problem, short_reason, to_bar_frame, validate_bars, validate_day
from parallel_dqn.errors import UserError


@dataclass
class AuditReport:
    """What was checked and what is wrong."""

    files: int = 0
    symbols: int = 0
    problems: list[Problem] = field(default_factory=list)


def audit_store(store: Store, symbols: Sequence[str] | None = None) -> AuditReport:
    """Read and validate every file of ``symbols`` (default: every stock in the store)."""
    known = store.list_symbols()
    chosen = list(symbols) if symbols else known
    for sym in chosen:
        if sym not in known:
            raise UserError(f"no data for stock {sym} in {store.describe()}", f"available: {', '.join(known[:10])}")
    report = AuditReport(symbols=len(chosen))
    for sym in chosen:
        for day in store.list_days(sym):
            path = store.fetch(sym, day)
            source = source_name(store, sym, day, path)
            report.files += 1
            try:
                raw = pq.read_table(path).to_pandas()
            except Exception as exc:  # noqa: BLE001 - any reader failure means a bad file
                report.problems.append(Problem(source, None, f"cannot read parquet file: {short_reason(exc)}"))
                continue
            problems = validate_bars(raw, source)
            if not problems:
                problems = validate_day(to_bar_frame(raw), day, source)
            report.problems.extend(problems)
    return report
