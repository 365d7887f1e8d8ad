#!/usr/bin/env bash
# The README's first command: set up a fresh clone and run the main job on the embedded default.
# 1. .venv with pinned dependencies and the MPI runtime (launchers/setup_env.sh)
# 2. a synthetic market with planted structure in data/demo_market (12 days of 1-minute bars, 5 stocks)
# 3. train 8 days, evaluate on the 3 held-out days, print the results table; outputs in runs/quickstart
# In the container image (launchers/container/) parallel-dqn is installed already: there PARALLEL_DQN_QUICKSTART_DIR
# names the folder that gets data/ and runs/ instead of the clone, and step 1 is skipped.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PARALLEL_DQN_QUICKSTART_DIR:-}" ]; then
    root="$PARALLEL_DQN_QUICKSTART_DIR"
    cd "$root"
else
    cd "$root"
    bash launchers/setup_env.sh
    export PATH="$root/.venv/bin:$PATH"
fi
if [ ! -d data/demo_market/stocks_intraday ]; then
    parallel-dqn data generate --output data/demo_market --stocks LEAD FOLW MOMO MREV RWLK \
        --start 2024-01-02 --days 12 --seed 7
fi
parallel-dqn train --mode single --data data/demo_market \
    --start_date 2024-01-02 --end_date 2024-01-12 --eval_start 2024-01-15 --eval_end 2024-01-17 \
    --episodes 4 --output runs/quickstart --seed 0 --cost_bps 1 --overwrite "$@"
echo "report: $root/runs/quickstart (metrics.json, equity_eval.png, attention.png, portfolio_ep*.csv)"
