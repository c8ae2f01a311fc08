#!/usr/bin/env python3
"""Replication figures (a benchmark, not a test), in one run so the ratios compare like with like:

1. acks=all publish, 1 KiB messages, 12 partitions: a one-node broker (RF 1) against a 3-node
   cluster (RF 3, min.insync.replicas=2), with rdkafka_performance (throughput, then latency at
   a fixed rate with per-message latencies from -A) and the brokers' CPU seconds per GiB
   produced (summed over every broker process).
2. Failover: kill -9 of a broker that leads partitions of a 6-partition RF 3 topic under a
   steady acks=all load (confluent-kafka, metadata.max.age.ms=1000), default broker settings;
   the time from the kill to the first acknowledged write on each partition it led, over
   --kills kills (the victim restarted and back in every ISR between kills). Reported
   separately for victims that were and were not the active controller.
3. Catch-up: a follower stopped cleanly, --catchup-mib written to a one-partition RF 3 topic,
   the follower started again: the MiB/s at which it fetches the gap, from its start to the
   ISR being full again, against the loopback limit in ../shared/ENVIRONMENT.md.

Broker and clients share this machine's two cores: more brokers on the same cores is not more
hardware, and the figures show the cost of replication, not scaling.

    bench/replication.py [--spate target/release/spate] [--kills 10] [--json out.json]
"""

