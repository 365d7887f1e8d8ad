#!/usr/bin/env bash
# The README's second command: the whole test suite (sets up .venv first if needed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash launchers/setup_env.sh
exec .venv/bin/python -m pytest "$@"
