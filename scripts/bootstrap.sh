#!/usr/bin/env bash
# Idempotent setup for a fresh Debian 12 machine (run as root, or with sudo available):
# system packages, a Rust toolchain, and the Python test virtualenv in ./.venv.
#
#   scripts/bootstrap.sh          full setup (build deps + kcat + Python venv)
#   scripts/bootstrap.sh --lite   build deps + cargo only (used by scripts/serve.sh)
#
# Every step is skipped when already done, so re-runs are fast.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LITE=0
if [[ "${1:-}" == "--lite" ]]; then
    LITE=1
fi

log() { printf '[bootstrap] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- apt packages
# glommio compiles its bundled liburing with gcc/make; pkg-config + curl for rustup.
PKGS=(gcc make pkg-config curl ca-certificates)
if [[ $LITE -eq 0 ]]; then
    # openssl: the TLS tests make their CA and certificates with it (tests/python/tlsutil.py).
    PKGS+=(kcat python3 python3-venv python3-pip openssl)
fi

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

# Installs Debian packages (as root, or with sudo).
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        log "missing packages ($*) and no apt-get; install them manually"
        exit 1
    fi
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi
    log "installing: $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

if [[ ${#missing[@]} -gt 0 ]]; then
    apt_install "${missing[@]}"
else
    log "system packages present"
fi

# ---------------------------------------------------------------- Rust toolchain
if [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    log "installing rustup (stable)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --default-toolchain stable -c rustfmt -c clippy
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
else
    log "cargo present: $(cargo --version)"
fi
# rustfmt/clippy are needed by scripts/test.sh; add them if the toolchain lacks them.
if command -v rustup >/dev/null 2>&1; then
    if ! cargo fmt --version >/dev/null 2>&1; then
        log "adding rustfmt"
        rustup component add rustfmt
    fi
    if ! cargo clippy --version >/dev/null 2>&1; then
        log "adding clippy"
        rustup component add clippy
    fi
fi

if [[ $LITE -eq 1 ]]; then
    exit 0
fi

# ---------------------------------------------------------------- Python venv
# Prefer the system interpreter (Debian's python3 has venv via python3-venv);
# fall back to whatever python3 is first on PATH.
PY=/usr/bin/python3
if [[ ! -x $PY ]]; then
    PY="$(command -v python3)"
fi

VENV="$ROOT/.venv"
REQ="$ROOT/tests/requirements.txt"
STAMP="$VENV/.requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating virtualenv $VENV with $PY"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi

if [[ ! -f $STAMP || "$(cat "$STAMP")" != "$want" ]]; then
    log "installing Python test requirements"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
    echo "$want" >"$STAMP"
else
    log "Python requirements up to date"
fi

# ---------------------------------------------------------------- Node.js clients
# kafkajs (tests/js, pinned by its package-lock.json) runs under Node.js: Debian's nodejs and
# npm when no node is installed.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
JS="$ROOT/tests/js"
JS_STAMP="$JS/node_modules/.lock.sha256"
want="$(sha256sum "$JS/package-lock.json" | cut -d' ' -f1)"
if [[ ! -f $JS_STAMP || "$(cat "$JS_STAMP")" != "$want" ]]; then
    log "installing Node.js test clients (tests/js)"
    (cd "$JS" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$JS_STAMP"
else
    log "Node.js test clients up to date"
fi
log "done"