import argparse
import importlib.util
import json
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("compare", HERE / "compare.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)

MIB = 1 << 20
LOOPBACK_MB_S = 3200  # ../shared/ENVIRONMENT.md: iperf3, one stream


class Node:
    def __init__(self, spate, root, i, port, qport, voters):
        self.spate, self.root, self.i, self.port = spate, root, i, port
        self.args = [spate, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(root / f"node{i}"),
                     "--shards", "1"]
        if voters:
            self.args += ["--node-id", str(i), "--controller-listen", f"127.0.0.1:{qport}", "--voters", voters]
        self.proc = None

    def start(self):
        log = open(self.root / f"node{self.i}.log", "ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=log)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def start(spate, n, root, clustered):
    ports = [compare.free_port() for _ in range(n)]
    qports = [compare.free_port() for _ in range(n)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{qports[i]}" for i in range(n)) if clustered else None
    nodes = [Node(spate, root, i + 1, ports[i], qports[i], voters) for i in range(n)]
    for nd in nodes:
        nd.start()
    boot = ",".join(f"127.0.0.1:{p}" for p in ports)
    wait(lambda: len(admin(boot).list_topics(timeout=2).brokers) == n, 60, "brokers up")
    return nodes, boot


def admin(boot):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": boot})


def wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - retried until the deadline
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def create(boot, name, partitions, rf, config=None):
    from confluent_kafka.admin import NewTopic
    a = admin(boot)  # kept alive until the future is done
    a.create_topics([NewTopic(name, partitions, rf, config=config or {})])[name].result(timeout=30)
    wait(lambda: full_isr(boot, name, partitions, rf), 60, f"{name} with full ISRs")


def full_isr(boot, name, partitions, rf):
    t = admin(boot).list_topics(timeout=2).topics.get(name)
    return t and len(t.partitions) == partitions and all(
        len(p.isrs) == rf and p.leader >= 0 for p in t.partitions.values())


def cpu(nodes):
    return sum(compare.cpu_seconds(nd.proc.pid) for nd in nodes)


def acks_all(spate, rdk_bin, clustered, messages, rate, lat_seconds):
    root = Path(tempfile.mkdtemp(prefix="spate-repl-"))
    n = 3 if clustered else 1
    nodes, boot = start(spate, n, root, clustered)
    row = {"setup": "3 brokers, RF 3, min.insync.replicas=2" if clustered else "1 broker, RF 1"}
    try:
        rf = 3 if clustered else 1
        create(boot, "tp", 12, rf, {"min.insync.replicas": "2"} if clustered else {})
        c0 = cpu(nodes)
        out = compare.rdk(rdk_bin, ["-P", "-t", "tp", "-b", boot, "-s", "1024", "-c", str(messages), "-a", "-1",
                                    "-X", "enable.idempotence=false"], 900)
        r = compare.rdk_produce_summary(out, 1024)
        used = cpu(nodes) - c0
        gib = r["delivered"] * 1024 / (1 << 30)
        row["mib_s"] = round(r["mb_per_sec"], 1)
        row["msgs_s"] = round(r["msgs_per_sec"])
        row["broker_cpu_s_per_gib"] = round(used / gib, 2) if gib else None
        create(boot, "lat", 12, rf, {"min.insync.replicas": "2"} if clustered else {})
        lat_file = root / "lat.txt"
        count = rate * lat_seconds
        compare.rdk(rdk_bin, ["-P", "-t", "lat", "-b", boot, "-s", "1024", "-c", str(count), "-a", "-1",
                              "-r", str(rate), "-l", "-A", str(lat_file), "-X", "linger.ms=1",
                              "-X", "enable.idempotence=false"], lat_seconds * 4 + 120)
        xs = sorted(int(x) for x in lat_file.read_text().split()[count // 10:])
        row["latency_ms"] = {"rate": rate, "p50": compare.percentile(xs, 50) / 1000,
                             "p99": compare.percentile(xs, 99) / 1000,
                             "p99_9": compare.percentile(xs, 99.9) / 1000, "max": xs[-1] / 1000}
    finally:
        for nd in nodes:
            nd.kill()
        shutil.rmtree(root, ignore_errors=True)
    return row


def failover(spate, kills):
    from confluent_kafka import Producer
    root = Path(tempfile.mkdtemp(prefix="spate-failover-"))
    nodes, boot = start(spate, 3, root, True)
    acks = []  # (partition, ack time)
    lock = threading.Lock()
    stop = threading.Event()
    out = {"controller": [], "not_controller": []}
    try:
        create(boot, "fo", 6, 3, {"min.insync.replicas": "2"})

        def load():
            p = Producer({"bootstrap.servers": boot, "acks": "all", "enable.idempotence": False,
                          "linger.ms": 5, "metadata.max.age.ms": 1000, "topic.metadata.refresh.interval.ms": 1000,
                          "message.timeout.ms": 60000, "request.timeout.ms": 5000, "retry.backoff.ms": 50,
                          "retry.backoff.max.ms": 200, "log_level": 0})

            def report(err, m):
                # Counted by when the write was produced: an ack after the kill of a write
                # produced before it may have come from the old leader.
                if err is None:
                    with lock:
                        acks.append((m.partition(), float(m.value()[:20]), time.monotonic()))
            n = 0
            while not stop.is_set():
                try:
                    p.produce("fo", value=b"%20.6f" % time.monotonic() + b"x" * 80, partition=n % 6,
                              on_delivery=report)
                    n += 1
                except BufferError:
                    pass
                p.poll(0.002)
            p.flush(30)
        th = threading.Thread(target=load, daemon=True)
        th.start()
        def agreed_leaders():
            """Leaders as every broker answers them (a restarted broker may answer from its old
            metadata until it has caught up), and the controller."""
            views = []
            for nd in nodes:
                md = admin(f"127.0.0.1:{nd.port}").list_topics(timeout=5)
                views.append(({p: m.leader for p, m in md.topics["fo"].partitions.items()}, md.controller_id))
            return views[0] if all(v == views[0] for v in views) else None
        for k in range(kills):
            seen = []
            wait(lambda: seen.append(agreed_leaders()) or seen[-1], 60, "every broker agreeing on the leaders")
            leaders, ctl = seen[-1]
            # Alternate: victims that are not the controller, and the controller.
            candidates = [b for b in set(leaders.values()) if (b == ctl) == (k % 2 == 1)] or list(set(leaders.values()))
            victim = candidates[0]
            led = {p for p, leader in leaders.items() if leader == victim}
            nd = nodes[victim - 1]
            t0 = time.monotonic()
            nd.kill()

            def back():
                with lock:
                    seen = {p for p, made, _ in acks if made > t0}
                return led <= seen
            wait(back, 60, "writes acknowledged on every partition the victim led")
            with lock:
                firsts = {p: min(at for q, made, at in acks if q == p and made > t0) for p in led}
            # From the kill to the first acknowledgement, on each partition the victim led, of a
            # write produced after the kill (an ack of an earlier write may come from the old
            # leader just before it died).
            took = max(firsts.values()) - t0
            out["controller" if victim == ctl else "not_controller"].append(round(took, 2))
            print(json.dumps({"kill": k, "victim": victim, "was_controller": victim == ctl,
                              "seconds": round(took, 2)}), flush=True)
            nd.start()
            wait(lambda: full_isr(boot, "fo", 6, 3), 120, "full ISRs again")
        stop.set()
        th.join(timeout=60)
    finally:
        stop.set()
        for nd in nodes:
            nd.kill()
        shutil.rmtree(root, ignore_errors=True)
    every = out["controller"] + out["not_controller"]
    out["all"] = {"p50": statistics.median(every), "max": max(every), "kills": len(every)}
    return out


def catchup(spate, rdk_bin, mib):
    root = Path(tempfile.mkdtemp(prefix="spate-catchup-"))
    nodes, boot = start(spate, 3, root, True)
    try:
        create(boot, "cu", 1, 3, {"min.insync.replicas": "2"})
        md = admin(boot).list_topics(timeout=5)
        leader = md.topics["cu"].partitions[0].leader
        follower = next(nd for nd in nodes if nd.i not in (leader, md.controller_id))
        follower.stop()
        n = mib * 1024
        compare.rdk(rdk_bin, ["-P", "-t", "cu", "-b", boot, "-s", "1024", "-c", str(n), "-a", "-1",
                              "-X", "enable.idempotence=false"], 900)
        follower.start()
        wait(lambda: socket.create_connection(("127.0.0.1", follower.port), timeout=1).close() is None, 60,
             "the follower listening")
        t0 = time.monotonic()
        wait(lambda: full_isr(boot, "cu", 1, 3), 600, "the follower back in the ISR")
        took = time.monotonic() - t0
        return {"mib": mib, "seconds": round(took, 2), "mib_s": round(mib / took, 1),
                "share_of_loopback": round(mib * MIB / 1e6 / took / LOOPBACK_MB_S, 3),
                "note": "from the follower's listener being up to a full ISR (the leader's next ISR check included)"}
    finally:
        for nd in nodes:
            nd.kill()
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spate", default=str(compare.REPO / "target/release/spate"))
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--latency-seconds", type=int, default=20)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--catchup-mib", type=int, default=512)
    ap.add_argument("--only", default="acks,failover,catchup")
    ap.add_argument("--json")
    args = ap.parse_args()
    rdk_bin = compare.rdkafka_performance()
    result = {}
    parts = args.only.split(",")
    if "acks" in parts:
        one = acks_all(args.spate, rdk_bin, False, args.messages, args.rate, args.latency_seconds)
        print(json.dumps(one), flush=True)
        three = acks_all(args.spate, rdk_bin, True, args.messages, args.rate, args.latency_seconds)
        print(json.dumps(three), flush=True)
        result["acks_all"] = {"one_node": one, "rf3": three,
                              "throughput_ratio_rf3_to_one": round(three["mib_s"] / one["mib_s"], 2),
                              "p99_ratio_rf3_to_one": round(three["latency_ms"]["p99"] / one["latency_ms"]["p99"], 2)}
    if "failover" in parts:
        result["failover_s"] = failover(args.spate, args.kills)
        print(json.dumps(result["failover_s"]), flush=True)
    if "catchup" in parts:
        result["catchup"] = catchup(args.spate, rdk_bin, args.catchup_mib)
        print(json.dumps(result["catchup"]), flush=True)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
