#!/usr/bin/env python3
"""What a topic's compression.type costs the broker (a benchmark, not a test).

One broker (release build, --shards 1). Each run produces --messages messages of --size bytes
of compressible text with librdkafka's rdkafka_performance (bench/compare.py builds it into
bench/.cache/), acks=all, sent uncompressed (or --sent-as CODEC), into a fresh topic of 4
partitions whose compression.type is one of --codecs. `producer` stores the batches as sent
(zero-copy); the others decompress and compress every batch on the way in
(src/protocol/codec.rs). Rounds alternate the codecs' order, so drift on a shared machine hits
all. Per run: msgs/s, the broker's CPU seconds (utime + stime of /proc/PID/stat) per GiB
produced, and the bytes on disk per byte produced; then the medians, and each codec's ratio to
`producer`.

    bench/recompression.py [--spate target/release/spate] [--rounds 5] [--messages 1000000]
        [--size 200] [--codecs producer,lz4,zstd,snappy,gzip] [--sent-as none]
        [--json bench/results/recompression-<date>.json]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RDK = REPO / "bench" / ".cache" / "rdkafka_performance"
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


def disk_bytes(data_dir, topic):
    return sum(f.stat().st_size for d in data_dir.glob(f"{topic}-*") for f in d.glob("*.log"))


def one_run(boot, broker, data_dir, topic, codec, args):
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": boot})
    a.create_topics([NewTopic(topic, 4, 1, config={"compression.type": codec})])[topic].result(
        timeout=30)
    cmd = [str(args.rdk), "-P", "-t", topic, "-b", boot, "-s", str(args.size), "-c",
           str(args.messages), "-a", "-1", "-z", args.sent_as, "-X", "linger.ms=5"]
    cpu0 = cpu_seconds(broker.pid)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    cpu = cpu_seconds(broker.pid) - cpu0
    out = r.stdout + r.stderr
    m = re.findall(r"% (\d+) messages produced \((\d+) bytes\), (\d+) delivered \(offset -?\d+, "
                   r"(\d+) failed\) in (\d+)ms", out)
    if r.returncode != 0 or not m:
        raise SystemExit(f"rdkafka_performance failed ({r.returncode}): {out[-1500:]}")
    _, produced_bytes, delivered, failed, ms = map(int, m[-1])
    if failed or delivered != args.messages:
        raise SystemExit(f"{failed} failed, {delivered} delivered of {args.messages}")
    stored = disk_bytes(data_dir, topic)
    a.delete_topics([topic])[topic].result(timeout=30)
    return {"codec": codec, "msgs_per_s": round(delivered / (ms / 1000)),
            "mb_per_s": round(produced_bytes / (ms / 1000) / 1e6, 1),
            "broker_cpu_s": round(cpu, 3),
            "broker_cpu_s_per_gib": round(cpu / (produced_bytes / GIB), 2),
            "stored_per_produced": round(stored / produced_bytes, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spate", default=str(REPO / "target/release/spate"))
    ap.add_argument("--rdk", default=str(RDK))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--codecs", default="producer,lz4,zstd,snappy,gzip")
    ap.add_argument("--sent-as", default="none", help="the producer's codec (rdkafka -z)")
    ap.add_argument("--json")
    args = ap.parse_args()
    codecs = args.codecs.split(",")
    if not Path(args.rdk).exists():
        raise SystemExit(f"no {args.rdk}: bench/compare.py builds it (or pass --rdk)")
    root = Path(tempfile.mkdtemp(prefix="spate-recompress-"))
    port = free_port()
    boot = f"127.0.0.1:{port}"
    log = open(root / "broker.log", "wb")
    data_dir = root / "data"
    broker = subprocess.Popen([args.spate, "serve", "--listen", boot, "--data-dir",
                               str(data_dir), "--shards", "1"], stdout=log, stderr=log)
    result = {"args": vars(args), "date": time.strftime("%Y-%m-%d %H:%M"),
              "nproc": os.cpu_count(), "loadavg_start": os.getloadavg(), "runs": []}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("broker did not start")
                time.sleep(0.05)
        one_run(boot, broker, data_dir, "warm", "producer", args)
        for i in range(args.rounds):
            order = codecs if i % 2 == 0 else list(reversed(codecs))
            for codec in order:
                r = one_run(boot, broker, data_dir, f"rc-{i}-{codec}", codec, args)
                r["round"] = i
                print(json.dumps(r), file=sys.stderr, flush=True)
                result["runs"].append(r)
        median = {}
        for codec in codecs:
            rs = [r for r in result["runs"] if r["codec"] == codec]
            median[codec] = {k: statistics.median(r[k] for r in rs)
                             for k in ("msgs_per_s", "mb_per_s", "broker_cpu_s_per_gib",
                                       "stored_per_produced")}
        base = median[codecs[0]]
        for codec in codecs[1:]:
            median[codec]["throughput_ratio"] = round(
                median[codec]["msgs_per_s"] / base["msgs_per_s"], 3)
            median[codec]["cpu_per_gib_ratio"] = round(
                median[codec]["broker_cpu_s_per_gib"] / base["broker_cpu_s_per_gib"], 2)
        result["median"] = median
        result["loadavg_end"] = os.getloadavg()
        print(json.dumps(median, indent=1))
    finally:
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
