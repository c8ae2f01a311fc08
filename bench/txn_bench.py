#!/usr/bin/env python3
"""Transactions per second and commit latency at 10 and 100 records per transaction (a
benchmark, not a test), with confluent-kafka against one broker (release build, --shards 1).

For each size, one transactional producer runs begin/produce N x 1 KiB/commit for a fixed
time; the commit latency (commit_transaction's wall time) is recorded per transaction.
Broker and client share this machine's cores. `--brokers 1,3` runs one broker, then a cluster
of three (RF 3, min.insync.replicas 2: every marker waits for the ISR) in the same run.

    bench/txn_bench.py [--spate target/release/spate] [--seconds 10] [--brokers 1,3]
"""

import argparse
import os
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


def start_brokers(spate, root, n):
    """`n` brokers on free ports (`--shards 1`); a cluster of `n` with every node a voter when
    n > 1. Returns (processes, bootstrap)."""
    ports = [free_port() for _ in range(n)]
    quorum = [free_port() for _ in range(n)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{quorum[i]}" for i in range(n))
    procs = []
    for i in range(n):
        cmd = [spate, "serve", "--listen", f"127.0.0.1:{ports[i]}", "--data-dir",
               str(root / f"data{n}-{i}"), "--shards", "1"]
        if n > 1:
            cmd += ["--node-id", str(i + 1), "--controller-listen", f"127.0.0.1:{quorum[i]}",
                    "--voters", voters]
        log = open(root / f"broker{n}-{i}.log", "wb")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=log))
    return procs, ",".join(f"127.0.0.1:{p}" for p in ports)


def run(boot, brokers, seconds):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    deadline = time.monotonic() + 60
    while True:
        try:
            md = AdminClient({"bootstrap.servers": boot}).list_topics(timeout=2)
            if len(md.brokers) == brokers:
                break
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("brokers did not start")
        time.sleep(0.2)
    a = AdminClient({"bootstrap.servers": boot})
    config = {"min.insync.replicas": "2"} if brokers > 1 else {}
    a.create_topics([NewTopic("txn-bench", 4, brokers, config=config)])["txn-bench"].result(timeout=30)
    payload = b"x" * 1024
    rows = []
    for size in (10, 100):
        p = Producer({"bootstrap.servers": boot, "transactional.id": f"bench-{size}",
                      "linger.ms": 1})
        p.init_transactions(60)
        lat = []
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            p.begin_transaction()
            for i in range(size):
                p.produce("txn-bench", payload, partition=i % 4)
            t = time.perf_counter()
            p.commit_transaction(30)
            lat.append((time.perf_counter() - t) * 1000)
            n += 1
        row = {"brokers": brokers, "records_per_txn": size, "transactions": n,
               "txn_per_s": round(n / seconds, 1),
               "commit_p50_ms": round(statistics.median(lat), 2),
               "commit_p99_ms": round(pct(lat, 99), 2), "commit_max_ms": round(max(lat), 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spate", default="target/release/spate")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--brokers", default="1",
                    help="comma-separated sizes to run in turn, e.g. 1,3 (3: a cluster, RF 3, "
                         "min.insync.replicas 2)")
    ap.add_argument("--json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="spate-txn-"))
    results = []
    try:
        for n in [int(x) for x in args.brokers.split(",")]:
            procs, boot = start_brokers(args.spate, root, n)
            try:
                results += run(boot, n, args.seconds)
            finally:
                for b in procs:
                    b.send_signal(signal.SIGKILL)
                    b.wait()
    finally:
        if not os.environ.get("KEEP"):
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
