#!/usr/bin/env python3
"""A/B of two broker builds (a refactor's before and after), same client, same machine.

    bench/ab.py --a OLD/spate --b NEW/spate --bench target/release/spate-bench \
        [--workloads throughput-1k,latency-50mbps] [--pairs 3] [--shards 2]

Runs each workload with each broker in turn (A, B, A, B, ...: alternating, so drift in the
machine hits both), each on a fresh data dir, with the one spate-bench given, and reports the
median of each figure: publish MiB/s and msgs/s, publish p50/p99/p99.9/max, and broker CPU
seconds per GiB produced (from /proc/PID/stat, the figure that is stable on a noisy machine),
with B/A ratios. Writes bench/results/ab-<date>.{json,md}. A benchmark, not a test.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK  # utime + stime


def wait_port(port, deadline):
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def run_one(broker_bin, bench_bin, workload, shards, out_dir, label):
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.Popen([broker_bin, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir",
                              f"{d}/data", "--shards", str(shards)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not wait_port(port, time.time() + 30):
                raise RuntimeError(f"{broker_bin} did not start")
            cpu0 = cpu_seconds(p.pid)
            before = set(out_dir.glob(f"{label}-*.json"))
            r = subprocess.run([bench_bin, "--bootstrap-server", f"127.0.0.1:{port}",
                                "--workload", str(workload), "--out-dir", str(out_dir),
                                "--label", label], capture_output=True, text=True, timeout=900)
            cpu = cpu_seconds(p.pid) - cpu0
            if r.returncode != 0:
                raise RuntimeError(f"spate-bench failed: {r.stderr[-500:]}")
            new = sorted(set(out_dir.glob(f"{label}-*.json")) - before)
            j = json.loads(new[-1].read_text())
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    pub = j["publish"]
    size = j["workload"]["message_size"]
    gib = j["totals"]["produced"] * size / 2**30
    lat, tput = pub["latency_ms"], pub["throughput"]
    return {"publish MiB/s": tput["mb_per_sec"], "publish msgs/s": tput["msgs_per_sec"],
            "publish p50 ms": lat["p50"], "publish p99 ms": lat["p99"],
            "publish p99.9 ms": lat["p99_9"], "publish max ms": lat["max"],
            "broker CPU s per GiB": cpu / gib if gib else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="broker binary A (before)")
    ap.add_argument("--b", required=True, help="broker binary B (after)")
    ap.add_argument("--bench", default=str(REPO / "target/release/spate-bench"))
    ap.add_argument("--workloads", default="throughput-1k,latency-50mbps")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # spate-bench's own reports and charts of each run: kept out of the repository.
    raw = Path(tempfile.mkdtemp(prefix="spate-ab-"))
    runs = {}
    for name in args.workloads.split(","):
        wl = REPO / "bench" / "workloads" / f"{name}.toml"
        for i in range(args.pairs):
            for side, binary in (("A", args.a), ("B", args.b)):
                print(f"[ab] {name} pair {i + 1}/{args.pairs}: {side}", file=sys.stderr)
                r = run_one(binary, args.bench, wl, args.shards, raw, f"ab-{side}-{name}")
                runs.setdefault(name, {}).setdefault(side, []).append(r)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    lines = [f"# A/B: {args.label_a} (A) against {args.label_b} (B)", "",
             f"`bench/ab.py --workloads {args.workloads} --pairs {args.pairs} --shards "
             f"{args.shards}`, {time.strftime('%Y-%m-%d %H:%M')}, `nproc` {os.cpu_count()}; "
             "broker and client share the machine. Medians of alternating runs.", "",
             "| figure | A | B | B / A |", "|---|---|---|---|"]
    for name, sides in runs.items():
        for k in sides["A"][0]:
            med = {s: statistics.median(r[k] for r in sides[s] if r[k] is not None)
                   for s in ("A", "B")}
            ratio = med["B"] / med["A"] if med["A"] else float("nan")
            lines.append(f"| {name}: {k} | {med['A']:.3f} | {med['B']:.3f} | {ratio:.2f} |")
    (out / f"ab-{stamp}.json").write_text(json.dumps({"args": vars(args), "runs": runs},
                                                    indent=1))
    (out / f"ab-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
