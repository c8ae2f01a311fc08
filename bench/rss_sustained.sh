#!/usr/bin/env bash
# Sustained-load memory check (a benchmark, not a test): runs the latency-50mbps workload for
# DURATION seconds (default 600) against a release broker and samples the broker's RSS every
# 10 s. Reports the RSS after warm-up, at the end, and the spread, to bench/results/.
# Retention (256 MiB per partition, 64 MiB segments: about 5 GiB over the 16 partitions) is
# reached after about 100 s at 50 MB/s, so the log stops growing; the first 120 s are warm-up.
#
#   bench/rss_sustained.sh [DURATION_SECONDS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${1:-600}"
cargo build --release --bins >/dev/null
STAMP="$(date -u +%Y%m%d-%H%M%S)"
WORK="$(mktemp -d)"
trap 'kill "$BROKER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$((20000 + RANDOM % 20000))
target/release/spate serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --shards 2 \
    --retention-bytes 268435456 --segment-bytes 67108864 --retention-check-ms 5000 \
    2>"$WORK/broker.log" &
BROKER=$!
for _ in $(seq 1 200); do grep -q "broker ready" "$WORK/broker.log" && break; sleep 0.1; done
sed -e "s/^duration_seconds = .*/duration_seconds = $DURATION/" -e 's/^name = .*/name = "rss-sustained"/' \
    bench/workloads/latency-50mbps.toml >"$WORK/workload.toml"
OUT="bench/results/rss-$STAMP.csv"
echo "seconds,rss_kib" >"$OUT"
(
    start=$(date +%s)
    while kill -0 "$BROKER" 2>/dev/null; do
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$BROKER/status" 2>/dev/null || echo 0)
        echo "$(( $(date +%s) - start )),$rss" >>"$OUT"
        sleep 10
    done
) &
SAMPLER=$!
target/release/spate-bench --bootstrap-server "127.0.0.1:$PORT" --workload "$WORK/workload.toml" \
    --out-dir bench/results --label "rss-sustained-$STAMP" >"$WORK/bench.txt" 2>/dev/null
kill "$SAMPLER" 2>/dev/null || true
cat "$WORK/bench.txt"
python3 - "$OUT" <<'PY'
import csv, sys
rows = [(int(r["seconds"]), int(r["rss_kib"])) for r in csv.DictReader(open(sys.argv[1])) if int(r["rss_kib"]) > 0]
after_warmup = [kib for s, kib in rows if s >= 120] or [kib for _, kib in rows]
lo, hi = min(after_warmup), max(after_warmup)
print(f"RSS after the first 2 minutes: min {lo/1024:.1f} MiB, max {hi/1024:.1f} MiB, "
      f"first {after_warmup[0]/1024:.1f} MiB, last {after_warmup[-1]/1024:.1f} MiB, "
      f"spread {(hi - lo) / lo * 100:.1f}% ({len(rows)} samples)")
PY
