#!/usr/bin/env python3
"""What TLS costs, measured with librdkafka's own benchmark client: rdkafka_performance
produce (acks=all) and consume throughput, and produce latency at a steady rate, over
PLAINTEXT, SSL and SASL_SSL (SCRAM-SHA-512) against the same broker in the same run (a
benchmark, not a test). bench/tls.py measures the same with confluent-kafka and adds the SCRAM
connection set-up rate.

rdkafka_performance is built with OpenSSL into bench/.cache (bench/compare.py, `ssl=True`;
needs libssl-dev). One broker (--shards 1: one core for it, one for the client) with the
listeners of bench/tls.py. Per round, for each protocol (the order rotates between rounds):
produce --messages x --size bytes to a fresh 4-partition topic (acks=all), consume them with a
fresh group from the start, then produce --rate messages/s for --paced-seconds with
linger.ms=1 and -l (a latency per message: produce() to delivery report; the first 10% are
dropped as warm-up). Broker CPU is utime + stime from /proc/PID/stat, per GiB moved. Ratios are
against the same round's PLAINTEXT; medians over the rounds are reported.

    bench/tls_rdkafka.py [--spate target/release/spate] [--rounds 3] [--messages 200000]
        [--size 1024] [--rate 10000] [--paced-seconds 5] [--json bench/results/tls-rdkafka-<date>.json]
"""

import argparse
import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "python"))
import compare  # noqa: E402
from tls import PASSWORD, USER, Broker, cpu_seconds, pct  # noqa: E402
from tlsutil import Pki  # noqa: E402

GIB = 1 << 30


def props(b, proto, pki):
    out = ["-b", f"127.0.0.1:{b.ports[proto]}", "-X", f"security.protocol={proto}",
           "-X", "enable.idempotence=false"]
    if proto in ("SSL", "SASL_SSL"):
        out += ["-X", f"ssl.ca.location={pki.ca}"]
    if proto.startswith("SASL"):
        out += ["-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", f"sasl.username={USER}",
                "-X", f"sasl.password={PASSWORD}"]
    return out


def create_topic(b, topic):
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": f"127.0.0.1:{b.ports['PLAINTEXT']}"})
    a.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(30)


