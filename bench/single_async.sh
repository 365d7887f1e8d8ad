#!/usr/bin/env bash
# Single mode, asynchronous, default settings, one episode over 2 training days of 1-minute bars, with 20 and 50
# generated stocks (--workers N: one worker per stock, more than dist.staleness_bound = 8). Prints, per market, the
# gradients sent, applied and dropped as stale, and the fewest and most applied by one worker (metrics.json).
#   bash bench/single_async.sh [OUT_DIR]      (about 2.5 minutes on a 2-core machine)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/bench/out/single_async}"
pd="$root/.venv/bin/parallel-dqn"
py="$root/.venv/bin/python"
mkdir -p "$out"
for n in 20 50; do
    stocks=$("$py" -c "print(' '.join(f'S{i:02d}' for i in range($n)))")
    [ -d "$out/market$n/stocks_intraday" ] || "$pd" data generate --output "$out/market$n" --stocks $stocks \
        --start 2024-01-02 --days 3 --seed 7 > /dev/null
    "$pd" train --data "$out/market$n" --start_date 2024-01-02 --end_date 2024-01-03 --eval_start 2024-01-04 \
        --eval_end 2024-01-04 --episodes 1 --workers "$n" --output "$out/run$n" --overwrite --no_progress > /dev/null 2>&1
    "$py" - "$out/run$n/metrics.json" "$n" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); c = m["counters"]; applied = [r["applied"] for r in c["per_worker"].values()]
print(f"| {sys.argv[2]} | {len(applied)} | {c['gradients_sent']} | {c['gradients_applied']} | {c['gradients_dropped_stale']} "
      f"({c['gradients_dropped_stale'] / max(c['gradients_sent'], 1):.1%}) | {min(applied)} / {max(applied)} | {c['mean_staleness']:.2f} |")
PY
done
