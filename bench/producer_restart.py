#!/usr/bin/env python3
"""Restart time of a broker holding 10,000 idempotent producer ids' state per partition (a
benchmark, not a test), against the same log without producer ids.

One broker (release build, --shards 1) gets a topic of --partitions partitions, and on each
partition one single-record batch from each of --producers distinct producer ids (epoch 0,
sequence 0; a producer id the partition does not know is taken at any sequence, so no
InitProducerId is needed): raw ProduceRequest v3, one request per producer id covering every
partition, pipelined, acks=1. The baseline data dir gets the same number of single-record
batches with no producer id (producer id -1), so the same records and bytes.

Each data dir is made once and stopped two ways, and each kind of restart then runs on a fresh
copy of the stopped dir (the copy is made before the clock starts; the page cache is warm):

- clean: SIGTERM, the broker flushes and writes a producer-state snapshot at the log end; the
  next start reads the snapshot (and no log past it).
- kill9: SIGKILL, after the load. The segments never rolled, so there is no snapshot: the next
  start runs crash recovery of the active segment and rebuilds the producer state from every
  batch header of the log.

Restart time = from the spawn of `spate serve` until (1) the "broker ready" log line appears,
and (2) a raw Fetch v4 of every partition from offset 0 answers with no error and the high
watermark the load left (polled every 5 ms over a fresh connection). Figure (2) is the one to
quote; (1) is given alongside. After each restart of the idempotent dir, one producer's batch
is sent again on every partition (same producer id, epoch, sequence, record): the answer must
be its original offset with no error, and the high watermarks must not move (the retry was
not written twice). That checks that the state was rebuilt, from the snapshot or the log.

    bench/producer_restart.py [--spate target/release/spate] [--producers 10000]
        [--partitions 4] [--runs 3] [--json bench/results/producer-restart-<date>.json]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from kafka.record.default_records import DefaultRecordBatchBuilder

REPO = Path(__file__).resolve().parent.parent
TOPIC = "restart-bench"
PID_BASE = 1_000_000  # producer ids: PID_BASE + i


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def frame(api_key, version, corr, body):
    msg = struct.pack(">hhi", api_key, version, corr) + _string("restart-bench") + body
    return struct.pack(">i", len(msg)) + msg


def read_frames(sock, n, timeout=30.0):
    sock.settimeout(timeout)
    buf = b""
    out = []
    while len(out) < n:
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"connection closed after {len(out)} answers")
            buf += chunk
        size = struct.unpack(">i", buf[:4])[0]
        out.append(buf[4:4 + size])
        buf = buf[4 + size:]
    return out


def batch(pid, value):
    """One single-record batch: idempotent (producer id `pid`, epoch 0, sequence 0), or
    plain when pid is -1."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                  producer_id=pid, producer_epoch=0 if pid >= 0 else -1,
                                  base_sequence=0 if pid >= 0 else -1, batch_size=1 << 20)
    b.append(0, None, None, value, [])
    return bytes(b.build())


def produce_request(corr, pid, partitions, value_of):
    """ProduceRequest v3, acks=1: one batch per partition."""
    parts = b"".join(struct.pack(">i", p) + struct.pack(">i", len(bt)) + bt
                     for p, bt in ((p, batch(pid, value_of(p))) for p in range(partitions)))
    body = (struct.pack(">hhi", -1, 1, 30000) + struct.pack(">i", 1) + _string(TOPIC)
            + struct.pack(">i", partitions) + parts)
    return frame(0, 3, corr, body)


def parse_produce(resp):
    """{partition: (error, base offset)} of a ProduceResponse v3."""
    pos = 4  # correlation id
    (ntopics,) = struct.unpack(">i", resp[pos:pos + 4])
    pos += 4
    out = {}
    for _ in range(ntopics):
        (nl,) = struct.unpack(">h", resp[pos:pos + 2])
        pos += 2 + nl
        (nparts,) = struct.unpack(">i", resp[pos:pos + 4])
        pos += 4
        for _ in range(nparts):
            p, err, base, _ = struct.unpack(">ihqq", resp[pos:pos + 22])
            pos += 22
            out[p] = (err, base)
    return out


