#!/usr/bin/env bash
# Walk-forward on real market data that a package on PyPI ships: backtesting.py's EURUSD hourly bars
# (2017-04-19 .. 2018-02-07, 5,000 bars) and GOOG daily bars (2004-08-19 .. 2013-03-01, 2,148 bars).
# The wheel is only downloaded and unpacked for its CSV files (nothing is installed), the files are imported
# with `parallel-dqn data import-csv`, then walked forward. Results: OUT/*/walk_forward.json (README, "Real data").
#
# Usage: bash bench/real_data.sh [OUT (default bench/out/real)]      about 4 minutes on 2 cores
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-bench/out/real}
PY=${PYTHON:-python}
mkdir -p "$OUT"
if [ ! -f "$OUT/csv/EURUSD.csv" ]; then
  "$PY" -m pip download backtesting==0.6.6 --no-deps -q -d "$OUT/wheel"
  "$PY" - "$OUT" <<'EOF'
import sys, zipfile, pathlib
out = pathlib.Path(sys.argv[1])
wheel = next((out / "wheel").glob("backtesting-*.whl"))
(out / "csv").mkdir(exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in ("EURUSD", "GOOG"):
        (out / "csv" / f"{name}.csv").write_bytes(z.read(f"backtesting/test/{name}.csv"))
EOF
fi
# EURUSD's timestamps are naive (taken as UTC); GOOG's are dates of the New York session
"$PY" -m parallel_dqn data import-csv "$OUT/csv/EURUSD.csv" --to "$OUT/eurusd" --timezone UTC
"$PY" -m parallel_dqn data import-csv "$OUT/csv/GOOG.csv" --to "$OUT/goog" --timezone America/New_York

# EURUSD, hourly: 60 trading days of training, 1 day of embargo, 20 of test, 9 folds; 1 bp per unit traded
for cost in 1 0; do
  "$PY" -m parallel_dqn walk-forward --data "$OUT/eurusd" --train_days 60 --test_days 20 --embargo_days 1 \
    --episodes 10 --cost_bps "$cost" --output "$OUT/wf-eurusd-cost$cost" --jobs 2 --no_progress
done
# GOOG, daily: 500 days of training, 5 of embargo, 125 of test (about half a year), 13 folds; 5 bp
"$PY" -m parallel_dqn walk-forward --data "$OUT/goog" --train_days 500 --test_days 125 --embargo_days 5 \
  --episodes 10 --cost_bps 5 --output "$OUT/wf-goog" --jobs 2 --no_progress
