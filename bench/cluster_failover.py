#!/usr/bin/env python3
"""Controller failover on a local 3-node cluster (a benchmark, not a test).

Starts three nodes (every node a voter and a broker, --shards 1, default quorum and session
timeouts), then repeatedly kill -9s the active controller and measures, from the kill:

  elected   until a survivor's Metadata names a new active controller
  create    until a CreateTopics sent to a survivor succeeds (confluent-kafka AdminClient,
            a fresh client per attempt, as a tool started after the failure would be)

then restarts the killed node and waits for the three brokers again. Prints p50 and max.

    bench/cluster_failover.py --spate target/release/spate --tries 10 [--json out.json]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid

from confluent_kafka.admin import AdminClient, NewTopic


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                        "socket.timeout.ms": 5000, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500})


def metadata(bootstrap, timeout=2.0):
    return admin(bootstrap).list_topics(timeout=timeout)


def wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spate", default="target/release/spate")
    ap.add_argument("--tries", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="spate-failover-")
    kafka = {i: free_port() for i in (1, 2, 3)}
    quorum = {i: free_port() for i in (1, 2, 3)}
    voters = ",".join(f"{i}@127.0.0.1:{quorum[i]}" for i in (1, 2, 3))
    procs = {}

    def start(i):
        log = open(os.path.join(root, f"node{i}.log"), "ab")
        procs[i] = subprocess.Popen([args.spate, "serve", "--node-id", str(i), "--listen", f"127.0.0.1:{kafka[i]}",
                                     "--controller-listen", f"127.0.0.1:{quorum[i]}", "--voters", voters,
                                     "--data-dir", os.path.join(root, f"node{i}"), "--shards", "1"],
                                    stdout=log, stderr=log)

    def all_up():
        for i in (1, 2, 3):
            md = metadata(f"127.0.0.1:{kafka[i]}")
            if sorted(md.brokers) != [1, 2, 3] or md.controller_id < 1:
                return False
        return True

    elected, created = [], []
    try:
        for i in (1, 2, 3):
            start(i)
        wait(all_up, 60, "three brokers")
        for n in range(args.tries):
            ctl = metadata(f"127.0.0.1:{kafka[1 if procs[1].poll() is None else 2]}").controller_id
            survivor = next(i for i in (1, 2, 3) if i != ctl)
            boot = f"127.0.0.1:{kafka[survivor]}"
            procs[ctl].send_signal(signal.SIGKILL)
            procs[ctl].wait()
            t0 = time.monotonic()
            t_elected = None
            t_created = None
            name = f"failover-{uuid.uuid4().hex[:8]}"
            # First until a survivor names a new controller (Metadata alone, polled fast), then
            # until a CreateTopics works: a client that asked earlier would have sent it to the
            # dead controller the survivor still named, and waited out its own timeout.
            while t_elected is None and time.monotonic() - t0 < 60:
                try:
                    c = metadata(boot, 1.0).controller_id
                    if c not in (-1, ctl):
                        t_elected = time.monotonic() - t0
                except Exception:
                    pass
                time.sleep(0.01)
            while t_created is None and time.monotonic() - t0 < 60:
                try:
                    a = admin(boot)  # kept until the result: a dropped client cancels its requests
                    f = a.create_topics([NewTopic(name, 1, 1)], request_timeout=5, operation_timeout=5)
                    f[name].result(timeout=6)
                    t_created = time.monotonic() - t0
                except Exception as e:
                    if os.environ.get("FAILOVER_DEBUG"):
                        print(f"{time.monotonic() - t0:.2f}s: {e!r}", flush=True)
                    time.sleep(0.01)
            if t_elected is None:
                t_elected = t_created
            elected.append(t_elected)
            created.append(t_created)
            print(f"try {n + 1}: killed controller {ctl}; new controller seen after {t_elected:.2f} s, "
                  f"CreateTopics succeeded after {t_created:.2f} s", flush=True)
            start(ctl)
            wait(all_up, 60, "the killed node back")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "tries": args.tries,
        "elected_s": {"p50": statistics.median(elected), "max": max(elected)},
        "create_topics_s": {"p50": statistics.median(created), "max": max(created)},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