def fetch_request(corr, partitions):
    """Fetch v4 of every partition from offset 0, 1 KiB each, no wait."""
    parts = b"".join(struct.pack(">iqi", p, 0, 1024) for p in range(partitions))
    body = (struct.pack(">iiiib", -1, 0, 0, 1 << 20, 0) + struct.pack(">i", 1) + _string(TOPIC)
            + struct.pack(">i", partitions) + parts)
    return frame(1, 4, corr, body)


def parse_fetch(resp):
    """{partition: (error, high watermark, record bytes)} of a FetchResponse v4."""
    pos = 4 + 4  # correlation id, throttle
    (ntopics,) = struct.unpack(">i", resp[pos:pos + 4])
    pos += 4
    out = {}
    for _ in range(ntopics):
        (nl,) = struct.unpack(">h", resp[pos:pos + 2])
        pos += 2 + nl
        (nparts,) = struct.unpack(">i", resp[pos:pos + 4])
        pos += 4
        for _ in range(nparts):
            p, err, hw, _lso = struct.unpack(">ihqq", resp[pos:pos + 22])
            pos += 22
            (naborted,) = struct.unpack(">i", resp[pos:pos + 4])
            pos += 4 + max(naborted, 0) * 16
            (rlen,) = struct.unpack(">i", resp[pos:pos + 4])
            pos += 4 + max(rlen, 0)
            out[p] = (err, hw, max(rlen, 0))
    return out


def fetch_state(port, partitions, timeout=2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(fetch_request(1, partitions))
        return parse_fetch(read_frames(s, 1, timeout)[0])


def spawn(spate, data, port, log_path):
    log = open(log_path, "wb")
    p = subprocess.Popen([spate, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data),
                          "--shards", "1"], stdout=log, stderr=log)
    log.close()
    return p


def wait_ready(proc, port, log_path, partitions, want_hw, t0, deadline_s=120):
    """Seconds from t0 to the "broker ready" line and to a Fetch of every partition with no
    error at the expected high watermark."""
    ready = None
    while True:
        now = time.monotonic()
        if now - t0 > deadline_s:
            raise SystemExit(f"broker not ready after {deadline_s} s; see {log_path}")
        if proc.poll() is not None:
            raise SystemExit(f"broker exited with {proc.returncode}; see {log_path}")
        if ready is None and b"broker ready" in Path(log_path).read_bytes():
            ready = now - t0
        try:
            st = fetch_state(port, partitions)
            if all(st.get(p, (1,))[0] == 0 and st[p][1] == want_hw for p in range(partitions)):
                done = time.monotonic() - t0
                while ready is None:  # the line may be written just after the listener opens
                    if b"broker ready" in Path(log_path).read_bytes():
                        ready = time.monotonic() - t0
                    elif time.monotonic() - t0 > deadline_s:
                        raise SystemExit("no 'broker ready' line")
                    else:
                        time.sleep(0.002)
                return ready, done
        except (OSError, ConnectionError, struct.error):
            pass
        time.sleep(0.005)


def load(spate, root, name, producers, partitions, idempotent):
    """A data dir holding `producers` single-record batches on each partition (idempotent:
    one producer id each). Returns (data dir, {pid: {partition: offset}}, log end)."""
    data = root / f"{name}-data"
    port = free_port()
    proc = spawn(spate, data, port, root / f"{name}-load.log")
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
        from confluent_kafka.admin import AdminClient, NewTopic
        a = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        a.create_topics([NewTopic(TOPIC, partitions, 1)])[TOPIC].result(timeout=30)
        offsets = {}
        with socket.create_connection(("127.0.0.1", port)) as s:
            chunk = 500
            for start in range(0, producers, chunk):
                ids = range(start, min(producers, start + chunk))
                s.sendall(b"".join(
                    produce_request(i, PID_BASE + i if idempotent else -1, partitions,
                                    lambda p, i=i: f"p{i}-{p}".encode().ljust(32, b"."))
                    for i in ids))
                for i, resp in zip(ids, read_frames(s, len(ids))):
                    got = parse_produce(resp)
                    bad = {p: e for p, (e, _) in got.items() if e != 0}
                    if bad:
                        raise SystemExit(f"produce of producer {i} failed: {bad}")
                    offsets[PID_BASE + i] = {p: o for p, (_, o) in got.items()}
        st = fetch_state(port, partitions)
        if any(st[p][1] != producers for p in range(partitions)):
            raise SystemExit(f"unexpected high watermarks after the load: {st}")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, data, offsets


