#!/usr/bin/env python3
"""What idempotence costs the broker: plain against idempotent produce, alternating, on one
broker (a benchmark, not a test).

One broker (release build, --shards 1) serves every run. Each run produces --messages
messages of --size bytes with librdkafka's rdkafka_performance (bench/compare.py builds it
into bench/.cache/) to a fresh topic of 4 partitions, acks=all, with
max.in.flight.requests.per.connection=5 on both sides (idempotence needs at most 5, so the
plain run gets the same, and with it the same batching); the only difference is
enable.idempotence. Pairs alternate their order (plain first, then idempotent first, ...), so
drift on a shared machine hits both. Per run: the client's msgs/s and the broker's CPU seconds
(utime + stime from /proc/PID/stat) per million messages, the client's CPU seconds
(getrusage of children) per million messages, and from the broker's metrics the partition
appends (one per batch here), so messages per batch; per pair: idempotent / plain of both;
then the medians. Each topic is deleted after its run.

With --client raw, the client is this script: pre-made ProduceRequest v3 frames with one batch
of --raw-records records per partition, --window in flight over one connection, the same
bytes on both sides but the producer id, epoch and sequence (plain: -1), so the broker gets
the same requests and only its bookkeeping differs. (librdkafka's idempotent producer shapes
and paces its requests differently from its plain one, and costs more client CPU.)

    bench/idempotence_cost.py [--spate target/release/spate] [--pairs 7] [--messages 3000000]
        [--size 100] [--batch-messages N] [--client raw [--acks 1|all] [--raw-records 10]]
        [--json bench/results/idempotence-<date>.json]
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import struct
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RDK = REPO / "bench" / ".cache" / "rdkafka_performance"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


def counters(metrics_port):
    """(Produce requests, partition appends, log writes, flushes) from the broker's metrics."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    req = app = wr = fl = 0
    for line in text.decode().splitlines():
        if line.startswith("spate_requests_total{") and 'api="Produce"' in line:
            req += int(float(line.split()[-1]))
        elif line.startswith("spate_produce_appends_total"):
            app += int(float(line.split()[-1]))
        elif line.startswith("spate_log_writes_total"):
            wr += int(float(line.split()[-1]))
        elif line.startswith("spate_flushes_total"):
            fl += int(float(line.split()[-1]))
    return req, app, wr, fl


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _string(x):
    b = x.encode()
    return struct.pack(">h", len(b)) + b


class RawBatches:
    """Single-record-batch bytes for the raw client: one template batch of `records` records
    of `size` bytes, with (idempotent) its base sequence patched in and its CRC-32C updated
    by linearity (CRC of the template XOR the CRC-difference of each flipped sequence bit), so
    no batch is built or checksummed in Python per request."""

    SEQ_AT = 53  # base sequence's offset in a v2 batch; the CRC at 17 covers [21:]

    def __init__(self, records, size, idempotent, producer_id):
        from kafka.record.default_records import DefaultRecordBatchBuilder
        from kafka.record.util import calc_crc32c
        b = DefaultRecordBatchBuilder(
            magic=2, compression_type=0, is_transactional=False,
            producer_id=producer_id if idempotent else -1, producer_epoch=0 if idempotent else -1,
            base_sequence=0 if idempotent else -1, batch_size=1 << 22)
        for i in range(records):
            b.append(i, None, None, b"x" * size, [])
        self.template = bytes(b.build())
        self.idempotent = idempotent
        body = self.template[21:]
        zero = calc_crc32c(bytes(len(body)))
        at = self.SEQ_AT - 21
        self.base_crc = calc_crc32c(body)
        self.bit_crc = []
        for bit in range(32):
            d = bytearray(len(body))
            d[at:at + 4] = struct.pack(">I", 1 << bit)
            self.bit_crc.append(calc_crc32c(bytes(d)) ^ zero)

    def at(self, seq):
        if not self.idempotent:
            # A copy of its own, as each idempotent batch is: the same memory for the client
            # to walk on both sides.
            return bytes(bytearray(self.template))
        crc = self.base_crc
        for bit in range(32):  # the template's sequence is 0, so the flipped bits are seq's
            if seq >> bit & 1:
                crc ^= self.bit_crc[bit]
        t = bytearray(self.template)
        t[17:21] = struct.pack(">I", crc)
        t[self.SEQ_AT:self.SEQ_AT + 4] = struct.pack(">i", seq)
        return bytes(t)