def one(binp, b, proto, pki, args, topic, work):
    create_topic(b, topic)
    conn = props(b, proto, pki)
    size = args.size
    cpu0 = cpu_seconds(b.proc.pid)
    out = compare.rdk(binp, ["-P", "-t", topic, "-s", str(size), "-c", str(args.messages),
                             "-a", "-1", *conn], 900)
    produce = compare.rdk_produce_summary(out, size)
    cpu1 = cpu_seconds(b.proc.pid)
    moved = produce["delivered"] * size
    produce["broker_cpu_s_per_gib"] = (cpu1 - cpu0) / (moved / GIB)
    out = compare.rdk(binp, ["-G", f"g-{topic}", "-t", topic, "-c", str(produce["delivered"]),
                             "-X", "auto.offset.reset=earliest", *conn], 900)
    consume = compare.rdk_consume_summary(out)
    cpu2 = cpu_seconds(b.proc.pid)
    consume["broker_cpu_s_per_gib"] = (cpu2 - cpu1) / (consume["bytes"] / GIB)
    lat_topic = topic + "-lat"
    create_topic(b, lat_topic)
    lat_file = work / f"{topic}-latency.txt"
    count = int(args.rate * args.paced_seconds)
    compare.rdk(binp, ["-P", "-t", lat_topic, "-s", str(size), "-c", str(count), "-a", "-1",
                       "-r", str(args.rate), "-l", "-A", str(lat_file), "-X", "linger.ms=1",
                       *conn], int(args.paced_seconds * 4) + 120)
    us = [int(x) for x in lat_file.read_text().split()]
    xs = sorted(us[len(us) // 10:])
    paced = {"samples": len(xs), "p50_ms": pct(xs, 0.50) / 1000, "p99_ms": pct(xs, 0.99) / 1000,
             "p999_ms": pct(xs, 0.999) / 1000, "max_ms": xs[-1] / 1000}
    return {"produce": produce, "consume": consume, "paced": paced}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spate", default=str(REPO / "target" / "release" / "spate"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=200000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rate", type=int, default=10000)
    ap.add_argument("--paced-seconds", type=float, default=5.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    binp = compare.rdkafka_performance(ssl=True)
    protos = ["PLAINTEXT", "SSL", "SASL_SSL"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="spate-tls-rdk-") as tmp:
        work = Path(tmp)
        pki = Pki(work / "pki")
        pki.server_cert, pki.server_key = pki.server()
        b = Broker(args.spate, work, pki)
        try:
            for r in range(args.rounds):
                order = protos[r % 3:] + protos[:r % 3]
                got = {}
                for proto in order:
                    got[proto] = one(binp, b, proto, pki, args, f"rdk-{r}-{proto.lower()}", work)
                    g = got[proto]
                    print(f"round {r} {proto}: produce {g['produce']['mb_per_sec']:.0f} MiB/s, "
                          f"consume {g['consume']['mb_per_sec']:.0f} MiB/s, paced p99 "
                          f"{g['paced']['p99_ms']:.2f} ms", flush=True)
                rows.append({"round": r, "order": order, "runs": got})
        finally:
            b.stop()

    def med(f):
        return statistics.median(f(row) for row in rows)

    summary = {}
    for proto in protos:
        s = {}
        for phase in ("produce", "consume"):
            s[f"{phase}_mib_s"] = med(lambda row: row["runs"][proto][phase]["mb_per_sec"])
            s[f"{phase}_ratio"] = med(lambda row: row["runs"][proto][phase]["mb_per_sec"]
                                      / row["runs"]["PLAINTEXT"][phase]["mb_per_sec"])
            s[f"{phase}_cpu_s_per_gib"] = med(
                lambda row: row["runs"][proto][phase]["broker_cpu_s_per_gib"])
        for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms"):
            s[f"paced_{k}"] = med(lambda row: row["runs"][proto]["paced"][k])
        s["paced_p99_ratio"] = med(lambda row: row["runs"][proto]["paced"]["p99_ms"]
                                   / row["runs"]["PLAINTEXT"]["paced"]["p99_ms"])
        summary[proto] = s
    version = (compare.CACHE / (binp.name + ".version")).read_text().strip()
    lines = [f"# TLS cost with rdkafka_performance, "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             f"`{' '.join(sys.argv)}`; librdkafka {version} with OpenSSL; {args.rounds} rounds "
             f"of {args.messages} x {args.size} B, medians; broker --shards 1 and the client share "
             "the 2 cores.", "",
             "| protocol | produce MiB/s (acks=all) | x PLAINTEXT | broker CPU s/GiB | "
             "consume MiB/s | x PLAINTEXT | broker CPU s/GiB |",
             "|---|---|---|---|---|---|---|"]
    for proto, s in summary.items():
        lines.append(f"| {proto} | {s['produce_mib_s']:.0f} | {s['produce_ratio']:.2f} | "
                     f"{s['produce_cpu_s_per_gib']:.2f} | {s['consume_mib_s']:.0f} | "
                     f"{s['consume_ratio']:.2f} | {s['consume_cpu_s_per_gib']:.2f} |")
    lines += ["", f"Produce latency at a steady {args.rate} messages/s (acks=all, linger.ms=1):",
              "", "| protocol | p50 ms | p99 ms | x PLAINTEXT | p99.9 ms | max ms |",
              "|---|---|---|---|---|---|"]
    for proto, s in summary.items():
        lines.append(f"| {proto} | {s['paced_p50_ms']:.2f} | {s['paced_p99_ms']:.2f} | "
                     f"{s['paced_p99_ratio']:.2f} | {s['paced_p999_ms']:.2f} | "
                     f"{s['paced_max_ms']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rounds": rows,
                                               "summary": summary}, indent=1))
        Path(args.json).with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
