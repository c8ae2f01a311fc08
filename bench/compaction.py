#!/usr/bin/env python3
"""Log compaction figures (a benchmark, not a test): the cleaner's throughput, and what it does
to produce latency while it runs.

1. Fill: one partition of --mib MiB of 1 KiB records (1000-byte values, half random) over keys that are --live-percent of the
   records (1%: each key written about 100 times), written by confluent-kafka in --codec, as a
   delete topic (so nothing cleans while it fills), 128 MiB segments, then one record after
   segment.ms so every segment but the last is sealed.
2. Baseline: acks=all produce latency (1 KiB, one message every 1/--rate s, linger.ms=1) to a
   second topic for --seconds s, per-message latency from produce() to its delivery report.
3. Clean: the first topic is made cleanup.policy=compact live while the same latency load runs
   again; the latency figures are those of the messages sent while the clean job ran (from the
   `log cleaned` line's time and the job's duration), and the clean's figures come from that line:
   MB/s of log cleaned (segment bytes before the clean over the job's time: the key map pass,
   the rewrite and the fsyncs; and the same in uncompressed record bytes) and bytes kept.

Latencies are reported as hdrhistogram-style percentiles (p50, p99, p99.9, max) of the sorted
samples, as bench/compare.py does. Broker and client share this machine's cores: say so with
every figure.

    .venv/bin/python bench/compaction.py [--spate target/release/spate] [--mib 2048]
        [--live-percent 1] [--codec none] [--rate 1000] [--seconds 20] [--json out.json]
"""

