#!/usr/bin/env python3
"""What TLS costs, measured with spate-bench (a benchmark, not a test): the same workload over
PLAINTEXT, SSL and SASL_SSL (SCRAM-SHA-512) against one broker (--shards 1) in the same run,
with spate-bench's `--command-config`. bench/tls.py measures the same with confluent-kafka.

The broker, its TLS certificate and SCRAM user are bench/tls.py's (`Broker`). Per round, for
each protocol (the order rotates between rounds): one spate-bench run at full speed
(--producers producers, as many consumers, 1 topic x 4 partitions, --size bytes, acks=1,
linger 1 ms, --seconds measured after 2 s of warm-up), then one paced run at --rate
messages/s for the latency that matters. Per run: publish and consume MB/s, publish latency
p50/p99/p99.9/max (spate-bench measures from each message's scheduled send time), and the
broker's CPU seconds (utime + stime of /proc/PID/stat over the whole spate-bench run: set-up,
warm-up, measure and drain) per GiB produced (each byte is also consumed once). Ratios are
against the same round's PLAINTEXT; medians over the rounds are reported. A full-speed run
writes gigabytes: each run's topics are deleted after it (and their files waited for), and a
run does not start with less than --min-free-gib free.

    bench/tls_bench.py [--spate target/release/spate] [--bench target/release/spate-bench]
        [--rounds 3] [--seconds 4] [--size 1024] [--producers 1] [--rate 10000]
        [--json bench/results/tls-spate-bench-<date>.json]
"""

import argparse
import datetime
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("tls_bench_base", REPO / "bench" / "tls.py")
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")


def properties(work, proto, pki):
    text = f"security.protocol={proto}\n"
    if proto in ("SSL", "SASL_SSL"):
        text += f"ssl.ca.location={pki.ca}\n"
    if proto.startswith("SASL"):
        text += (f"sasl.mechanism=SCRAM-SHA-512\nsasl.username={base.USER}\n"
                 f"sasl.password={base.PASSWORD}\n")
    path = work / f"{proto}.properties"
    path.write_text(text)
    return path


def workload(work, name, args, rate):
    path = work / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\ntopics = 1\npartitions_per_topic = 4\nmessage_size = {args.size}\n'
        f'key_distribution = "none"\nproducers = {args.producers}\n'
        f'consumers = {args.producers}\nproducer_rate = {rate}\nacks = 1\nlinger_ms = 1\n'
        f'batch_bytes = 131072\nmax_in_flight = 5\nwarmup_seconds = 2\n'
        f'duration_seconds = {args.seconds}\n')
    return path


def data_bytes(work):
    return sum(f.stat().st_size for f in (work / "data").rglob("*") if f.is_file())


def drop_topics(args, b, work, topics):
    """Deletes a run's topics and waits for their files to go: a full-speed run writes
    gigabytes, and the disk is shared."""
    for t in topics:
        subprocess.run([str(args.spate), "topic", "delete", t, "--bootstrap-server",
                        f"127.0.0.1:{b.ports['PLAINTEXT']}"], check=True,
                       capture_output=True, timeout=60)
    deadline = time.monotonic() + 60
    while data_bytes(work) > 256 << 20:
        if time.monotonic() > deadline:
            raise SystemExit(f"deleted topics still hold {data_bytes(work)} bytes")
        time.sleep(0.2)


