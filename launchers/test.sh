#!/usr/bin/env bash
# The README's second command: the whole test suite (sets up .venv first if needed).
# The Azure tests run against the real Azurite emulator: it is installed from npm (version pinned in
# package-lock.json) into node_modules/ when missing; Node.js >= 18 and npm must be on PATH.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash launchers/setup_env.sh
if [ ! -f node_modules/azurite/dist/src/blob/main.js ]; then
    command -v npm >/dev/null || { echo "error: npm not found; install Node.js >= 18 (the Azure tests need Azurite)" >&2; exit 2; }
    echo "installing the Azurite emulator from npm (package-lock.json) ..." >&2
    npm ci --no-audit --no-fund --silent
fi
exec .venv/bin/python -m pytest "$@"
