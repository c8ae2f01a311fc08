#!/usr/bin/env bash
# Comparison benchmark: Spate vs peer brokers vs the machine's raw limits. See bench/compare.py.
#   bench/compare.sh [--quick] [--with-tansu | --no-tansu] [--workloads a,b] [--update-readme]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$repo/.venv/bin/python"
if [ ! -x "$py" ]; then
    echo "compare.sh: $py missing: run scripts/test.sh (or scripts/bootstrap.sh) first" >&2
    exit 2
fi
exec "$py" "$repo/bench/compare.py" "$@"
