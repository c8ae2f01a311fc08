#!/usr/bin/env bash
# Run a local 3-node cluster (each node a broker and a metadata quorum voter, one shard each).
#
#   scripts/cluster.sh                 nodes 1-3 on 127.0.0.1:9092, :9192, :9292 (quorum on
#                                      :9093, :9193, :9293), data in <repo>/spate-cluster/nodeN
#   scripts/cluster.sh --shards 2      extra arguments go to every node's `spate serve`
#
# Clients bootstrap from any node (127.0.0.1:9092). Logs: <repo>/spate-cluster/nodeN.log.
# Ctrl-C (or SIGTERM) stops all three. SPATE_SERVE_PROFILE picks the cargo profile
# (default release). SPATE_CLUSTER_DIR moves the data and logs elsewhere.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${SPATE_CLUSTER_DIR:-$ROOT/spate-cluster}"
PROFILE="${SPATE_SERVE_PROFILE:-release}"

"$ROOT/scripts/bootstrap.sh" --lite
if [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true

cargo build --profile "$PROFILE" --bin spate --manifest-path "$ROOT/Cargo.toml"
if [[ $PROFILE == dev ]]; then BIN="$ROOT/target/debug/spate"; else BIN="$ROOT/target/$PROFILE/spate"; fi

VOTERS="1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293"
mkdir -p "$DIR"
pids=()
stop() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT
for n in 1 2 3; do
    port=$((9092 + (n - 1) * 100))
    "$BIN" serve --node-id "$n" --listen "127.0.0.1:$port" \
        --controller-listen "127.0.0.1:$((port + 1))" --voters "$VOTERS" \
        --data-dir "$DIR/node$n" --shards 1 "$@" >"$DIR/node$n.log" 2>&1 &
    pids+=($!)
    echo "node $n: kafka 127.0.0.1:$port, quorum 127.0.0.1:$((port + 1)), log $DIR/node$n.log"
done
echo "bootstrap with 127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292; Ctrl-C stops the cluster"
wait -n "${pids[@]}" || true
echo "a node exited; stopping the others (see the logs in $DIR)"
