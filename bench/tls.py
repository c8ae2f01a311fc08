#!/usr/bin/env python3
"""What TLS costs: produce and consume over SSL and SASL_SSL against PLAINTEXT in the same run,
and the SCRAM connection set-up rate over SASL_PLAINTEXT and SASL_SSL (a benchmark, not a
test).

One broker (--shards 1, so it has one core and the client the other) with four listeners on
one TLS certificate (a P-256 key made with the openssl CLI, tests/python/tlsutil.py) and a
SCRAM user. The client is confluent-kafka (librdkafka 2.16 with OpenSSL): the
rdkafka_performance that bench/compare.py builds has no OpenSSL, so it cannot speak TLS.
Per round, for each protocol (the order rotates between rounds, so drift on a shared machine
hits each): produce --messages messages of --size bytes to a fresh topic of 4 partitions
(acks=all, linger.ms=5), then consume them from the start. Per phase: MB/s
(wall from the first produce to the last acknowledgement, or from the first message
consumed to the last, the 4 partitions assigned without a group; librdkafka prefetches up to 64 MiB, so runs
well above that measure the broker), the produce latency of every message (librdkafka's produce()-to-ack,
`Message.latency()`) p50/p99/p99.9/max (at full speed, mostly librdkafka's queue; a paced
phase then produces --rate messages/s for --paced-seconds with linger.ms=1 for the latency
that matters), and the broker's CPU seconds (utime + stime of
/proc/PID/stat) per GiB. Ratios are against the same round's PLAINTEXT; the medians over the
rounds are reported.

Connection set-up: --connections sequential connections, each a TCP connect (+ TLS
handshake, TLS 1.3, no resumption), SaslHandshake v1 SCRAM-SHA-512 and the two
SaslAuthenticate v1 steps, then close. The client caches its salted password (PBKDF2 with 4096
iterations is the client's cost, not the broker's). Reports connections/s and broker CPU ms
per connection.

    bench/tls.py [--spate target/release/spate] [--rounds 3] [--messages 200000] [--size 1024]
        [--connections 500] [--rate 10000] [--paced-seconds 5]
        [--json bench/results/tls-<date>.json]
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "python"))
from tlsutil import Pki  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
USER, PASSWORD = "bench", "bench-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


def pct(sorted_values, p):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


class Broker:
    def __init__(self, spate, work, pki):
        self.ports = {p: free_port() for p in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")}
        users = work / "users"
        users.write_text(f"{USER}:{PASSWORD}\n")
        self.log = open(work / "spate.log", "wb")
        listeners = ",".join(f"{p}://127.0.0.1:{port}" for p, port in self.ports.items())
        self.proc = subprocess.Popen(
            [str(spate), "serve", "--data-dir", str(work / "data"), "--shards", "1",
             "--listeners", listeners, "--tls-cert-file", str(pki.server_cert),
             "--tls-key-file", str(pki.server_key), "--sasl-users-file", str(users)],
            stdout=self.log, stderr=self.log, env={**os.environ, "RUST_LOG": "warn"})
        self.log_path = work / "spate.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.ports["PLAINTEXT"]), timeout=1):
                    pass
                if self.scram_ready():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"broker not ready: {self.log_path.read_text()[-2000:]}")

    def scram_ready(self):
        try:
            connect_scram("127.0.0.1", self.ports["SASL_PLAINTEXT"], None, {})
            return True
        except Exception:
            return False

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def client_conf(b, proto, pki):
    c = {"bootstrap.servers": f"127.0.0.1:{b.ports[proto]}", "security.protocol": proto}
    if proto in ("SSL", "SASL_SSL"):
        c["ssl.ca.location"] = str(pki.ca)
    if proto.startswith("SASL"):
        c.update({"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER,
                  "sasl.password": PASSWORD})
    return c


def produce_consume(b, proto, pki, args, topic):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
    conf = client_conf(b, proto, pki)
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(timeout=30)
    payload = os.urandom(args.size)
    p = Producer({**conf, "linger.ms": 5, "acks": "all", "queue.buffering.max.messages": 1000000,
                  "queue.buffering.max.kbytes": 2097151})
    lat = []
    errors = []

    def done(err, msg):
        if err is not None:
            errors.append(err)
        else:
            lat.append(msg.latency())

    p.list_topics(topic, timeout=10)
    cpu0, t0 = cpu_seconds(b.proc.pid), time.monotonic()
    for i in range(args.messages):
        while True:
            try:
                p.produce(topic, payload, partition=i % 4, on_delivery=done)
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
    p.flush(120)
    wall, cpu = time.monotonic() - t0, cpu_seconds(b.proc.pid) - cpu0
    if errors or len(lat) != args.messages:
        raise SystemExit(f"{proto}: {len(errors)} errors, {len(lat)} acked: {errors[:3]}")
    gib = args.messages * args.size / (1 << 30)
    lat_ms = sorted(x * 1000 for x in lat)
    produce = {"mb_s": args.messages * args.size / wall / 1e6,
               "p50_ms": pct(lat_ms, 0.5), "p99_ms": pct(lat_ms, 0.99),
               "p999_ms": pct(lat_ms, 0.999), "max_ms": lat_ms[-1],
               "broker_cpu_s_per_gib": cpu / gib}
    c = Consumer({**conf, "group.id": f"g-{topic}", "enable.auto.commit": False})
    cpu0, t0 = cpu_seconds(b.proc.pid), time.monotonic()
    c.assign([TopicPartition(topic, part, OFFSET_BEGINNING) for part in range(4)])
    got = 0
    first = None
    deadline = time.monotonic() + 300
    while got < args.messages and time.monotonic() < deadline:
        for m in c.consume(num_messages=10000, timeout=0.5):
            if m.error() is None:
                got += 1
                if first is None:
                    first = time.monotonic()
    end, cpu = time.monotonic(), cpu_seconds(b.proc.pid) - cpu0
    wall = end - (first or t0)
    c.close()
    if got < args.messages:
        raise SystemExit(f"{proto}: consumed {got} of {args.messages}")
    consume = {"mb_s": args.messages * args.size / wall / 1e6, "broker_cpu_s_per_gib": cpu / gib}
    return produce, consume, paced_latency(conf, topic, args)


def paced_latency(conf, topic, args):
    """Produce latency at a steady --rate messages/s (not the queueing of a full-speed run):
    --rate / 100 messages every 10 ms for --paced-seconds, acks=all, linger.ms=1.
    librdkafka measures a message's latency when its delivery callback runs; the wait between
    ticks is spent in poll(), which runs callbacks as acknowledgements arrive."""
    from confluent_kafka import Producer
    payload = os.urandom(args.size)
    p = Producer({**conf, "linger.ms": 1, "acks": "all"})
    p.list_topics(topic, timeout=10)
    lat, errors = [], []

    def done(err, msg):
        if err is not None:
            errors.append(err)
        else:
            lat.append(msg.latency())

    per_tick = max(1, args.rate // 100)
    start = time.monotonic()
    ticks = int(args.paced_seconds * 100)
    for t in range(ticks):
        for i in range(per_tick):
            p.produce(topic, payload, partition=(t + i) % 4, on_delivery=done)
        # librdkafka's latency() reads the clock when the callback runs, so callbacks are
        # served as acknowledgements arrive (poll with a timeout), not once per tick.
        while (left := start + (t + 1) / 100 - time.monotonic()) > 0:
            p.poll(left)
    p.flush(60)
    if errors:
        raise SystemExit(f"paced: {len(errors)} errors: {errors[:3]}")
    lat_ms = sorted(x * 1000 for x in lat)
    return {"rate": args.rate, "p50_ms": pct(lat_ms, 0.5), "p99_ms": pct(lat_ms, 0.99),
            "p999_ms": pct(lat_ms, 0.999), "max_ms": lat_ms[-1]}


# ---------------------------------------------------------------- raw SCRAM connections

def frame(api, version, corr, body):
    msg = struct.pack(">hhih", api, version, corr, 5) + b"bench" + body
    return struct.pack(">i", len(msg)) + msg


def read_frame(s):
    def exactly(n):
        buf = b""
        while len(buf) < n:
            got = s.recv(n - len(buf))
            if not got:
                raise EOFError("closed")
            buf += got
        return buf
    return exactly(struct.unpack(">i", exactly(4))[0])


def authenticate(s, corr, data):
    s.sendall(frame(36, 1, corr, struct.pack(">i", len(data)) + data))
    body = read_frame(s)[4:]
    err = struct.unpack(">h", body[:2])[0]
    mlen = struct.unpack(">h", body[2:4])[0]
    pos = 4 + max(mlen, 0)
    n = struct.unpack(">i", body[pos:pos + 4])[0]
    if err:
        raise RuntimeError(f"SaslAuthenticate error {err}")
    return body[pos + 4:pos + 4 + n]


def connect_scram(host, port, ctx, salted_cache):
    raw = socket.create_connection((host, port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
    try:
        mech = b"SCRAM-SHA-512"
        s.sendall(frame(17, 1, 1, struct.pack(">h", len(mech)) + mech))
        if struct.unpack(">h", read_frame(s)[4:6])[0]:
            raise RuntimeError("SaslHandshake refused")
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={USER},r={nonce}"
        server_first = authenticate(s, 2, f"n,,{first_bare}".encode()).decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        key = (attrs["s"], attrs["i"])
        if key not in salted_cache:
            salted_cache[key] = hashlib.pbkdf2_hmac("sha512", PASSWORD.encode(),
                                                    base64.b64decode(attrs["s"]), int(attrs["i"]))
        salted = salted_cache[key]
        client_key = hmac.new(salted, b"Client Key", "sha512").digest()
        stored = hashlib.sha512(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_msg = f"{first_bare},{server_first},{without_proof}".encode()
        sig = hmac.new(stored, auth_msg, "sha512").digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
        final = authenticate(s, 3, f"{without_proof},p={proof}".encode())
        if not final.startswith(b"v="):
            raise RuntimeError(f"unexpected server-final {final!r}")
    finally:
        s.close()


def connection_rate(b, proto, pki, n):
    ctx = None
    if proto == "SASL_SSL":
        ctx = ssl.create_default_context(cafile=str(pki.ca))
    cache = {}
    connect_scram("127.0.0.1", b.ports[proto], ctx, cache)  # warm the salted password
    cpu0, t0 = cpu_seconds(b.proc.pid), time.monotonic()
    for _ in range(n):
        connect_scram("127.0.0.1", b.ports[proto], ctx, cache)
    wall, cpu = time.monotonic() - t0, cpu_seconds(b.proc.pid) - cpu0
    return {"connections_s": n / wall, "broker_cpu_ms_per_connection": cpu * 1000 / n}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spate", default=str(REPO / "target" / "release" / "spate"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=200000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--connections", type=int, default=500)
    ap.add_argument("--rate", type=int, default=10000, help="messages/s of the paced phase")
    ap.add_argument("--paced-seconds", type=float, default=5.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    protos = ["PLAINTEXT", "SSL", "SASL_SSL"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="spate-tls-bench-") as tmp:
        work = Path(tmp)
        pki = Pki(work / "pki")
        pki.server_cert, pki.server_key = pki.server()
        b = Broker(args.spate, work, pki)
        try:
            for r in range(args.rounds):
                order = protos[r % 3:] + protos[:r % 3]
                got = {}
                for proto in order:
                    got[proto] = produce_consume(b, proto, pki, args, f"tls-{r}-{proto.lower()}")
                    print(f"round {r} {proto}: produce {got[proto][0]['mb_s']:.0f} MB/s "
                          f"p99 {got[proto][0]['p99_ms']:.1f} ms, consume "
                          f"{got[proto][1]['mb_s']:.0f} MB/s", flush=True)
                conns = {}
                for proto in (["SASL_PLAINTEXT", "SASL_SSL"] if r % 2 == 0
                              else ["SASL_SSL", "SASL_PLAINTEXT"]):
                    conns[proto] = connection_rate(b, proto, pki, args.connections)
                    print(f"round {r} {proto}: {conns[proto]['connections_s']:.0f} connections/s",
                          flush=True)
                rows.append({"round": r, "order": order, "runs": got, "connections": conns})
        finally:
            b.stop()

    def med(f):
        def safe(row):
            try:
                return f(row)
            except ZeroDivisionError:  # a phase too short for a CPU tick
                return float("nan")
        return statistics.median(safe(row) for row in rows)

    summary = {}
    for proto in protos:
        s = {}
        for k in rows[0]["runs"][proto][2]:
            s[f"paced_{k}"] = med(lambda row: row["runs"][proto][2][k])
        s["paced_p99_ratio"] = med(
            lambda row: row["runs"][proto][2]["p99_ms"] / row["runs"]["PLAINTEXT"][2]["p99_ms"])
        for phase, i in (("produce", 0), ("consume", 1)):
            for k in rows[0]["runs"][proto][i]:
                s[f"{phase}_{k}"] = med(lambda row: row["runs"][proto][i][k])
            s[f"{phase}_mb_s_ratio"] = med(
                lambda row: row["runs"][proto][i]["mb_s"] / row["runs"]["PLAINTEXT"][i]["mb_s"])
            s[f"{phase}_cpu_ratio"] = med(
                lambda row: row["runs"][proto][i]["broker_cpu_s_per_gib"]
                / row["runs"]["PLAINTEXT"][i]["broker_cpu_s_per_gib"])
        s["produce_p99_ratio"] = med(
            lambda row: row["runs"][proto][0]["p99_ms"] / row["runs"]["PLAINTEXT"][0]["p99_ms"])
        summary[proto] = s
    conn_summary = {p: {k: med(lambda row: row["connections"][p][k])
                        for k in ("connections_s", "broker_cpu_ms_per_connection")}
                    for p in ("SASL_PLAINTEXT", "SASL_SSL")}
    lines = [f"# TLS cost, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             f"`{' '.join(sys.argv)}`; {args.rounds} rounds of {args.messages} x {args.size} B, "
             "medians; broker --shards 1 and confluent-kafka share the 2 cores.", "",
             "At full speed (latency here is mostly librdkafka's queue):", "",
             "| protocol | produce MB/s | x PLAINTEXT | p50 ms | p99 ms | p99.9 ms | max ms | "
             "broker CPU s/GiB | consume MB/s | x PLAINTEXT | broker CPU s/GiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for proto, s in summary.items():
        lines.append(
            f"| {proto} | {s['produce_mb_s']:.0f} | {s['produce_mb_s_ratio']:.2f} | "
            f"{s['produce_p50_ms']:.2f} | {s['produce_p99_ms']:.2f} | {s['produce_p999_ms']:.2f} | "
            f"{s['produce_max_ms']:.1f} | {s['produce_broker_cpu_s_per_gib']:.2f} | "
            f"{s['consume_mb_s']:.0f} | {s['consume_mb_s_ratio']:.2f} | "
            f"{s['consume_broker_cpu_s_per_gib']:.2f} |")
    lines += ["", f"Produce latency at a steady {args.rate} messages/s "
              f"({args.rate * args.size / 1e6:.0f} MB/s, acks=all, linger.ms=1):", "",
              "| protocol | p50 ms | p99 ms | x PLAINTEXT | p99.9 ms | max ms |",
              "|---|---|---|---|---|---|"]
    for proto, s in summary.items():
        lines.append(f"| {proto} | {s['paced_p50_ms']:.2f} | {s['paced_p99_ms']:.2f} | "
                     f"{s['paced_p99_ratio']:.2f} | {s['paced_p999_ms']:.2f} | "
                     f"{s['paced_max_ms']:.1f} |")
    lines += ["", "| SCRAM-SHA-512 connection set-up | connections/s | broker CPU ms/connection |",
              "|---|---|---|"]
    for p, s in conn_summary.items():
        lines.append(f"| {p} | {s['connections_s']:.0f} | "
                     f"{s['broker_cpu_ms_per_connection']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "rounds": rows, "summary": summary,
             "connections": conn_summary}, indent=1))
        Path(args.json).with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