def raw_batches(idempotent, args, requests):
    """Every request's batch, made before the clock starts, so both sides' clients do the same
    work while it runs."""
    batches = RawBatches(args.raw_records, args.size, idempotent, 4242)
    return [batches.at(corr * args.raw_records) for corr in range(requests)]


def raw_run(port, topic, idempotent, args, shaped):
    """Sends ProduceRequest v3 frames, each with one batch of args.raw_records records on every
    partition, pipelined `args.window` deep over one connection: the same bytes for plain and
    idempotent but the producer fields. Returns (records written, client CPU seconds, wall ms)."""
    requests = len(shaped)
    acks = -1 if args.acks == "all" else int(args.acks)
    head = struct.pack(">hhi", -1, acks, 30000) + struct.pack(">i", 1) + _string(topic) + \
        struct.pack(">i", args.partitions)

    def req(corr):
        bt = shaped[corr]
        part = b"".join(struct.pack(">ii", p, len(bt)) + bt for p in range(args.partitions))
        msg = struct.pack(">hhi", 0, 3, corr) + _string("idem-raw") + head + part
        return struct.pack(">i", len(msg)) + msg

    cpu0 = time.process_time()
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent = 0
        buf = b""
        done = 0
        while sent < min(args.window, requests):
            s.sendall(req(sent))
            sent += 1
        while done < requests:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise SystemExit("connection closed")
            buf += chunk
            while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">i", buf[:4])[0]:
                size = struct.unpack(">i", buf[:4])[0]
                frame, buf = buf[4:4 + size], buf[4 + size:]
                pos = 8 + 2 + len(topic.encode()) + 4
                for _ in range(args.partitions):
                    err = struct.unpack(">h", frame[pos + 4:pos + 6])[0]
                    if err:
                        raise SystemExit(f"produce error {err} (idempotent={idempotent})")
                    pos += 22
                done += 1
                if sent < requests:
                    s.sendall(req(sent))
                    sent += 1
    return (requests * args.partitions * args.raw_records, time.process_time() - cpu0,
            (time.monotonic() - t0) * 1000)


def one_run(boot, broker, topic, idempotent, args):
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": boot})
    a.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(timeout=30)
    if args.client == "raw":
        per_request = args.raw_records * args.partitions
        requests = args.messages // per_request
        shaped = raw_batches(idempotent, args, requests)
        c0 = counters(args.metrics_port)
        cpu0 = cpu_seconds(broker.pid)
        delivered, client, ms = raw_run(int(boot.rsplit(":", 1)[1]), topic, idempotent, args,
                                        shaped)
        cpu = cpu_seconds(broker.pid) - cpu0
        req, app, wr, fl = (b - a for a, b in zip(c0, counters(args.metrics_port)))
        a.delete_topics([topic])[topic].result(timeout=30)
        return result_row(idempotent, delivered, ms, cpu, client, req, app, wr, fl)
    cmd = [str(args.rdk), "-P", "-t", topic, "-b", boot, "-s", str(args.size), "-c",
           str(args.messages), "-a", "-1", "-X", f"enable.idempotence={str(idempotent).lower()}",
           "-X", "max.in.flight.requests.per.connection=5", "-X", f"linger.ms={args.linger_ms}"]
    if args.batch_messages:
        cmd += ["-X", f"batch.num.messages={args.batch_messages}"]
    c0 = counters(args.metrics_port)
    client0 = child_cpu()
    cpu0 = cpu_seconds(broker.pid)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    cpu = cpu_seconds(broker.pid) - cpu0
    client = child_cpu() - client0
    req, app, wr, fl = (b - a for a, b in zip(c0, counters(args.metrics_port)))
    out = r.stdout + r.stderr
    m = re.findall(r"% (\d+) messages produced \((\d+) bytes\), (\d+) delivered \(offset -?\d+, "
                   r"(\d+) failed\) in (\d+)ms", out)
    if r.returncode != 0 or not m:
        raise SystemExit(f"rdkafka_performance failed ({r.returncode}): {out[-1500:]}")
    _, _, delivered, failed, ms = map(int, m[-1])
    if failed or delivered != args.messages:
        raise SystemExit(f"{failed} failed, {delivered} delivered of {args.messages}")
    a.delete_topics([topic])[topic].result(timeout=30)
    return result_row(idempotent, delivered, ms, cpu, client, req, app, wr, fl)


