#!/usr/bin/env python3
"""Produce throughput of a cluster with 1, 2 and 3 brokers (a benchmark, not a test).

For each size N, starts N nodes (every node a voter and a broker, --shards 1, release build),
creates a 12-partition topic with replication factor 1 (its leaders spread over the N
brokers), and measures produce acks=1 of 1 KiB messages with:

  - rdkafka_performance -P (librdkafka's own benchmark client, built on demand as in
    compare.py), 500,000 messages;
  - spate-bench with the throughput-1k workload (shortened windows).

Also the brokers' CPU seconds per GiB produced (summed over the N processes). Broker and load
generator share this machine's cores, so more brokers on the same 2 cores is not more
hardware: the figures show the cost of spreading, not scaling (that needs more machines).

    bench/cluster_throughput.py [--spate target/release/spate] [--bench target/release/spate-bench]
"""

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("compare", HERE / "compare.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)

MIB = 1 << 20


def cpu_seconds(pid):
    return compare.cpu_seconds(pid)


def start_cluster(spate, n, root):
    kafka = [compare.free_port() for _ in range(n)]
    quorum = [compare.free_port() for _ in range(n)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{quorum[i]}" for i in range(n))
    procs = []
    for i in range(n):
        log = open(root / f"node{i + 1}.log", "wb")
        procs.append(subprocess.Popen(
            [spate, "serve", "--node-id", str(i + 1), "--listen", f"127.0.0.1:{kafka[i]}",
             "--controller-listen", f"127.0.0.1:{quorum[i]}", "--voters", voters,
             "--data-dir", str(root / f"node{i + 1}"), "--shards", "1"], stdout=log, stderr=log))
    boot = ",".join(f"127.0.0.1:{p}" for p in kafka)
    from confluent_kafka.admin import AdminClient
    deadline = time.monotonic() + 60
    while True:
        try:
            md = AdminClient({"bootstrap.servers": boot}).list_topics(timeout=2)
            if len(md.brokers) == n and md.controller_id > 0:
                break
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{n}-node cluster did not form")
        time.sleep(0.1)
    return procs, boot


def create_topic(boot, name, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": boot})
    a.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)
    deadline = time.monotonic() + 30
    while True:
        md = a.list_topics(timeout=5)
        t = md.topics.get(name)
        if t and len(t.partitions) == partitions and all(p.leader >= 0 for p in t.partitions.values()):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"topic {name} not ready")
        time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spate", default=str(compare.REPO / "target/release/spate"))
    ap.add_argument("--bench", default=str(compare.REPO / "target/release/spate-bench"))
    ap.add_argument("--sizes", default="1,2,3")
    ap.add_argument("--messages", type=int, default=500_000)
    ap.add_argument("--json")
    args = ap.parse_args()
    rdk_bin = compare.rdkafka_performance()
    results = []
    for n in [int(x) for x in args.sizes.split(",")]:
        root = Path(tempfile.mkdtemp(prefix=f"spate-cluster{n}-"))
        procs, boot = start_cluster(args.spate, n, root)
        row = {"brokers": n}
        try:
            create_topic(boot, "tp-rdk", 12)
            cpu0 = sum(cpu_seconds(p.pid) for p in procs)
            out = compare.rdk(rdk_bin, ["-P", "-t", "tp-rdk", "-b", boot, "-s", "1024", "-c",
                                        str(args.messages), "-a", "1", "-X", "enable.idempotence=false"], 600)
            r = compare.rdk_produce_summary(out, 1024)
            cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
            gib = r["delivered"] * 1024 / (1 << 30)
            row["rdkafka_performance_mib_s"] = round(r["mb_per_sec"], 1)
            row["rdkafka_broker_cpu_s_per_gib"] = round(cpu / gib, 2) if gib else None
            wl = root / "throughput-1k.toml"
            text = (HERE / "workloads" / "throughput-1k.toml").read_text()
            text = "\n".join(l for l in text.splitlines()
                             if not l.startswith(("warmup_seconds", "duration_seconds")))
            wl.write_text(text + "\nwarmup_seconds = 2\nduration_seconds = 10\n")
            out_dir = root / "bench"
            out_dir.mkdir()
            cpu0 = sum(cpu_seconds(p.pid) for p in procs)
            p = subprocess.run([args.bench, "--bootstrap-server", boot.split(",")[0], "--workload", str(wl),
                                "--out-dir", str(out_dir), "--label", f"cluster{n}"],
                               capture_output=True, text=True, timeout=300)
            cpu = sum(cpu_seconds(p2.pid) for p2 in procs) - cpu0
            reports = sorted(out_dir.glob("cluster*.json"))
            if p.returncode == 0 and reports:
                j = json.loads(reports[-1].read_text())
                pub = j["publish"]
                row["spate_bench_mib_s"] = round(pub["throughput"]["mb_per_sec"], 1)
                row["spate_bench_p99_ms"] = (pub.get("latency_ms") or {}).get("p99")
                # Whole run (warm-up and drain included), as the broker's CPU was measured.
                totals = j.get("totals") or {}
                size = (j.get("workload") or {}).get("message_size", 1024)
                gib = (totals.get("produced") or 0) * size / (1 << 30)
                row["spate_bench_broker_cpu_s_per_gib"] = round(cpu / gib, 2) if gib else None
            else:
                row["spate_bench_error"] = (p.stderr or "")[-300:]
        finally:
            for p in procs:
                p.send_signal(signal.SIGKILL)
                p.wait()
            shutil.rmtree(root, ignore_errors=True)
        print(json.dumps(row), flush=True)
        results.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
