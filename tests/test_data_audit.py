"""`parallel-dqn data validate` lists every problem of every file, not just the first."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from parallel_dqn.cli import main
from parallel_dqn.data.audit import audit_store
from parallel_dqn.data.store import LocalStore
from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market


def test_lists_all_problems(tmp_path, capsys):
    write_market(generate_market(["AAA", "BBB"], dt.date(2024, 1, 2), 2, seed=0, spec=SyntheticSpec(bar_minutes=30)), tmp_path)
    assert main(["data", "validate", str(tmp_path)]) == 0
    files = sorted((tmp_path / "stocks_intraday").rglob("*.parquet"))
    files[0].write_bytes(b"not parquet")
    df = pd.read_parquet(files[3])
    df.loc[2, "low"] = df.loc[2, "high"] * 2
    df.to_parquet(files[3], index=False)
    report = audit_store(LocalStore(tmp_path))
    assert report.files == 4 and len(report.problems) == 2
    assert main(["data", "validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(str(files[0]) in line and "cannot read parquet" in line for line in out)
    assert any(str(files[3]) in line and "row 2" in line for line in out)
