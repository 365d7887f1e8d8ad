#!/usr/bin/env bash
# Train in parallel mode on this machine: rank 0 = parameter server, WORKERS worker ranks.
#   launchers/mpirun.sh WORKERS [parallel-dqn train flags...]
#   e.g. launchers/mpirun.sh 5 --data data/demo_market --episodes 4 --output runs/par --sync
# Uses the venv's MPICH mpirun (pip wheel) and loads .cloudkeys/api_keys.env on every rank.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$#" -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 WORKERS [parallel-dqn train flags...]   (WORKERS >= 1; starts WORKERS+1 ranks)" >&2
    exit 2
fi
workers="$1"; shift
bash "$root/launchers/setup_env.sh"
export PATH="$root/.venv/bin:$PATH"
# one torch thread per rank unless the caller says otherwise (ranks may outnumber cores)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec mpirun -n "$((workers + 1))" "$root/run_with_env.sh" parallel-dqn train --mode parallel "$@"
