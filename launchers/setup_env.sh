#!/usr/bin/env bash
# Create .venv in the repository (if missing) with the pinned dependencies, the MPI runtime
# (mpi4py + the MPICH wheel: no system MPI or compiler needed) and parallel-dqn itself (editable).
# Idempotent: a second run only checks that the venv matches requirements.lock.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: parallel-dqn needs Python >= 3.11 (found $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
stamp=".venv/.requirements.lock.sha"
want="$(sha256sum requirements.lock setup.cfg | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.lock
.venv/bin/python -m pip install --quiet --no-deps -e .
echo "$want" > "$stamp"
echo "ready: $root/.venv ($(.venv/bin/python -c 'import torch, mpi4py; print(f"torch {torch.__version__}, mpi4py {mpi4py.__version__}")'))"
