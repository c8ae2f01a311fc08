#!/usr/bin/env python3
"""Storage benchmark (not a test): acks=all throughput with group commit against the disk's raw
fdatasync'd sequential write, and crash-recovery time of a multi-GiB log after kill -9.

    .venv/bin/python bench/storage_bench.py [--gib 2] [--messages 300000] [--out bench/results]

Needs a release build (cargo build --release) and the test venv (scripts/bootstrap.sh). The
broker, this client (librdkafka through confluent-kafka) and dd share the machine: every figure
says so. Results go to bench/results/storage-<date>.json and .md.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("SPATE_BIN", REPO / "target" / "release" / "spate"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(data, port, log, extra=()):
    f = open(log, "ab")
    p = subprocess.Popen([str(BIN), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data),
                          *extra], stdout=f, stderr=f)
    deadline = time.time() + 600
    while time.time() < deadline:
        if "broker ready" in Path(log).read_text(errors="replace"):
            return p
        if p.poll() is not None:
            raise SystemExit(f"broker exited: {Path(log).read_text()[-2000:]}")
        time.sleep(0.05)
    raise SystemExit("broker not ready")


def dd(path, bs, count, flags):
    out = subprocess.run(["dd", "if=/dev/zero", f"of={path}", f"bs={bs}", f"count={count}", *flags],
                         capture_output=True, text=True, check=True).stderr
    os.remove(path)
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", out)
    return int(m.group(1)) / float(m.group(2)) / 1e6


def produce(bootstrap, topic, n, size, acks, partitions):
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5, "batch.size": 1 << 20,
                  "queue.buffering.max.kbytes": 1 << 20, "enable.idempotence": False,
                  "message.max.bytes": 1 << 20})
    payload = os.urandom(size)
    failed = []
    start = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, payload, partition=i % partitions,
                          on_delivery=lambda e, m: failed.append(e) if e else None)
                break
            except BufferError:
                p.poll(0.001)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    secs = time.perf_counter() - start
    assert not failed, failed[:3]
    return n * size / secs / 1e6, n / secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=2.0, help="log size for the recovery benchmark")
    ap.add_argument("--messages", type=int, default=300_000, help="1 KiB messages per throughput run")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="spate-bench-", dir=REPO))  # same disk as the repo
    results = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                           "note": "broker, client and dd share the machine"},
               "date": datetime.now(timezone.utc).isoformat()}
    try:
        # Raw limits of this disk.
        results["raw_fdatasync_seq_write_MBps"] = dd(work / "raw", "1M", 1024, ["conv=fdatasync"])
        results["raw_dsync_1MiB_writes_MBps"] = dd(work / "raw", "1M", 512, ["oflag=dsync"])
        # Produce throughput, 1 KiB messages, 4 partitions on 2 shards.
        port = free_port()
        b = start_broker(work / "data", port, work / "broker-1.log")
        bs = f"127.0.0.1:{port}"
        adm = AdminClient({"bootstrap.servers": bs})
        adm.create_topics([NewTopic("tp", 4, 1)])["tp"].result()
        for acks in ("all", "1"):
            mbps, mps = produce(bs, "tp", args.messages, 1024, acks, 4)
            results[f"produce_acks_{acks}_MBps"] = mbps
            results[f"produce_acks_{acks}_msgs_per_s"] = mps
            # 16 KiB messages: the same bytes with 1/16 of the client's per-message work.
            mbps, mps = produce(bs, "tp", args.messages // 16, 16384, acks, 4)
            results[f"produce_16k_acks_{acks}_MBps"] = mbps
        results["acks_all_vs_raw_fdatasync"] = results["produce_acks_all_MBps"] / results["raw_fdatasync_seq_write_MBps"]
        results["acks_all_16k_vs_raw_fdatasync"] = results["produce_16k_acks_all_MBps"] / results["raw_fdatasync_seq_write_MBps"]
        # Recovery: fill one partition with --gib GiB, kill -9, time the recovery scan.
        adm.create_topics([NewTopic("big", 1, 1)])["big"].result()
        n = int(args.gib * (1 << 30) / 16384)
        produce(bs, "big", n, 16384, "1", 1)
        b.send_signal(signal.SIGKILL)
        b.wait()
        t0 = time.perf_counter()
        log = work / "broker-2.log"
        b = start_broker(work / "data", port, log)
        results["restart_to_ready_s_after_kill9"] = time.perf_counter() - t0
        m = re.findall(r"recovery scan done shard=\d+ records=(\d+) bytes=(\d+) truncated_bytes=\d+ seconds=([\d.e-]+)",
                       log.read_text())
        results["recovery"] = [{"records": int(r), "bytes": int(by), "seconds": float(s)} for r, by, s in m[-2:]]
        results["log_bytes"] = n * 16384
        b.send_signal(signal.SIGTERM)
        b.wait(timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    (out / f"storage-{stamp}.json").write_text(json.dumps(results, indent=2))
    rec = results["recovery"]
    rec_str = "; ".join("%d, %d, %.2f" % (r["records"], r["bytes"], r["seconds"]) for r in rec)
    md = [f"# Storage benchmark {results['date']}", "",
          f"{results['machine']['cpus']} CPUs, kernel {results['machine']['kernel']}; "
          "broker (2 shards), client (confluent-kafka/librdkafka) and dd share the machine.", "",
          "| what | figure |", "|---|---|",
          f"| raw sequential write + fdatasync (dd 1 GiB conv=fdatasync) | {results['raw_fdatasync_seq_write_MBps']:.0f} MB/s |",
          f"| raw 1 MiB writes each O_DSYNC (dd oflag=dsync) | {results['raw_dsync_1MiB_writes_MBps']:.0f} MB/s |",
          f"| produce acks=all, 1 KiB, 4 partitions (group commit) | {results['produce_acks_all_MBps']:.0f} MB/s, {results['produce_acks_all_msgs_per_s']:.0f} msg/s |",
          f"| produce acks=1, 1 KiB, 4 partitions | {results['produce_acks_1_MBps']:.0f} MB/s, {results['produce_acks_1_msgs_per_s']:.0f} msg/s |",
          f"| produce acks=all, 16 KiB, 4 partitions | {results['produce_16k_acks_all_MBps']:.0f} MB/s |",
          f"| produce acks=1, 16 KiB, 4 partitions | {results['produce_16k_acks_1_MBps']:.0f} MB/s |",
          f"| acks=all / raw fdatasync'd write (1 KiB; 16 KiB) | {results['acks_all_vs_raw_fdatasync']:.2f}; {results['acks_all_16k_vs_raw_fdatasync']:.2f} |",
          f"| restart after kill -9 of a {results['log_bytes'] / (1 << 30):.1f} GiB log, to ready | {results['restart_to_ready_s_after_kill9']:.2f} s |",
          f"| recovery scans (per shard: records, bytes, seconds) | {rec_str} |"]
    (out / f"storage-{stamp}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
