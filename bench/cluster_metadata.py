#!/usr/bin/env python3
"""Metadata request latency with 1,000 and 10,000 partitions in a 3-node cluster (a benchmark).

Starts three nodes (voters and brokers, --shards 1, release build), creates topics of 100
partitions each until the cluster holds 1,000 partitions, measures an all-topics Metadata
request (v1, raw over one connection, so the client adds nothing) N times against one broker,
then grows to 10,000 partitions and measures again. Prints p50, p99 and max in ms and the
response size. Broker and client share this machine's cores.

    bench/cluster_metadata.py [--spate target/release/spate] [--requests 200]
"""

import argparse
import json
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metadata_all(sock):
    """One Metadata v1 request for all topics (null array); the response size in bytes."""
    body = struct.pack(">i", -1)
    header = struct.pack(">hhi", 3, 1, 1) + struct.pack(">h", 5) + b"bench"
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    buf = b""
    while len(buf) < 4:
        buf += sock.recv(65536)
    size = struct.unpack(">i", buf[:4])[0]
    while len(buf) < 4 + size:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise SystemExit("connection closed")
        buf += chunk
    return size


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spate", default="target/release/spate")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--json")
    args = ap.parse_args()
    from confluent_kafka.admin import AdminClient, NewTopic
    root = Path(tempfile.mkdtemp(prefix="spate-md-"))
    kafka = [free_port() for _ in range(3)]
    quorum = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{quorum[i]}" for i in range(3))
    procs = []
    results = []
    try:
        for i in range(3):
            log = open(root / f"node{i + 1}.log", "wb")
            procs.append(subprocess.Popen(
                [args.spate, "serve", "--node-id", str(i + 1), "--listen", f"127.0.0.1:{kafka[i]}",
                 "--controller-listen", f"127.0.0.1:{quorum[i]}", "--voters", voters,
                 "--data-dir", str(root / f"node{i + 1}"), "--shards", "1"], stdout=log, stderr=log))
        boot = ",".join(f"127.0.0.1:{p}" for p in kafka)
        a = AdminClient({"bootstrap.servers": boot})
        deadline = time.monotonic() + 60
        while True:
            try:
                if len(a.list_topics(timeout=2).brokers) == 3:
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("cluster did not form")
            time.sleep(0.1)
        made = 0
        for target in (1_000, 10_000):
            t0 = time.monotonic()
            while made < target:
                names = [f"md-{made // 100 + k}" for k in range(min(10, (target - made) // 100))]
                fs = a.create_topics([NewTopic(n, 100, 1) for n in names], request_timeout=120,
                                     operation_timeout=120)
                for f in fs.values():
                    f.result(timeout=180)
                made += 100 * len(names)
            created_s = time.monotonic() - t0
            # Every broker has applied the last creation once it lists all partitions.
            with socket.create_connection(("127.0.0.1", kafka[0])) as s:
                while True:
                    size = metadata_all(s)
                    md = a.list_topics(timeout=30)
                    if sum(len(t.partitions) for n, t in md.topics.items() if n.startswith("md-")) >= target:
                        break
                    time.sleep(0.2)
                times = []
                for _ in range(args.requests):
                    t = time.perf_counter()
                    size = metadata_all(s)
                    times.append((time.perf_counter() - t) * 1000)
            row = {"partitions": target, "requests": args.requests, "response_bytes": size,
                   "p50_ms": round(pct(times, 50), 3), "p99_ms": round(pct(times, 99), 3),
                   "max_ms": round(max(times), 3), "create_seconds": round(created_s, 1)}
            print(json.dumps(row), flush=True)
            results.append(row)
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