def result_row(idempotent, delivered, ms, cpu, client, req, app, wr, fl):
    return {"idempotent": idempotent, "msgs_per_s": round(delivered / (ms / 1000)),
            "seconds": ms / 1000, "broker_cpu_s": round(cpu, 3),
            "broker_cpu_s_per_million_msgs": round(cpu / delivered * 1e6, 3),
            "client_cpu_s_per_million_msgs": round(client / delivered * 1e6, 3),
            "produce_requests": req, "partition_appends": app, "log_writes": wr,
            "flushes": fl,
            "msgs_per_append": round(delivered / app, 1) if app else None,
            "broker_cpu_us_per_append": round(cpu / app * 1e6, 2) if app else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spate", default=str(REPO / "target/release/spate"))
    ap.add_argument("--rdk", default=str(RDK))
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--messages", type=int, default=3_000_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--linger-ms", type=int, default=5)
    ap.add_argument("--batch-messages", type=int,
                    help="batch.num.messages (librdkafka's default: 10000, so batches are bound "
                         "by batch.size, 1 MB); small batches make the per-batch bookkeeping "
                         "count most")
    ap.add_argument("--client", choices=("rdkafka", "raw"), default="rdkafka",
                    help="raw: pre-shaped ProduceRequest v3 frames from Python, identical for "
                         "both sides but the producer fields (one producer id, sequences "
                         "advancing), so the broker sees the same requests and batches")
    ap.add_argument("--raw-records", type=int, default=10, help="raw: records per batch")
    ap.add_argument("--window", type=int, default=5, help="raw: requests in flight")
    ap.add_argument("--acks", default="all", help="raw: 1 or all (rdkafka runs use all)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not Path(args.rdk).exists():
        raise SystemExit(f"no {args.rdk}: bench/compare.py builds it (or pass --rdk)")
    root = Path(tempfile.mkdtemp(prefix="spate-idem-"))
    port = free_port()
    args.metrics_port = free_port()
    boot = f"127.0.0.1:{port}"
    log = open(root / "broker.log", "wb")
    broker = subprocess.Popen([args.spate, "serve", "--listen", boot, "--data-dir",
                               str(root / "data"), "--shards", "1", "--metrics-listen",
                               f"127.0.0.1:{args.metrics_port}"], stdout=log, stderr=log)
    result = {"args": vars(args), "date": time.strftime("%Y-%m-%d %H:%M"),
              "nproc": os.cpu_count(), "loadavg_start": os.getloadavg(), "pairs": []}
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
        # A warm-up run of each (not counted): page cache, allocator, connections.
        for idem in (False, True):
            one_run(boot, broker, f"warm-{int(idem)}", idem, args)
        for i in range(args.pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            runs = {}
            for idem in order:
                r = one_run(boot, broker, f"idem-{i}-{int(idem)}", idem, args)
                print(json.dumps(r), file=sys.stderr, flush=True)
                runs["idempotent" if idem else "plain"] = r
            p, d = runs["plain"], runs["idempotent"]
            pair = {"pair": i, "order": ["idempotent" if x else "plain" for x in order],
                    "plain": p, "idempotent": d,
                    "throughput_ratio": round(d["msgs_per_s"] / p["msgs_per_s"], 3),
                    "cpu_per_msg_ratio": round(d["broker_cpu_s_per_million_msgs"]
                                               / p["broker_cpu_s_per_million_msgs"], 3)}
            print(json.dumps({k: pair[k] for k in ("pair", "throughput_ratio",
                                                   "cpu_per_msg_ratio")}), flush=True)
            result["pairs"].append(pair)
        ps = result["pairs"]
        result["median"] = {
            "plain_msgs_per_s": statistics.median(x["plain"]["msgs_per_s"] for x in ps),
            "idempotent_msgs_per_s": statistics.median(x["idempotent"]["msgs_per_s"] for x in ps),
            "plain_broker_cpu_s_per_million_msgs": statistics.median(
                x["plain"]["broker_cpu_s_per_million_msgs"] for x in ps),
            "idempotent_broker_cpu_s_per_million_msgs": statistics.median(
                x["idempotent"]["broker_cpu_s_per_million_msgs"] for x in ps),
            "throughput_ratio": statistics.median(x["throughput_ratio"] for x in ps),
            "cpu_per_msg_ratio": statistics.median(x["cpu_per_msg_ratio"] for x in ps),
        }
        for side in ("plain", "idempotent"):
            for k in ("client_cpu_s_per_million_msgs", "msgs_per_append",
                      "broker_cpu_us_per_append"):
                vals = [x[side][k] for x in ps if x[side][k] is not None]
                if vals:
                    result["median"][f"{side}_{k}"] = statistics.median(vals)
        result["loadavg_end"] = os.getloadavg()
        print(json.dumps(result["median"], indent=1))
    finally:
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
