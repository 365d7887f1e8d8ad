#!/usr/bin/env bash
# The README's second command: the whole test suite (sets up .venv first if needed).
#   launchers/test.sh [--fast] [PYTEST ARGS...]
# --fast: only the fast tier, -m "not slow and not mpi and not azure and not cloud and not slurm and not browser and not container" (1-2 minutes; the markers
# are in setup.cfg and tests/conftest.py); it needs neither Azurite nor the S3/GCS emulators nor MPI nor SLURM nor docker. Other arguments go to pytest.
# Tests run on PARALLEL_DQN_TEST_WORKERS parallel workers (pytest-xdist; default 2, 1: none, in this process);
# each test module runs whole on one worker (--dist loadfile: its module fixtures are built once), and a SLURM test
# holds the cluster through a lock (tests/conftest.py). Most of the slow tests wait on subprocesses, so two
# workers use a 2-core machine where one left a core idle.
# The Azure tests run against the real Azurite emulator: it is installed from npm (version pinned in
# package-lock.json) into node_modules/ when missing; Node.js >= 18 and npm must be on PATH.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
fast=0
args=()
for arg in "$@"; do
    if [ "$arg" = "--fast" ]; then fast=1; else args+=("$arg"); fi
done
bash launchers/setup_env.sh
workers="${PARALLEL_DQN_TEST_WORKERS:-2}"
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || { echo "error: PARALLEL_DQN_TEST_WORKERS must be a whole number >= 1, not '$workers'" >&2; exit 2; }
if [ "$workers" -gt 1 ]; then args=(-n "$workers" --dist loadfile ${args[@]+"${args[@]}"}); fi
if [ "$fast" = 1 ]; then
    exec .venv/bin/python -m pytest -m "not slow and not mpi and not azure and not cloud and not slurm and not browser and not container" ${args[@]+"${args[@]}"}
fi
if [ ! -f node_modules/azurite/dist/src/blob/main.js ]; then
    command -v npm >/dev/null || { echo "error: npm not found; install Node.js >= 18 (the Azure tests need Azurite)" >&2; exit 2; }
    echo "installing the Azurite emulator from npm (package-lock.json) ..." >&2
    npm ci --no-audit --no-fund --silent
fi
exec .venv/bin/python -m pytest ${args[@]+"${args[@]}"}
