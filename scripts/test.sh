#!/usr/bin/env bash
# The one test command: setup, lint, build, Rust tests, then the black-box
# Python suite that drives the real `spate` binary with real Kafka clients.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -k restart      extra arguments are passed to pytest
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

section() { printf '\n==================== %s ====================\n' "$*"; }

section "bootstrap"
scripts/bootstrap.sh
if [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi

# glommio/io_uring may need locked memory; raise the soft limit when allowed.
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true

section "cargo fmt --check"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --all-targets -- -D warnings

section "layering (one-way module dependencies, ../shared/LAYERING.md)"
python3 scripts/layering.py .

section "cargo build"
cargo build

section "cargo test"
cargo test

section "pytest (black-box, tests/python)"
export SPATE_BIN="${SPATE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/spate}"
export RUST_LOG="${RUST_LOG:-info}"
.venv/bin/python -m pytest -q -p no:cacheprovider --timeout=120 tests/python "$@"

section "all tests passed"
