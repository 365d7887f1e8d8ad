#!/usr/bin/env bash
# Load .cloudkeys/api_keys.env (if it exists) into the environment, then run the rest of the arguments.
#   ./run_with_env.sh parallel-dqn train ...
#   mpirun -n 4 ./run_with_env.sh parallel-dqn train --mode parallel ...
# The file is parsed with python-dotenv (KEY=VALUE lines, quotes, comments, ${VAR} expansion); nothing is echoed.
# Variables already set in the environment win over the file. PARALLEL_DQN_KEYS overrides the file's path.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
keys="${PARALLEL_DQN_KEYS:-$here/.cloudkeys/api_keys.env}"
if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]   (runs COMMAND with $keys loaded)" >&2
    exit 2
fi
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x "$here/.venv/bin/python" ]; then py="$here/.venv/bin/python"; else py="python3"; fi
fi
if [ -d "$here/.venv/bin" ]; then export PATH="$here/.venv/bin:$PATH"; fi
if [ -f "$keys" ]; then
    mode=$(stat -c '%a' "$keys" 2>/dev/null || stat -f '%Lp' "$keys")
    if [ $((8#$mode & 8#077)) -ne 0 ]; then
        echo "warning: $keys is readable by group or others (mode $mode); run: chmod 600 $keys" >&2
    fi
    # Print NAME=VALUE lines NUL-separated and export them; values never reach the terminal.
    while IFS= read -r -d '' pair; do
        name="${pair%%=*}"
        if [ -z "${!name+x}" ]; then export "$pair"; fi
    done < <("$py" - "$keys" <<'PY'
import sys
from dotenv import dotenv_values
for k, v in dotenv_values(sys.argv[1]).items():
    if v is not None and k.isidentifier():
        sys.stdout.write(f"{k}={v}\0")
PY
)
fi
exec "$@"