import argparse
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
spec = importlib.util.spec_from_file_location("compare", HERE / "compare.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)

CLEANED_RE = re.compile(r"log cleaned.*?bytes_before=(\d+) bytes_after=(\d+).*?records_read=(\d+) "
                        r"records_kept=(\d+).*?elapsed_ms=(\d+)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(spate, data, port, log, extra=()):
    f = open(log, "ab")
    env = dict(os.environ, RUST_LOG="info")
    p = subprocess.Popen([str(spate), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data),
                          "--shards", "1", *extra], stdout=f, stderr=f, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if "broker ready" in Path(log).read_text(errors="replace"):
            return p
        if p.poll() is not None:
            raise SystemExit(f"broker exited: {Path(log).read_text()[-2000:]}")
        time.sleep(0.05)
    raise SystemExit("broker not ready")


def wait(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def fill(boot, topic, mib, live_percent, codec):
    records = mib * 1024
    keys = max(1, records * live_percent // 100)
    p = Producer({"bootstrap.servers": boot, "acks": "all", "linger.ms": 20, "batch.size": 1 << 20,
                  "compression.type": codec, "enable.idempotence": False,
                  "queue.buffering.max.kbytes": 256 * 1024})
    # Half random, half repetitive: lz4 and zstd store such values at about half their size.
    pool = [os.urandom(500) for _ in range(4096)]
    started = time.time()
    for i in range(records):
        v = pool[i % 4096] + i.to_bytes(8, "big") * 62 + b"\0" * 4
        while True:
            try:
                p.produce(topic, key=b"key-%d" % (i % keys), value=v)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(600) == 0
    return {"records": records, "keys": keys, "seconds": round(time.time() - started, 1)}


def paced_load(boot, topic, rate, stop):
    """A paced 1 KiB acks=all load until `stop` is set: [(wall time sent, latency us)] of the
    delivered messages, latency from produce() to the delivery report."""
    p = Producer({"bootstrap.servers": boot, "acks": "all", "linger.ms": 1, "enable.idempotence": False})
    out = []

    def report(err, sent_wall, sent):
        if err is None:
            out.append((sent_wall, (time.perf_counter() - sent) * 1e6))

    value = b"x" * 1024
    step = 1.0 / rate
    start = time.perf_counter()
    n = 0
    while not stop.is_set():
        due = start + n * step
        now = time.perf_counter()
        if now < due:
            p.poll(min(due - now, 0.005))
            continue
        sent, sent_wall = time.perf_counter(), time.time()
        p.produce(topic, value=value,
                  on_delivery=lambda err, _m, w=sent_wall, s=sent: report(err, w, s))
        p.poll(0)
        n += 1
    assert p.flush(60) == 0
    return out


def percentiles(xs, rate):
    xs = sorted(xs)
    if not xs:
        return {"rate": rate, "samples": 0}
    return {"rate": rate, "samples": len(xs), "p50": round(compare.percentile(xs, 50) / 1000, 2),
            "p99": round(compare.percentile(xs, 99) / 1000, 2),
            "p99_9": round(compare.percentile(xs, 99.9) / 1000, 2), "max": round(xs[-1] / 1000, 2)}


def run_load(boot, topic, rate, seconds):
    stop = threading.Event()
    t = threading.Timer(seconds, stop.set)
    t.start()
    return paced_load(boot, topic, rate, stop)


def alter(a, topic, configs):
    fs = a.incremental_alter_configs([ConfigResource(
        ConfigResource.Type.TOPIC, topic,
        incremental_configs=[ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                             for k, v in configs.items()])])
    for f in fs.values():
        f.result(timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spate", default=str(REPO / "target" / "release" / "spate"))
    ap.add_argument("--mib", type=int, default=2048)
    ap.add_argument("--live-percent", type=int, default=1)
    ap.add_argument("--codec", default="none", choices=["none", "gzip", "snappy", "lz4", "zstd"])
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--cleaner-args", default="", help="extra broker flags, e.g. "
                    "'--log-cleaner-io-bytes-per-sec-max 52428800'")
    ap.add_argument("--json")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="spate-compaction-"))
    port = free_port()
    log = root / "broker.log"
    extra = ["--log-cleaner-backoff-ms", "1000", *args.cleaner_args.split()]
    broker = start_broker(args.spate, root / "data", port, log, extra)
    boot = f"127.0.0.1:{port}"
    out = {"mib": args.mib, "live_percent": args.live_percent, "codec": args.codec,
           "broker_flags": ["--shards", "1", *extra], "nproc": os.cpu_count(),
           "note": f"broker (one shard) and clients share this machine's {os.cpu_count()} cores"}
    try:
        a = AdminClient({"bootstrap.servers": boot})
        for t, cfg in [("cmp", {"segment.bytes": str(128 << 20), "segment.ms": "3000"}), ("lat", {})]:
            a.create_topics([NewTopic(t, 1, 1, config=cfg)])[t].result(timeout=30)
        out["fill"] = fill(boot, "cmp", args.mib, args.live_percent, args.codec)
        time.sleep(3.5)  # segment.ms: the next record rolls the active segment
        p = Producer({"bootstrap.servers": boot, "acks": "all"})
        p.produce("cmp", key=b"roll", value=b"roll")
        assert p.flush(30) == 0
        out["log_bytes"] = sum(f.stat().st_size for f in (root / "data" / "cmp-0").glob("*.log"))
        base = run_load(boot, "lat", args.rate, args.seconds)
        base = [lat for _, lat in base[len(base) // 10:]]  # the first tenth warms up
        out["baseline_latency_ms"] = percentiles(base, args.rate)
        # The same load again, from before the config change to after the swap; the samples
        # sent while the clean job ran are the ones that count.
        stop = threading.Event()
        result = {}
        loader = threading.Thread(target=lambda: result.update(samples=paced_load(boot, "lat", args.rate, stop)))
        loader.start()
        time.sleep(2)
        alter(a, "cmp", {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"})
        m = wait(lambda: CLEANED_RE.search(log.read_text(errors="replace")), 3600, "the clean")
        time.sleep(1)
        stop.set()
        loader.join()
        before, after, read, kept, ms = (int(g) for g in m.groups())
        line = log.read_text(errors="replace")[:m.end()].splitlines()[-1]
        ended = datetime.strptime(line.split()[0][:26], "%Y-%m-%dT%H:%M:%S.%f").replace(
            tzinfo=timezone.utc).timestamp()
        began = ended - ms / 1000
        during = [lat for sent, lat in result["samples"] if began <= sent <= ended]
        out["during_clean_latency_ms"] = percentiles(during, args.rate)
        out["clean"] = {"segment_bytes_before": before, "segment_bytes_after": after,
                        "records_read": read, "records_kept": kept, "job_seconds": ms / 1000,
                        "mb_per_s": round(before / 1e6 / max(ms / 1000, 1e-3), 1),
                        "record_mb_per_s": round(read * 1000 / 1e6 / max(ms / 1000, 1e-3), 1)}
    finally:
        broker.kill()
        broker.wait()
        shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