def retry_is_duplicate(port, pid, offsets, partitions, want_hw):
    """Sends producer `pid`'s batch again on every partition; True if each is answered with
    its original offset and nothing was written."""
    i = pid - PID_BASE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(produce_request(7, pid, partitions,
                                  lambda p: f"p{i}-{p}".encode().ljust(32, b".")))
        got = parse_produce(read_frames(s, 1)[0])
    st = fetch_state(port, partitions)
    ok = all(got[p] == (0, offsets[pid][p]) and st[p][1] == want_hw for p in range(partitions))
    return ok, {p: list(got[p]) for p in range(partitions)}, {p: st[p][1] for p in range(partitions)}


def cpu_seconds(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spate", default=str(REPO / "target/release/spate"))
    ap.add_argument("--producers", type=int, default=10_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="spate-prestart-"))
    n, parts = args.producers, args.partitions
    result = {"args": vars(args), "date": time.strftime("%Y-%m-%d %H:%M"),
              "loadavg_start": os.getloadavg(), "nproc": os.cpu_count(), "runs": {}}
    try:
        # Two data dirs per kind (one per way of stopping): the same load each time.
        templates = {}
        offsets = None
        for kind, idem in (("idempotent", True), ("plain", False)):
            for stop in ("clean", "kill9"):
                name = f"{kind}-{stop}"
                t = time.monotonic()
                proc, data, offs = load(args.spate, root, name, n, parts, idem)
                loaded_s = time.monotonic() - t
                if idem:
                    offsets = offs
                t = time.monotonic()
                if stop == "clean":
                    proc.send_signal(signal.SIGTERM)
                else:
                    proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
                stop_s = time.monotonic() - t
                snaps = sorted(x.name for x in data.rglob("*.snapshot") if TOPIC in str(x))
                templates[name] = data
                print(json.dumps({"made": name, "load_s": round(loaded_s, 2),
                                  "stop_s": round(stop_s, 3),
                                  "producer_snapshots": len(snaps)}), flush=True)
                result.setdefault("made", []).append(
                    {"dir": name, "load_s": round(loaded_s, 2), "stop_s": round(stop_s, 3),
                     "producer_snapshots": snaps})
        probe = [PID_BASE, PID_BASE + n // 2, PID_BASE + n - 1]
        # Runs: the four kinds take turns within each round.
        for r in range(args.runs):
            for name in templates:
                data = root / f"run-{name}-{r}"
                shutil.copytree(templates[name], data)
                port = free_port()
                log_path = root / f"run-{name}-{r}.log"
                t0 = time.monotonic()
                proc = spawn(args.spate, data, port, log_path)
                try:
                    ready, fetch_ok = wait_ready(proc, port, log_path, parts, n, t0)
                    cpu = cpu_seconds(proc.pid)
                    row = {"run": r, "ready_line_s": round(ready, 4),
                           "fetch_ok_s": round(fetch_ok, 4),
                           "cpu_s_at_fetch_ok": round(cpu, 3)}
                    if name.startswith("idempotent"):
                        pid = probe[r % len(probe)]
                        ok, answer, hws = retry_is_duplicate(port, pid, offsets, parts, n)
                        row.update({"retry_producer_id": pid, "retry_duplicate_ok": ok,
                                    "retry_answer": answer, "original_offsets": offsets[pid],
                                    "high_watermarks_after_retry": hws})
                        if not ok:
                            raise SystemExit(f"retry after restart not deduplicated: {row}")
                finally:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    shutil.rmtree(data, ignore_errors=True)
                print(json.dumps({name: row}), flush=True)
                result["runs"].setdefault(name, []).append(row)
        summary = {}
        for name, rows in result["runs"].items():
            summary[name] = {k: round(statistics.median(x[k] for x in rows), 4)
                             for k in ("ready_line_s", "fetch_ok_s", "cpu_s_at_fetch_ok")}
        for stop in ("clean", "kill9"):
            i, p = summary[f"idempotent-{stop}"], summary[f"plain-{stop}"]
            summary[f"ratio-{stop}"] = {k: round(i[k] / p[k], 3) if p[k] else None for k in i}
        result["median"] = summary
        result["loadavg_end"] = os.getloadavg()
        print(json.dumps(summary, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
