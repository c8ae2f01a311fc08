"""kcat (librdkafka CLI) producing keyed messages and consuming them back."""

import re
import shutil
import subprocess
import zlib

import pytest

from kafkautil import create_topic, unique_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")

KCAT_X = ["-X", "socket.timeout.ms=10000", "-X", "broker.address.family=v4"]


def kcat(args, stdin=None, timeout=60):
    if KCAT is None:
        pytest.fail("kcat not installed (scripts/bootstrap.sh installs it)", pytrace=False)
    res = subprocess.run([KCAT, *args], input=stdin, capture_output=True, timeout=timeout)
    assert res.returncode == 0, (
        f"kcat {' '.join(args)} exited {res.returncode}\nstdout: {res.stdout[-2000:]!r}\n"
        f"stderr: {res.stderr[-2000:]!r}")
    return res


def test_kcat_keyed_roundtrip(broker, rng):
    seed = rng.seed_value
    topic = unique_topic("kcat")
    nparts = 6
    create_topic(broker.bootstrap, topic, nparts)

    n = 300
    produced = []  # (key, value) in produce order
    for i in range(n):
        key = f"k{rng.randrange(30)}"
        value = f"v{i}-{rng.randrange(1 << 30):x}"
        produced.append((key, value))
    stdin = "".join(f"{k}:{v}\n" for k, v in produced).encode()
    kcat(["-b", broker.bootstrap, *KCAT_X, "-P", "-t", topic, "-K:"], stdin=stdin)

    out = kcat(["-b", broker.bootstrap, *KCAT_X, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
                "-f", "%p|%o|%k|%s\n"]).stdout.decode()
    rows = []
    for line in out.splitlines():
        if not line:
            continue
        p, o, k, s = line.split("|", 3)
        rows.append((int(p), int(o), k, s))

    ctx = f"(seed={seed}, topic={topic})"
    # Exact content: every produced message exactly once, nothing else.
    assert sorted((k, s) for _, _, k, s in rows) == sorted(produced), f"content mismatch {ctx}"

    # Same key -> same partition, and it is librdkafka's default (consistent_random: crc32 % n),
    # which proves the client saw all 6 partitions.
    part_of_key = {}
    for p, _, k, _ in rows:
        part_of_key.setdefault(k, set()).add(p)
    for k, ps in part_of_key.items():
        assert len(ps) == 1, f"key {k} landed on partitions {sorted(ps)} {ctx}"
        assert ps == {zlib.crc32(k.encode()) % nparts}, f"key {k} on {ps}, expected crc32 partition {ctx}"
    assert len({p for p, *_ in rows}) > 1, f"all keys on one partition {ctx}"

    # Offsets per partition are contiguous 0..n-1, and the order within a partition is produce order.
    per_part = {}
    for p, o, k, s in rows:
        per_part.setdefault(p, []).append((o, k, s))
    for p, recs in per_part.items():
        offsets = [o for o, _, _ in recs]
        assert offsets == list(range(len(recs))), f"partition {p} offsets {offsets[:20]}... {ctx}"
        expected = [(k, v) for k, v in produced if zlib.crc32(k.encode()) % nparts == p]
        assert [(k, s) for _, k, s in recs] == expected, f"partition {p} order differs from produce order {ctx}"

    # Per-key order equals produce order for that key.
    for key in part_of_key:
        got = [s for p, o, k, s in sorted(rows, key=lambda r: (r[0], r[1])) if k == key]
        assert got == [v for k, v in produced if k == key], f"order for key {key} {ctx}"


def test_kcat_metadata_listing(broker):
    topic = unique_topic("kcatmd")
    create_topic(broker.bootstrap, topic, 6)
    out = kcat(["-b", broker.bootstrap, *KCAT_X, "-L", "-t", topic]).stdout.decode()

    brokers = re.findall(r"broker (-?\d+) at (\S+)", out)
    assert len(brokers) == 1, f"expected exactly one broker in metadata:\n{out}"
    broker_id, addr = int(brokers[0][0]), brokers[0][1]
    assert broker_id >= 0, out
    assert addr == broker.bootstrap, f"advertised address {addr} != {broker.bootstrap}\n{out}"

    m = re.search(r'topic "%s" with (\d+) partitions' % re.escape(topic), out)
    assert m and int(m.group(1)) == 6, out
    parts = re.findall(r"partition (\d+), leader (-?\d+), replicas: ([\d,]*), isrs: ([\d,]*)", out)
    assert sorted(int(p) for p, *_ in parts) == list(range(6)), out
    for p, leader, replicas, isrs in parts:
        assert int(leader) == broker_id, f"partition {p} leader {leader} != broker {broker_id}\n{out}"
        assert replicas == str(broker_id) and isrs == str(broker_id), out
