#!/usr/bin/env python3
"""Group rebalance benchmark (not a test): how long a group of 10 members on 100 partitions
takes to absorb an 11th member, with the classic protocol (cooperative-sticky, client-side
assignment) and with KIP-848 (group.protocol=consumer, server-side `uniform`), in the same run
against the same broker.

    SPATE_BIN=target/debug/spate .venv/bin/python bench/group_join.py [--rounds 3]

Measured: from the moment the 11th consumer is created until every member's assignment is the
balanced final one (eleven members owning 9 or 10 partitions each, all 100 owned exactly once).
Also reported: how many times an original member's assignment lacked a partition it owns at the
end (a kept partition revoked and given back: the eager part of a rebalance). Both protocols heartbeat every 500 ms (classic: `heartbeat.interval.ms`;
KIP-848: `--group-consumer-heartbeat-interval-ms`). Members are threads of this process, all
on one machine with the broker: the figure is relative, not absolute.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("SPATE_BIN", REPO / "target" / "release" / "spate"))
PARTITIONS = 100
MEMBERS = 10
HEARTBEAT_MS = 500


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Member(threading.Thread):
    def __init__(self, bootstrap, group, topic, conf):
        super().__init__(daemon=True)
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                           "auto.offset.reset": "earliest", **conf})
        self.topic = topic
        self.assignment = frozenset()
        self.history = []  # (monotonic, assignment)
        self.stop = threading.Event()

    def run(self):
        self.c.subscribe([self.topic])
        while not self.stop.is_set():
            self.c.poll(0.05)
            a = frozenset(tp.partition for tp in self.c.assignment())
            if a != self.assignment:
                self.assignment = a
                self.history.append((time.monotonic(), a))
        self.c.close()


def balanced(members):
    sizes = [len(m.assignment) for m in members]
    owned = [p for m in members for p in m.assignment]
    return len(owned) == PARTITIONS and len(set(owned)) == PARTITIONS and max(sizes) - min(sizes) <= 1


def wait(cond, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def one_round(bootstrap, topic, name, conf):
    group = f"bench-{name}-{time.monotonic_ns()}"
    ms = [Member(bootstrap, group, topic, conf) for _ in range(MEMBERS)]
    for m in ms:
        m.start()
    if not wait(lambda: balanced(ms), 120):
        raise SystemExit(f"{name}: the first 10 members never balanced")
    time.sleep(2)
    start = time.monotonic()
    joiner = Member(bootstrap, group, topic, conf)
    joiner.start()
    everyone = ms + [joiner]
    ok = wait(lambda: balanced(everyone) and len(joiner.assignment) > 0, 120)
    took = time.monotonic() - start
    time.sleep(1)
    # Partitions an original member still has at the end but lost for a while during the join.
    revoked_kept = sum(1 for m in ms for ts, a in m.history if ts >= start and not (m.assignment <= a))
    for m in everyone:
        m.stop.set()
    for m in everyone:
        m.join(30)
    if not ok:
        raise SystemExit(f"{name}: the 11th member was never absorbed")
    return took, revoked_kept


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="spate-group-bench-"))
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    log = open(tmp / "broker.log", "wb")
    broker = subprocess.Popen([str(BIN), "serve", "--listen", bootstrap, "--data-dir", str(tmp / "data"),
                               "--shards", "2", "--group-initial-rebalance-delay-ms", "0",
                               "--group-consumer-heartbeat-interval-ms", str(HEARTBEAT_MS),
                               "--group-consumer-session-timeout-ms", "10000"], stdout=log, stderr=log)
    try:
        a = AdminClient({"bootstrap.servers": bootstrap})
        deadline = time.monotonic() + 30
        while True:
            try:
                a.create_topics([NewTopic("bench-join", PARTITIONS, 1)])["bench-join"].result(10)
                break
            except Exception:  # noqa: BLE001 - broker still starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        protocols = {
            "classic cooperative-sticky": {"partition.assignment.strategy": "cooperative-sticky",
                                           "session.timeout.ms": 10000, "heartbeat.interval.ms": HEARTBEAT_MS},
            "KIP-848 (uniform)": {"group.protocol": "consumer"},
        }
        results = {name: [] for name in protocols}
        for r in range(args.rounds):
            for name, conf in protocols.items():
                took, revoked_kept = one_round(bootstrap, "bench-join", name, conf)
                results[name].append(took)
                print(f"round {r + 1} {name}: absorbed in {took * 1000:.0f} ms "
                      f"(kept partitions revoked from original members: {revoked_kept})", flush=True)
        print(f"\n10 members, {PARTITIONS} partitions, an 11th joins; heartbeat {HEARTBEAT_MS} ms, "
              f"{args.rounds} rounds, median:")
        for name, xs in results.items():
            print(f"  {name:28s} {statistics.median(xs) * 1000:7.0f} ms  (all: "
                  f"{', '.join(f'{x * 1000:.0f}' for x in xs)})")
    finally:
        broker.terminate()
        broker.wait(30)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
