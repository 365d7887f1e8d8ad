#!/usr/bin/env bash
# run.device on a GPU machine: single mode, one episode over 3 days of 1-minute bars (+1 held-out day), the same
# runs with run.device=cpu and =cuda, side by side, for 5 and 50 generated stocks; transitions/s of the training
# episode from metrics.jsonl. Usage: bash bench/device.sh [OUT]   (needs torch with CUDA; .whl/ holds any
# wheels the machine lacks, installed with --no-deps)
set -euo pipefail
out="${1:-${OUT:-bench/out/device}}"
mkdir -p "$out"
py="${PYTHON:-python}"
if compgen -G ".whl/*.whl" >/dev/null; then "$py" -m pip install -q --no-deps .whl/*.whl 2>&1 | tail -1 || true; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$py" - "$out" <<'PY'
import datetime as dt, json, os, subprocess, sys
from pathlib import Path
import torch
from parallel_dqn.data.synthetic import SyntheticSpec, generate_market, write_market
out = Path(sys.argv[1])
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
print("| stocks | CPU (transitions/s) | GPU (transitions/s) | GPU / CPU |")
print("|---|---|---|---|")
for n in (5, 50):
    market = out / f"market{n}"
    if not (market / "stocks_intraday").exists():
        write_market(generate_market([f"S{i:03d}" for i in range(n)], dt.date(2024, 1, 2), 4, seed=7, spec=SyntheticSpec()), market)
    rate = {}
    for device in ("cpu", os.environ.get("GPU_DEVICE", "cuda")):  # GPU_DEVICE=cpu: a dry run without a GPU
        run = out / f"run{n}-{device}"
        subprocess.run([sys.executable, "-m", "parallel_dqn", "train", "--data", str(market), "--start_date", "2024-01-02",
                        "--end_date", "2024-01-04", "--eval_start", "2024-01-05", "--eval_end", "2024-01-05",
                        "--episodes", "1", "--output", str(run), "--overwrite", "--no_progress",
                        "--set", f"run.device={device}", "--set", "data.cache=off"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        line = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        rate[device] = line["steps"] / line["elapsed_s"]
    print(f"| {n} | {rate['cpu']:,.0f} | {rate[device]:,.0f} | {rate[device] / rate['cpu']:.2f}x |", flush=True)
PY
