#!/usr/bin/env python3
"""Transactions per second and commit latency at 10 and 100 records per transaction (a
benchmark, not a test), with confluent-kafka against one broker (release build, --shards 1).

For each size, one transactional producer runs begin/produce N x 1 KiB/commit for a fixed
time; the commit latency (commit_transaction's wall time) is recorded per transaction.
Broker and client share this machine's cores.

    bench/txn_bench.py [--spate target/release/spate] [--seconds 10]
"""

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spate", default="target/release/spate")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    root = Path(tempfile.mkdtemp(prefix="spate-txn-"))
    port = free_port()
    log = open(root / "broker.log", "wb")
    broker = subprocess.Popen([args.spate, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir",
                               str(root / "data"), "--shards", "1"], stdout=log, stderr=log)
    boot = f"127.0.0.1:{port}"
    results = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                AdminClient({"bootstrap.servers": boot}).list_topics(timeout=1)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise SystemExit("broker did not start")
                time.sleep(0.1)
        a = AdminClient({"bootstrap.servers": boot})
        a.create_topics([NewTopic("txn-bench", 4, 1)])["txn-bench"].result(timeout=30)
        payload = b"x" * 1024
        for size in (10, 100):
            p = Producer({"bootstrap.servers": boot, "transactional.id": f"bench-{size}",
                          "linger.ms": 1})
            p.init_transactions(30)
            lat = []
            end = time.monotonic() + args.seconds
            n = 0
            while time.monotonic() < end:
                p.begin_transaction()
                for i in range(size):
                    p.produce("txn-bench", payload, partition=i % 4)
                t = time.perf_counter()
                p.commit_transaction(30)
                lat.append((time.perf_counter() - t) * 1000)
                n += 1
            row = {"records_per_txn": size, "transactions": n,
                   "txn_per_s": round(n / args.seconds, 1),
                   "commit_p50_ms": round(statistics.median(lat), 2),
                   "commit_p99_ms": round(pct(lat, 99), 2), "commit_max_ms": round(max(lat), 2)}
            print(json.dumps(row), flush=True)
            results.append(row)
    finally:
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