def run_bench(args, b, work, proto, pki, wl, label):
    out = work / "out" / label
    free = shutil.disk_usage(work).free
    if free < args.min_free_gib << 30:
        raise SystemExit(f"only {free >> 30} GiB free on {work}: stopping")
    cpu0 = base.cpu_seconds(b.proc.pid)
    r = subprocess.run(
        [str(args.bench), "--bootstrap-server", f"127.0.0.1:{b.ports[proto]}",
         "--workload", str(wl), "--out-dir", str(out), "--label", label,
         "--command-config", str(properties(work, proto, pki))],
        capture_output=True, text=True, timeout=args.seconds * 4 + 120)
    cpu = base.cpu_seconds(b.proc.pid) - cpu0
    if r.returncode != 0:
        raise SystemExit(f"spate-bench {label}: {r.stderr[-2000:]}")
    [result] = list(out.glob("*.json"))
    j = json.loads(result.read_text())
    t = j["totals"]
    if t["publish_errors"] or t["consumed"] != t["produced"]:
        raise SystemExit(f"spate-bench {label}: {t}")
    drop_topics(args, b, work, j["details"]["topics"])
    lat = j["publish"]["latency_ms"]
    gib = t["produced"] * args.size / (1 << 30)
    return {"publish_mb_s": j["publish"]["throughput"]["mb_per_sec"],
            "consume_mb_s": j["consume"]["throughput"]["mb_per_sec"],
            "p50_ms": lat["p50"], "p99_ms": lat["p99"], "p999_ms": lat["p99_9"],
            "max_ms": lat["max"], "broker_cpu_s_per_gib": cpu / gib if gib else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spate", default=str(REPO / "target" / "release" / "spate"))
    ap.add_argument("--bench", default=str(REPO / "target" / "release" / "spate-bench"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--producers", type=int, default=1)
    ap.add_argument("--rate", type=int, default=10000)
    ap.add_argument("--min-free-gib", type=int, default=12,
                    help="stop before a run when the disk has less free")
    ap.add_argument("--json", default=str(
        REPO / "bench" / "results" /
        f"tls-spate-bench-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d}.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="spate-tls-bench-") as tmp:
        work = Path(tmp)
        pki = base.Pki(work / "pki")
        pki.server_cert, pki.server_key = pki.server()
        b = base.Broker(args.spate, work, pki)
        full_wl = workload(work, "full", args, '"max"')
        paced_wl = workload(work, "paced", args, args.rate)
        rounds = []
        try:
            for rnd in range(args.rounds):
                order = PROTOCOLS[rnd % 3:] + PROTOCOLS[:rnd % 3]
                got = {}
                for proto in order:
                    full = run_bench(args, b, work, proto, pki, full_wl, f"full-{proto}-{rnd}")
                    paced = run_bench(args, b, work, proto, pki, paced_wl,
                                      f"paced-{proto}-{rnd}")
                    got[proto] = {"full": full, "paced": paced}
                    print(f"round {rnd} {proto}: full {json.dumps(full)} paced "
                          f"{json.dumps(paced)}", file=sys.stderr)
                rounds.append(got)
        finally:
            b.stop()
    summary = {}
    for proto in PROTOCOLS:
        summary[proto] = {}
        for phase in ("full", "paced"):
            keys = rounds[0][proto][phase].keys()
            med = {k: statistics.median(r[proto][phase][k] for r in rounds) for k in keys}
            ratio = {k: statistics.median(r[proto][phase][k] / r["PLAINTEXT"][phase][k]
                                          for r in rounds) for k in keys}
            summary[proto][phase] = {"median": med, "ratio_to_plaintext": ratio}
    doc = {"tool": "bench/tls_bench.py", "args": vars(args), "rounds": rounds,
           "summary": summary, "nproc": base.os.cpu_count(),
           "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{'protocol':10} {'phase':6} {'pub MB/s':>9} {'con MB/s':>9} {'p50':>7} {'p99':>7} "
          f"{'p99.9':>7} {'max':>7} {'CPU s/GiB':>9}   ratios to PLAINTEXT (pub, con, p99, CPU)")
    for proto in PROTOCOLS:
        for phase in ("full", "paced"):
            m, r = summary[proto][phase]["median"], summary[proto][phase]["ratio_to_plaintext"]
            print(f"{proto:10} {phase:6} {m['publish_mb_s']:9.1f} {m['consume_mb_s']:9.1f} "
                  f"{m['p50_ms']:7.2f} {m['p99_ms']:7.2f} {m['p999_ms']:7.2f} {m['max_ms']:7.1f} "
                  f"{m['broker_cpu_s_per_gib']:9.2f}   {r['publish_mb_s']:.2f} "
                  f"{r['consume_mb_s']:.2f} {r['p99_ms']:.2f} {r['broker_cpu_s_per_gib']:.2f}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
