#!/usr/bin/env bash
# Run a release broker locally.
#
#   scripts/serve.sh                               127.0.0.1:9092, data in <repo>/spate-data
#   scripts/serve.sh --listen 0.0.0.0:9092 --advertised-listener broker1.example:9092 --shards 4
#
# Arguments are passed to `spate serve` (relative paths are relative to the
# current directory); --listen and --data-dir get defaults only when not given.
# SPATE_SERVE_PROFILE picks the cargo profile (default release; the tests use dev, which the
# test run has already built).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

"$ROOT/scripts/bootstrap.sh" --lite
if [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true

args=("$@")
has() {
    local flag=$1 a
    for a in "${args[@]}"; do
        if [[ $a == "$flag" || $a == "$flag="* ]]; then
            return 0
        fi
    done
    return 1
}
if ! has --listen; then
    args=(--listen 127.0.0.1:9092 "${args[@]}")
fi
if ! has --data-dir; then
    args=(--data-dir "$ROOT/spate-data" "${args[@]}")
fi

exec cargo run --profile "${SPATE_SERVE_PROFILE:-release}" --bin spate \
    --manifest-path "$ROOT/Cargo.toml" -- serve "${args[@]}"
